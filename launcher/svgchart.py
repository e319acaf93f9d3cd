"""Small static SVG charts for the sweep report, written as text.

Every string that reaches the SVG goes through `el`, which escapes attribute values and text
(markupsafe, as the report's template does): a run name like ``<script>`` stays text. The
charts need no script to be drawn; the report's one script only sorts tables and toggles
series (elements carry ``data-series``).

>>> str(el("text", {"x": 1}, "<b>"))
'<text x="1">&lt;b&gt;</text>'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from markupsafe import Markup, escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
_RAMP = ((0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)),
         (0.75, (94, 201, 98)), (1.0, (253, 231, 37)))
W, H = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 14, 52


def color_of(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def ramp(t: float) -> str:
    """A viridis-like colour for t in [0, 1] (clamped).

    >>> ramp(0.0), ramp(1.0), ramp(2.0)
    ('#440154', '#fde725', '#fde725')
    """
    t = min(1.0, max(0.0, t)) if math.isfinite(t) else 0.0
    for (t0, c0), (t1, c1) in zip(_RAMP, _RAMP[1:], strict=False):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            rgb = [round(a + f * (b - a)) for a, b in zip(c0, c1, strict=True)]
            return "#" + "".join(f"{v:02x}" for v in rgb)
    return "#fde725"


def _attr(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def el(tag: str, attrs: dict[str, Any] | None = None, *children: Any) -> Markup:
    """An element: attribute names are ours (a trailing _ dropped, _ read as -); values and
    text children are escaped, Markup children kept."""
    a = "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(_attr(v))}"'
                for k, v in (attrs or {}).items() if v is not None)
    inner = "".join(str(c) if isinstance(c, Markup) else str(escape(str(c))) for c in children)
    # Values and text were escaped just above; the tag and attribute names are ours.
    return Markup(f"<{tag}{a}>{inner}</{tag}>")  # noqa: S704


def svg(width: int, height: int, label: str, *children: Markup) -> Markup:
    return el("svg", {"xmlns": "http://www.w3.org/2000/svg", "width": width, "height": height,
                      "viewBox": f"0 0 {width} {height}", "role": "img", "aria-label": label,
                      "class": "chart"}, *children)


def fmt_tick(v: float) -> str:
    """
    >>> fmt_tick(0.0001), fmt_tick(0.25), fmt_tick(3.0), fmt_tick(1500.0)
    ('1e-04', '0.25', '3', '1500')
    """
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:.4g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi].

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten (with 2 and 5 between where the range spans at most two decades).

    >>> log_ticks(1e-5, 1e-3)
    [1e-05, 2e-05, 5e-05, 0.0001, 0.0002, 0.0005, 0.001]
    """
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1, 2, 5) if b - a <= 2 else (1,)
    out = [float(f"{m}e{e}") for e in range(a, b + 1) for m in mults]
    inside = [t for t in out if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    return inside or [lo, hi]


@dataclass
class Scale:
    """Data to pixels along one axis (log10 where log)."""

    lo: float
    hi: float
    a: float
    b: float
    log: bool = False

    def __call__(self, v: float) -> float:
        if self.log:
            lo, hi, v = math.log10(self.lo), math.log10(self.hi), math.log10(max(v, self.lo))
        else:
            lo, hi = self.lo, self.hi
        t = (v - lo) / (hi - lo) if hi != lo else 0.5
        return self.a + t * (self.b - self.a)

    def ticks(self) -> list[float]:
        return log_ticks(self.lo, self.hi) if self.log else nice_ticks(self.lo, self.hi)


def padded(lo: float, hi: float, log: bool) -> tuple[float, float]:
    """A data range with a margin (a factor on a log axis)."""
    if log:
        return (lo / 1.6, hi * 1.6) if lo != hi else (lo / 3, hi * 3)
    span = hi - lo or (abs(hi) or 1.0)
    return lo - 0.06 * span, hi + 0.06 * span


def wants_log(key: str, values: Sequence[float]) -> bool:
    """A log axis for learning rates, and for positive values spanning two decades or more.

    >>> wants_log("train.learning_rate", [1e-4, 2e-4]), wants_log("peft.r", [8, 16, 64])
    (True, False)
    """
    pos = [v for v in values if v > 0]
    if len(pos) != len(values) or not pos:
        return False
    return "learning_rate" in key or max(pos) / min(pos) >= 100


def frame(x: Scale, y: Scale, x_title: str, y_title: str,
          x_labels: Sequence[tuple[float, str]] | None = None) -> list[Markup]:
    """Grid, axes, tick labels and titles of a plot area."""
    parts: list[Markup] = []
    for t in y.ticks():
        py = y(t)
        parts.append(el("line", {"x1": x.a, "x2": x.b, "y1": py, "y2": py, "class": "grid"}))
        parts.append(el("text", {"x": x.a - 6, "y": py + 4, "class": "tick",
                                 "text-anchor": "end"}, fmt_tick(t)))
    xt = x_labels if x_labels is not None else [(t, fmt_tick(t)) for t in x.ticks()]
    for t, label in xt:
        px = x(t)
        parts.append(el("line", {"x1": px, "x2": px, "y1": y.a, "y2": y.a + 4, "class": "axis"}))
        parts.append(el("text", {"x": px, "y": y.a + 17, "class": "tick",
                                 "text-anchor": "middle"}, label))
    parts.append(el("line", {"x1": x.a, "x2": x.b, "y1": y.a, "y2": y.a, "class": "axis"}))
    parts.append(el("line", {"x1": x.a, "x2": x.a, "y1": y.a, "y2": y.b, "class": "axis"}))
    parts.append(el("text", {"x": (x.a + x.b) / 2, "y": y.a + 38, "class": "title",
                             "text-anchor": "middle"}, x_title))
    parts.append(el("text", {"x": 14, "y": (y.a + y.b) / 2, "class": "title",
                             "text-anchor": "middle",
                             "transform": f"rotate(-90 14 {(y.a + y.b) / 2:.1f})"}, y_title))
    return parts


@dataclass
class Point:
    """One run (or one configuration over its seeds) in a metric-against-a-key chart."""

    x: Any
    y: float
    lo: float | None = None
    hi: float | None = None
    tip: str = ""


def _y_scale(lows: list[float], highs: list[float], clamp01: bool) -> Scale:
    lo, hi = padded(min(lows), max(highs), False)
    if clamp01:
        lo, hi = max(0.0, lo), min(1.0, hi)
    return Scale(lo, hi, H - BOTTOM, TOP)


def metric_chart(points: list[Point], key: str, metric: str) -> Markup:
    """The metric against one varied key: a point per run with its interval as a bar; a log
    axis for learning rates; categories (models, prompts) spread evenly."""
    numeric = all(isinstance(p.x, (int, float)) and not isinstance(p.x, bool) for p in points)
    # Each point's place on the x axis, in the points' order (a value may be a list, e.g.
    # LoRA target modules: no dict keyed by values).
    if numeric:
        xs = [float(p.x) for p in points]
        log = wants_log(key, xs)
        x = Scale(*padded(min(xs), max(xs), log), LEFT, W - RIGHT, log)
        labels = None
    else:
        cats = sorted({short(p.x) for p in points})
        x = Scale(-0.5, len(cats) - 0.5, LEFT, W - RIGHT)
        xs = [float(cats.index(short(p.x))) for p in points]
        labels = [(float(i), c if len(c) <= 18 else c[:17] + "…") for i, c in enumerate(cats)]
    y = _y_scale([p.lo if p.lo is not None else p.y for p in points],
                 [p.hi if p.hi is not None else p.y for p in points], True)
    parts = frame(x, y, key, metric, labels)
    seen: dict[float, int] = {}
    for p, k in zip(points, xs, strict=True):
        j = seen[k] = seen.get(k, -1) + 1
        px = x(k) + j * 5  # several runs at one value step aside
        g = [el("title", None, p.tip)]
        if p.lo is not None and p.hi is not None:
            g.append(el("line", {"x1": px, "x2": px, "y1": y(p.lo), "y2": y(p.hi),
                                 "class": "ci"}))
        g.append(el("circle", {"cx": px, "cy": y(p.y), "r": 4, "class": "pt"}))
        parts.append(el("g", {"class": "point"}, *g))
    return svg(W, H, f"{metric} against {key}", *parts)


@dataclass
class Series:
    """One run's curve in the loss chart."""

    index: int
    name: str
    steps: list[float]
    values: list[float]
    dashed: bool = False


def thin(xs: list[float], ys: list[float], most: int = 300) -> tuple[list[float], list[float]]:
    """At most `most` points of a long curve (evenly kept, the last always).

    >>> [len(v) for v in thin(list(range(1000)), list(range(1000)))]
    [300, 300]
    """
    if len(xs) <= most:
        return xs, ys
    keep = sorted({round(i * (len(xs) - 1) / (most - 1)) for i in range(most)})
    return [xs[i] for i in keep], [ys[i] for i in keep]


def loss_chart(series: list[Series]) -> Markup:
    """Loss against optimizer step, a line per run (validation dashed, same colour); each
    run's lines carry data-series, so the page can toggle them."""
    xs = [s for ser in series for s in ser.steps]
    ys = [v for ser in series for v in ser.values if v > 0]
    log = bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 20
    x = Scale(min(xs, default=0.0), max(xs, default=1.0) or 1.0, LEFT, W - RIGHT)
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    y = Scale(*((lo / 1.2, hi * 1.2) if log else padded(lo, hi, False)), H - BOTTOM, TOP, log)
    parts = frame(x, y, "optimizer step", "loss (validation dashed)")
    for ser in series:
        sx, sy = thin(ser.steps, ser.values)
        pts = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(sx, sy, strict=True) if b > 0
                       or not log)
        parts.append(el("polyline", {"points": pts, "class": "dashed" if ser.dashed else "line",
                                     "stroke": color_of(ser.index),
                                     "data-series": ser.index}, el("title", None, ser.name)))
    return svg(W, H, "loss curves", *parts)


@dataclass
class Axis:
    """One vertical axis of a parallel-coordinates chart."""

    name: str
    values: list[Any]
    log: bool = False
    cats: list[str] = field(default_factory=list)


def parallel_chart(axes: list[Axis], colour_by: list[float], tips: list[str]) -> Markup:
    """Parallel coordinates: an axis per varied key and one for the metric (the last), a line
    per configuration coloured by the metric."""
    width = max(W, 130 * len(axes))
    top, bottom = 30, H - 30
    gap = (width - 2 * LEFT) / max(1, len(axes) - 1)
    parts: list[Markup] = []
    place: list[Any] = []
    for i, ax in enumerate(axes):
        px = LEFT + i * gap
        nums = [v for v in ax.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(nums) == len(ax.values) and nums:
            lo, hi = (min(nums), max(nums)) if min(nums) != max(nums) else padded(
                min(nums), max(nums), ax.log)
            s = Scale(lo, hi, bottom, top, ax.log)
            place.append(lambda v, s=s: s(float(v)))
            ticks = [(s(t), fmt_tick(t)) for t in s.ticks()]
        else:
            cats = ax.cats or sorted({short(v) for v in ax.values})
            s = Scale(-0.5, len(cats) - 0.5, bottom, top)
            place.append(lambda v, s=s, cats=cats: s(float(cats.index(short(v)))))
            ticks = [(s(float(k)), c[:14]) for k, c in enumerate(cats)]
        parts.append(el("line", {"x1": px, "x2": px, "y1": top, "y2": bottom, "class": "axis"}))
        parts.append(el("text", {"x": px, "y": 16, "class": "title", "text-anchor": "middle"},
                        ax.name))
        for py, label in ticks:
            parts.append(el("text", {"x": px + 4, "y": py + 4, "class": "tick"}, label))
    lo, hi = min(colour_by, default=0.0), max(colour_by, default=1.0)
    for row, (c, tip) in enumerate(zip(colour_by, tips, strict=True)):
        pts = " ".join(f"{LEFT + i * gap:.1f},{place[i](ax.values[row]):.1f}"
                       for i, ax in enumerate(axes))
        parts.append(el("polyline", {"points": pts, "class": "pline",
                                     "stroke": ramp((c - lo) / (hi - lo) if hi > lo else 1.0)},
                        el("title", None, tip)))
    return svg(int(width), H, "parallel coordinates", *parts)


@dataclass
class RungRow:
    """One run in the picture of a search's rungs."""

    run_id: str
    reached: int
    outcome: str
    scores: dict[int, float] = field(default_factory=dict)


def _outcome_class(outcome: str, last: bool) -> str:
    """A rung the run went past is "promoted"; the one it is at says what became of it."""
    if not last:
        return "promoted"
    if outcome.startswith("finished"):
        return "finished"
    if outcome.startswith(("promoted", "in rung", "running", "waiting")):
        return "running"
    return "stopped"


def rungs_chart(rows: list[RungRow], budgets: list[float]) -> Markup:
    """A row per run, a cell per rung it reached (its score there), coloured by what became of
    it; the outcome in the words `status` uses at the row's end."""
    cell_w, cell_h, name_w = 70, 22, 220
    width = name_w + cell_w * len(budgets) + 360
    height = 30 + cell_h * len(rows) + 8
    parts = [el("text", {"x": name_w + k * cell_w + cell_w / 2, "y": 18, "class": "title",
                         "text-anchor": "middle"}, f"{b:g} ep") for k, b in enumerate(budgets)]
    for i, r in enumerate(rows):
        y0 = 28 + i * cell_h
        name = r.run_id if len(r.run_id) <= 32 else r.run_id[:31] + "…"
        parts.append(el("text", {"x": name_w - 8, "y": y0 + 15, "class": "tick",
                                 "text-anchor": "end"}, el("title", None, r.run_id), name))
        for k in range(min(r.reached, len(budgets) - 1) + 1):
            last = k == r.reached
            score = r.scores.get(k)
            parts.append(el("rect", {"x": name_w + k * cell_w + 2, "y": y0 + 2,
                                     "width": cell_w - 4, "height": cell_h - 4, "rx": 3,
                                     "class": f"rung {_outcome_class(r.outcome, last)}"}))
            if score is not None:
                parts.append(el("text", {"x": name_w + k * cell_w + cell_w / 2, "y": y0 + 15,
                                         "class": "cell", "text-anchor": "middle"},
                                f"{score:.3f}"))
        parts.append(el("text", {"x": name_w + cell_w * len(budgets) + 8, "y": y0 + 15,
                                 "class": "tick"}, r.outcome[:70]))
    return svg(width, height, "rungs of the search", *parts)


def short(value: Any) -> str:
    """A config value as a short label (a model path's last part).

    >>> short("unsloth/gemma-3-270m-it"), short("scratch:gemma-tiny"), short(None)
    ('gemma-3-270m-it', 'gemma-tiny', 'None')
    """
    return str(value).rsplit("/", 1)[-1].replace("scratch:", "")
