"""Re-score a true_pred_entities.json without a model: ``python -m jobs.score``.

Accepts medsweep's file or the seed tool's (``true_ents`` / ``pred_ents`` only; then overlap
falls back to shared word tokens and no hallucination rate is given). Writes
``performance.json`` into ``--results-dir``. No torch import: runs on a login node.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from core.cliargs import add_config_flags, config_from_args
from core.config import RunConfig, parse_metrics
from core.errors import UserError
from core.fileio import atomic_write_json, file_sha256, folder_problem
from core.metrics import BOOTSTRAP_REPS, hallucination_rate, score
from core.parsing import parse_output, parse_stats
from core.results import (
    environment_info,
    performance_doc,
    read_raw_outputs,
    read_true_pred,
)
from core.rundir import PERFORMANCE

SCORE_KEYS = ["eval.unique_entities", "eval.metrics"]


def rescore(path: Path, cfg: RunConfig) -> dict[str, Any]:
    gold, pred, texts = read_true_pred(path)
    scores = score(gold, pred, texts, parse_metrics(cfg.eval.metrics),
                   unique=cfg.eval.unique_entities, ci_reps=BOOTSTRAP_REPS)
    raw = read_raw_outputs(path, len(gold))
    if raw is None:  # the seed tool's file: no answers to re-parse
        parse: dict[str, Any] = {"ok": None, "salvaged": None, "failed": None,
                                 "failure_rate": None}
    else:
        outputs, too_long = raw
        skip = set(too_long)
        parse = parse_stats([parse_output(o) for i, o in enumerate(outputs) if i not in skip],
                            len(too_long))
    return performance_doc(
        scores, num_examples=len(gold), avg_inference_time=0.0,
        parse=parse,
        hallucination_rate=hallucination_rate(pred, texts) if texts is not None else None,
        config=cfg.to_dict(),
        extra={"rescored_from": str(path), "source_sha256": file_sha256(path),
               "environment": environment_info()})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.score",
                                description="Re-score a true_pred_entities.json.")
    p.add_argument("--true-pred-file", required=True, help="A true_pred_entities.json.")
    p.add_argument("--results-dir", required=True, help="Where performance.json goes.")
    add_config_flags(p, SCORE_KEYS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        bad = folder_problem(args.results_dir, "--results-dir")
        if bad:
            raise UserError(bad)
        cfg = config_from_args(args)
        doc = rescore(Path(args.true_pred_file), cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        atomic_write_json(Path(args.results_dir) / PERFORMANCE, doc)
    except OSError as exc:
        print(f"error: {args.results_dir}: cannot write {PERFORMANCE} ({exc.strerror}); free "
              "space or choose a writable --results-dir", file=sys.stderr)
        return 2
    for m, prf in doc["metrics"]["total"].items():
        print(f"{m:8s} P={prf['p']:.3f} R={prf['r']:.3f} F1={prf['f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
