#!/bin/bash
# Second sweep: all cheap levers together first (sine positions, [CLS]+mean-words readout, grounding loss,
# one-group side twins in the mix), then ablations. One probe at a time, one thread.
source "$(dirname "$0")/common.sh"
COMMON="--batch 16 --steps 800 --max-cpu-s 330 --eval-every 400 --eval-types count,colour,spatial,binding,side"
run scratch_sine_clsmean_ground_side $COMMON --pos sine --readout cls_mean --ground-weight 1 --types $ALL
run scratch_sine_clsmean_side $COMMON --pos sine --readout cls_mean --types $ALL
run scratch_sine_clsmean $COMMON --pos sine --readout cls_mean
run scratch_8x8_sine_clsmean_ground_side $COMMON --stages 2 --pos sine --readout cls_mean --ground-weight 1 --types $ALL
