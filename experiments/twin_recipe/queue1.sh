#!/bin/bash
# First sweep of levers, one probe at a time on one thread (results appended to runs.jsonl).
source "$(dirname "$0")/common.sh"
COMMON="--batch 16 --steps 800 --max-cpu-s 330 --eval-every 400"
run oracle_spatial_64px_4x4 --oracle --batch 32 --steps 400 --max-cpu-s 150
run scratch_nopos $COMMON --pos none
run scratch_sine $COMMON --pos sine
run scratch_sine_clsmean $COMMON --pos sine --readout cls_mean
run scratch_learned $COMMON --pos learned
run scratch_sine_keys $COMMON --pos sine_keys
