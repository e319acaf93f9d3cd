"""Issue 29's benchmark: the same recipes as a full grid and as successive halving, through
`python -m launcher submit` (benchmarks/gpu_search.sh runs it on the GPU machine).

    python benchmarks/search_bench.py prepare --data DATA_ROOT --out DIR [--train-records N]
        writes DIR/env.yaml and, from the shipped sweeps, DIR/search.yaml (sweeps/
        search-smollm2-bc5cdr.yaml with the data paths set), DIR/grid.yaml (the same recipes,
        no search:, train.num_epochs = the top rung) and DIR/gemma.yaml (sweeps/
        recipes-gemma-bc5cdr.yaml); the SmolLM2 sweeps train on the first N BC5CDR records.
    python benchmarks/search_bench.py report SWEEP_DIR [--wall-s S] [--out FILE.json]
        per run and rung: seconds from submit to results, training and evaluation seconds,
        epochs trained; the sweep's totals and its best run (from files only).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _env(out: Path, runs_per_gpu: int) -> Path:
    env = {"name": "bench-h200", "executor": "local", "gpus": "auto",
           "runs_per_gpu": runs_per_gpu, "cuda_mps": True, "time_limit_min": 120,
           "env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    path = out / "env.yaml"
    path.write_text(yaml.safe_dump(env))
    return path


def prepare(data: Path, out: Path, n_train: int, runs_per_gpu: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = _env(out, runs_per_gpu)
    records = json.loads((data / "bc5cdr" / "train.json").read_text())[:n_train]
    subset = out / f"bc5cdr-train-{n_train}.json"
    subset.write_text(json.dumps(records))
    search = yaml.safe_load(
        (ROOT / "sweeps" / "experiments" / "search-smollm2-bc5cdr.yaml").read_text())
    search["env"] = str(env)
    search["data"] = {"train": str(subset), "eval": str(data / "bc5cdr" / "dev.json")}
    grid = {k: v for k, v in search.items() if k != "search"}
    grid["name"] = "grid-smollm2-bc5cdr"
    grid["base"] = {**search["base"], "train.num_epochs": search["search"]["rungs"][-1]}
    gemma = yaml.safe_load((ROOT / "sweeps" / "experiments" / "recipes-gemma-bc5cdr.yaml").read_text())
    gemma["env"] = str(env)
    gemma["data"] = {"train": str(data / "bc5cdr" / "train.json"),
                     "eval": str(data / "bc5cdr" / "dev.json")}
    for name, doc in (("search", search), ("grid", grid), ("gemma", gemma)):
        (out / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    print(f"wrote {out}: env.yaml search.yaml grid.yaml gemma.yaml ({len(records)} train "
          "records for SmolLM2)")


def _seconds(job: Path, perf: Path) -> float | None:
    try:
        start = datetime.fromisoformat(json.loads(job.read_text())["submitted_at"])
    except (OSError, ValueError, KeyError):
        return None
    return round(perf.stat().st_mtime - start.timestamp(), 1)


def _rung_row(run_id: str, job: Path, perf: Path) -> dict[str, Any]:
    doc = json.loads(perf.read_text())
    training = doc.get("training") or {}
    timings = doc.get("timings") or {}
    budget = doc.get("budget") or {}
    return {"run_id": run_id, "rung": budget.get("rung"), "epochs": budget.get("epochs")
            or (doc.get("config") or {}).get("train", {}).get("num_epochs"),
            "submit_to_results_s": _seconds(job, perf), "train_s": training.get("train_s"),
            "eval_s": timings.get("eval_s"), "load_s": timings.get("load_s"),
            "startup_to_first_step_s": (training.get("startup") or {}).get("process_to_first_step_s"),
            "resumed_from": training.get("resumed_from"),
            "exact_f1": doc["metrics"]["total"]["exact"]["f1"],
            "eval_records": doc.get("num_examples")}


def report(folder: Path, wall_s: float | None) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for run in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "config.yaml").is_file()):
        for rung_dir in sorted((run / "rungs").glob("*")) if (run / "rungs").is_dir() else []:
            perf = rung_dir / "results" / "performance.json"
            if perf.is_file():
                rows.append(_rung_row(run.name, rung_dir / "job.json", perf))
        perf = run / "results" / "performance.json"
        if perf.is_file():
            rows.append(_rung_row(run.name, run / "job.json", perf))
    search = json.loads((folder / "search.json").read_text()) if (
        folder / "search.json").is_file() else None
    final = [r for r in rows if search is None or r["rung"] == len(search["spec"]["rungs"]) - 1]
    best = max(final, key=lambda r: r["exact_f1"]) if final else None

    def total(key: str) -> float:
        return round(sum(r[key] or 0.0 for r in rows), 1)

    epochs_trained = 0.0
    for run_id in {r["run_id"] for r in rows}:
        epochs_trained += max(float(r["epochs"] or 0) for r in rows if r["run_id"] == run_id)
    return {"sweep": folder.name, "wall_s": wall_s, "runs": len({r["run_id"] for r in rows}),
            "run_rungs": len(rows), "run_epochs": epochs_trained,
            "sum_submit_to_results_s": total("submit_to_results_s"),
            "sum_train_s": total("train_s"), "sum_eval_s": total("eval_s"),
            "best": best, "search": search, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train-records", type=int, default=1200)
    p.add_argument("--runs-per-gpu", type=int, default=12)
    r = sub.add_parser("report")
    r.add_argument("sweep_dir", type=Path)
    r.add_argument("--wall-s", type=float)
    r.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.data, args.out, args.train_records, args.runs_per_gpu)
        return 0
    doc = report(args.sweep_dir, args.wall_s)
    text = json.dumps(doc, indent=2)
    if args.out:
        args.out.write_text(text)
    summary = {k: v for k, v in doc.items() if k not in ("rows", "search")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
