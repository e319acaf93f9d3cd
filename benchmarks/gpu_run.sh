#!/usr/bin/env bash
# Entry point on the offline GPU machine (one H100 here): the GPU test tier and the benchmarks.
#   K="each_mode and gemma" bash benchmarks/gpu_run.sh tests      (the GPU test tier, or part)
#   KS="gemma and 8bit;gemma and 16bit-lora;gemma and full" bash benchmarks/gpu_run.sh tests
#                                                      (selections run side by side;
#                                                       "1@expr" pins one to GPU 1)
#   SHAPE=8b RECORDS=512 STACKS=a,b,c RANKS=8,16 bash benchmarks/gpu_run.sh train
#   bash benchmarks/gpu_run.sh eval
# Needs .gpu/site (bash ../shared/gpu/pack-gpu-site.sh .gpu/site) and the BC5CDR split in
# .gpu/data/bc5cdr/{train,dev}.json; writes logs and results under $OUT (default /tmp/out).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/.gpu/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
export HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 WANDB_DISABLED=true WANDB_MODE=disabled
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_HOME=/tmp/hf
export PYTHONWARNINGS=ignore::SyntaxWarning
# Compile caches: on a cluster these belong on shared storage (see envs/slurm.yaml). Here they
# sit in an ignored folder of the working tree, which the device tool keeps between the calls
# of one warm machine.
C="$PWD/.gpucache"
export UNSLOTH_COMPILE_LOCATION=$C/unsloth TORCHINDUCTOR_CACHE_DIR=$C/inductor
export TRITON_CACHE_DIR=$C/triton
export MEDSWEEP_SHARED_DATA="$PWD/.gpu/data"
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$OUT/gpu.txt"
D=.gpu/data/bc5cdr
# Every mode stops itself BUDGET seconds in (default 570, under the device tool's 600-s call)
# and still copies what it has.
BUDGET="${BUDGET:-570}"
case "${1:-}" in
    tests) if [ -n "${KS:-}" ]; then
               # Several -k selections at once, one pytest process each: the GPU has room for
               # them, and their compiles (Gemma 3: minutes each) use different CPU cores.
               i=0; IFS=';' read -ra SEL <<< "$KS"
               for k in "${SEL[@]}"; do
                   i=$((i + 1))
                   # "0@expr": this selection sees only GPU 0 (CUDA_VISIBLE_DEVICES), so a
                   # multi-GPU machine runs one-GPU tests and the split test side by side.
                   gpus=""; if [[ "$k" =~ ^([0-9,]+)@(.*)$ ]]; then
                       gpus="${BASH_REMATCH[1]}"; k="${BASH_REMATCH[2]}"; fi
                   ${gpus:+env CUDA_VISIBLE_DEVICES=$gpus} timeout "$BUDGET" python3 -m pytest -m gpu -v -s -p no:cacheprovider \
                       tests/test_gpu.py -k "$k" 2>&1 | grep -vE "it/s\]|^\{'loss'" \
                       > "$OUT/gpu-tests${TAG:+-$TAG}-$i.log" &
               done
               wait
               grep -hE "(PASSED|FAILED|ERROR)$|passed|failed" "$OUT"/gpu-tests${TAG:+-$TAG}-*.log
           else
               timeout "$BUDGET" python3 -m pytest -m gpu -v -s -p no:cacheprovider tests/test_gpu.py \
                   ${K:+-k "$K"} 2>&1 | grep -vE "it/s\]|^\{'loss'" | tee "$OUT/gpu-tests${TAG:+-$TAG}.log"
           fi ;;
    train) SHAPE="${SHAPE:-1b}"
           timeout "$BUDGET" python3 benchmarks/train_speed.py --data $D/train.json \
               --shape "$SHAPE" --records "${RECORDS:-1536}" --ranks "${RANKS:-8}" \
               --stacks "${STACKS:-a,a16,a32,a64,b,c}" --profile "${PROFILE:-}" \
               --deadline-s $((BUDGET - 20)) \
               --out "/tmp/ts$SHAPE" --rows "$OUT/train_$SHAPE.jsonl" \
               --result "$OUT/train_speed_$SHAPE.json" 2>&1 | tail -n 200 > "$OUT/train$SHAPE.log"
           mkdir -p "$OUT/logs$SHAPE"
           cp /tmp/ts"$SHAPE"/*.log /tmp/ts"$SHAPE"/profile_*.txt "$OUT/logs$SHAPE/" 2>/dev/null
           for f in "$OUT/logs$SHAPE"/*.log; do tail -c 20000 "$f" > "$f.tail" && mv "$f.tail" "$f"; done ;;
    eval) timeout "$BUDGET" python3 benchmarks/eval_speed.py --train $D/train.json --dev $D/dev.json \
              --out /tmp/es --records 1000 --batch-size 64 --seed-deadline-s "${SEED_DEADLINE:-200}" \
              2>&1 | grep -vE "it/s\]|'loss'" | tail -n 300 > "$OUT/eval.log"
          cp /tmp/es/eval_speed.json "$OUT/" 2>/dev/null ;;
    *) echo "usage: [K=pytest-k TAG=name] $0 tests | [SHAPE= STACKS= RANKS= RECORDS= PROFILE=] $0 train | $0 eval" >&2
       exit 2 ;;
esac
