"""Ensembles: the vote (per record, the (label, text) pairs enough members answered) and a
sweep's ``ensemble:`` section.

    ensemble:
      top: 3            # the 3 best runs by the leaderboard's exact.f1 vote
      min_votes: null   # votes an entity needs; null: a majority of the members
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from core.data import DataError, Entity
from core.errors import unknown_key
from core.fileio import atomic_write_json, read_json
from core.metrics import (
    BOOTSTRAP_REPS,
    dedupe,
    hallucination_rate,
    paired_bootstrap,
    record_counts,
    score,
)
from core.results import now_iso, performance_doc, read_true_pred, true_pred_doc, unique_setting
from core.rundir import PERFORMANCE, TRUE_PRED
from core.textnorm import normalise

SCHEMA = 1


@dataclass(frozen=True)
class EnsembleSpec:
    """A sweep's ``ensemble:`` section: built when a sweep that ran here ends."""

    top: int = field(default=3, metadata={"help": "The K best runs (by exact.f1 on the eval "
                                                  "file of the best) vote; 2 to 100."})
    min_votes: int | None = field(default=None, metadata={
        "help": "Votes an entity needs, 1 to top; null: a majority of the members."})


ENSEMBLE_KEYS = tuple(f.name for f in fields(EnsembleSpec))


def majority(k: int) -> int:
    """The votes a strict majority of k members needs.

    >>> majority(3), majority(4), majority(5)
    (2, 3, 3)
    """
    return k // 2 + 1


def vote(preds: Sequence[Sequence[Entity]], min_votes: int) -> list[Entity]:
    """One record's vote: the (label, text) pairs at least min_votes members answered (each
    member counted once per pair, text compared as the metrics compare it), in the order the
    members first gave them, in the first giver's spelling.

    >>> a, b, c = Entity("Disease", "flu"), Entity("Disease", "Flu "), Entity("Drug", "x")
    >>> vote([[a, c], [b], [c, c]], 2)
    [Entity(label='Disease', text='flu'), Entity(label='Drug', text='x')]
    >>> vote([[a], [c]], 2)
    []
    """
    counts: dict[tuple[str, str], int] = {}
    first: dict[tuple[str, str], Entity] = {}
    for ents in preds:
        for e in dedupe(ents):
            key = (e.label, normalise(e.text))
            counts[key] = counts.get(key, 0) + 1
            first.setdefault(key, e)
    return [first[k] for k, n in counts.items() if n >= min_votes]


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_ensemble(data: Any, where: str, errors: list[str]) -> EnsembleSpec | None:
    """The validated ``ensemble:`` section (None where absent); every problem appended to
    errors, naming the file and key.

    >>> errs = []
    >>> parse_ensemble({"top": 3}, "s.yaml", errs), errs
    (EnsembleSpec(top=3, min_votes=None), [])
    >>> parse_ensemble({"top": 1, "min_votes": 5, "vote": 2}, "s.yaml", errs) is None
    True
    >>> len(errs)
    3
    """
    if data is None:
        return None
    if not isinstance(data, dict):
        errors.append(f"{where}: ensemble: expected a mapping with keys "
                      f"{', '.join(ENSEMBLE_KEYS)} (e.g. ensemble: {{top: 3}})")
        return None
    n = len(errors)
    for k in data:
        if k not in ENSEMBLE_KEYS:
            errors.append(f"{where}: ensemble: {unknown_key(k, ENSEMBLE_KEYS)}")
    top = data.get("top", EnsembleSpec.top)
    if not _whole(top) or not 2 <= top <= 100:
        errors.append(f"{where}: ensemble.top: {top!r} is not a whole number from 2 to 100 "
                      "(the runs that vote, e.g. 3)")
    votes = data.get("min_votes")
    if votes is not None and (not _whole(votes) or not 1 <= votes <= (
            top if _whole(top) else 100)):
        errors.append(f"{where}: ensemble.min_votes: {votes!r} is not a whole number from 1 "
                      "to ensemble.top (or null for a majority)")
    return None if len(errors) > n else EnsembleSpec(top=top, min_votes=votes)


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


def write_vote(results_dir: Path, members: list[Member], min_votes: int,
               info: dict[str, Any], *, pair_with_first: bool = False) -> dict[str, Any]:
    """Vote, score and write results_dir/true_pred_entities.json and performance.json (with
    info as its `ensemble` block; atomic writes, the folder made only once the members and
    votes are checked); pair_with_first: also the paired bootstrap of the vote against the
    first member (`compare`'s numbers, as `vs_best_member`). Returns the performance doc."""
    check_members(members)
    if not 1 <= min_votes <= len(members):
        raise DataError(f"--min-votes {min_votes}: give a number from 1 to the {len(members)} "
                        "members (a majority is the default)")
    first = members[0]
    voted = [vote([m.pred[k] for m in members], min_votes) for k in range(len(first.gold))]
    scores = score(first.gold, voted, first.texts, unique=first.unique, ci_reps=BOOTSTRAP_REPS)
    info = {"schema": SCHEMA, "members": [m.run_id for m in members], "min_votes": min_votes,
            "member_files": [str(m.file) for m in members], **info}
    if pair_with_first:
        info["vs_best_member"] = _paired_with_first(voted, first)
    doc = _performance(members, voted, scores, info)
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_dir / TRUE_PRED,
                      true_pred_doc(first.gold, voted, first.texts or [], None))
    atomic_write_json(results_dir / PERFORMANCE, doc)
    return doc


def _paired_with_first(voted: list[list[Entity]], first: Member) -> dict[str, Any]:
    """What `compare ENSEMBLE FIRST` reports (exact F1): both on the same records and gold."""
    a = record_counts(first.gold, voted, first.texts, "exact", first.unique)
    b = record_counts(first.gold, first.pred, first.texts, "exact", first.unique)
    return {"run": first.run_id, "metric": "exact.f1", **paired_bootstrap(a, b, stat="f1")}


def _performance(members: list[Member], voted: list[list[Entity]], scores: dict[str, Any],
                 info: dict[str, Any]) -> dict[str, Any]:
    """The ensemble's performance.json: the members' shared config facts, its own scores."""
    docs = [_member_doc(m) for m in members]
    first = members[0]
    # No every-mention score: a vote answers each (label, text) once per record, so counting
    # every mention would only measure that.
    extra: dict[str, Any] = {"ensemble": info, "data": docs[0].get("data"),
                             "mention_level": None, "budget": None, "trained_in": None,
                             "created_at": now_iso()}
    return performance_doc(scores, num_examples=len(first.gold), avg_inference_time=0.0,
                           parse={"failure_rate": None},
                           hallucination_rate=(hallucination_rate(voted, first.texts)
                                               if first.texts else None),
                           config=shared_config([d.get("config") or {} for d in docs]),
                           extra=extra)


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


