#!/bin/bash
# Third sweep: a nonlinear ITM readout over [CLS] + mean word states and a larger init of the text/fusion
# layers (BERT's 0.02 keeps GELUs near-linear and attention near-uniform: a deeper saddle), on top of sine
# positions, the grounding loss and one-group side twins. One probe at a time, one thread.
source "$(dirname "$0")/common.sh"
COMMON="--batch 16 --steps 800 --max-cpu-s 330 --eval-every 400 --eval-types count,colour,spatial,binding,side"
run scratch_sine_mlp_ground_side_init08 $COMMON --pos sine --readout cls_mean_mlp --ground-weight 1 --types $ALL --init-std 0.08
run scratch_sine_mlp_ground_side $COMMON --pos sine --readout cls_mean_mlp --ground-weight 1 --types $ALL
run scratch_sine_clsmean_ground_side_init08 $COMMON --pos sine --readout cls_mean --ground-weight 1 --types $ALL --init-std 0.08
