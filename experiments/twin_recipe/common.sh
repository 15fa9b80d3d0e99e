# Shared preamble of the queue*.sh sweeps: one probe at a time, on one thread, from the repository root;
# each run appends one JSON line to runs.jsonl. Set WAIT_PID to start after another sweep's process ends.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
while [ -n "${WAIT_PID:-}" ] && kill -0 "$WAIT_PID" 2>/dev/null; do sleep 5; done
P="experiments/twin_recipe/probe.py"
EV="--batch 16 --eval-every 400 --eval-types count,colour,spatial,binding,side"
ALL="side,spatial,binding,colour,count"
run() { name=$1; shift; echo "=== $name $(date -u +%H:%M:%S)"; .venv/bin/python $P --name "$name" "$@" 2>&1 | grep --line-buffered -v -i "warn\|detach\|opt.step"; }
