#!/bin/bash
# Fifth sweep: the recipe of queue4 under the fine-tuning protocol (600 steps without twins, then 600 with),
# and without the grounding loss. One probe at a time, one thread.
source "$(dirname "$0")/common.sh"
R="--pos sine --readout cls_mean_mlp --types $ALL --init-std 0.08"
run scratch_sine_mlp_side_init08_noground $EV --steps 800 --max-cpu-s 330 $R
run finetune600_sine_mlp_ground_side_init08 $EV --steps 1200 --quad-start 600 --max-cpu-s 500 $R --ground-weight 1
