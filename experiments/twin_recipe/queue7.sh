#!/bin/bash
# Seventh sweep: where the positions go, in the recipe that leaves ln 2 (MLP readout, grounding, side twins,
# init std 0.08): DETR-style sine on the keys of every fusion layer (values carry no position), then learned.
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
while [ -n "${WAIT_PID:-}" ] && kill -0 "$WAIT_PID" 2>/dev/null; do sleep 5; done
P="experiments/twin_recipe/probe.py"
EV="--batch 16 --eval-every 400 --eval-types count,colour,spatial,binding,side"
ALL="side,spatial,binding,colour,count"
R="--steps 800 --max-cpu-s 330 --readout cls_mean_mlp --types $ALL --init-std 0.08 --ground-weight 1"
run() { name=$1; shift; echo "=== $name $(date -u +%H:%M:%S)"; .venv/bin/python $P --name "$name" "$@" 2>&1 | grep --line-buffered -v -i "warn\|detach\|opt.step"; }
run scratch_sinekeys_mlp_ground_side_init08 $EV $R --pos sine_keys
run scratch_learned_mlp_ground_side_init08 $EV $R --pos learned
