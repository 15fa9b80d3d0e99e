#!/bin/bash
# The real runs of experiments/compositional/README.md: stage 2 (fusion ITM) and the NegCLIP-style dual encoder,
# both from the same stage-1 model, with the same perturbation negatives, steps, batch size and seeds; then the
# compositional and the normal UCM test evaluation. Run from the repository root after `make setup`.
#   RUNS=/path/to/runs bash experiments/compositional/runs.sh train NAME SEED   # NAME: fusion_pairs | negclip_pairs |
#                                                                           #       fusion_edits | negclip_edits
#   RUNS=/path/to/runs bash experiments/compositional/runs.sh eval  RUN [filter]  # RUN = NAME_sSEED or "stage1"
# Stage 1 first (one model, seed 42; its cost is ~35 CPU-minutes):
#   mtgfe-train --config ucm_dual_finetune --set output_dir=$RUNS/ucm_dual_finetune \
#     data.backbone_cache.dir=$RUNS/backbone_cache data.data_dir=$DATA
# Both arms get STEPS optimizer steps of 32 rows (default 260 = the ucm_fusion recipe's 5 epochs); no evaluation
# during training, so nothing is selected on any split: the last step is the model.
set -euo pipefail
RUNS=${RUNS:?set RUNS to a folder for run outputs (outside the repository)}
DATA=${DATA:-../shared/data}
STEPS=${STEPS:-260}
S1=$RUNS/ucm_dual_finetune/final
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE
BIN=.venv/bin
case $1 in
  train)
    [ -f "$S1/config.json" ] || { echo "stage 1 not found: $S1" >&2; exit 2; }
    NAME=$2 SEED=$3
    COMMON="seed=$SEED num_threads=1 data.backbone_cache.dir=$RUNS/backbone_cache data.data_dir=$DATA
            model.pretrained=$S1 log.progress_bar=false max_steps=$STEPS eval.at_end=false output_dir=$RUNS/${NAME}_s$SEED"
    case $NAME in
      fusion_*)  ARM="--config ucm_fusion_itm --set model.itm_perturbation_negatives=1.0" ;;  # ITC + ITM, filter frozen
      negclip_*) ARM="--config ucm_dual_finetune --set model.init=null model.preset=null model.itc_perturbation_negatives=1.0" ;;
      *) echo "unknown run $NAME" >&2; exit 2 ;;
    esac
    case $NAME in
      *_pairs) SRC=pairs ;;   # partner captions of other train images (blind-proof)
      *_edits) SRC=edits ;;   # rule edits of the row's own caption
      *) echo "unknown negatives in $NAME" >&2; exit 2 ;;
    esac
    # shellcheck disable=SC2086
    $BIN/mtgfe-train $ARM $COMMON model.perturbation_source=$SRC ;;
  eval)
    RUN=$2
    MODEL=$RUNS/$RUN/final
    [ "$RUN" = stage1 ] && MODEL=$S1
    $BIN/mtgfe-eval --model "$MODEL" --compositional --data-dir "$DATA" --output "$RUNS/eval_$RUN.json"
    # the development view (UCM val pairs): where recipe choices are looked at; never the test sources
    $BIN/mtgfe-eval --model "$MODEL" --compositional --sources ucm_val --data-dir "$DATA" --output "$RUNS/eval_val_$RUN.json"
    if [ "${3:-}" = filter ]; then
      $BIN/mtgfe-eval --model "$MODEL" --dataset ucm --split test --data-dir "$DATA" --filter-only --no-progress --output "$RUNS/ucm_test_mR_$RUN.json"
    else
      $BIN/mtgfe-eval --model "$MODEL" --dataset ucm --split test --data-dir "$DATA" --k 16 --score itm+itc --no-progress --output "$RUNS/ucm_test_mR_$RUN.json"
    fi ;;
  *) echo "usage: runs.sh train NAME SEED | eval RUN [filter]" >&2; exit 2 ;;
esac
