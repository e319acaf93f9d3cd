#!/usr/bin/env bash
# Issue 44's benchmark: six Gemma 3 270M full fine-tuning recipes (learning rates 2e-5 ... 1e-3)
# on NCBI-disease, 64 examples per step, through `python -m launcher submit` with the
# workstation profile, on the offline GPU machine (after benchmarks/gpu_bundle.sh unpack):
#   grid-cold   the full grid at 4 epochs, warm_workers: false (a process per run or pack:
#               the launcher path before warm workers, the baseline)
#   grid        the same grid in warm workers
#   asha        search: {strategy: asha, rungs: [1, 2, 4], keep: 1/3} in warm workers
#   sh          the same rungs, strategy successive-halving, in warm workers
#   grid24      24 small runs (the six learning rates x 4 seeds, one epoch each) in warm workers;
#               then python benchmarks/warm_outside.py runs/wb-grid24 util-grid24.csv wall-grid24
#               gives the share of wall time outside training loops and of busy GPU samples
#   bash benchmarks/warm_bench.sh chain "grid asha grid-cold"   # setsid, one after another
#   bash benchmarks/warm_bench.sh wait SECONDS                   # then tar the results to $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
W=/tmp/wb
mkdir -p "$W"
write() {  # NAME
    python3 - "$W" "$B/data/ncbi_disease" "$1" <<'PY'
import sys, yaml, pathlib
w, data, name = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
env = yaml.safe_load(open("envs/workstation.yaml"))
env.update(name=f"wb-{name}", runs_dir=str(w / "runs"), warm_workers=name != "grid-cold")
(w / f"env-{name}.yaml").write_text(yaml.safe_dump(env))
doc = {"name": f"wb-{name}", "env": str(w / f"env-{name}.yaml"),
       "data": {"train": f"{data}/train.json", "eval": f"{data}/dev.json"},
       "base": {"model.name_or_path": "pypi:gemma-3-270m", "model.load_in_4bit": False,
                "model.full_finetuning": True, "train.num_epochs": 4,
                "train.per_device_batch_size": 64, "train.gradient_accumulation_steps": 1,
                "eval.batch_size": 1024},
       "grid": {"train.learning_rate": [2.0e-5, 5.0e-5, 1.0e-4, 2.0e-4, 5.0e-4, 1.0e-3]}}
if name == "grid24":  # issue 44's 24 small runs: 6 learning rates x 4 seeds, one epoch each
    doc["base"]["train.num_epochs"] = 1
    doc["seeds"] = [1, 2, 3, 4]
if name in ("asha", "sh"):
    del doc["base"]["train.num_epochs"]  # the search's budget: its top rung
    doc["search"] = {"strategy": "asha" if name == "asha" else "successive-halving",
                     "rungs": [1, 2, 4], "keep": "1/3"}
(w / f"{name}.yaml").write_text(yaml.safe_dump(doc))
PY
}
case "${1:-}" in
after)  # after)  NAME NAMES: once rc-NAME exists, run NAMES one after another (setsid)
    setsid bash -c "while [ ! -f $W/rc-$2 ]; do sleep 2; done; for n in $3; do \
        bash benchmarks/warm_bench.sh run \$n > $W/run-\$n.out 2>&1; done; touch $W/chain-done" \
        < /dev/null > /dev/null 2>&1 &
    echo "after $2: $3" ;;
chain)
    setsid bash -c "for n in ${2:-grid asha grid-cold}; do bash benchmarks/warm_bench.sh run \$n \
        > $W/run-\$n.out 2>&1; done; touch $W/chain-done" < /dev/null > /dev/null 2>&1 &
    echo "chain started: ${2:-grid asha grid-cold}" ;;
run)
    n=$2
    write "$n"
    python3 -m launcher submit "$W/$n.yaml" --dry-run > "$W/plan-$n.txt" 2>&1
    ( nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
        --format=csv,noheader,nounits -l 1 > "$W/util-$n.csv" ) &
    mon=$!
    t0=$(date +%s.%N)
    python3 -m launcher submit "$W/$n.yaml" > "$W/submit-$n.log" 2>&1
    echo $? > "$W/rc-$n"
    python3 -c "import time; print(round(time.time() - $t0, 1))" > "$W/wall-$n"
    kill $mon 2>/dev/null
    python3 -m launcher leaderboard "$W/runs/wb-$n" > "$W/leaderboard-$n.md" 2>&1
    python3 -m launcher status "$W/runs/wb-$n" > "$W/status-$n.txt" 2>&1 ;;
wait)
    deadline=$(( $(date +%s) + ${2:-500} ))
    while [ ! -f "$W/chain-done" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 5; done
    for f in "$W"/wall-*; do [ -f "$f" ] && echo "$(basename "$f"): $(cat "$f") s rc $(cat "${f/wall/rc}")"; done
    mkdir -p "$OUT"
    (cd "$W" && tar czf "$OUT/wb.tgz" --exclude='*.safetensors' --exclude='checkpoints' \
        --exclude='*.bin' --exclude='*.pt' *.txt *.md *.log *.csv *.out wall-* rc-* *.yaml \
        runs/*/search.json runs/*/*/adapter/medsweep_train.json runs/*/*/results/performance.json \
        runs/*/*/error.json 2>/dev/null)
    ls -l "$OUT" ;;
*) echo "usage: bash benchmarks/warm_bench.sh {chain [NAMES]|run NAME|wait SECONDS}" >&2; exit 2 ;;
esac
