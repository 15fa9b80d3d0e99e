#!/bin/bash
# Sixth sweep (replaces the rest of queue5): the MLP readout at BERT's init (is the init needed?), then the
# fine-tuning protocol (500 steps without twins, then 500 with), both with sine + grounding + side twins.
source "$(dirname "$0")/common.sh"
run scratch_sine_mlp_ground_side $EV --steps 800 --max-cpu-s 330 --pos sine --readout cls_mean_mlp --types $ALL --ground-weight 1
run finetune500_sine_mlp_ground_side_init08 $EV --steps 1000 --quad-start 500 --max-cpu-s 400 --pos sine --readout cls_mean_mlp --types $ALL --init-std 0.08 --ground-weight 1
