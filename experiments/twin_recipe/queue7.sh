#!/bin/bash
# Seventh sweep: where the positions go, in the recipe that leaves ln 2 (MLP readout, grounding, side twins,
# init std 0.08): DETR-style sine on the keys of every fusion layer (values carry no position), then learned.
source "$(dirname "$0")/common.sh"
R="--steps 800 --max-cpu-s 330 --readout cls_mean_mlp --types $ALL --init-std 0.08 --ground-weight 1"
run scratch_sinekeys_mlp_ground_side_init08 $EV $R --pos sine_keys
run scratch_learned_mlp_ground_side_init08 $EV $R --pos learned
