"""Adaptive sweeps: successive halving over training epochs, promotion by resuming.

A sweep with a ``search:`` section trains every configuration for the smallest budget (rung
0), scores it on the dev split, keeps the best ``keep`` fraction, and promotes those to the next
budget, where they *resume* from their checkpoint in their own run folder::

    search:
      strategy: successive-halving
      metric: dev_exact_f1        # or dev_relaxed_f1, dev_overlap_f1, val_loss
      budget: train.num_epochs    # the only budget key
      rungs: [1, 3, 9]            # epochs at each rung, increasing
      keep: 1/3                   # fraction promoted at each rung (at least one run)

Every run is configured for the largest budget (``train.num_epochs`` = the last rung), so its
learning-rate schedule is the same as a straight run's from the first step; a lower rung only
stops it early (after a checkpoint) and evaluates it. A run promoted to the top rung ends
bit-identical to the same configuration trained straight through.

Files (versioned): ``<sweep>/search.json`` holds the decisions, one entry per decided rung;
``<run>/budget.json`` the rung a run is to train to. Both are written atomically, and a
decision is written before any run is moved on, so a decider killed half-way picks up where it
stopped (``advance`` in launcher.search is idempotent).

This module is pure (no launcher, no torch): the spec, its validation, and the ranking.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from fractions import Fraction
from typing import Any

from core.config import short
from core.errors import unknown_key

STRATEGIES = ("successive-halving", "asha")
METRICS = ("dev_exact_f1", "dev_relaxed_f1", "dev_overlap_f1", "val_loss")
BUDGET_KEYS = ("train.num_epochs",)
SEARCH_KEYS = ("strategy", "metric", "budget", "rungs", "keep")
SEARCH_SCHEMA = 1
BUDGET_SCHEMA = 1


@dataclass(frozen=True)
class SearchSpec:
    """A sweep's ``search:`` section, validated."""

    rungs: tuple[float, ...]
    """Budget (epochs) of each rung, increasing; the last is every run's configured budget."""
    strategy: str = "successive-halving"
    """How runs are chosen: successive-halving (synchronous: a rung is decided when all of
    its runs have ended) or asha (asynchronous: a run goes on as soon as it ranks in the top
    keep of the runs that have finished its rung so far; no run waits for a rung's last)."""
    metric: str = "dev_exact_f1"
    """What ranks runs at a rung: a dev-split F1 (higher is better) or val_loss (lower)."""
    budget: str = "train.num_epochs"
    """The config key the rungs are budgets of."""
    keep: float = 1 / 3
    """Fraction of a rung's runs promoted to the next rung (at least one)."""
    keep_text: str = field(default="1/3", compare=False)
    """keep as written in the sweep file."""

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "val_loss"

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "metric": self.metric, "budget": self.budget,
                "rungs": list(self.rungs), "keep": self.keep_text}

    def survivors(self, n: int) -> int:
        """How many of n ranked runs go on to the next rung.

        >>> SearchSpec((1, 3, 9)).survivors(12), SearchSpec((1, 3)).survivors(2)
        (4, 1)
        """
        return max(1, min(n, math.floor(n * self.keep + 1e-9))) if n else 0

    def run_epochs(self, n_configs: int) -> float:
        """The most run-epochs the search can train (every rung full, no failures), to set
        against the full grid's n_configs * rungs[-1].

        >>> SearchSpec((1, 3, 9)).run_epochs(12)
        26.0
        """
        total, alive, done = 0.0, n_configs, 0.0
        for i, b in enumerate(self.rungs):
            total += alive * (b - done)
            done = b
            if i + 1 < len(self.rungs):
                alive = self.survivors(alive)
        return total


def _keep(value: Any, where: str, errors: list[str]) -> tuple[float, str]:
    try:
        if isinstance(value, bool):
            raise ValueError
        frac = Fraction(str(value).strip()) if isinstance(value, (str, int, float)) else None
        if frac is None:
            raise ValueError
    except (ValueError, ZeroDivisionError):
        errors.append(f"{where}: search.keep: expected a fraction such as 1/3 or 0.5, got "
                      f"{short(value)}")
        return 1 / 3, "1/3"
    if not 0 < frac < 1:
        errors.append(f"{where}: search.keep: must be between 0 and 1 (exclusive), got {value}")
    return float(frac), str(value).strip()


def _rungs(value: Any, where: str, errors: list[str]) -> tuple[float, ...]:
    if (not isinstance(value, list) or len(value) < 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        errors.append(f"{where}: search.rungs: expected a list of at least two budgets in "
                      f"epochs, increasing (e.g. [1, 3, 9]), got {short(value)}")
        return (1.0, 3.0)
    try:
        rungs = tuple(float(v) for v in value)
    except OverflowError:
        rungs = (math.inf,)
    if not all(math.isfinite(b) and b == int(b) and 1 <= b <= MAX_RUNG_EPOCHS for b in rungs):
        # A rung stops at the end of the epoch that reaches it: 0.5 would train a whole one.
        errors.append(f"{where}: search.rungs: each budget is a whole number of epochs from 1 "
                      f"to {MAX_RUNG_EPOCHS}, got {short(value)}")
        return (1.0, 3.0)
    if any(b <= a for a, b in zip(rungs, rungs[1:], strict=False)):
        errors.append(f"{where}: search.rungs: budgets must be positive and strictly "
                      f"increasing, got {short(value)}")
    return rungs


MAX_RUNG_EPOCHS = 1000


_DEFAULTS = {f.name: f.default for f in fields(SearchSpec) if f.default is not MISSING}


def _choice(data: dict[str, Any], key: str, choices: tuple[str, ...], where: str,
            errors: list[str]) -> str:
    value = data.get(key, _DEFAULTS[key])
    if value not in choices:
        errors.append(f"{where}: search.{key}: {short(value)} is not one of {', '.join(choices)}")
    return str(value)


def parse_search(data: Any, where: str, errors: list[str]) -> SearchSpec | None:
    """The validated spec of a sweep's search: section (None when it is absent); every
    problem is appended to errors, each naming the file and the key."""
    if data is None:
        return None
    if not isinstance(data, dict):
        errors.append(f"{where}: search: expected a mapping with keys {', '.join(SEARCH_KEYS)}")
        return None
    for k in data:
        if k not in SEARCH_KEYS:
            errors.append(f"{where}: search: {unknown_key(k, SEARCH_KEYS)}")
    strategy = _choice(data, "strategy", STRATEGIES, where, errors)
    metric = _choice(data, "metric", METRICS, where, errors)
    budget = _choice(data, "budget", BUDGET_KEYS, where, errors)
    if "rungs" not in data:
        errors.append(f"{where}: search.rungs: required, the epochs of each rung (e.g. "
                      "[1, 3, 9])")
    rungs = _rungs(data.get("rungs", [1, 3]), where, errors)
    keep, keep_text = _keep(data.get("keep", _DEFAULTS["keep_text"]), where, errors)
    return SearchSpec(rungs=rungs, strategy=strategy, metric=metric, budget=budget, keep=keep,
                      keep_text=keep_text)


def spec_from_dict(d: dict[str, Any]) -> SearchSpec:
    """The spec back from search.json (written by as_dict, validated when it was written)."""
    errors: list[str] = []
    spec = parse_search(d, "search.json", errors)
    if errors or spec is None:
        raise ValueError("; ".join(errors) or "search.json: no search spec")
    return spec


@dataclass(frozen=True)
class Decision:
    """One rung decided: who goes on, who stops and why."""

    rung: int
    promoted: tuple[str, ...]
    stopped: dict[str, str]
    scores: dict[str, float | None]


def decide(spec: SearchSpec, rung: int, scores: dict[str, float | None]) -> Decision:
    """Rank a finished rung's runs by the metric (a run without a score, e.g. a failed one,
    ranks last and never goes on) and promote the best survivors(n).

    >>> d = decide(SearchSpec((1, 3)), 0, {"a": 0.5, "b": 0.7, "c": None, "d": 0.6})
    >>> d.promoted, sorted(d.stopped)
    (('b',), ['a', 'c', 'd'])
    >>> d.stopped["c"]
    'failed at rung 0 (no dev_exact_f1)'
    """
    scored = [(r, float(s)) for r, s in scores.items() if s is not None]
    sign = -1.0 if spec.higher_is_better else 1.0
    ranked = sorted(scored, key=lambda rs: (sign * float(rs[1]), rs[0]))
    n_keep = spec.survivors(len(scores)) if rung + 1 < len(spec.rungs) else 0
    promoted = tuple(r for r, _ in ranked[:n_keep])
    stopped: dict[str, str] = {}
    cut = ranked[n_keep - 1][1] if n_keep and len(ranked) >= n_keep else None
    for pos, (r, s) in enumerate(ranked):
        if r in promoted:
            continue
        if rung + 1 >= len(spec.rungs):
            stopped[r] = "finished (top rung)"
        else:
            stopped[r] = (f"stopped at rung {rung}: rank {pos + 1} of {len(scores)} by "
                          f"{spec.metric} ({s:.4f}; the last promoted: {cut:.4f})"
                          if cut is not None else f"stopped at rung {rung}")
    for r, missing in scores.items():
        if missing is None:
            stopped[r] = f"failed at rung {rung} (no {spec.metric})"
    return Decision(rung, promoted, stopped, dict(scores))


@dataclass(frozen=True)
class Budget:
    """A run's budget.json: the rung it trains to and that rung's epochs."""

    rung: int
    epochs: float

    def as_dict(self) -> dict[str, Any]:
        return {"schema": BUDGET_SCHEMA, "rung": self.rung, "epochs": self.epochs}


def budget_from_doc(doc: Any, where: str, max_epochs: float) -> Budget:
    """A budget.json as the job may trust it (ValueError naming the file and the fix): the
    runs folder may be shared, so only a well-formed budget within the run's configured
    epochs is taken; it can only shorten training.

    >>> budget_from_doc({"schema": 1, "rung": 0, "epochs": 1}, "b.json", 3.0)
    Budget(rung=0, epochs=1.0)
    >>> budget_from_doc({"schema": 1, "rung": 0, "epochs": 5}, "b.json", 3.0)
    Traceback (most recent call last):
    ...
    ValueError: b.json: epochs 5 is not between 0 and the run's 3 epochs; submit the sweep again to rewrite it
    """
    fix = "submit the sweep again to rewrite it"
    if not isinstance(doc, dict) or doc.get("schema") != BUDGET_SCHEMA:
        raise ValueError(f"{where}: not a medsweep budget (schema {BUDGET_SCHEMA}); {fix}")
    rung, epochs = doc.get("rung"), doc.get("epochs")
    if not isinstance(rung, int) or isinstance(rung, bool) or not 0 <= rung < 1000:
        raise ValueError(f"{where}: rung {short(rung)} is not a rung number; {fix}")
    if (not isinstance(epochs, (int, float)) or isinstance(epochs, bool)
            or not 0 < epochs <= max_epochs):
        raise ValueError(f"{where}: epochs {short(epochs)} is not between 0 and the run's "
                         f"{max_epochs:g} epochs; {fix}")
    return Budget(rung, float(epochs))


def metric_of(spec: SearchSpec, performance: Any) -> float | None:
    """The search metric from a run's performance.json (val_loss: the validation loss of the
    last epoch trained, from the training summary it carries); None where it is missing.

    >>> metric_of(SearchSpec((1, 3)), {"metrics": {"total": {"exact": {"f1": 0.5}}}})
    0.5
    >>> metric_of(SearchSpec((1, 3), metric="val_loss"),
    ...           {"training": {"validation": {"per_epoch": [{"loss": 0.9}, {"loss": 0.7}]}}})
    0.7
    """
    if not isinstance(performance, dict):
        return None
    try:
        if spec.metric == "val_loss":
            value = performance["training"]["validation"]["per_epoch"][-1]["loss"]
        else:
            name = spec.metric.removeprefix("dev_").removesuffix("_f1")
            value = performance["metrics"]["total"][name]["f1"]
    except (KeyError, IndexError, TypeError):
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def rank(spec: SearchSpec, scores: dict[str, float | None]) -> list[str]:
    """Runs with a score, best first (ties by run id); runs without one are left out.

    >>> rank(SearchSpec((1, 3)), {"a": 0.5, "b": 0.7, "c": None})
    ['b', 'a']
    >>> rank(SearchSpec((1, 3), metric="val_loss"), {"a": 0.5, "b": 0.7})
    ['a', 'b']
    """
    sign = -1.0 if spec.higher_is_better else 1.0
    scored = [(r, float(s)) for r, s in scores.items() if s is not None]
    return [r for r, _ in sorted(scored, key=lambda rs: (sign * rs[1], rs[0]))]


def asha_promotions(spec: SearchSpec, rung: int, scores: dict[str, float | None],
                    promoted: set[str], complete: bool) -> list[tuple[str, str]]:
    """The runs of a rung to promote now, asynchronously (Li et al., "A System for Massively
    Parallel Hyperparameter Tuning", MLSys 2020): of the n runs that have finished the rung so
    far, those ranked in the top floor(n * keep) that are not promoted yet. Once every run of
    the rung has finished (complete), at least as many go on as successive halving would
    promote. Returns (run id, why) pairs; none from the top rung.

    >>> spec = SearchSpec((1, 3, 9))
    >>> asha_promotions(spec, 0, {"a": 0.5, "b": 0.7}, set(), False)
    []
    >>> asha_promotions(spec, 0, {"a": 0.5, "b": 0.7, "c": 0.6}, set(), False)
    [('b', 'rank 1 of 3 finished at rung 0')]
    >>> asha_promotions(spec, 0, {"a": 0.5, "b": 0.7, "c": 0.6}, {"b"}, False)
    []
    >>> asha_promotions(spec, 1, {"b": 0.7}, set(), True)
    [('b', 'rank 1 of 1 finished at rung 1')]
    """
    if rung + 1 >= len(spec.rungs):
        return []
    n = len(scores)
    n_keep = math.floor(n * spec.keep + 1e-9)
    if complete:
        n_keep = max(n_keep, spec.survivors(n))
    ranked = rank(spec, scores)[:n_keep]
    return [(r, f"rank {i + 1} of {n} finished at rung {rung}")
            for i, r in enumerate(ranked) if r not in promoted]
