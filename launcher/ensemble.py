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
from typing import Any, Sequence

from core.data import DataError, Entity
from core.fileio import atomic_write_json, read_json
from core.metrics import BOOTSTRAP_REPS, dedupe, hallucination_rate, score
from core.results import now_iso, performance_doc, read_true_pred, true_pred_doc
from core.rundir import PERFORMANCE, RESULTS, TRUE_PRED, RunDir, refuse_links
from core.textnorm import normalise
from launcher.paired import _unique_setting

PREFIX = "ensemble-"
SCHEMA = 1


@dataclass(frozen=True)
class Member:
    """One member's saved answers."""

    run_id: str
    file: Path
    gold: list[list[Entity]]
    pred: list[list[Entity]]
    texts: list[str] | None
    unique: bool


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


def read_member(run_id: str, file: Path) -> Member:
    gold, pred, texts = read_true_pred(file)
    return Member(run_id, file, gold, pred, texts, _unique_setting(file))


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
    mention = score(first.gold, voted, texts, unique=False)["total"] if first.unique else None
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
    atomic_write_json(rd.performance, _performance(first, members, scores, mention, info))
    return rd.path


def _performance(first: Member, members: list[Member], scores: dict[str, Any],
                 mention: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The ensemble's performance.json: the members' shared config facts, its own scores."""
    base = _member_doc(first)
    extra: dict[str, Any] = {"ensemble": info, "data": base.get("data"),
                             "mention_level": mention, "budget": None, "trained_in": None,
                             "created_at": now_iso()}
    return performance_doc(scores, num_examples=len(first.gold), avg_inference_time=0.0,
                           parse={"failure_rate": None},
                           hallucination_rate=(hallucination_rate(
                               [vote([m.pred[k] for m in members], 1) for k in
                                range(len(first.gold))], first.texts)
                               if first.texts else None),
                           config=base.get("config") or {}, extra=extra)


def _member_doc(m: Member) -> dict[str, Any]:
    try:
        doc = read_json(m.file.parent / PERFORMANCE)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
