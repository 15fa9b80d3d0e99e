#!/bin/bash
# The real runs of results/compositional/README.md ("Real runs"): stage 2 / NegCLIP from a stage-1 model,
# then the compositional and the normal UCM test evaluation. Run from the repository root after `make setup`.
#   RUNS=/path/to/runs bash results/compositional/runs.sh train fusion|fusion_pert|negclip
#   RUNS=/path/to/runs bash results/compositional/runs.sh eval  NAME MODEL_DIR [filter]
# Stage 1 first: mtgfe-train --config ucm_dual_finetune --set output_dir=$RUNS/ucm_dual_finetune \
#   data.backbone_cache.dir=$RUNS/backbone_cache data.data_dir=$DATA
# STEPS=80 is the short budget the table used (the recipe's default is 260): set STEPS= to run the full recipe.
set -euo pipefail
RUNS=${RUNS:?set RUNS to a folder for run outputs (outside the repository)}
DATA=${DATA:-../shared/data}
STEPS=${STEPS-80}
S1=$RUNS/ucm_dual_finetune/final
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE
BIN=.venv/bin
case $1 in
  train)
    [ -f "$S1/config.json" ] || { echo "stage 1 not found: $S1" >&2; exit 2; }
    COMMON="seed=42 num_threads=1 data.backbone_cache.dir=$RUNS/backbone_cache data.data_dir=$DATA model.pretrained=$S1 log.progress_bar=false"
    [ -n "$STEPS" ] && COMMON="$COMMON max_steps=$STEPS eval.at_end=false"
    case $2 in
      fusion)      $BIN/mtgfe-train --config ucm_fusion --set $COMMON output_dir=$RUNS/fusion_s42 ;;
      fusion_pert) $BIN/mtgfe-train --config ucm_fusion --set $COMMON output_dir=$RUNS/fusion_pert_s42 model.itm_perturbation_negatives=1.0 ;;
      negclip)     $BIN/mtgfe-train --config ucm_dual_finetune --set $COMMON output_dir=$RUNS/negclip_s42 model.init=null model.preset=null model.itc_perturbation_negatives=1.0 ;;
      *) echo "unknown run $2" >&2; exit 2 ;;
    esac ;;
  eval)
    $BIN/mtgfe-eval --model "$3" --compositional --data-dir "$DATA" --output "$RUNS/eval_$2.json"
    if [ "${4:-}" = filter ]; then
      $BIN/mtgfe-eval --model "$3" --dataset ucm --split test --data-dir "$DATA" --filter-only --no-progress --output "$RUNS/ucm_test_mR_$2.json"
    else
      $BIN/mtgfe-eval --model "$3" --dataset ucm --split test --data-dir "$DATA" --k 16 --score itm+itc --no-progress --output "$RUNS/ucm_test_mR_$2.json"
    fi ;;
  *) echo "usage: runs.sh train NAME | eval NAME MODEL_DIR [filter]" >&2; exit 2 ;;
esac
