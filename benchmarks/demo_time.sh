#!/usr/bin/env bash
# The README's first command, timed the way a new user meets it: a fresh clone of this
# checkout, `bash dev.sh setup` (the install, timed apart), then `bash dev.sh demo`.
#   bash benchmarks/demo_time.sh [CLONE_DIR]      (default /tmp/medsweep-demo-clone)
# Prints one line per phase; run it on an idle machine (load average printed with it).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
dst=${1:-/tmp/medsweep-demo-clone}
rm -rf "$dst"
git clone -q "$src" "$dst"
cd "$dst"
echo "commit $(git rev-parse --short HEAD); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s)
bash dev.sh setup > setup.log 2>&1
t1=$(date +%s)
echo "install (bash dev.sh setup): $((t1 - t0)) s"
bash dev.sh demo > demo.log 2>&1
t2=$(date +%s)
echo "demo (bash dev.sh demo, install excluded): $((t2 - t1)) s"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
tail -n 12 demo.log
