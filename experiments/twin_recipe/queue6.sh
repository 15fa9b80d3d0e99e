#!/bin/bash
# Sixth sweep (replaces the rest of queue5): the MLP readout at BERT's init (is the init needed?), then the
# fine-tuning protocol (500 steps without twins, then 500 with), both with sine + grounding + side twins.
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
while [ -n "${WAIT_PID:-}" ] && kill -0 "$WAIT_PID" 2>/dev/null; do sleep 5; done
P="experiments/twin_recipe/probe.py"
EV="--batch 16 --eval-every 400 --eval-types count,colour,spatial,binding,side"
ALL="side,spatial,binding,colour,count"
run() { name=$1; shift; echo "=== $name $(date -u +%H:%M:%S)"; .venv/bin/python $P --name "$name" "$@" 2>&1 | grep --line-buffered -v -i "warn\|detach\|opt.step"; }
run scratch_sine_mlp_ground_side $EV --steps 800 --max-cpu-s 330 --pos sine --readout cls_mean_mlp --types $ALL --ground-weight 1
run finetune500_sine_mlp_ground_side_init08 $EV --steps 1000 --quad-start 500 --max-cpu-s 400 --pos sine --readout cls_mean_mlp --types $ALL --init-std 0.08 --ground-weight 1
