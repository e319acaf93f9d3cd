#!/usr/bin/env bash
# Issue 48's measurement and issue 47's screenshot: each shipped recipe (sweeps/best-*.yaml) with
# five seeds, through `python -m launcher submit` with the workstation profile, on the offline
# GPU machine (after benchmarks/gpu_bundle.sh unpack, with the three corpora packed). The votes
# are cast afterwards from the runs' saved answers (`launcher ensemble`, no model needed), here
# or anywhere the results come back to.
#   bash benchmarks/ensemble_bench.sh chain "ncbi_disease bc5cdr maccrobat"   # setsid
#   bash benchmarks/ensemble_bench.sh wait SECONDS        # then tar the run files to $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
W=/tmp/eb
mkdir -p "$W"
write() {  # CORPUS
    python3 - "$W" "$B/data/$1" "$1" <<'PY'
import sys, yaml, pathlib
w, data, corpus = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
env = yaml.safe_load(open("envs/workstation.yaml"))
env.update(name="eb", runs_dir=str(w / "runs"))
(w / "env.yaml").write_text(yaml.safe_dump(env))
recipe = "ncbi-disease" if corpus == "ncbi_disease" else corpus
doc = yaml.safe_load(open(f"sweeps/best-{recipe}.yaml"))
doc.update(name=f"seeds-{corpus}", env=str(w / "env.yaml"), seeds=[1, 2, 3, 4, 5])
doc["data"] = {"train": f"{data}/train.json", "eval": f"{data}/dev.json"}
(w / f"{corpus}.yaml").write_text(yaml.safe_dump(doc))
PY
}
case "${1:-}" in
chain)
    setsid bash -c "for n in ${2:-ncbi_disease bc5cdr maccrobat}; do \
        bash benchmarks/ensemble_bench.sh run \$n > $W/run-\$n.out 2>&1; done; \
        touch $W/chain-done" < /dev/null > /dev/null 2>&1 &
    echo "chain started: ${2:-ncbi_disease bc5cdr maccrobat}" ;;
run)
    n=$2
    write "$n"
    ( nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
        --format=csv,noheader,nounits -l 1 > "$W/util-$n.csv" ) &
    mon=$!
    t0=$(date +%s.%N)
    python3 -m launcher submit "$W/$n.yaml" > "$W/submit-$n.log" 2>&1
    echo $? > "$W/rc-$n"
    python3 -c "import time; print(round(time.time() - $t0, 1))" > "$W/wall-$n"
    kill $mon 2>/dev/null ;;
wait)
    deadline=$(( $(date +%s) + ${2:-500} ))
    while [ ! -f "$W/chain-done" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 5; done
    for f in "$W"/wall-*; do [ -f "$f" ] && echo "$(basename "$f"): $(cat "$f") s rc $(cat "${f/wall/rc}")"; done
    tail -3 "$W"/submit-*.log
    mkdir -p "$OUT"
    (cd "$W" && tar czf "$OUT/eb.tgz" --exclude='*.safetensors' --exclude='checkpoints' \
        --exclude='*.bin' --exclude='*.pt' --exclude='demo-data' *.log *.csv *.out wall-* rc-* \
        *.yaml runs/*/sweep.yaml runs/*/*/job.json runs/*/*/config.yaml runs/*/*/progress.json \
        runs/*/*/results runs/*/*/adapter/medsweep_train.json runs/*/*/error.json 2>/dev/null)
    ls -l "$OUT" ;;
*) echo "usage: bash benchmarks/ensemble_bench.sh {chain [CORPORA]|run CORPUS|wait SECONDS}" >&2
   exit 2 ;;
esac
