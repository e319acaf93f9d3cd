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
from core.config import ConfigError, RunConfig, parse_metrics
from core.data import DataError, Entity
from core.fileio import atomic_write_json, file_sha256, read_json
from core.metrics import BOOTSTRAP_REPS, hallucination_rate, score
from core.results import PERFORMANCE, environment_info, performance_doc

SCORE_KEYS = ["eval.unique_entities", "eval.metrics"]


def _entities(value: Any, where: str) -> list[list[Entity]]:
    if not isinstance(value, list):
        raise DataError(f"{where} must be a list with one list of entities per example")
    out = []
    for i, ents in enumerate(value):
        if not isinstance(ents, list):
            raise DataError(f"{where}[{i}] must be a list of {{label, text}} objects")
        row = []
        for j, e in enumerate(ents):
            if isinstance(e, dict) and isinstance(e.get("label"), str) and isinstance(
                    e.get("text"), str):
                row.append(Entity(e["label"], e["text"]))
            elif isinstance(e, (list, tuple)) and len(e) == 2 and all(isinstance(x, str)
                                                                     for x in e):
                # The seed's tool kept (text, label) tuples in some versions.
                row.append(Entity(e[1], e[0]))
            else:
                raise DataError(f"{where}[{i}][{j}] is not a {{label, text}} object")
        out.append(row)
    return out


def rescore(path: Path, cfg: RunConfig) -> dict[str, Any]:
    try:
        doc = read_json(path)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if not isinstance(doc, dict) or "true_ents" not in doc or "pred_ents" not in doc:
        raise DataError(f"{path}: expected an object with 'true_ents' and 'pred_ents' "
                        "(a true_pred_entities.json)")
    gold = _entities(doc["true_ents"], f"{path}: true_ents")
    pred = _entities(doc["pred_ents"], f"{path}: pred_ents")
    if len(gold) != len(pred):
        raise DataError(f"{path}: {len(gold)} true_ents but {len(pred)} pred_ents; they must "
                        "pair up one per example")
    texts = doc.get("texts")
    if texts is not None and (not isinstance(texts, list) or len(texts) != len(gold)
                              or not all(isinstance(t, str) for t in texts)):
        raise DataError(f"{path}: 'texts' must be a list of strings, one per example")
    scores = score(gold, pred, texts, parse_metrics(cfg.eval.metrics),
                   unique=cfg.eval.unique_entities, ci_reps=BOOTSTRAP_REPS)
    return performance_doc(
        scores, num_examples=len(gold), avg_inference_time=0.0,
        parse={"ok": None, "salvaged": None, "failed": None, "failure_rate": None},
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
        cfg = config_from_args(args)
        doc = rescore(Path(args.true_pred_file), cfg)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_json(Path(args.results_dir) / PERFORMANCE, doc)
    for m, prf in doc["metrics"]["total"].items():
        print(f"{m:8s} P={prf['p']:.3f} R={prf['r']:.3f} F1={prf['f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
