#!/bin/bash
# Fourth sweep: the first recipe whose twins leave ln 2 (sine + [CLS]+mean-words MLP readout + grounding +
# side twins + init std 0.08), twice as long; then the smallest production change (the package's [CLS]
# linear ITM head, init std 0.08 only). One probe at a time, one thread.
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
while [ -n "${WAIT_PID:-}" ] && kill -0 "$WAIT_PID" 2>/dev/null; do sleep 5; done
P="experiments/twin_recipe/probe.py"
EV="--batch 16 --eval-every 400 --eval-types count,colour,spatial,binding,side"
ALL="side,spatial,binding,colour,count"
run() { name=$1; shift; echo "=== $name $(date -u +%H:%M:%S)"; .venv/bin/python $P --name "$name" "$@" 2>&1 | grep --line-buffered -v -i "warn\|detach\|opt.step"; }
run scratch_sine_mlp_ground_side_init08_1600 $EV --steps 1600 --max-cpu-s 700 --pos sine --readout cls_mean_mlp --ground-weight 1 --types $ALL --init-std 0.08
run scratch_sine_cls_ground_side_init08 $EV --steps 800 --max-cpu-s 330 --pos sine --readout cls --ground-weight 1 --types $ALL --init-std 0.08
