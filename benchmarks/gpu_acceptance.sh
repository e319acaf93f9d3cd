#!/usr/bin/env bash
# Issue 26's GPU acceptance benchmark, through the user's path: `python -m launcher submit` of a
# sweep of real models on this machine's GPU(s) with the workstation env profile, then `status`
# and `leaderboard`, then benchmarks/acceptance.py (fails unless every run trained on CUDA).
# On the offline GPU machine, after benchmarks/gpu_bundle.sh has unpacked the bundle into
# BUNDLE (default /tmp/g):
#   bash benchmarks/gpu_acceptance.sh plan SWEEP    # the sweep's --dry-run: which run goes where
#   bash benchmarks/gpu_acceptance.sh start SWEEP   # submit it, wait, then wait/collect
#   bash benchmarks/gpu_acceptance.sh chain [STEPS] # setsid: baseline, then sweeps one and eight
#   bash benchmarks/gpu_acceptance.sh wait SECONDS   # wait for it, at most SECONDS; report into $OUT
#   bash benchmarks/gpu_acceptance.sh profile SECONDS [PATTERN]   # py-spy a running run's process
#   bash benchmarks/gpu_acceptance.sh baseline STEPS # today's code (BASE=/tmp/base), jobs.train
# profile needs a py-spy wheel in .spy/ (git-excluded; ../shared/notes/profiling-on-the-gpu.md
# says how to download it here), carried with the call.
# ACC_BASE="  model.flex_attention: false" (YAML lines, two spaces in) adds keys to the base of
# both sweeps, e.g. the next thing to measure for issue 26 (RESULTS.md, "The user's path on one H200").
# SWEEP: one|eight|ab|optim|mb|answer|answer64. answer64: the answer-only head at micro-batch
# 64 x 1 as given (423 examples/s, 52.4 GB peak on an H100, stop 41). answer: Gemma 3 270M
# full fine-tuning alone on the card twice, train.answer_only_logits false (the full
# 262k-vocabulary logits at every position, as Unsloth's eager path computes them) against true
# (the head at the answers' tokens only, which frees the memory for a wider micro-batch): on an
# H100 in stop 41, 122 against 214 examples/s (16 x 4 against 32 x 2, the memory check then
# at half the free memory; at 80% now, true grows to 64 x 1 there).
# mb: Gemma 3 270M full fine-tuning alone on the card twice, 64 examples per step as
# micro-batch 32 x 2 (what the job grows to on an H200 since it counts eager Gemma's full
# logits: 209 examples/s, stop 39) against 64 x 1 (277 examples/s in stop 33, 73.5 GB peak).
# optim: Gemma 3 270M full fine-tuning (eager, the auto default)
# alone on the card twice, bitsandbytes' 8-bit AdamW (auto on CUDA) against torch's fused AdamW
# (eager Gemma's step is bound by kernel launches: RESULTS.md, "Eager against compiled"). ab: Gemma 3 270M full fine-tuning (2 epochs, 1,000 dev records) alone on
# the card twice, without flex attention: eager (model.compile false) and compiled (compiled with
# flex is sweep one's Gemma run). TORCH_LOGS is set to name recompiles and graph breaks, but in
# the run of 2026-12-03 nothing of it reached the job logs. one: Gemma 3 270M full fine-tuning (the README's recipe) and SmolLM2-135M
# 16-bit LoRA, one run per card at a time (per-run figures alone on the card); eight: Gemma at 4
# learning rates and SmolLM2 LoRA at the same 4, packed (runs_per_gpu auto, CUDA MPS).
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
A=/tmp/acc
mkdir -p "$A"
G=pypi:gemma-3-270m
S=pypi:smollm2-135m-instruct

write_sweep() {  # NAME RUNS_PER_GPU MORE_BASE_LINES PAIRED_YAML
    cat > "$A/env-$1.yaml" <<EOF
name: ws-$1
executor: local
gpus: auto
runs_per_gpu: $2
cuda_mps: true
time_limit_min: 60
EOF
    cat > "$A/$1.yaml" <<EOF
name: acc-$1
env: $A/env-$1.yaml
data: {train: $BUNDLE_DATA/bc5cdr/train.json, eval: $BUNDLE_DATA/bc5cdr/dev.json}
base:
  model.load_in_4bit: false
  peft.rank: 16
  peft.lora_alpha: 32
  peft.lora_dropout: 0.0
  eval.batch_size: 1024
$3
${ACC_BASE:-}
paired:
$4
EOF
}

case "${1:-}" in
start|plan)
    BUNDLE_DATA=$B/data
    # The README's Gemma recipe for 2 epochs, scored on 1,000 dev records: the A/B sweeps' base.
    GEMMA_2EP="  model.name_or_path: $G
  model.full_finetuning: true
  train.learning_rate: 1.0e-4
  train.num_epochs: 2
  eval.max_examples: 1000"
    case "${2:-one}" in
    one) write_sweep one 1 "" "  - model.name_or_path: [$G, $S]
    model.full_finetuning: [true, false]
    train.learning_rate: [1.0e-4, 1.0e-3]
    train.num_epochs: [2, 3]
    eval.max_examples: [0, 1000]" ;;
    eight) write_sweep eight auto "  eval.max_examples: 500" "  - model.name_or_path: [$G, $S]
    model.full_finetuning: [true, false]
    train.num_epochs: [2, 3]
grid:
  train.learning_rate: [5.0e-5, 1.0e-4, 2.0e-4, 5.0e-4]" ;;
    ab) write_sweep ab 1 "$GEMMA_2EP
  model.flex_attention: false
grid:
  model.compile: [false, true]" "  []"
        export TORCH_LOGS=recompiles,graph_breaks ;;  # why graphs are compiled, in the job logs
    optim) write_sweep optim 1 "$GEMMA_2EP
grid:
  train.optim: [adamw_8bit, adamw_torch_fused]" "  []" ;;
    mb) write_sweep mb 1 "$GEMMA_2EP" "  - train.per_device_batch_size: [32, 64]
    train.gradient_accumulation_steps: [2, 1]" ;;
    answer) write_sweep answer 1 "$GEMMA_2EP
grid:
  train.answer_only_logits: [false, true]" "  []" ;;
    answer64) write_sweep answer64 1 "$GEMMA_2EP
  train.answer_only_logits: true
  train.per_device_batch_size: 64
  train.gradient_accumulation_steps: 1" "  []" ;;
    *) echo "sweep one|eight|ab|optim|mb|answer|answer64" >&2; exit 2 ;;
    esac
    name=${2:-one}
    python3 -m launcher submit "$A/$name.yaml" --runs-dir "$A/runs" --dry-run
    [ "$1" = plan ] && exit 0
    ( nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used \
        --format=csv,noheader,nounits -l 1 > "$A/util-$name.csv" ) &
    echo $! > "$A/util-$name.pid"
    t0=$(date +%s.%N)
    python3 -m launcher submit "$A/$name.yaml" --runs-dir "$A/runs" > "$A/submit-$name.log" 2>&1
    echo $? > "$A/rc-$name"
    python3 -c "import time; print(round(time.time() - $t0, 1))" > "$A/wall-$name"
    kill "$(cat "$A/util-$name.pid")" 2>/dev/null
    echo "sweep $name: rc $(cat "$A/rc-$name"), $(cat "$A/wall-$name") s" ;;
chain)
    # In the background (setsid), so that it outlives the call: the baseline, then (once
    # SmolLM2's second half is kept: /tmp/b/smol-ready) the two sweeps one after the other.
    setsid bash -c "export OUT=$A/out; bash benchmarks/gpu_acceptance.sh baseline ${2:-30} > $A/baseline.out 2>&1
        while [ ! -f /tmp/b/smol-ready ]; do sleep 2; done
        bash benchmarks/gpu_bundle.sh unpack > $A/unpack.out 2>&1
        bash benchmarks/gpu_acceptance.sh start one > $A/start-one.out 2>&1
        bash benchmarks/gpu_acceptance.sh start eight > $A/start-eight.out 2>&1" \
        < /dev/null > /dev/null 2>&1 &
    echo "chain started" ;;
wait)
    deadline=$(( $(date +%s) + ${2:-500} ))
    name=${3:-one}
    while [ ! -f "$A/rc-$name" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 5; done
    tail -5 "$A/submit-$name.log"
    python3 -m launcher status acc-$name --runs-dir "$A/runs" | tee "$OUT/status-$name.txt"
    if [ -f "$A/rc-$name" ]; then
        kill "$(cat "$A/util-$name.pid")" 2>/dev/null
        python3 -m launcher leaderboard acc-$name --runs-dir "$A/runs" | tee "$OUT/leaderboard-$name.md"
        python3 benchmarks/acceptance.py --sweep-dir "$A/runs/acc-$name" --util "$A/util-$name.csv" \
            --wall-s "$(cat "$A/wall-$name")" --out "$OUT/acceptance-$name"
        echo "acceptance rc $?"
        # The jobs' own logs live in the private job files (core.rundir.job_files_dir).
        mkdir -p "$A/joblogs-$name"
        cp "${MEDSWEEP_JOB_FILES:-$HOME/.cache/medsweep/jobs}"/acc-$name-*/*/*.err \
            "$A/joblogs-$name/" 2>/dev/null
        tar czf "$OUT/runs-$name.tgz" -C "$A" "util-$name.csv" "submit-$name.log" \
            $(cd "$A" && ls runs/acc-$name/*/adapter/medsweep_train.json \
              runs/acc-$name/*/results/performance.json runs/acc-$name/*/job.json \
              runs/acc-$name/*/error.json joblogs-$name/*.err \
              runs/acc-$name/*/logs/*.log out/* baseline.out start-*.out 2>/dev/null)
    else
        echo "still running"
    fi ;;
profile)
    # Once a run reports PHASE (train / evaluate) at step 3 or later, py-spy its process (the
    # youngest submitit job process or packed run) for SECONDS.
    secs=${2:-30}
    phase=${3:-train}
    for _ in $(seq 1 ${4:-120}); do
        grep -ls "\"phase\": \"$phase\"" "$A"/runs/*/*/progress.json >/dev/null 2>&1 && \
            python3 - "$phase" "$A" <<'PY' && break
import glob, json, sys
ok = any(json.load(open(f)).get("phase") == sys.argv[1] and json.load(open(f)).get("step", 0) >= 3
         for f in glob.glob(sys.argv[2] + "/runs/*/*/progress.json"))
sys.exit(0 if ok else 1)
PY
        sleep 2
    done
    pid=$(pgrep -f "submitit.core._submit|jobs.pack /" | while read -r p; do
        echo "$(ps -o etimes= -p "$p" 2>/dev/null | tr -d ' ') $p"; done | sort -n | head -1 | cut -d' ' -f2)
    [ -n "$pid" ] || { echo "no run process"; exit 1; }
    python3 -m pip install -q --no-index --no-deps --target /tmp/spy .spy/*.whl 2>/dev/null
    /tmp/spy/bin/py-spy record -p "$pid" -d "$secs" -r 50 --format raw --nonblocking \
        --subprocesses -o "$OUT/prof-$(date +%H%M%S).txt" ;;
baseline)
    # Today's code (c81f95d, unpacked in BASE) on the same recipe, its own job CLI, alone.
    steps=${2:-40}
    base=${BASE:-/tmp/base}
    ( nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used \
        --format=csv,noheader,nounits -l 1 > "$A/util-base.csv" ) &
    mon=$!
    mkdir -p "$OUT"
    (cd "$base" && PYTHONPATH="/tmp/pk:$B/site:$base" python3 -m jobs.train \
        --train-dataset-file "$B/data/bc5cdr/train.json" --output-dir "$A/base-model" \
        --model-name $G --model-load-in-4bit false --model-full-finetuning true \
        --train-learning-rate 1e-4 --train-num-epochs 2 --train-max-steps "$steps" \
        --train-save-steps 14) > "$A/base.log" 2>&1
    echo "baseline rc $?"
    kill $mon
    tail -3 "$A/base.log"
    cp "$A/base.log" "$A/util-base.csv" "$OUT/" 2>/dev/null
    cp "$A/base-model/medsweep_train.json" "$OUT/base-train.json" 2>/dev/null ;;
*) echo "usage: bash benchmarks/gpu_acceptance.sh {start one|eight|wait S [one|eight]|profile S|baseline STEPS}" >&2
   exit 2 ;;
esac
