#!/bin/bash
# Is the recipe's spread over seeds a matter of budget? The fusion + sine arm of study.sh, seed 1 (spatial group
# 0.5 at 1,600 steps), run for 3,200 steps with the held-out pairs scored every 400 (the curve is in study.jsonl).
source "$(dirname "$0")/common.sh"
run fusion_sine_3200steps_s1 $EV --out experiments/twin_recipe/study.jsonl --val-items 100 --steps 3200 --seed 1 \
  --readout cls_mean_mlp --types $ALL --init-std 0.08 --ground-weight 1 --pos sine
