#!/usr/bin/env bash
# Issue 29's benchmark (successive halving against the full grid, SmolLM2-135M LoRA, 12
# recipes) and issue 28's Gemma 3 270M recipe search on BC5CDR, through `python -m launcher
# submit` with a local GPU profile, on the offline GPU machine after benchmarks/gpu_bundle.sh
# has unpacked the bundle into BUNDLE (default /tmp/g):
#   bash benchmarks/gpu_search.sh chain [NAMES]   # setsid: prepare, then each sweep in turn
#                                                 # (default: search grid gemma)
#   bash benchmarks/gpu_search.sh wait SECONDS NAME   # wait for one, at most SECONDS; report
#   bash benchmarks/gpu_search.sh evalab              # the Gemma winner on the whole dev split,
#                                                     # flex attention on / off (the chain ends so)
# Reports go to $OUT: submit log, status, leaderboard, search.json, report-NAME.json
# (benchmarks/search_bench.py report), nvidia-smi samples.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
S=/tmp/srch
mkdir -p "$S"
case "${1:-}" in
chain)
    names=${2:-search grid gemma}
    setsid bash -c "python3 benchmarks/search_bench.py prepare --data $B/data --out $S > $S/prepare.out 2>&1
        for n in $names; do bash benchmarks/gpu_search.sh run \$n > $S/run-\$n.out 2>&1; done
        bash benchmarks/gpu_search.sh evalab > $S/evalab.out 2>&1; touch $S/chain-done" \
        < /dev/null > /dev/null 2>&1 &
    echo "chain started: $names" ;;
run)
    name=$2
    python3 -m launcher submit "$S/$name.yaml" --runs-dir "$S/runs" --dry-run > "$S/plan-$name.txt" 2>&1
    ( nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used \
        --format=csv,noheader,nounits -l 1 > "$S/util-$name.csv" ) &
    mon=$!
    t0=$(date +%s.%N)
    python3 -m launcher submit "$S/$name.yaml" --runs-dir "$S/runs" > "$S/submit-$name.log" 2>&1
    echo $? > "$S/rc-$name.tmp"
    python3 -c "import time; print(round(time.time() - $t0, 1))" > "$S/wall-$name"
    kill $mon 2>/dev/null
    mv "$S/rc-$name.tmp" "$S/rc-$name" ;;
wait)
    deadline=$(( $(date +%s) + ${2:-500} ))
    name=${3:-search}
    while [ ! -f "$S/rc-$name" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 5; done
    mkdir -p "$OUT"
    folder=$(ls -d "$S"/runs/*-"$name"* "$S"/runs/"$name"-* 2>/dev/null | head -1)
    [ -n "$folder" ] || folder=$(ls -d "$S"/runs/* 2>/dev/null | grep -- "$name" | head -1)
    cp "$S/plan-$name.txt" "$OUT/" 2>/dev/null
    tail -4 "$S/submit-$name.log" 2>/dev/null
    [ -n "$folder" ] && python3 -m launcher status "$folder" > "$OUT/status-$name.txt" 2>&1
    if [ -f "$S/rc-$name" ]; then
        echo "rc $(cat "$S/rc-$name"), wall $(cat "$S/wall-$name") s"
        python3 -m launcher leaderboard "$folder" > "$OUT/leaderboard-$name.md" 2>&1
        python3 benchmarks/search_bench.py report "$folder" --wall-s "$(cat "$S/wall-$name")" \
            --out "$OUT/report-$name.json"
        cp "$S/submit-$name.log" "$S/util-$name.csv" "$OUT/" 2>/dev/null
        cp "$folder/search.json" "$OUT/search-$name.json" 2>/dev/null
        mkdir -p "$S/joblogs-$name"
        cp "${MEDSWEEP_JOB_FILES:-$HOME/.cache/medsweep/jobs}"/$(basename "$folder")-*/*/*.err \
            "$S/joblogs-$name/" 2>/dev/null
        tar czf "$OUT/runs-$name.tgz" -C "$S" $(cd "$S" && ls runs/*/*/adapter/medsweep_train.json \
            runs/*/*/logs/*.log joblogs-$name/*.err runs/*/*/error.json 2>/dev/null | grep -- "$name")
    else
        echo "still running"; tail -3 "$OUT/status-$name.txt" 2>/dev/null
    fi ;;
evalab)
    # The Gemma search's winner on the first 1,000 dev records through jobs.evaluate: as trained (flex
    # attention, unique pairs), then with UNSLOTH_ENABLE_FLEX_ATTENTION=0 counting every
    # mention (--eval-unique-entities false): the raw answers must be the same, the speed may
    # not (issue 26's next step), and the second gives the mention-level scores (issue 28).
    folder=$(ls -d "$S"/runs/recipes-gemma-* | head -1)
    winner=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print([r for r, w in d['rungs'][-1]['stopped'].items() if w.startswith('finished')][0])" "$folder/search.json")
    dev=$B/data/bc5cdr/dev.json
    python3 -m jobs.evaluate --eval-dataset-file "$dev" --results-dir "$S/full-flex" \
        --model-dir "$folder/$winner/adapter" --eval-batch-size 1024 --eval-max-examples 1000 > "$S/full-flex.log" 2>&1
    UNSLOTH_ENABLE_FLEX_ATTENTION=0 python3 -m jobs.evaluate --eval-dataset-file "$dev" \
        --results-dir "$S/full-noflex" --model-dir "$folder/$winner/adapter" \
        --eval-batch-size 1024 --eval-max-examples 1000 --eval-unique-entities false > "$S/full-noflex.log" 2>&1
    python3 - "$S" > "$S/evalab.json" <<'PY'
import json, sys
s = sys.argv[1]
out = {}
for name in ("full-flex", "full-noflex"):
    try:
        p = json.load(open(f"{s}/{name}/performance.json"))
        out[name] = {"exact_f1": p["metrics"]["total"]["exact"]["f1"], "ci95": p.get("ci95", {}).get("exact"),
                     "records_per_s": p["timings"]["records_per_s"], "eval_s": p["timings"]["eval_s"],
                     "records": p["num_examples"], "parse_fail": p["parse"]["failure_rate"],
                     "unique": p["config"]["eval"]["unique_entities"]}
    except (OSError, KeyError, ValueError) as exc:
        out[name] = {"error": repr(exc)}
try:
    a = json.load(open(f"{s}/full-flex/true_pred_entities.json"))
    b = json.load(open(f"{s}/full-noflex/true_pred_entities.json"))
    ra, rb = a.get("raw_outputs") or [], b.get("raw_outputs") or []
    out["same_raw_answers"] = sum(x == y for x, y in zip(ra, rb))
    out["raw_answers"] = len(ra)
except (OSError, ValueError) as exc:
    out["compare_error"] = repr(exc)
print(json.dumps(out, indent=2))
PY
    cp "$S/evalab.json" "$S/full-flex.log" "$S/full-noflex.log" "$OUT/" 2>/dev/null
    cat "$S/evalab.json" ;;
*) echo "usage: bash benchmarks/gpu_search.sh {chain [NAMES]|wait SECONDS NAME|evalab}" >&2; exit 2 ;;
esac
