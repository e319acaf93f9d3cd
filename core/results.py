"""Result files and their versioned schema: what evaluate writes and leaderboard reads.

``performance.json`` keeps the seed's keys (``num_examples``, ``avg_inference_time``,
``metrics.total.<metric>.{p,r,f1}``), puts per-label scores under ``labels.<label>.<metric>``
(schema 2; schema 1 had them beside ``total``, where a label named "total" overwrote it) and
adds what a leaderboard needs without opening anything else.
"""

from __future__ import annotations

import math
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from core.data import DataError, Entity
from core.fileio import read_json
from core.rundir import PERFORMANCE

SCHEMA_VERSION = 2
"""2: per-label scores moved from metrics.<label> to labels.<label> (see per_label)."""

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "num_examples": int, "avg_inference_time": (int, float),
    "metrics": dict, "macro": dict, "parse": dict, "config": dict,
}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def performance_doc(scores: dict[str, Any], *, num_examples: int, avg_inference_time: float,
                    parse: dict[str, Any], hallucination_rate: float | None,
                    config: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    doc = {
        "schema_version": SCHEMA_VERSION,
        "created_at": now_iso(),
        "num_examples": num_examples,
        "avg_inference_time": avg_inference_time,
        # The seed's metrics.total.<metric> stays; per-label scores live apart, so that no
        # label name (not even "total") can collide with the totals (schema 1 mixed them).
        "metrics": {"total": scores["total"]},
        "labels": scores["labels"],
        "macro": scores["macro"],
        "parse": parse,
        "hallucination_rate": hallucination_rate,
        "config": config,
    }
    if scores.get("ci95"):
        # Optional (older files lack it): a record-level bootstrap of metrics.total.
        doc["ci95"] = scores["ci95"]
    doc.update(extra)
    return doc


def per_label(doc: dict[str, Any]) -> dict[str, Any]:
    """Per-label scores of a performance.json of any schema version."""
    if int(doc.get("schema_version", 1)) >= 2:
        return dict(doc.get("labels") or {})
    return {k: v for k, v in (doc.get("metrics") or {}).items() if k != "total"}


def check_performance(doc: Any) -> list[str]:
    """Problems that make a performance.json unusable (empty list: fine)."""
    if not isinstance(doc, dict):
        return ["top level is not an object"]
    errs = []
    for key, typ in _REQUIRED.items():
        if key not in doc:
            errs.append(f"missing key {key!r}")
        elif not isinstance(doc[key], typ) or isinstance(doc[key], bool):
            errs.append(f"key {key!r} has the wrong type")
    if not errs and doc["schema_version"] > SCHEMA_VERSION:
        errs.append(f"schema_version {doc['schema_version']} is newer than this medsweep "
                    f"({SCHEMA_VERSION}); upgrade medsweep")
    if not errs and not isinstance(doc["metrics"].get("total"), dict):
        errs.append("missing metrics.total")
    if not errs:
        for metric, prf in doc["metrics"]["total"].items():
            for stat in ("p", "r", "f1"):
                v = prf.get(stat) if isinstance(prf, dict) else None
                if (not isinstance(v, (int, float)) or isinstance(v, bool)
                        or not math.isfinite(v) or not 0.0 <= v <= 1.0):
                    errs.append(f"metrics.total.{metric}.{stat} is {v!r}, not a score in "
                                "[0, 1]; the file is not ranked (re-score it with jobs.score)")
    return errs


def true_pred_doc(gold: Sequence[Sequence[Entity]], pred: Sequence[Sequence[Entity]],
                  texts: Sequence[str], raw: Sequence[str] | None,
                  too_long: Sequence[int] = ()) -> dict[str, Any]:
    """A true_pred_entities.json; raw None where no model answered in words (an ensemble's
    vote): the file then has no raw_outputs, as the seed tool's had none."""
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "true_ents": [[e.to_dict() for e in g] for g in gold],
        "pred_ents": [[e.to_dict() for e in p] for p in pred],
        "texts": list(texts),
        "too_long": list(too_long),
    }
    if raw is not None:
        doc["raw_outputs"] = list(raw)
    return doc


def read_raw_outputs(path: Path, n: int) -> tuple[list[str], list[int]] | None:
    """(raw outputs, indices of prompts too long to generate) of a true_pred_entities.json,
    or None where the file has no raw outputs (the seed tool's)."""
    doc = read_json(path)
    raw = doc.get("raw_outputs") if isinstance(doc, dict) else None
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != n or not all(isinstance(r, str) for r in raw):
        raise DataError(f"{path}: 'raw_outputs' must be a list of strings, one per example")
    too_long = doc.get("too_long") or []
    if not isinstance(too_long, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in too_long):
        raise DataError(f"{path}: 'too_long' must list record indices below {n}")
    return list(raw), sorted(set(too_long))


def environment_info() -> dict[str, Any]:
    """Python, OS and package versions (no torch import: callers add device facts)."""
    from importlib import metadata

    versions = {}
    for pkg in ("medsweep", "unsloth", "unsloth_zoo", "torch", "transformers", "trl", "peft",
                "datasets", "bitsandbytes", "accelerate", "submitit"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "hostname": platform.node(), "versions": versions}


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


def read_true_pred(path: Path) -> tuple[list[list[Entity]], list[list[Entity]],
                                        list[str] | None]:
    """(gold, predicted, texts or None) of a true_pred_entities.json, medsweep's or the seed
    tool's (which has no texts); DataError naming the file and the record otherwise."""
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
    return gold, pred, texts


def has_results(performance: Path) -> bool:
    """A run is done when its performance.json exists and passes check_performance."""
    if not performance.is_file():
        return False
    try:
        return not check_performance(read_json(performance))
    except ValueError:
        return False


def unique_setting(tp_file: Path) -> bool:
    """The run's own eval.unique_entities (from its performance.json), default on."""
    try:
        doc = read_json(tp_file.parent / PERFORMANCE)
        value = doc["config"]["eval"]["unique_entities"]
        return value if isinstance(value, bool) else True
    except (ValueError, KeyError, TypeError):
        return True
