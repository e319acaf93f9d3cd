#!/usr/bin/env bash
# Issue 29's benchmark (successive halving against the full grid, SmolLM2-135M LoRA, 12
# recipes) and issue 28's Gemma 3 270M recipe search on BC5CDR, through `python -m launcher
# submit` with a local GPU profile, on the offline GPU machine after benchmarks/gpu_bundle.sh
# has unpacked the bundle into BUNDLE (default /tmp/g):
#   bash benchmarks/gpu_search.sh chain [NAMES]   # setsid: prepare, then each sweep in turn
#                                                 # (default: search grid gemma)
#   bash benchmarks/gpu_search.sh wait SECONDS NAME   # wait for one, at most SECONDS; report
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
        for n in $names; do bash benchmarks/gpu_search.sh run \$n > $S/run-\$n.out 2>&1; done" \
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
*) echo "usage: bash benchmarks/gpu_search.sh {chain [NAMES]|wait SECONDS NAME}" >&2; exit 2 ;;
esac
