"""Paired comparisons of runs from their saved predictions (files only): `launcher compare`
and `leaderboard --vs-best`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.data import DataError
from core.metrics import paired_bootstrap, record_counts
from core.results import read_true_pred, unique_setting
from core.rundir import RESULTS, TRUE_PRED


def true_pred_file(arg: str, runs_dir: Path) -> Path:
    """The true_pred_entities.json of a run given as a file, a run or results folder, or
    SWEEP/RUN_ID under `runs_dir`."""
    tried = []
    for base in (Path(arg), runs_dir / arg):
        if base.is_file():
            return base
        for cand in (base / RESULTS / TRUE_PRED, base / TRUE_PRED):
            if cand.is_file():
                return cand
            tried.append(str(cand))
    raise DataError(f"{arg}: no {TRUE_PRED} found (looked at {', '.join(tried)}); pass a run "
                    "whose evaluation has finished")


def load_counts(tp_file: Path, metric: str) -> tuple[Any, list[tuple[int, int, int]]]:
    """(what a fair comparison needs to be equal: texts, gold and the counting; the per-record
    counts) of one run under one metric."""
    gold, pred, texts = read_true_pred(tp_file)
    unique = unique_setting(tp_file)
    counts = record_counts(gold, pred, texts, metric, unique)
    gold_key = [sorted((e.label, e.text) for e in rec) for rec in gold]
    return {"texts": texts, "gold": gold_key, "unique": unique}, counts


def compare_files(file_a: Path, file_b: Path, metric: str, stat: str,
                  cached_a: tuple[Any, list[tuple[int, int, int]]] | None = None
                  ) -> dict[str, Any]:
    """Paired bootstrap of A - B; DataError where the runs saw different records, different
    gold answers, or were counted differently (per unique pair vs per mention)."""
    ident_a, counts_a = cached_a or load_counts(file_a, metric)
    ident_b, counts_b = load_counts(file_b, metric)
    if ident_a["texts"] != ident_b["texts"] or len(counts_a) != len(counts_b):
        raise DataError(f"{file_a} and {file_b} hold different records ({len(counts_a)} vs "
                        f"{len(counts_b)}); compare needs two runs evaluated on the same eval "
                        "file")
    if ident_a["gold"] != ident_b["gold"]:
        raise DataError(f"{file_a} and {file_b} were scored against different gold answers "
                        "for the same texts; compare needs two runs evaluated on the same eval "
                        "file")
    if ident_a["unique"] != ident_b["unique"]:
        raise DataError(f"{file_a} and {file_b} were counted differently (eval.unique_entities "
                        f"{ident_a['unique']} vs {ident_b['unique']}); evaluate both the same "
                        "way before comparing")
    return {"metric": f"{metric}.{stat}", "run_a": str(file_a), "run_b": str(file_b),
            **paired_bootstrap(counts_a, counts_b, stat=stat)}


def verdict(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"] or [0.0, 0.0]
    if lo > 0:
        return "A is better: the interval lies above 0"
    if hi < 0:
        return "B is better: the interval lies below 0"
    return "no clear difference: the interval includes 0"
