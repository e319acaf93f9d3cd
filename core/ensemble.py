"""Ensembles: the vote (per record, the (label, text) pairs enough members answered) and a
sweep's ``ensemble:`` section.

    ensemble:
      top: 3            # the 3 best runs by the leaderboard's exact.f1 vote
      min_votes: null   # votes an entity needs; null: a majority of the members
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Sequence

from core.data import Entity
from core.errors import unknown_key
from core.metrics import dedupe
from core.textnorm import normalise


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
