#!/usr/bin/env bash
# Entry point on the offline GPU machine (one H100 here): the GPU test tier and the benchmarks.
#   bash benchmarks/gpu_run.sh tests|tests-modes|tests-rest|train1b|train8b|eval
# Needs .gpu/site (bash ../shared/gpu/pack-gpu-site.sh .gpu/site) and the BC5CDR split in
# .gpu/data/bc5cdr/{train,dev}.json; writes logs and results under $OUT (default /tmp/out).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/.gpu/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
export HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 WANDB_DISABLED=true WANDB_MODE=disabled
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_HOME=/tmp/hf
export PYTHONWARNINGS=ignore::SyntaxWarning
# Compile caches: on a cluster these belong on shared storage (see envs/slurm.yaml).
export UNSLOTH_COMPILE_LOCATION=/tmp/cache/unsloth TORCHINDUCTOR_CACHE_DIR=/tmp/cache/inductor
export TRITON_CACHE_DIR=/tmp/cache/triton
export MEDSWEEP_SHARED_DATA="$PWD/.gpu/data"
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$OUT/gpu.txt"
D=.gpu/data/bc5cdr
case "${1:-}" in
    tests) python3 -m pytest -m gpu -v -s -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.log" ;;
    tests-modes) python3 -m pytest -m gpu -v -s -p no:cacheprovider tests/test_gpu.py -k each_mode 2>&1 | tee "$OUT/gpu-tests-modes.log" ;;
    tests-rest) python3 -m pytest -m gpu -v -s -p no:cacheprovider tests/test_gpu.py -k "not each_mode" 2>&1 | tee "$OUT/gpu-tests-rest.log" ;;
    train1b) python3 benchmarks/train_speed.py --data $D/train.json --shape 1b --records 1536 \
                 --ranks 8,16 --stacks a,a64,b,c --out /tmp/ts1b --rows "$OUT/train_1b.jsonl" \
                 --result "$OUT/train_speed_1b.json" 2>&1 | tail -n 200 > "$OUT/train1b.log"
             cp /tmp/ts1b/*.log "$OUT/" 2>/dev/null ;;
    train8b) python3 benchmarks/train_speed.py --data $D/train.json --shape 8b --records 512 \
                 --ranks "${RANKS:-8,16}" --stacks "${STACKS:-a,b,c}" --out /tmp/ts8b \
                 --rows "$OUT/train_8b.jsonl" --result "$OUT/train_speed_8b.json" \
                 2>&1 | tail -n 200 > "$OUT/train8b.log"
             cp /tmp/ts8b/unsloth.log "$OUT/unsloth8b.log" 2>/dev/null
             cp /tmp/ts8b/hf.log "$OUT/hf8b.log" 2>/dev/null ;;
    eval) python3 benchmarks/eval_speed.py --train $D/train.json --dev $D/dev.json --out /tmp/es \
              --records 1000 --batch-size 64 --seed-deadline-s "${SEED_DEADLINE:-200}" \
              2>&1 | grep -vE "it/s\]|'loss'" | tail -n 300 > "$OUT/eval.log"
          cp /tmp/es/eval_speed.json "$OUT/" 2>/dev/null ;;
    *) echo "usage: $0 tests|tests-modes|tests-rest|train1b|train8b|eval" >&2; exit 2 ;;
esac
