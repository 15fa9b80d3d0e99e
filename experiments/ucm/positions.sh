#!/bin/bash
# UCM with grid positions: the default two-stage recipe (`ucm_fusion`) re-run now that the `small` preset adds
# 2D sine positions to the grid tokens, against the same stage 2 with positions off
# (`model.config.image_position_embedding=none`), both on ONE stage-1 model (seed 42). Stage 1 (ITC only) does
# not see the positions: the filter's image vector is pooled before they are added, so one stage 1 serves
# both arms and the pair differs in the positions only. Then UCM test mR (k = 16, the alpha sweep) and the
# real compositional pairs (UCM test + RSICD test, and the UCM val development view).
#   RUNS=/path/outside/the/repo bash experiments/ucm/positions.sh [ARM:SEED ...]
# default order: pos:42 nopos:42 pos:1 pos:2 nopos:1 nopos:2 (the paired seed first, then the positions arm's
# other seeds, the control's last). WAIT_PID: start after that process ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:?set RUNS to a folder for run outputs (outside the repository)}
DATA=${DATA:-../shared/data}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE
BIN=.venv/bin
S1=$RUNS/ucm_dual_finetune_s42/final
while [ -n "${WAIT_PID:-}" ] && kill -0 "$WAIT_PID" 2>/dev/null; do sleep 10; done
COMMON="num_threads=1 data.backbone_cache.dir=$RUNS/backbone_cache data.data_dir=$DATA log.progress_bar=false"
if [ ! -f "$S1/config.json" ]; then
  # shellcheck disable=SC2086
  $BIN/mtgfe-train --config ucm_dual_finetune --set seed=42 output_dir=$RUNS/ucm_dual_finetune_s42 $COMMON
fi
if [ ! -f experiments/ucm/ucm_dual_finetune_s42_rerun_test_filter.json ]; then
  $BIN/mtgfe-eval --model "$S1" --dataset ucm --split test --data-dir "$DATA" --filter-only --no-progress \
    --output experiments/ucm/ucm_dual_finetune_s42_rerun_test_filter.json
fi
stage2() {  # stage2 ARM SEED
  local arm=$1 seed=$2 extra=""
  [ "$arm" = nopos ] && extra="model.config.image_position_embedding=none"
  local out=$RUNS/ucm_fusion_${arm}_s$seed
  if [ ! -f "$out/final/config.json" ]; then
    # shellcheck disable=SC2086
    $BIN/mtgfe-train --config ucm_fusion --set seed=$seed output_dir=$out model.pretrained=$S1 model.pretrained_recipe=null $COMMON $extra
  fi
  $BIN/mtgfe-eval --model "$out/final" --dataset ucm --split test --data-dir "$DATA" --k 16 --score itm \
    --alpha-sweep 0,0.5,1,2,4,8,100 --no-progress --output experiments/ucm/ucm_fusion_${arm}_s${seed}_test_k16.json
  $BIN/mtgfe-eval --model "$out/final" --compositional --data-dir "$DATA" \
    --output experiments/compositional/eval_ucm_fusion_${arm}_s${seed}.json
  $BIN/mtgfe-eval --model "$out/final" --compositional --sources ucm_val --data-dir "$DATA" \
    --output experiments/compositional/eval_val_ucm_fusion_${arm}_s${seed}.json
}
for job in ${@:-pos:42 nopos:42 pos:1 pos:2 nopos:1 nopos:2}; do
  stage2 "${job%%:*}" "${job##*:}"
done
