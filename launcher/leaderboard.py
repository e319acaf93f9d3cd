"""Leaderboard rows from every results/performance.json of one or more sweeps.

Reads files only. Missing or corrupt result files are returned as problems, never raised.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from core.data import DataError
from core.fileio import read_json
from core.results import check_performance
from core.rundir import DEMO_DATA, RESULTS, TRUE_PRED, RunDir
from core.textnorm import terminal_safe
from launcher.jobrecord import read_job
from launcher.paired import compare_files, load_counts
from launcher.search import RunRung, run_rungs

METRIC_NAMES = ("exact", "relaxed", "overlap")
SEED_KEY = "train.seed"


CONFIG_SECTIONS = ("model.", "peft.", "train.", "eval.", "data.")


def config_number(v: float) -> str:
    """A config value as written, with its significant digits (scores get three decimals).

    >>> config_number(1e-4), config_number(5e-05), config_number(2e-4), config_number(0.1)
    ('1e-04', '5e-05', '2e-04', '0.1')
    """
    return f"{v:g}" if v >= 1e-3 or v == 0 else f"{v:.0e}" if float(f"{v:.0e}") == v else f"{v:g}"


@dataclass
class Board:
    rows: list[dict[str, Any]] = field(default_factory=list)
    varied_keys: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pending: int = 0
    over_seeds: bool = False
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each ranked row's performance.json, by its run_dir (read once, for the report)."""


def varied_keys_of(run_dirs: list[Path]) -> list[str]:
    """Keys the runs vary, in first-seen order, from what submit stored in each job.json."""
    keys: dict[str, None] = {}
    for d in run_dirs:
        varied = (read_job(RunDir(d)) or {}).get("varied")
        if isinstance(varied, dict):
            keys.update(dict.fromkeys(k for k in varied if isinstance(k, str)))
    return list(keys)


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def collect(sweep_folders: list[Path]) -> Board:
    """One row per finished run of the sweep folders (from its performance.json), the runs
    still pending, and every problem met on the way."""
    board = Board()
    listed = _run_dirs(sweep_folders, board)
    board.varied_keys = varied_keys_of([d for dirs in listed.values() for d in dirs])
    for folder, run_dirs in listed.items():
        rungs = run_rungs(folder)
        for d in run_dirs:
            doc = _performance_of(RunDir(d), board)
            if doc is not None:
                board.rows.append(_row(folder, RunDir(d), doc, board.varied_keys, rungs))
                board.docs[str(d)] = doc
    groups = eval_groups(board.rows)
    if len(groups) > 1:
        # Scores on different eval files are not comparable: say so above all else.
        parts = sorted(groups, key=len, reverse=True)
        board.warnings.append(f"the runs were scored on {len(groups)} different eval files "
                              f"(by SHA-256), e.g. {parts[0][0]['run_id']} and "
                              f"{parts[1][0]['run_id']}: each file's runs are ranked on their "
                              "own, and scores across files are not comparable")
    return board


def _run_dirs(sweep_folders: list[Path], board: Board) -> dict[Path, list[Path]]:
    """The run folders of each sweep folder (not its submitit, demo-data or hidden ones)."""
    listed: dict[Path, list[Path]] = {}
    for folder in sweep_folders:
        try:
            listed[folder] = sorted(p for p in folder.iterdir() if p.is_dir()
                                    and not p.name.startswith(("_", ".")) and p.name != DEMO_DATA)
        except OSError as exc:
            board.problems.append(f"{folder}: cannot list ({exc.strerror})")
    return listed


def _performance_of(rd: RunDir, board: Board) -> dict[str, Any] | None:
    """The run's checked performance.json; None (counted pending, or a problem) otherwise."""
    perf = rd.performance
    if not perf.is_file():
        board.pending += 1
        return None
    try:
        doc = read_json(perf)
    except ValueError as exc:
        board.problems.append(str(exc))
        return None
    errs = check_performance(doc)
    if errs:
        board.problems.append(f"{perf}: {'; '.join(errs)}")
        return None
    return dict(doc)


def _row(folder: Path, rd: RunDir, doc: dict[str, Any], varied_keys: list[str],
         rungs: dict[str, RunRung]) -> dict[str, Any]:
    """A leaderboard row: the varied config keys, each metric with its interval, and the run's
    parse, timing and hardware facts."""
    row: dict[str, Any] = {"sweep": folder.name, "run_id": rd.run_id, "run_dir": str(rd.path)}
    for k in varied_keys:
        row[k] = _get(doc["config"], k)
    total = doc["metrics"]["total"]
    ci = doc.get("ci95") if isinstance(doc.get("ci95"), dict) else {}
    for m in METRIC_NAMES:
        if m in total:
            for s in ("p", "r", "f1"):
                row[f"{m}.{s}"] = total[m].get(s)
                bounds = _get(ci, f"{m}.{s}")
                if _is_interval(bounds):
                    row[f"{m}.{s}.ci95"] = bounds
    row["macro.exact.f1"] = _get(doc, "macro.exact.f1")
    # Every mention counted (the literature's way), where the run recorded it.
    row["mention.exact.f1"] = _get(doc, "mention_level.exact.f1")
    row["parse_fail"] = _get(doc, "parse.failure_rate")
    row["halluc"] = doc.get("hallucination_rate")
    row["train_s"] = _get(doc, "timings.train_s")
    # Evaluated with another run's model (one model per training): its train_s is that run's.
    row["trained_in"] = doc.get("trained_in")
    row["gpus"] = _get(doc, "hardware.gpu_count")
    # A CPU run has no GPU memory to report (its 0.0 would read as a measurement).
    row["peak_vram_gb"] = None if row["gpus"] == 0 else doc.get("peak_vram_gb")
    row["s_per_ex"] = doc.get("avg_inference_time")
    if rd.run_id in rungs:
        # An adaptive sweep's run: the rung its scores are from and what became of it.
        row["rung"] = _get(doc, "budget.rung")
        row["epochs"] = _get(doc, "budget.epochs")
        row["search"] = rungs[rd.run_id].outcome
    members = _get(doc, "ensemble.members")
    if isinstance(members, list):
        # An ensemble's row (launcher ensemble): who voted.
        row["members"] = ", ".join(str(m) for m in members)
    row[EVAL_KEY] = str(_get(doc, "data.eval_sha256"))
    row["eval_file"] = _get(doc, "data.eval_file")
    return row


def _is_interval(v: Any) -> TypeGuard[list[float]]:
    return (isinstance(v, list) and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))


EVAL_KEY = "eval_sha256"


def eval_groups(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The rows by the eval file they were scored on (its SHA-256), in first-seen order: only
    runs scored on the same records are ranked against each other."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get(EVAL_KEY), []).append(r)
    return list(groups.values())


def _sorted(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    descending = not key.endswith(("_s", "s_per_ex", "parse_fail", "halluc", "vram_gb"))
    present = [r for r in rows if isinstance(r.get(key), (int, float))]
    absent = [r for r in rows if not isinstance(r.get(key), (int, float))]
    return sorted(present, key=lambda r: r[key], reverse=descending) + absent


def sort_rows(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Rows best first by key, within each eval file; the files' groups follow each other in
    the order of their best rows (a sweep over several corpora ranks each corpus on its own).

    >>> rows = [{"f": 0.5, "eval_sha256": "a"}, {"f": 0.9, "eval_sha256": "b"},
    ...         {"f": 0.7, "eval_sha256": "a"}, {"f": 0.6, "eval_sha256": "b"}]
    >>> [r["f"] for r in sort_rows(rows, "f")]
    [0.9, 0.6, 0.7, 0.5]
    """
    by_best = {id(g[0]): g for g in (_sorted(g, key) for g in eval_groups(rows))}
    return [r for best in _sorted([g[0] for g in by_best.values()], key)
            for r in by_best[id(best)]]


def against_best(board: Board, sort: str) -> None:
    """Sets `vs_best` on each ranked row (rows sorted best first): whether the paired
    bootstrap of best - run on the sort metric (`launcher compare`) leaves them tied (its 95%
    interval includes 0) or the run worse, with the interval."""
    for group in eval_groups(board.rows):
        _against_best_of(group, board, sort)


def _against_best_of(rows: list[dict[str, Any]], board: Board, sort: str) -> None:
    """against_best within the rows of one eval file (sorted best first)."""
    metric, stat = sort.split(".")
    ranked = [r for r in rows if isinstance(r.get(sort), (int, float))]
    if not ranked:
        return
    best_file = Path(ranked[0]["run_dir"]) / RESULTS / TRUE_PRED
    try:
        cached = load_counts(best_file, metric)
    except DataError as exc:
        board.problems.append(f"--vs-best: {exc}")
        return
    ranked[0]["vs_best"] = "best"
    for r in ranked[1:]:
        try:
            res = compare_files(best_file, Path(r["run_dir"]) / RESULTS / TRUE_PRED,
                                metric, stat, cached_a=cached)
        except DataError as exc:
            r["vs_best"] = "not comparable"
            board.problems.append(f"--vs-best: {exc}")
            continue
        lo, hi = res["ci95"] or [0.0, 0.0]
        r["vs_best"] = f"{'worse' if lo > 0 else 'tied'} ({-hi:+.3f} to {-lo:+.3f})"


def over_seeds(board: Board, sort: str) -> Board:
    """One row per configuration: runs of a sweep that differ only in train.seed become one
    row holding the mean of each number, the sample standard deviation of the sort column
    (`<sort>.sd`, from 2 seeds on) and `seeds`, how many runs it merges."""
    keys = [k for k in board.varied_keys if k != SEED_KEY]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in board.rows:
        ident = (r["sweep"], str(r.get(EVAL_KEY)),
                 *(json.dumps(r.get(k), sort_keys=True) for k in keys))
        groups.setdefault(ident, []).append(r)
    out = Board(varied_keys=keys, problems=board.problems, pending=board.pending,
                over_seeds=True)
    for rows in groups.values():
        agg: dict[str, Any] = {"sweep": rows[0]["sweep"], "seeds": len(rows),
                               EVAL_KEY: rows[0].get(EVAL_KEY),
                               "eval_file": rows[0].get("eval_file"),
                               **{k: rows[0].get(k) for k in keys}}
        for col in rows[0]:
            if col in agg or col in ("run_id", "run_dir", SEED_KEY) or col.endswith(".ci95"):
                continue
            nums = [r[col] for r in rows if isinstance(r.get(col), (int, float))
                    and not isinstance(r.get(col), bool)]
            agg[col] = (max(nums) if col == "gpus" else statistics.fmean(nums)) if nums else None
            if col == sort:
                agg[f"{col}.sd"] = statistics.stdev(nums) if len(nums) > 1 else None
        out.rows.append(agg)
    return out


def table_columns(board: Board, with_pr: bool, sort: str = "exact.f1") -> list[str]:
    """The columns shown; the sort metric's 95% interval sits beside it, where runs have one
    (runs evaluated before medsweep wrote intervals leave the cell empty), or, over seeds,
    its standard deviation."""
    cols = ["seeds" if board.over_seeds else "run_id", *board.varied_keys]
    if len(eval_groups(board.rows)) > 1 and "data.eval_dataset_file" not in cols:
        cols.insert(1, "eval_file")  # what each run is ranked within
    beside = ".sd" if board.over_seeds else ".ci95"
    for m in METRIC_NAMES:
        if any(f"{m}.f1" in r for r in board.rows):
            for c in ([f"{m}.p", f"{m}.r", f"{m}.f1"] if with_pr else [f"{m}.f1"]):
                cols.append(c)
                if c == sort and any(f"{c}{beside}" in r for r in board.rows):
                    cols.append(f"{c}{beside}")
                if c == sort and any("vs_best" in r for r in board.rows):
                    cols.append("vs_best")
    # peak_vram_gb is summed over a run's GPUs: where any run was split over several, the
    # count shows beside it (one-GPU sweeps keep the narrower table).
    split = any(isinstance(r.get("gpus"), int) and r["gpus"] > 1 for r in board.rows)
    if "vs_best" not in cols and any("vs_best" in r for r in board.rows):
        cols.append("vs_best")  # sorted by a column not shown (e.g. exact.p without --pr)
    if any(r.get("mention.exact.f1") is not None for r in board.rows) and "exact.f1" in cols:
        cols.insert(cols.index("exact.f1") + 1 + sum(
            c in cols for c in ("exact.f1.ci95", "vs_best")), "mention.exact.f1")
    if any("search" in r for r in board.rows):
        cols += ["rung", "epochs", "search"]
    if any("members" in r for r in board.rows):
        cols.append("members")
    shared = any(r.get("trained_in") for r in board.rows)
    return cols + ["parse_fail", *(["trained_in"] if shared else []), "train_s",
                   *(["gpus"] if split else []), "peak_vram_gb", "s_per_ex"]


def path_tails(paths: list[str]) -> dict[str, str]:
    """Each path as its shortest tail of folders that still tells the given paths apart: the
    table's dataset-file columns, where runs read absolute paths that differ near the end.

    >>> path_tails(["/data/x/bc5cdr/train.json", "/data/x/ncbi_disease/train.json"])
    {'/data/x/bc5cdr/train.json': 'bc5cdr/train.json', \
'/data/x/ncbi_disease/train.json': 'ncbi_disease/train.json'}
    """
    distinct = list(dict.fromkeys(paths))
    parts = {p: Path(p).parts for p in distinct}
    for k in range(1, max((len(v) for v in parts.values()), default=1) + 1):
        tails = {p: str(Path(*v[-k:])) for p, v in parts.items()}
        if len(set(tails.values())) == len(tails):
            return tails
    return {p: p for p in distinct}


def render(board: Board, cols: list[str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"rows": [{c: r.get(c) for c in cols} for r in board.rows],
                           "problems": board.problems, "warnings": board.warnings,
                           "pending": board.pending}, indent=2)
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        # An interval is two numeric columns, so spreadsheets and pandas read it as numbers.
        w.writerow([x for c in cols for x in ((f"{c}.low", f"{c}.high")
                                               if c.endswith(".ci95") else (c,))])
        for r in board.rows:
            cells: list[Any] = []
            for c in cols:
                v = r.get(c)
                if c.endswith(".ci95"):
                    cells += list(v) if _is_interval(v) else ["", ""]
                else:
                    cells.append("" if v is None else terminal_safe(v) if isinstance(v, str)
                                 else v)
            w.writerow(cells)
        return buf.getvalue()
    tails = {c: path_tails([r[c] for r in board.rows if isinstance(r.get(c), str)])
             for c in cols if c.endswith("_dataset_file") or c == "eval_file"}

    def cell(v: Any, col: str) -> Any:
        if isinstance(v, str) and col in tails:
            v = tails[col].get(v, v)
        if isinstance(v, float) and (col.startswith(CONFIG_SECTIONS) or col == "epochs"):
            return config_number(v)
        if _is_interval(v):
            return f"{v[0]:.3f}-{v[1]:.3f}"
        if isinstance(v, str):
            # A config value (a system prompt) must not end the cell or the row, nor a
            # folder name or a file's text write terminal escapes.
            return terminal_safe(" ".join(v.split())).replace("|", "\\|")
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else v)

    headers = [c.split(".", 1)[1] if c.startswith(CONFIG_SECTIONS)
               else c.replace(".ci95", " 95% CI").replace(".sd", " sd") for c in cols]
    return github_table([[cell(r.get(c), c) for c in cols] for r in board.rows], headers)


def github_table(rows: list[list[Any]], headers: list[str]) -> str:
    """A GitHub (pipe) table of text cells, left-aligned: what tabulate's "github" format
    writes with numbers left as text, at a fraction of its time on 10,000 rows.

    >>> print(github_table([["a", 1.5], ["bb", ""]], ["x", "y"]))
    | x   | y   |
    |-----|-----|
    | a   | 1.5 |
    | bb  |     |
    """
    text = [[str(c).strip() for c in r] for r in rows]
    # tabulate's minimum padding: a header gets two spaces more than its text.
    widths = [max([len(h) + 2, *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in text)])
