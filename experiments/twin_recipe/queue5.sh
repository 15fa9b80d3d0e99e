#!/bin/bash
# Fifth sweep: the recipe of queue4 under the fine-tuning protocol (600 steps without twins, then 600 with),
# and without the grounding loss. One probe at a time, one thread.
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
while [ -n "${WAIT_PID:-}" ] && kill -0 "$WAIT_PID" 2>/dev/null; do sleep 5; done
P="experiments/twin_recipe/probe.py"
EV="--batch 16 --eval-every 400 --eval-types count,colour,spatial,binding,side"
ALL="side,spatial,binding,colour,count"
R="--pos sine --readout cls_mean_mlp --types $ALL --init-std 0.08"
run() { name=$1; shift; echo "=== $name $(date -u +%H:%M:%S)"; .venv/bin/python $P --name "$name" "$@" 2>&1 | grep --line-buffered -v -i "warn\|detach\|opt.step"; }
run scratch_sine_mlp_side_init08_noground $EV --steps 800 --max-cpu-s 330 $R
run finetune600_sine_mlp_ground_side_init08 $EV --steps 1200 --quad-start 600 --max-cpu-s 500 $R --ground-weight 1
