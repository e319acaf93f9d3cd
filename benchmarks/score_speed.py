"""Cost of the bootstrap intervals: scoring a real corpus's dev split with and without them.

Predictions are the gold entities, deterministically damaged (every 3rd entity dropped, every
5th cut to its first word, every 7th given another label), so the three metrics differ. Times
`score()` over the three metrics without intervals, with the 1,000-resample intervals that
`jobs.evaluate` writes, and one paired comparison (`launcher compare`'s core).

    python benchmarks/score_speed.py ../shared/data/bc5cdr/dev.json ../shared/data/maccrobat/dev.json \\
        --result benchmarks/results/score_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.data import Entity  # noqa: E402
from core.metrics import BOOTSTRAP_REPS, paired_bootstrap, record_counts, score  # noqa: E402


def damaged(gold: list[list[Entity]]) -> list[list[Entity]]:
    labels = sorted({e.label for g in gold for e in g}) or ["X"]
    out, k = [], 0
    for ents in gold:
        row = []
        for e in ents:
            k += 1
            if k % 3 == 0:
                continue
            text = e.text.split()[0] if k % 5 == 0 else e.text
            label = labels[(labels.index(e.label) + 1) % len(labels)] if k % 7 == 0 else e.label
            row.append(Entity(label, text))
        out.append(row)
    return out


def measure(path: Path) -> dict:
    recs = json.loads(path.read_text())
    texts = [r["text"] for r in recs]
    gold = [[Entity(e["label"], e["text"]) for e in r["entities"]] for r in recs]
    pred = damaged(gold)
    t = time.perf_counter()
    plain = score(gold, pred, texts)
    plain_s = time.perf_counter() - t
    t = time.perf_counter()
    with_ci = score(gold, pred, texts, ci_reps=BOOTSTRAP_REPS)
    ci_s = time.perf_counter() - t
    assert with_ci["total"] == plain["total"]
    a = record_counts(gold, pred, texts, "exact")
    b = record_counts(gold, gold, texts, "exact")
    t = time.perf_counter()
    paired = paired_bootstrap(a, b)
    paired_s = time.perf_counter() - t
    return {"file": str(path), "records": len(recs), "gold_entities": sum(map(len, gold)),
            "score_s": round(plain_s, 3), "score_with_ci_s": round(ci_s, 3),
            "ci_extra_s": round(ci_s - plain_s, 3), "paired_exact_s": round(paired_s, 3),
            "exact_f1": round(plain["total"]["exact"]["f1"], 4),
            "exact_f1_ci95": with_ci["ci95"]["exact"]["f1"],
            "paired_damaged_minus_gold": paired["diff"], "paired_ci95": paired["ci95"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path, help="Dev files in the seed's JSON format.")
    p.add_argument("--result", type=Path, help="Write the figures here as JSON.")
    args = p.parse_args(argv)
    rows = [measure(f) for f in args.files]
    doc = {"machine": {"python": platform.python_version(), "cpu": platform.processor()
                       or platform.machine()}, "reps": BOOTSTRAP_REPS, "rows": rows}
    text = json.dumps(doc, indent=2)
    if args.result:
        args.result.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
