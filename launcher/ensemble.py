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

from core.data import DataError, Entity
from core.ensemble import majority, vote
from core.fileio import atomic_write_json, read_json
from core.metrics import BOOTSTRAP_REPS, hallucination_rate, score
from core.results import now_iso, performance_doc, read_true_pred, true_pred_doc
from core.rundir import PERFORMANCE, RESULTS, TRUE_PRED, RunDir, refuse_links
from launcher.paired import unique_setting

PREFIX = "ensemble-"
SCHEMA = 1
DEFAULT_TOP = 3


@dataclass(frozen=True)
class Member:
    """One member's saved answers."""

    run_id: str
    file: Path
    gold: list[list[Entity]]
    pred: list[list[Entity]]
    texts: list[str] | None
    unique: bool


def read_member(run_id: str, file: Path) -> Member:
    gold, pred, texts = read_true_pred(file)
    return Member(run_id, file, gold, pred, texts, unique_setting(file))


def check_members(members: list[Member]) -> None:
    """DataError unless every member answered the same records of the same file, scored
    against the same gold answers and counted the same way."""
    if len(members) < 2:
        raise DataError(f"an ensemble needs at least 2 members (got {len(members)}); pass more "
                        "runs with --runs, or a larger --top")
    first = members[0]
    for m in members[1:]:
        if len(m.gold) != len(first.gold) or m.texts != first.texts:
            raise DataError(f"{m.file} and {first.file} hold different records "
                            f"({len(m.gold)} vs {len(first.gold)}); ensemble members must be "
                            "evaluated on the same eval file")
        if _gold_key(m) != _gold_key(first):
            raise DataError(f"{m.file} and {first.file} were scored against different gold "
                            "answers for the same texts; ensemble members must be evaluated "
                            "on the same eval file")
        if m.unique != first.unique:
            raise DataError(f"{m.file} and {first.file} were counted differently "
                            f"(eval.unique_entities {m.unique} vs {first.unique}); evaluate "
                            "them the same way")


def _gold_key(m: Member) -> list[list[tuple[str, str]]]:
    return [sorted((e.label, e.text) for e in rec) for rec in m.gold]


def ensemble_id(run_ids: list[str], min_votes: int, how: str) -> str:
    """The ensemble's folder name: how it was chosen, and a digest of its members and votes.

    >>> ensemble_id(["a", "b", "c"], 2, "top3")
    'ensemble-top3-v2-a4e6ee55'
    """
    digest = hashlib.sha256(json.dumps([sorted(run_ids), min_votes]).encode()).hexdigest()[:8]
    return f"{PREFIX}{how}-v{min_votes}-{digest}"


def build(folder: Path, members: list[Member], min_votes: int, how: str) -> Path:
    """Vote, score and write the ensemble's run folder (results written atomically, never
    through a link); returns the folder."""
    check_members(members)
    if not 1 <= min_votes <= len(members):
        raise DataError(f"--min-votes {min_votes}: give a number from 1 to the {len(members)} "
                        "members (a majority is the default)")
    first = members[0]
    voted = [vote([m.pred[k] for m in members], min_votes) for k in range(len(first.gold))]
    texts = first.texts
    scores = score(first.gold, voted, texts, unique=first.unique, ci_reps=BOOTSTRAP_REPS)
    rd = RunDir(folder / ensemble_id([m.run_id for m in members], min_votes, how))
    try:
        refuse_links(rd.path, (RESULTS, f"{RESULTS}/{PERFORMANCE}", f"{RESULTS}/{TRUE_PRED}"))
    except ValueError as exc:
        raise DataError(str(exc)) from None
    rd.results.mkdir(parents=True, exist_ok=True)
    info = {"schema": SCHEMA, "members": [m.run_id for m in members], "min_votes": min_votes,
            "chosen_by": how, "member_files": [str(m.file) for m in members]}
    atomic_write_json(rd.results / TRUE_PRED,
                      true_pred_doc(first.gold, voted, texts or [], ["" for _ in voted]))
    atomic_write_json(rd.performance, _performance(first, members, scores, info))
    return rd.path


def _performance(first: Member, members: list[Member], scores: dict[str, Any],
                 info: dict[str, Any]) -> dict[str, Any]:
    """The ensemble's performance.json: the members' shared config facts, its own scores."""
    base = _member_doc(first)
    # No every-mention score: a vote answers each (label, text) once per record, so counting
    # every mention would only measure that.
    extra: dict[str, Any] = {"ensemble": info, "data": base.get("data"),
                             "mention_level": None, "budget": None, "trained_in": None,
                             "created_at": now_iso()}
    return performance_doc(scores, num_examples=len(first.gold), avg_inference_time=0.0,
                           parse={"failure_rate": None},
                           hallucination_rate=(hallucination_rate(
                               [vote([m.pred[k] for m in members], 1) for k in
                                range(len(first.gold))], first.texts)
                               if first.texts else None),
                           config=shared_config([_member_doc(m).get("config") or {}
                                                 for m in members]), extra=extra)


def shared_config(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """The settings every member shares (a key the members differ in is left out, so the
    leaderboard shows no member's value as the ensemble's).

    >>> shared_config([{"train": {"seed": 1, "lr": 2}}, {"train": {"seed": 2, "lr": 2}}])
    {'train': {'lr': 2}}
    """
    first, out = configs[0], {}
    for key, value in first.items():
        others = [c.get(key) for c in configs[1:]]
        if isinstance(value, dict) and all(isinstance(o, dict) for o in others):
            inner = shared_config([value, *others])  # type: ignore[list-item]
            if inner:
                out[key] = inner
        elif all(o == value for o in others):
            out[key] = value
    return out


def _member_doc(m: Member) -> dict[str, Any]:
    try:
        doc = read_json(m.file.parent / PERFORMANCE)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


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
    """The paired bootstrap of ensemble - best member (launcher.paired.compare_files)."""


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
    from launcher.paired import compare_files

    ids, how = choose(folder, top, runs, sort)
    members = [read_member(r, RunDir(folder / r).results / TRUE_PRED) for r in ids]
    votes = majority(len(members)) if min_votes is None else min_votes
    path = build(folder, members, votes, how)
    tp = RunDir(path).results / TRUE_PRED
    vs = compare_files(tp, members[0].file, "exact", "f1")
    perf = read_json(RunDir(path).performance)
    perf["ensemble"]["vs_best_member"] = {"run": ids[0], **vs}
    atomic_write_json(RunDir(path).performance, perf)
    total = perf["metrics"]["total"]["exact"]
    return EnsembleResult(path.name, path, ids, votes, total["f1"],
                          perf["ci95"]["exact"]["f1"], ids[0], vs)
