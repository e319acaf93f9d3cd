"""Entity-level metrics with one-to-one matching.

Per example, gold and predicted entities are matched by a maximum bipartite matching under the
metric's predicate, so one prediction can match at most one gold entity and vice versa (the
seed's ``relaxed`` let one prediction match many). Predicates, on normalised text:

- exact:   same label and same text
- relaxed: same label and overlapping text
- overlap: overlapping text, any label

Two texts overlap when an occurrence of one in the source intersects an occurrence of the other;
where either cannot be located in the source, when they share a word token that is not a
stopword. One shared character is never enough.

>>> from core.data import Entity as E
>>> s = score([[E("Disease", "breast cancer")]], [[E("Disease", "cancer")]],
...           texts=["History of breast cancer."])
>>> s["total"]["exact"]["f1"], s["total"]["relaxed"]["f1"]
(0.0, 1.0)
"""

from __future__ import annotations

import bisect
import random
from typing import Callable, Iterable, Sequence

from core.data import Entity
from core.textnorm import content_tokens, find_spans, find_word_spans, normalise

Predicate = Callable[[Entity, Entity], bool]

LABEL_BLIND = frozenset({"overlap"})
"""Metrics that ignore labels: a matched pair may join two labels, so they have a micro total
but no per-label or macro scores (any split of a label-blind match over labels depends on which
of several equally large matchings is chosen, or gives P / R that its tp / fp / fn contradict)."""


def _content_between(src: str, a: tuple[int, int], b: tuple[int, int]) -> bool:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return lo < hi and bool(content_tokens(src[lo:hi]))


def _texts_overlap(a: str, b: str, source: str | None) -> bool:
    na, nb = normalise(a), normalise(b)
    if na == nb:
        return True
    if source is not None:
        sa, sb = find_word_spans(source, a), find_word_spans(source, b)
        if sa and sb:
            src = normalise(source)
            return any(_content_between(src, x, y) for x in sa for y in sb)
    return bool(content_tokens(a) & content_tokens(b))


def predicate(metric: str, source: str | None) -> Predicate:
    if metric == "exact":
        return lambda g, p: g.label == p.label and normalise(g.text) == normalise(p.text)
    if metric == "relaxed":
        return lambda g, p: g.label == p.label and _texts_overlap(g.text, p.text, source)
    if metric == "overlap":
        return lambda g, p: _texts_overlap(g.text, p.text, source)
    raise ValueError(f"unknown metric {metric!r}")


class _Info:
    """What the predicates need of one entity in one record, computed once."""

    __slots__ = ("label", "norm", "spans", "tokens")

    def __init__(self, e: Entity, source: str | None, exact: bool):
        self.label = e.label
        self.norm = normalise(e.text)
        self.spans = find_word_spans(source, e.text) if source is not None and not exact else ()
        self.tokens = content_tokens(e.text) if not exact else frozenset()


def _edges(gold: Sequence[Entity], pred: Sequence[Entity], metric: str, source: str | None
           ) -> list[list[int]]:
    """adj[i]: the predictions gold i may match under metric (the same pairs predicate()
    accepts), found through indexes instead of testing every pair."""
    if metric not in ("exact", "relaxed", "overlap"):
        raise ValueError(f"unknown metric {metric!r}")
    if len(gold) * len(pred) <= 64:  # the usual record: testing each pair is cheaper
        ok = predicate(metric, source)
        return [[j for j, p in enumerate(pred) if ok(g, p)] for g in gold]
    exact = metric == "exact"
    g_info = [_Info(e, source, exact) for e in gold]
    p_info = [_Info(e, source, exact) for e in pred]
    by_norm: dict[str, list[int]] = {}
    for j, q in enumerate(p_info):
        by_norm.setdefault(q.norm, []).append(j)
    if metric == "exact":
        return [[j for j in by_norm.get(g.norm, []) if p_info[j].label == g.label]
                for g in g_info]
    src = normalise(source) if source is not None else ""
    located = sorted(((s0, s1, j) for j, q in enumerate(p_info) for s0, s1 in q.spans))
    starts = [t[0] for t in located]
    # A located span overlapping x starts before x ends and at most `longest` before x starts:
    # only that window of the sorted spans is looked at (a word repeated 4,000 times under
    # 40 labels took minutes when every located span was tested for every gold span).
    longest = max((s1 - s0 for s0, s1, _j in located), default=0)
    with_spans = {j for _s0, _s1, j in located}
    by_token: dict[str, list[int]] = {}
    for j, q in enumerate(p_info):
        for t in q.tokens:
            by_token.setdefault(t, []).append(j)
    adj = []
    for g in g_info:
        cand = set(by_norm.get(g.norm, []))
        for t in g.tokens:  # shared content word: where either side is not located
            cand.update(j for j in by_token.get(t, []) if not (g.spans and p_info[j].spans))
        for x in g.spans:
            if with_spans <= cand:
                break  # every located prediction is a candidate already
            lo = bisect.bisect_left(starts, x[0] - longest)
            for s0, s1, j in located[lo:bisect.bisect_left(starts, x[1])]:
                if s1 > x[0] and j not in cand and _content_between(src, x, (s0, s1)):
                    cand.add(j)
        if metric == "relaxed":
            cand = {j for j in cand if p_info[j].label == g.label}
        adj.append(sorted(cand))
    return adj


def max_matching(gold: Sequence[Entity], pred: Sequence[Entity], ok: Predicate | None = None,
                 *, adj: list[list[int]] | None = None) -> list[tuple[int, int]]:
    """Maximum bipartite matching; returns (gold_i, pred_j) pairs.

    Kuhn's augmenting paths, searched iteratively (a record with thousands of entities does not
    exhaust the stack), after a greedy start. Edges come from adj, else from testing ok on
    every pair.
    """
    if adj is None:
        assert ok is not None
        adj = [[j for j, p in enumerate(pred) if ok(g, p)] for g in gold]
    match_of_pred: dict[int, int] = {}
    match_of_gold: dict[int, int] = {}
    # Gold entities with fewer candidates first: same maximum, fewer augmentations.
    order = sorted(range(len(gold)), key=lambda k: len(adj[k]))
    for i in order:
        for j in adj[i]:
            if j not in match_of_pred:
                match_of_pred[j], match_of_gold[i] = i, j
                break
    for root in order:
        if root in match_of_gold or not adj[root]:
            continue
        seen: set[int] = set()
        # Each frame: (gold vertex, position in its list); parents[j] = gold that reached j.
        stack = [(root, 0)]
        parent: dict[int, int] = {}
        found = None
        while stack and found is None:
            i, k = stack[-1]
            if k >= len(adj[i]):
                stack.pop()
                continue
            stack[-1] = (i, k + 1)
            j = adj[i][k]
            if j in seen:
                continue
            seen.add(j)
            parent[j] = i
            if j not in match_of_pred:
                found = j
            else:
                stack.append((match_of_pred[j], 0))
        while found is not None:  # flip the path back to the root
            i = parent[found]
            prev = match_of_gold.get(i)
            match_of_pred[found], match_of_gold[i] = i, found
            found = prev if i != root else None
    return sorted((i, j) for j, i in match_of_pred.items())


def dedupe(ents: Iterable[Entity]) -> list[Entity]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in ents:
        key = (e.label, normalise(e.text))
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _prf(n_pred: int, n_gold: int, tp_pred: int, tp_gold: int) -> dict[str, float | int]:
    p = tp_pred / n_pred if n_pred else 0.0
    r = tp_gold / n_gold if n_gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": p, "r": r, "f1": f1, "tp": tp_gold, "fp": n_pred - tp_pred,
            "fn": n_gold - tp_gold, "support": n_gold}


BOOTSTRAP_REPS = 1000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95


def _percentile(sorted_vals: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted list (q in [0, 1])."""
    pos = q * (len(sorted_vals) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def _interval(vals: list[float], level: float) -> list[float]:
    """The central `level` percentile interval of resampled values (sorts them in place)."""
    vals.sort()
    tail = (1 - level) / 2
    return [round(_percentile(vals, tail), 6), round(_percentile(vals, 1 - tail), 6)]


def _micro(counts: Iterable[tuple[int, int, int]]) -> dict[str, float | int]:
    """Micro P/R/F1 of (predicted, gold, matched) record counts."""
    n_pred = n_gold = tp = 0
    for c in counts:
        n_pred += c[0]
        n_gold += c[1]
        tp += c[2]
    return _prf(n_pred, n_gold, tp, tp)


def bootstrap_ci(counts: Sequence[tuple[int, int, int]], reps: int = BOOTSTRAP_REPS,
                 seed: int = BOOTSTRAP_SEED, level: float = CI_LEVEL
                 ) -> dict[str, list[float]]:
    """Percentile-bootstrap interval of micro P, R and F1, resampling records.

    `counts` holds one (predicted, gold, matched) triple per record. Records, not entities,
    are resampled because a record's entities are not independent of each other (one misread
    sentence loses several). Deterministic for a given seed.

    >>> bootstrap_ci([(1, 1, 1)] * 5)["f1"]
    [1.0, 1.0]
    >>> lo, hi = bootstrap_ci([(1, 1, 1), (1, 1, 0)] * 20)["f1"]
    >>> lo < 0.5 < hi
    True
    """
    n = len(counts)
    if n == 0 or reps <= 0:
        return {}
    rng = random.Random(seed)
    stats: dict[str, list[float]] = {"p": [], "r": [], "f1": []}
    for _ in range(reps):
        prf = _micro(counts[k] for k in rng.choices(range(n), k=n))
        for key, vals in stats.items():
            vals.append(float(prf[key]))
    return {key: _interval(vals, level) for key, vals in stats.items()}


def _match_record(g_ents: Sequence[Entity], p_ents: Sequence[Entity], source: str | None,
                  metric: str, unique: bool
                  ) -> tuple[list[Entity], list[Entity], list[tuple[int, int]]]:
    g = dedupe(g_ents) if unique else list(g_ents)
    p = dedupe(p_ents) if unique else list(p_ents)
    return g, p, max_matching(g, p, adj=_edges(g, p, metric, source))


def record_counts(gold: Sequence[Sequence[Entity]], pred: Sequence[Sequence[Entity]],
                  texts: Sequence[str] | None, metric: str, unique: bool = True
                  ) -> list[tuple[int, int, int]]:
    """(predicted, gold, matched) per record under one metric: what the bootstraps resample."""
    out = []
    for k, (g_ents, p_ents) in enumerate(zip(gold, pred, strict=True)):
        g, p, pairs = _match_record(g_ents, p_ents, texts[k] if texts is not None else None,
                                    metric, unique)
        out.append((len(p), len(g), len(pairs)))
    return out


def record_errors(gold: Sequence[Entity], pred: Sequence[Entity], text: str | None,
                  metric: str = "exact", unique: bool = True
                  ) -> tuple[list[Entity], list[Entity]]:
    """(missed gold entities, spurious predictions) of one record under a metric: the same
    matching the scores count.

    >>> g = [Entity("Disease", "flu"), Entity("Disease", "gout")]
    >>> record_errors(g, [Entity("Disease", "flu"), Entity("Drug", "x")], "flu and gout")
    ([Entity(label='Disease', text='gout')], [Entity(label='Drug', text='x')])
    """
    g, p, pairs = _match_record(gold, pred, text, metric, unique)
    hit_g, hit_p = {i for i, _ in pairs}, {j for _, j in pairs}
    return ([e for i, e in enumerate(g) if i not in hit_g],
            [e for j, e in enumerate(p) if j not in hit_p])


def paired_bootstrap(a: Sequence[tuple[int, int, int]], b: Sequence[tuple[int, int, int]],
                     stat: str = "f1", reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED,
                     level: float = CI_LEVEL) -> dict[str, float | list[float] | int]:
    """Is run A better than run B on the same records? Resamples the records once for both
    runs, so what both get right or wrong cancels (a paired test; far tighter than comparing
    two separate intervals).

    Returns both runs' micro `stat`, the observed difference A - B, its percentile interval,
    and `a_better`: the share of resamples where A's stat is strictly higher.

    >>> r = paired_bootstrap([(1, 1, 1)] * 20, [(1, 1, 0)] * 20)
    >>> r["diff"], r["ci95"], r["a_better"]
    (1.0, [1.0, 1.0], 1.0)
    """
    if len(a) != len(b):
        raise ValueError(f"paired runs need the same records: {len(a)} vs {len(b)}")

    def micro(counts: Iterable[tuple[int, int, int]]) -> float:
        return float(_micro(counts)[stat])

    n = len(a)
    rng = random.Random(seed)
    diffs = []
    for _ in range(reps if n else 0):
        idx = rng.choices(range(n), k=n)
        diffs.append(micro(a[k] for k in idx) - micro(b[k] for k in idx))
    value_a, value_b = micro(a), micro(b)
    return {"a": round(value_a, 6), "b": round(value_b, 6),
            "diff": round(value_a - value_b, 6),
            "ci95": _interval(diffs, level) if diffs else [],
            "a_better": round(sum(d > 0 for d in diffs) / len(diffs), 4) if diffs else 0.0,
            "records": n, "reps": len(diffs)}


def score(gold: Sequence[Sequence[Entity]], pred: Sequence[Sequence[Entity]],
          texts: Sequence[str] | None = None, metrics: Sequence[str] = ("exact", "relaxed",
                                                                        "overlap"),
          unique: bool = True, ci_reps: int = 0) -> dict[str, dict]:
    """Micro, per-label and macro P/R/F1 for each metric.

    Returns {"total": {metric: prf}, "labels": {label: {metric: prf}}, "macro": {metric: prf}},
    plus "ci95": {metric: {"p"|"r"|"f1": [low, high]}, "level", "reps", "seed", "resampled"}
    when `ci_reps` > 0 (a record-level bootstrap of the micro totals, see `bootstrap_ci`).
    Per label, precision counts the label's predictions that were matched and recall its gold
    entities that were matched; labels seen only in predictions are included (recall 0).
    Label-blind metrics (overlap) have no per-label or macro entry.
    """
    if len(gold) != len(pred) or (texts is not None and len(texts) != len(gold)):
        raise ValueError(f"lengths differ: {len(gold)} gold, {len(pred)} predicted"
                         + (f", {len(texts)} texts" if texts is not None else ""))
    labels: dict[str, None] = {}
    for ents in (*gold, *pred):
        for e in ents:
            labels.setdefault(e.label, None)
    result: dict[str, dict] = {"total": {}, "labels": {lab: {} for lab in labels}, "macro": {}}
    if ci_reps > 0:
        result["ci95"] = {"level": CI_LEVEL, "reps": ci_reps, "seed": BOOTSTRAP_SEED,
                          "resampled": "records"}
    for metric in metrics:
        per_record: list[tuple[int, int, int]] = []
        n_pred = dict.fromkeys(labels, 0)
        n_gold = dict.fromkeys(labels, 0)
        tp_pred = dict.fromkeys(labels, 0)
        tp_gold = dict.fromkeys(labels, 0)
        for k, (g_ents, p_ents) in enumerate(zip(gold, pred, strict=False)):
            g, p, pairs = _match_record(g_ents, p_ents, texts[k] if texts is not None
                                        else None, metric, unique)
            for e in g:
                n_gold[e.label] += 1
            for e in p:
                n_pred[e.label] += 1
            for i, j in pairs:
                tp_gold[g[i].label] += 1
                tp_pred[p[j].label] += 1
            per_record.append((len(p), len(g), len(pairs)))
        if ci_reps > 0:
            result["ci95"][metric] = bootstrap_ci(per_record, reps=ci_reps)
        result["total"][metric] = _prf(sum(n_pred.values()), sum(n_gold.values()),
                                       sum(tp_pred.values()), sum(tp_gold.values()))
        if metric in LABEL_BLIND:
            continue
        per = {lab: _prf(n_pred[lab], n_gold[lab], tp_pred[lab], tp_gold[lab]) for lab in labels}
        for lab, prf in per.items():
            result["labels"][lab][metric] = prf
        n = len(per)
        result["macro"][metric] = {
            k: (sum(float(v[k]) for v in per.values()) / n if n else 0.0) for k in ("p", "r", "f1")
        }
    return result


def hallucination_rate(pred: Sequence[Sequence[Entity]], texts: Sequence[str]) -> float:
    """Share of predicted entities whose text does not occur in the input."""
    total = absent = 0
    for ents, text in zip(pred, texts, strict=False):
        for e in ents:
            total += 1
            if not find_spans(text, e.text):
                absent += 1
    return absent / total if total else 0.0
