#!/usr/bin/env bash
# Issue 46's decoding benchmark, on the offline GPU machine (after benchmarks/gpu_bundle.sh
# unpack), through the user's entry points:
#   1. `python -m launcher submit` of a shipped recipe (sweeps/best-CORPUS.yaml, workstation
#      profile) cut to STEPS optimizer steps (a model that answers in the recipe's format; the
#      recipe's own F1 needs its 4 epochs), evaluated there with eval.decoder auto;
#   2. `python -m jobs.evaluate` of that model on the whole dev split, once with
#      --eval-decoder generate (transformers' generate: the code before this change, the
#      baseline) and once with auto (the static cache and captured CUDA graph step), each in a
#      process of its own, with nvidia-smi sampling the card every second;
#   3. the same two on the first 1,024 dev records under torch.profiler
#      (MEDSWEEP_TORCH_PROFILE): prof-CORPUS-DECODER.txt.
#   bash benchmarks/decode_bench.sh chain "tests bc5cdr maccrobat" [STEPS]   # setsid, in order
#                                  (tests: the GPU tier's static-decoder and kept-model tests,
#                                  and `python -X importtime -c "import unsloth"`)
#   bash benchmarks/decode_bench.sh wait SECONDS                        # then tar to $OUT
#   python benchmarks/decode_summary.py DIR                             # the table, here
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
W=/tmp/db
mkdir -p "$W"
write() {  # CORPUS STEPS
    python3 - "$W" "$B/data/$1" "$1" "$2" <<'PY'
import sys, yaml, pathlib
w, data, corpus, steps = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
env = yaml.safe_load(open("envs/workstation.yaml"))
env.update(name=f"db-{corpus}", runs_dir=str(w / "runs"))
(w / f"env-{corpus}.yaml").write_text(yaml.safe_dump(env))
doc = yaml.safe_load(open(f"sweeps/best-{corpus.replace('_', '-')}.yaml"))
doc.update(name=f"db-{corpus}", env=str(w / f"env-{corpus}.yaml"),
           data={"train": f"{data}/train.json", "eval": f"{data}/dev.json"})
doc["base"]["train.max_steps"] = steps
(w / f"{corpus}.yaml").write_text(yaml.safe_dump(doc))
PY
}
evaluate() {  # CORPUS MODEL_DIR DECODER TAG [MORE FLAGS]
    local c=$1 m=$2 d=$3 tag=$4
    shift 4
    ( nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
        --format=csv,noheader,nounits -l 1 > "$W/util-$tag.csv" ) &
    local mon=$!
    # The recipe's own evaluation keys: a model folder records its training keys only.
    python3 -m jobs.evaluate --model-dir "$m" --results-dir "$W/ev-$tag" \
        --eval-dataset-file "$B/data/$c/dev.json" --eval-decoder "$d" \
        --eval-batch-size 1024 --eval-max-item-repeats 1 "$@" \
        > "$W/eval-$tag.log" 2>&1
    echo $? > "$W/rc-$tag"
    kill $mon 2>/dev/null
}
case "${1:-}" in
tests)  # the GPU tier's static-decoder and kept-model tests; Unsloth's import, by module
    MEDSWEEP_SHARED_DATA="$B/data" python3 -m pytest -p no:cacheprovider -m gpu -s -q \
        tests/test_gpu.py -k "static_decoder and llama or kept_model" > "$W/gputests.log" 2>&1
    echo $? > "$W/rc-gputests"
    python3 -X importtime -c "import unsloth" 2> "$W/importtime.txt" > /dev/null
    echo $? > "$W/rc-importtime" ;;
run)  # CORPUS STEPS
    c=$2
    write "$c" "${3:-150}"
    t0=$(date +%s.%N)
    python3 -m launcher submit "$W/$c.yaml" > "$W/submit-$c.log" 2>&1
    echo $? > "$W/rc-submit-$c"
    python3 -c "import time; print(round(time.time() - $t0, 1))" > "$W/wall-submit-$c"
    bash benchmarks/decode_bench.sh evals "$c" ;;
evals)  # CORPUS: the evaluations of the model its run trained
    c=$2
    run=$(ls -d "$W"/runs/db-"$c"/*/ | head -1)
    for d in generate auto; do evaluate "$c" "$run/adapter" "$d" "$c-$d"; done
    for d in generate auto; do
        MEDSWEEP_TORCH_PROFILE="$W/prof-$c-$d.txt" evaluate "$c" "$run/adapter" "$d" \
            "prof-$c-$d" --eval-max-examples 1024
    done ;;
chain)
    setsid bash -c "for c in ${2:-bc5cdr maccrobat}; do if [ \$c = tests ]; then \
        bash benchmarks/decode_bench.sh tests > $W/run-tests.out 2>&1; else \
        bash benchmarks/decode_bench.sh ${4:-run} \$c ${3:-150} > $W/run-\$c.out 2>&1; fi; \
        done; touch $W/chain-done" \
        < /dev/null > /dev/null 2>&1 &
    echo "chain started: ${2:-bc5cdr maccrobat}" ;;
wait)
    deadline=$(( $(date +%s) + ${2:-500} ))
    while [ ! -f "$W/chain-done" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 5; done
    ls "$W"; for f in "$W"/rc-*; do echo "$(basename "$f"): $(cat "$f")"; done
    mkdir -p "$OUT"
    (cd "$W" && tar czf "$OUT/db.tgz" --exclude='*.safetensors' --exclude='checkpoints' \
        --exclude='*.bin' --exclude='*.pt' *.txt *.log *.csv *.out wall-* rc-* *.yaml \
        ev-*/performance.json ev-*/true_pred_entities.json \
        runs/*/*/adapter/medsweep_train.json runs/*/*/results/performance.json \
        runs/*/*/error.json 2>/dev/null)
    ls -l "$OUT" ;;
*) echo "usage: bash benchmarks/decode_bench.sh {chain [CORPORA] [STEPS]|run CORPUS STEPS|wait SECONDS}" >&2
   exit 2 ;;
esac
