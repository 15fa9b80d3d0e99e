#!/bin/bash
# Fourth sweep: the first recipe whose twins leave ln 2 (sine + [CLS]+mean-words MLP readout + grounding +
# side twins + init std 0.08), twice as long; then the smallest production change (the package's [CLS]
# linear ITM head, init std 0.08 only). One probe at a time, one thread.
source "$(dirname "$0")/common.sh"
run scratch_sine_mlp_ground_side_init08_1600 $EV --steps 1600 --max-cpu-s 700 --pos sine --readout cls_mean_mlp --ground-weight 1 --types $ALL --init-std 0.08
run scratch_sine_cls_ground_side_init08 $EV --steps 800 --max-cpu-s 330 --pos sine --readout cls --ground-weight 1 --types $ALL --init-std 0.08
