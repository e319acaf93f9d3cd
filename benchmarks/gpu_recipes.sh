#!/usr/bin/env bash
# On the offline GPU machine: a recipe sweep through the user's path (`python -m launcher submit
# SWEEP --env workstation`), then `status` and `leaderboard`; and an evaluation A/B of two commits
# of jobs.evaluate on one trained model. Run from a copy of the repository (the device tool
# re-syncs its own tree each call) after benchmarks/gpu_bundle.sh has unpacked the bundle:
#   bash benchmarks/gpu_recipes.sh start sweeps/experiments/recipes-context.yaml [MORE.yaml]  # setsid, returns
#   bash benchmarks/gpu_recipes.sh wait SECONDS            # waits at most SECONDS; results -> $OUT
#   OLD=/tmp/repo-old bash benchmarks/gpu_recipes.sh evalab MODEL_DIR DEV_JSON
# Here, in the same step that fetches a wait's files (they come back outside the checkout and
# do not outlive the session: stop 37 lost a whole sweep's so):
#   bash benchmarks/gpu_recipes.sh collect FILES_AT recipes-<commit>   # -> benchmarks/results/
# The sweep's data paths (data/CORPUS/...) resolve through a `data` link to the bundle's data.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = collect ]; then
    src=${2:?give the folder the files of the device call came back to}
    dest=benchmarks/results/${3:?give the results folder name, e.g. recipes-<commit>}
    mkdir -p "$dest" && cp -r "$src"/. "$dest"/ && ls -l "$dest"
    exit $?
fi
source benchmarks/gpu_env.sh
R=/tmp/rec
mkdir -p "$R"
case "${1:-}" in
start)
    ln -sfn "$B/data" data
    shift
    [ $# -gt 0 ] || { echo "give the sweep file(s)" >&2; exit 2; }
    : > "$R/names"
    for sweep in "$@"; do grep -m1 '^name:' "$sweep" | awk '{print $2}' >> "$R/names"; done
    # The sweeps one after another (each packs its runs on the card), one wall time each.
    setsid bash -c "
        nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits \
            -l 2 > $R/util.csv & mon=\$!
        rc=0
        for sweep in $*; do
            name=\$(grep -m1 '^name:' \$sweep | awk '{print \$2}')
            t0=\$(date +%s)
            python3 -m launcher submit \$sweep --env workstation --runs-dir $R/runs \
                > $R/submit-\$name.log 2>&1 || rc=\$?
            echo \$(( \$(date +%s) - t0 )) > $R/wall-\$name
        done
        echo \$rc > $R/rc; kill \$mon" \
        < /dev/null > /dev/null 2>&1 &
    echo "started $(tr '\n' ' ' < "$R/names")" ;;
wait)
    deadline=$(( $(date +%s) + ${2:-500} ))
    while [ ! -f "$R/rc" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 5; done
    for name in $(cat "$R/names"); do
        python3 -m launcher status "$name" --runs-dir "$R/runs" | tee "$OUT/status-$name.txt"
    done
    [ -f "$R/rc" ] || { echo "still running"; exit 0; }
    for name in $(cat "$R/names"); do
        echo "$name: wall $(cat "$R/wall-$name") s"
        python3 -m launcher leaderboard "$name" --runs-dir "$R/runs" | tee "$OUT/leaderboard-$name.md"
    done
    echo "submit rc $(cat "$R/rc")"
    tar czf "$OUT/runs.tgz" -C "$R" util.csv $(cd "$R" && ls submit-*.log wall-*) \
        $(cd "$R" && ls runs/*/*/adapter/medsweep_train.json runs/*/*/results/performance.json \
          runs/*/*/results/true_pred_entities.json runs/*/*/job.json runs/*/*/error.json \
          2>/dev/null) ;;
evalab)
    model=${2:?give the model folder}; dev=${3:?give the dev split}
    for side in old new; do
        code=$PWD; [ "$side" = old ] && code=${OLD:?set OLD to the old commit\'s tree}
        t0=$(date +%s)
        (cd "$code" && PYTHONPATH="/tmp/pk:$B/site:$code" python3 -m jobs.evaluate \
            --model-dir "$model" --eval-dataset-file "$dev" --results-dir "$R/ab-$side" \
            --eval-batch-size 1024) > "$R/ab-$side.log" 2>&1
        echo "$side rc $? $(( $(date +%s) - t0 )) s"
        cp "$R/ab-$side/performance.json" "$OUT/ab-$side-performance.json"
        gzip -c "$R/ab-$side/true_pred_entities.json" > "$OUT/ab-$side-true_pred.json.gz"
        tail -c 3000 "$R/ab-$side.log" > "$OUT/ab-$side.log"
    done ;;
*) echo "usage: bash benchmarks/gpu_recipes.sh {start SWEEP...|wait SECONDS|evalab MODEL_DIR DEV|collect FILES_AT NAME}" >&2
   exit 2 ;;
esac
