"""Issue 44's sweep-level aims from a sweep's returned files (benchmarks/warm_bench.sh):

* the share of the sweep's wall time in which no run was in its training loop (each run's loop
  is [finished_at - step_time.loop_s, finished_at] from its medsweep_train.json; a promoted
  run keeps only its last rung's summary, so use this on grids);
* the share of 1-s nvidia-smi samples with the GPU busy (utilization > 0).

The sweep's start is the first nvidia-smi sample (the monitor starts just before submit), its
length the wall file. Times are whole seconds (finished_at's resolution).

    python benchmarks/warm_outside.py RUNS_DIR/wb-NAME util-NAME.csv wall-NAME
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timezone
from pathlib import Path


def training_loops(sweep: Path) -> list[tuple[float, float]]:
    """(start, end) of each run's training loop, as epoch seconds."""
    out = []
    for f in sorted(sweep.glob("*/adapter/medsweep_train.json")):
        doc = json.loads(f.read_text())
        end = datetime.fromisoformat(doc["finished_at"]).timestamp()
        loop = float((doc.get("step_time") or {}).get("loop_s") or doc["train_s"])
        out.append((end - loop, end))
    return out


def covered(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] inside at least one interval.

    >>> covered([(0, 10), (5, 20), (30, 40)], 0, 35)
    25.0
    """
    total, reach = 0.0, start
    for a, b in sorted(intervals):
        a, b = max(a, reach), min(b, end)
        if b > a:
            total += b - a
            reach = b
    return total


def gpu_samples(util_csv: Path) -> tuple[float, float]:
    """(the first sample's time, the share of samples with the GPU busy)."""
    rows = [r for r in csv.reader(util_csv.open()) if len(r) >= 2]
    first = datetime.strptime(rows[0][0].strip(), "%Y/%m/%d %H:%M:%S.%f").replace(
        tzinfo=timezone.utc).timestamp()
    busy = sum(float(r[1]) > 0 for r in rows) / len(rows)
    return first, busy


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    sweep, util, wall_file = Path(argv[0]), Path(argv[1]), Path(argv[2])
    start, busy = gpu_samples(util)
    wall = float(wall_file.read_text())
    loops = training_loops(sweep)
    inside = covered(loops, start, start + wall)
    print(json.dumps({"runs": len(loops), "wall_s": wall,
                      "outside_training_share": round(1 - inside / wall, 3),
                      "gpu_busy_share": round(busy, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
