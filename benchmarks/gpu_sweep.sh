#!/usr/bin/env bash
# On the offline GPU machine: benchmarks/sweep_throughput.py (packed vs one run after another)
# with the bundle of benchmarks/gpu_bundle.sh.
#   BUNDLE=/tmp/g bash benchmarks/gpu_sweep.sh [sweep_throughput.py flags...]
# Writes $OUT/sweep_throughput.json, $OUT/sweep.log and $OUT/sweep-logs.tgz (every run's log and
# training summary). Modes run by earlier calls on /tmp/sweep are kept in the json.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$OUT/gpu.txt"
python3 benchmarks/sweep_throughput.py --train "$B/data/bc5cdr/train.json" \
    --dev "$B/data/bc5cdr/dev.json" --out /tmp/sweep "$@" 2>&1 | tee "$OUT/sweep.log" | tail -8
cp /tmp/sweep/sweep_throughput.json "$OUT/" 2>/dev/null
(cd /tmp/sweep && tar czf "$OUT/sweep-logs.tgz" --ignore-failed-read */*/logs */*/pack.log \
    */*/adapter/medsweep_train.json 2>/dev/null)
