"""One self-contained HTML page per sweep (`launcher report`): the leaderboard, the metric
against each varied key, loss curves, the search's rungs, per-label F1, the paired comparison
with the best run, the best run's worst errors, and what each run cost.

Reads files only (and run states as `status` does). Everything taken from a run's files is
escaped by the template engine (autoescape) or by `svgchart.el`; the page runs one inline script
whose hash its Content-Security-Policy names, so nothing else on the page can run. No file is
read through a symbolic link in the runs folder (it may be shared).
"""

from __future__ import annotations

import base64
import hashlib
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeGuard

from markupsafe import Markup

from core.fileio import atomic_write_text, read_json
from core.metrics import record_errors
from core.parsing import FAILED, parse_output
from core.results import read_raw_outputs, read_true_pred
from core.rundir import (
    PERFORMANCE,
    PROGRESS_FILE,
    RESULTS,
    RUNG_ARCHIVE,
    TRUE_PRED,
    RunDir,
    clean_progress,
    planted_links,
)
from core.search import metric_of, spec_from_dict
from launcher import svgchart as sc
from launcher.leaderboard import (
    CONFIG_SECTIONS,
    SEED_KEY,
    Board,
    _is_interval,
    against_best,
    collect,
    config_number,
    over_seeds,
    sort_rows,
    table_columns,
)
from launcher.search import read_search, run_rungs
from launcher.state import RunState, run_states

REPORT_FILE = "report.html"
METRIC = "exact.f1"
LOSS_RUNS = 60
"""At most this many runs' loss curves (the best first): a 100-run page stays small."""
LABEL_RUNS = 10
ERROR_RECORDS = 15
TEMPLATE = Path(__file__).with_name("templates") / "report.html"


def cell(v: Any, col: str) -> tuple[str, Any]:
    """(text shown, value sorted by) of one leaderboard cell."""
    if v is None:
        return "", None
    if _is_interval(v):
        return f"{v[0]:.3f}–{v[1]:.3f}", v[0]
    if isinstance(v, bool):
        return str(v).lower(), str(v)
    if isinstance(v, float):
        as_config = col.startswith(CONFIG_SECTIONS) or col == "epochs"
        return (config_number(v) if as_config else f"{v:.3f}"), v
    if isinstance(v, int):
        return str(v), v
    return str(v), str(v)


def header(col: str) -> str:
    return (col.split(".", 1)[1] if col.startswith(CONFIG_SECTIONS)
            else col.replace(".ci95", " 95% CI"))


def _readable(run_dir: Path, board: Board) -> bool:
    """Whether a run's files can be read without following a link planted in the runs folder."""
    links = planted_links(run_dir, (RESULTS, f"{RESULTS}/{PERFORMANCE}",
                                    f"{RESULTS}/{TRUE_PRED}", PROGRESS_FILE))
    if links:
        board.problems.append(f"{links[0]} is a symbolic link; the report shows nothing read "
                              "through a link in a runs folder (it may be shared)")
    return not links


def gather(folder: Path) -> dict[str, Any]:
    """The template's context for one sweep folder."""
    board = collect([folder])
    board.rows = sort_rows([r for r in board.rows if _readable(Path(r["run_dir"]), board)],
                           METRIC)
    docs = {r["run_id"]: board.docs[r["run_dir"]] for r in board.rows}
    states = run_states(folder)
    against_best(board, METRIC)
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    best = board.rows[0] if board.rows else None
    return {
        "sweep": folder.name, "folder": str(folder),
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "counts": sorted(counts.items()), "total": len(states),
        "wall_s": wall_seconds(states, docs),
        "leaderboard": leaderboard_table(board, states),
        "metric": METRIC,
        "metric_charts": metric_charts(board),
        "parallel": parallel(board),
        "loss": loss_curves(board, docs),
        "rungs": rungs_picture(folder),
        "labels": label_heat(board, docs),
        "paired": paired_table(board),
        "errors": worst_errors(best) if best else None,
        "cost": cost_table(board, docs),
        "problems": board.problems, "warnings": board.warnings,
    }


def _when(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def wall_seconds(states: list[RunState], docs: dict[str, dict[str, Any]]) -> float | None:
    """From the first job's submission to the last result written."""
    starts = [t for s in states if s.record and (t := _when(s.record.submitted_at))]
    ends = [t for d in docs.values() if (t := _when(d.get("created_at")))]
    return max(ends) - min(starts) if starts and ends and max(ends) >= min(starts) else None


def leaderboard_table(board: Board, states: list[RunState]) -> dict[str, Any]:
    """Every run: ranked ones with their columns, then the others with their state and last
    error line."""
    cols = table_columns(board, False, METRIC)
    by_id = {s.run_id: s for s in states}
    ranked = {r["run_id"] for r in board.rows}
    rows = []
    for r in board.rows:
        st = by_id.get(r["run_id"])
        rows.append([cell(r.get(c), c) for c in cols]
                    + [cell(st.state if st else "COMPLETED", "state"), ("", None)])
    for s in states:
        if s.run_id not in ranked:
            rows.append([cell(s.run_id, "run_id")]
                        + [cell(s.varied.get(c), c) if c in s.varied else ("", None)
                           for c in cols[1:]]
                        + [cell(s.state, "state"), cell(s.error, "note")])
    return {"headers": [header(c) for c in cols] + ["state", "note"], "rows": rows}


def _points(board: Board, key: str) -> list[sc.Point]:
    """A point per run (with its 95% interval), or per configuration over its seeds (the mean
    with ± one standard deviation), as the leaderboard's --over-seeds aggregates them."""
    board = Board(rows=configurations(board.rows), varied_keys=board.varied_keys)
    if SEED_KEY in board.varied_keys and key != SEED_KEY:
        rows = over_seeds(board, METRIC).rows
        return [sc.Point(r.get(key), r[METRIC],
                         r[METRIC] - (r.get(f"{METRIC}.sd") or 0.0),
                         r[METRIC] + (r.get(f"{METRIC}.sd") or 0.0),
                         _tip(r, board.varied_keys, f"mean of {r['seeds']} seed(s)"))
                for r in rows if isinstance(r.get(METRIC), float)]
    out = []
    for r in board.rows:
        if not isinstance(r.get(METRIC), (int, float)):
            continue
        ci = r.get(f"{METRIC}.ci95")
        lo, hi = (ci[0], ci[1]) if _is_interval(ci) else (None, None)
        out.append(sc.Point(r.get(key), float(r[METRIC]), lo, hi,
                            _tip(r, board.varied_keys, r["run_id"])))
    return out


def _tip(r: dict[str, Any], keys: list[str], head: str) -> str:
    vals = ", ".join(f"{header(k)}={cell(r.get(k), k)[0]}" for k in keys if k in r)
    return f"{head}: {METRIC} {r[METRIC]:.3f} ({vals})"


def configurations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of trained runs (an ensemble's row is a vote, not a configuration)."""
    return [r for r in rows if "members" not in r]


def varied(board: Board) -> list[str]:
    return [k for k in board.varied_keys if k != SEED_KEY]


def metric_charts(board: Board) -> list[tuple[str, Markup]]:
    out = []
    # Where only the seed varies, the chart is the spread over seeds.
    for key in varied(board) or [k for k in board.varied_keys if k == SEED_KEY]:
        pts = [p for p in _points(board, key)]
        if pts:
            out.append((header(key), sc.metric_chart(pts, header(key), METRIC)))
    return out


def parallel(board: Board) -> Markup | None:
    """Parallel coordinates when three or more keys vary (besides the seed)."""
    keys = varied(board)
    if len(keys) < 3:
        return None
    board = Board(rows=configurations(board.rows), varied_keys=board.varied_keys)
    rows = (over_seeds(board, METRIC).rows if SEED_KEY in board.varied_keys else board.rows)
    rows = [r for r in rows if isinstance(r.get(METRIC), (int, float))]
    if not rows:
        return None
    axes = [sc.Axis(header(k), [r.get(k) for r in rows],
                    log=_numeric([r.get(k) for r in rows])
                    and sc.wants_log(k, [float(r[k]) for r in rows])) for k in keys]
    axes.append(sc.Axis(METRIC, [r[METRIC] for r in rows]))
    return sc.parallel_chart(axes, [r[METRIC] for r in rows],
                             [_tip(r, keys, r.get("run_id", "configuration")) for r in rows])


def _numeric(values: list[Any]) -> bool:
    return all(_is_num(v) for v in values)


def _is_num(v: Any) -> TypeGuard[float]:
    """A finite number (not a bool) from a file."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def loss_curves(board: Board, docs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Training loss (progress.json) and validation loss (the run's summary) per run, a
    legend entry per run that toggles its lines."""
    series, legend = [], []
    for i, r in enumerate(board.rows[:LOSS_RUNS]):
        try:
            hist = (clean_progress(read_json(RunDir(Path(r["run_dir"])).progress)) or {}).get(
                "history", [])
        except ValueError:
            hist = []
        val = ((docs[r["run_id"]].get("training") or {}).get("validation") or {}).get(
            "per_epoch") or []
        got = False
        if hist:
            series.append(sc.Series(i, r["run_id"], [float(h["step"]) for h in hist],
                                    [float(h["loss"]) for h in hist]))
            got = True
        pts = [(float(e["step"]), float(e["loss"])) for e in val if isinstance(e, dict)
               and _is_num(e.get("step")) and _is_num(e.get("loss"))]
        if pts:
            series.append(sc.Series(i, f"{r['run_id']} (validation)", [p[0] for p in pts],
                                    [p[1] for p in pts], dashed=True))
            got = True
        if got:
            legend.append({"index": i, "name": r["run_id"], "color": sc.color_of(i)})
    if not series:
        return None
    return {"svg": sc.loss_chart(series), "legend": legend,
            "cut": max(0, len(board.rows) - LOSS_RUNS)}


def rungs_picture(folder: Path) -> dict[str, Any] | None:
    """For a search: each run's rungs with its score at each, and what became of it."""
    try:
        doc = read_search(folder)
    except ValueError:
        return None
    if doc is None:
        return None
    try:
        spec = spec_from_dict(doc.get("spec") or {})
    except ValueError:
        return None
    rows = []
    for run_id, rr in run_rungs(folder).items():
        rd = RunDir(folder / run_id)
        if not rd.path.is_dir() or rd.path.is_symlink():
            continue
        scores = {}
        for k in range(rr.rung + 1):
            perf = _rung_perf(rd, k)
            s = metric_of(spec, perf) if perf is not None else None
            if s is not None:
                scores[k] = s
        rows.append(sc.RungRow(run_id, rr.rung, rr.outcome, scores))
    if not rows:
        return None
    rows.sort(key=lambda r: (-r.reached, -(r.scores.get(r.reached) or -1e9), r.run_id))
    return {"svg": sc.rungs_chart(rows, list(spec.rungs)), "strategy": spec.strategy,
            "metric": spec.metric, "keep": spec.keep_text}


def _rung_perf(rd: RunDir, k: int) -> Any:
    """The performance.json of a run at rung k: archived under rungs/<k>/ once promoted, else
    the run's own if its budget says rung k."""
    archive = f"{RUNG_ARCHIVE}/{k}"
    for names in ((RUNG_ARCHIVE, archive, f"{archive}/{RESULTS}",
                   f"{archive}/{RESULTS}/{PERFORMANCE}"),
                  (RESULTS, f"{RESULTS}/{PERFORMANCE}")):
        path = rd.path / names[-1]
        if planted_links(rd.path, names):
            continue
        try:
            doc = read_json(path)
        except ValueError:
            continue
        b = doc.get("budget") if isinstance(doc, dict) else None
        if isinstance(b, dict) and b.get("rung") == k:
            return doc
    return None


def label_heat(board: Board, docs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Exact F1 per label of the top runs: a heat map (cell colour by F1)."""
    top = board.rows[:LABEL_RUNS]
    labels: list[str] = []
    for r in top:
        for lab in docs[r["run_id"]].get("labels") or {}:
            if lab not in labels:
                labels.append(str(lab))
    if not labels:
        return None
    rows = []
    for r in top:
        per = docs[r["run_id"]].get("labels") or {}
        cells = []
        for lab in labels:
            f1 = ((per.get(lab) or {}).get("exact") or {}).get("f1")
            if _is_num(f1):
                cells.append({"text": f"{f1:.2f}", "bg": sc.ramp(f1),
                              "fg": "#fff" if f1 < 0.6 else "#000"})
            else:
                cells.append({"text": "", "bg": "#fff", "fg": "#000"})
        rows.append({"run_id": r["run_id"], "cells": cells})
    return {"labels": labels, "rows": rows}


def paired_table(board: Board) -> list[dict[str, Any]]:
    """Each ranked run against the best, record by record (what `compare` computes)."""
    return [{"run_id": r["run_id"], "f1": f"{r[METRIC]:.3f}", "verdict": r.get("vs_best", "")}
            for r in board.rows if isinstance(r.get(METRIC), (int, float))]


def worst_errors(best: dict[str, Any]) -> dict[str, Any] | None:
    """The best run's records with the most errors (missed gold, spurious answers, exact
    match), and the records whose answer could not be parsed."""
    tp = RunDir(Path(best["run_dir"])).results / TRUE_PRED
    try:
        gold, pred, texts = read_true_pred(tp)
        got = read_raw_outputs(tp, len(gold))
    except (ValueError, OSError):
        return None
    raw = got[0] if got else []  # none: an ensemble's vote, or the seed tool's file
    worst: list[tuple[int, dict[str, Any]]] = []
    for k, (g, p) in enumerate(zip(gold, pred, strict=True)):
        missed, spurious = record_errors(g, p, texts[k] if texts else None)
        if missed or spurious:
            worst.append((len(missed) + len(spurious), {
                "index": k, "text": texts[k] if texts else "",
                "missed": [f"{e.label}: {e.text}" for e in missed],
                "spurious": [f"{e.label}: {e.text}" for e in spurious]}))
    worst.sort(key=lambda w: -w[0])
    failed = [{"index": k, "text": texts[k] if texts and k < len(texts) else "",
               "raw": str(out)[:400]}
              for k, out in enumerate(raw) if isinstance(out, str)
              and parse_output(out).status == FAILED]
    return {"run_id": best["run_id"], "records": [w for _, w in worst[:ERROR_RECORDS]],
            "with_errors": len(worst), "total": len(gold), "parse_failed": failed[:ERROR_RECORDS],
            "parse_failed_total": len(failed) if got else None}


def cost_table(board: Board, docs: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Per run: training time, examples/s, peak memory and GPU time (train + evaluation
    seconds times its GPUs)."""
    out = []
    for r in board.rows:
        d = docs[r["run_id"]]
        timings, training = d.get("timings") or {}, d.get("training") or {}
        gpus = (d.get("hardware") or {}).get("gpu_count")
        secs = [v for v in (timings.get("train_s"), timings.get("eval_s")) if _is_num(v)]
        gpu_s = sum(secs) * gpus if isinstance(gpus, int) and gpus > 0 and secs else None
        out.append({"run_id": r["run_id"],
                    "train_s": _num(timings.get("train_s"), "{:.0f}"),
                    "eval_s": _num(timings.get("eval_s"), "{:.0f}"),
                    "examples_per_s": _num(training.get("examples_per_s"), "{:.1f}"),
                    "peak_vram_gb": _num(r.get("peak_vram_gb"), "{:.1f}"),
                    "gpus": str(gpus) if isinstance(gpus, int) else "",
                    "gpu_time": _num(gpu_s / 3600 if gpu_s else None, "{:.3f} h")})
    return out


def _num(v: Any, fmt: str) -> str:
    return fmt.format(v) if _numeric([v]) and v is not None else ""


SCRIPT_FILE = TEMPLATE.with_name("report.js")


def csp(script: str) -> str:
    """The page's Content-Security-Policy: nothing fetched, and no script but the page's own
    (report.js, named by its hash)."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
            "img-src data:")


def render(context: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    script = SCRIPT_FILE.read_text(encoding="utf-8")
    # Our own file, not data: kept as written (its hash is what the policy allows).
    return template.render(**context, script=Markup(script), csp=csp(script))  # noqa: S704


def write_report(folder: Path, out: Path | None = None) -> Path:
    """Write the sweep's report (atomically) and return its path."""
    path = out or folder / REPORT_FILE
    atomic_write_text(path, render(gather(folder)))
    return path
