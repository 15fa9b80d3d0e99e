#!/bin/bash
# The controlled study: five arms x three seeds at one budget (1,600 steps at batch 16, from scratch, one
# thread each), held-out pairs of generator seed 1 (200 per type), alpha of ITM + alpha * ITC chosen on the
# pairs of generator seed 2 (100 per type), 95 % bootstrap CIs. Each run appends one line to study.jsonl.
#   experiments/twin_recipe/study.sh                      # every arm x 3 seeds, one after another
#   experiments/twin_recipe/study.sh dual:0 negclip:1 ... # or these jobs (run two queues, one per core)
#   .venv/bin/python experiments/twin_recipe/study_table.py                       # the table
source "$(dirname "$0")/common.sh"
OUT="--out experiments/twin_recipe/study.jsonl --val-items 100 --steps 1600"
RECIPE="--readout cls_mean_mlp --types $ALL --init-std 0.08"
FUSION="$RECIPE --ground-weight 1"
arm() {  # arm NAME SEED flags...
  local name=$1 seed=$2; shift 2
  run "${name}_s${seed}" $EV $OUT --seed "$seed" "$@"
}
flags() {  # the arm's flags
  case $1 in
    dual) echo "$RECIPE --arm dual" ;;
    negclip) echo "$RECIPE --arm negclip" ;;
    fusion_sine) echo "$FUSION --pos sine" ;;
    fusion_nopos) echo "$FUSION --pos none" ;;
    fusion_learned) echo "$FUSION --pos learned" ;;
    *) echo "unknown arm $1" >&2; exit 2 ;;
  esac
}
# Default: every arm x seeds 0, 1, 2; or the ARM:SEED jobs given (two queues share the list to use both cores).
JOBS=${*:-"fusion_sine:0 fusion_sine:1 fusion_sine:2 dual:0 dual:1 dual:2 negclip:0 negclip:1 negclip:2
  fusion_nopos:0 fusion_nopos:1 fusion_nopos:2 fusion_learned:0 fusion_learned:1 fusion_learned:2"}
for job in $JOBS; do
  # shellcheck disable=SC2046
  arm "${job%%:*}" "${job##*:}" $(flags "${job%%:*}")
done
