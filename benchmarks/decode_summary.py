"""The table of benchmarks/decode_bench.sh: per corpus and decoder, the evaluation's records/s,
generated tokens/s, exact F1 with its CI, the decoding steps, the engine that ran, the card's
mean utilisation, and how many answers the two decoders gave alike.

    python benchmarks/decode_summary.py DIR    # DIR: decode_bench.sh's files (db.tgz unpacked)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any


def mean_util(path: Path) -> float | None:
    """The mean of nvidia-smi's utilization.gpu samples while the card held the model."""
    if not path.is_file():
        return None
    vals = []
    for row in csv.reader(path.read_text().splitlines()):
        if len(row) >= 3 and row[1].strip().isdigit() and float(row[2]) > 1000:
            vals.append(float(row[1]))
    return round(sum(vals) / len(vals), 1) if vals else None


def row(folder: Path, tag: str) -> dict[str, Any] | None:
    perf = folder / f"ev-{tag}" / "performance.json"
    if not perf.is_file():
        return None
    doc = json.loads(perf.read_text())
    t, g = doc["timings"], doc["generation"]
    exact = doc["metrics"]["total"]["exact"]
    return {"tag": tag, "records": doc["num_examples"], "eval_s": t["eval_s"],
            "records_per_s": round(t["records_per_s"], 1),
            "tokens_per_s": round(t["generated_tokens_per_s"]),
            "generated_tokens": t["generated_tokens"],
            "exact_f1": round(exact["f1"], 4), "ci95": doc["ci95"]["exact"]["f1"],
            "steps": g["decode"]["steps"], "batches": g["decode"]["batches"],
            "engine": g["decode"].get("engine"), "reason": g["decode"].get("engine_reason"),
            "gpu_util_mean": mean_util(folder / f"util-{tag}.csv")}


def alike(folder: Path, a: str, b: str) -> tuple[int, int] | None:
    fa, fb = (folder / f"ev-{t}" / "true_pred_entities.json" for t in (a, b))
    if not (fa.is_file() and fb.is_file()):
        return None
    ra = json.loads(fa.read_text())["raw_outputs"]
    rb = json.loads(fb.read_text())["raw_outputs"]
    return sum(x == y for x, y in zip(ra, rb, strict=True)), len(ra)


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    corpora = sorted({p.name[3:].rsplit("-", 1)[0] for p in folder.glob("ev-*")
                      if not p.name.startswith("ev-prof-")})
    for c in corpora:
        rows = [r for r in (row(folder, f"{c}-{d}") for d in ("generate", "auto")) if r]
        for r in rows:
            print(json.dumps(r))
        same = alike(folder, f"{c}-generate", f"{c}-auto")
        if same:
            print(json.dumps({"corpus": c, "answers_alike": same[0], "of": same[1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
