"""Ensembles from a sweep's runs: per record, an entity (label, text) is kept when at least
`min_votes` members answered it. Votes are cast on the members' saved answers
(results/true_pred_entities.json): no model is loaded and nothing is generated again.

The result is a run folder of its own in the sweep (``ensemble-top3-<8 hex>``) with
performance.json and true_pred_entities.json as any run has, and its members recorded, so the
leaderboard, `compare` and the report treat it as a row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data import DataError
from core.ensemble import Member, majority, read_member, write_vote
from core.rundir import PERFORMANCE, RESULTS, TRUE_PRED, RunDir, refuse_links

PREFIX = "ensemble-"
DEFAULT_TOP = 3


def ensemble_id(run_ids: list[str], min_votes: int, how: str) -> str:
    """The ensemble's folder name: how it was chosen, and a digest of its members and votes.

    >>> ensemble_id(["a", "b", "c"], 2, "top3")
    'ensemble-top3-v2-a4e6ee55'
    """
    digest = hashlib.sha256(json.dumps([sorted(run_ids), min_votes]).encode()).hexdigest()[:8]
    return f"{PREFIX}{how}-v{min_votes}-{digest}"


def build(folder: Path, members: list[Member], min_votes: int,
          how: str) -> tuple[Path, dict[str, Any]]:
    """Vote into the ensemble's own run folder of the sweep (never through a link), paired
    with its first (best) member; returns the folder and its performance document."""
    rd = RunDir(folder / ensemble_id([m.run_id for m in members], min_votes, how))
    try:
        refuse_links(rd.path, (RESULTS, f"{RESULTS}/{PERFORMANCE}", f"{RESULTS}/{TRUE_PRED}"))
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return rd.path, write_vote(rd.results, members, min_votes, {"chosen_by": how},
                               pair_with_first=True)


@dataclass(frozen=True)
class EnsembleResult:
    """What `launcher ensemble` reports."""

    run_id: str
    path: Path
    members: list[str]
    min_votes: int
    f1: float
    ci: list[float]
    best_member: str
    vs_best: dict[str, Any]
    """The paired bootstrap of ensemble - best member (what `compare` computes)."""


def choose(folder: Path, top: int | None, runs: list[str] | None,
           sort: str) -> tuple[list[str], str]:
    """The members' run ids, best first, and how they were chosen ("top3", "runs")."""
    from launcher.leaderboard import collect, eval_groups, sort_rows

    board = collect([folder])
    rows = [r for r in board.rows if not r["run_id"].startswith(PREFIX)]
    if runs is not None:
        have = {r["run_id"] for r in rows}
        missing = [r for r in runs if r not in have]
        if missing:
            raise DataError(f"{folder}: no finished run {', '.join(missing)}; name runs of the "
                            "sweep that have results (python -m launcher leaderboard lists them)")
        ranked = [r["run_id"] for r in sort_rows(rows, sort)]
        return sorted(dict.fromkeys(runs), key=ranked.index), f"runs{len(set(runs))}"
    k = DEFAULT_TOP if top is None else top
    if k < 2:
        raise DataError(f"--top {k}: an ensemble needs at least 2 members")
    if rows and sort not in rows[0]:
        raise DataError(f"--sort {sort}: no such leaderboard column (e.g. exact.f1, "
                        "relaxed.f1, overlap.f1)")
    ranked = sort_rows(rows, sort)
    group = eval_groups(ranked)[0] if ranked else []
    if len(group) < k:
        raise DataError(f"{folder}: --top {k} needs {k} finished runs on one eval file; "
                        f"{len(group)} have results")
    return [r["run_id"] for r in group[:k]], f"top{k}"


def make_ensemble(folder: Path, *, top: int | None, runs: list[str] | None,
                  min_votes: int | None, sort: str = "exact.f1") -> EnsembleResult:
    """Choose the members, vote, write the ensemble's run folder and pair it with its best
    member."""
    ids, how = choose(folder, top, runs, sort)
    members = [read_member(r, RunDir(folder / r).results / TRUE_PRED) for r in ids]
    votes = majority(len(members)) if min_votes is None else min_votes
    path, perf = build(folder, members, votes, how)
    return EnsembleResult(path.name, path, ids, votes, perf["metrics"]["total"]["exact"]["f1"],
                          perf["ci95"]["exact"]["f1"], ids[0], perf["ensemble"]["vs_best_member"])
