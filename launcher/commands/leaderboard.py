"""``leaderboard [SWEEP...] [--sort exact.f1] [--format github|csv|json]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.fileio import atomic_write_text
from core.textnorm import terminal_safe
from launcher.commands.common import add_sweep_arg, sweep_folders
from launcher.leaderboard import (
    METRIC_NAMES,
    SEED_KEY,
    against_best,
    collect,
    over_seeds,
    render,
    sort_rows,
    table_columns,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("leaderboard", help="rank every finished run by a metric",
                       description="One row per run with results; also written to each sweep "
                       "folder as leaderboard.md and leaderboard.csv.")
    add_sweep_arg(p)
    p.add_argument("--sort", default="exact.f1",
                   help="Column to sort by, e.g. exact.f1, relaxed.f1, overlap.r, train_s.")
    p.add_argument("--format", default="github", choices=("github", "csv", "json"))
    p.add_argument("--pr", action="store_true", help="Show precision and recall too.")
    p.add_argument("--vs-best", action="store_true",
                   help="Test each run against the best by a paired bootstrap of the sort "
                   "metric (as `compare` does): tied, or worse, with the 95%% interval of "
                   "run - best.")
    p.add_argument("--over-seeds", action="store_true",
                   help="One row per configuration: the mean over its seeds (a sweep's "
                   "`seeds:`), with the sort column's standard deviation.")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="Also plot the sort metric across the varied values (one panel per "
                   "epoch count).")


def print_board(folders: list[Path], *, sort: str, fmt: str, with_pr: bool,
                write: bool, plot: Path | None = None, seeds: bool = False,
                vs_best: bool = False) -> int:
    board = collect(folders)
    board.rows = sort_rows(board.rows, sort)
    cols = table_columns(board, with_pr, sort)
    if sort not in cols and board.rows and sort not in board.rows[0]:
        raise UserError(f"--sort {sort}: no such column; choose from {', '.join(cols)}")
    shown, shown_cols = board, cols
    if vs_best:
        if seeds or sort.count(".") != 1 or sort.split(".")[0] not in METRIC_NAMES:
            raise UserError(f"--vs-best: needs --sort on a metric ({', '.join(METRIC_NAMES)} with "
                            ".f1, .p or .r) and no --over-seeds")
        against_best(board, sort)
        shown_cols = table_columns(board, with_pr, sort)
    if seeds:
        if SEED_KEY not in board.varied_keys:
            raise UserError(f"--over-seeds: {', '.join(str(f) for f in folders)} vary no "
                            f"{SEED_KEY}; add `seeds: [1, 2, 3]` to the sweep YAML and submit "
                            "it again")
        shown = over_seeds(board, sort)
        shown.rows = sort_rows(shown.rows, sort)
        shown_cols = table_columns(shown, with_pr, sort)
    print(render(shown, shown_cols, fmt))
    if fmt == "github" and board.rows:
        print(f"\n{COUNTING_NOTE}")
    if fmt != "json":
        if board.pending:
            print(f"\n{board.pending} run(s) without results yet")
        # They name folders of a (possibly shared) runs folder: no terminal escapes.
        for prob in board.problems:
            print(f"unreadable: {terminal_safe(prob)}")
        for warn in board.warnings:
            print(f"warning: {terminal_safe(warn)}")
    if plot is not None:
        from launcher.plots import plot_f1

        metric = sort if sort.endswith((".f1", ".p", ".r")) else "exact.f1"
        plot_f1(board.rows, board.varied_keys, plot, metric)
        if fmt != "json":
            print(f"plot: {plot}")
    if write and len(folders) == 1:
        try:
            atomic_write_text(folders[0] / "leaderboard.md",
                              render(board, cols, "github") + f"\n\n{COUNTING_NOTE}\n")
            atomic_write_text(folders[0] / "leaderboard.csv", render(board, cols, "csv"))
        except OSError as exc:
            # A lab-mate's (read-only) runs folder, or a full disk: the table above stands.
            print(f"note: leaderboard.md / .csv not written into {folders[0]} "
                  f"({exc.strerror})", file=sys.stderr)
    return 0


COUNTING_NOTE = (
    "Entities are counted once per (label, text) in each record (eval.unique_entities true, "
    "the seed's default); published BC5CDR / NCBI-disease scores count every mention: "
    "evaluate with --eval-unique-entities false to compare with them.")


def run(args: argparse.Namespace) -> int:
    folders = sweep_folders(args)
    return print_board(folders, sort=args.sort, fmt=args.format, with_pr=args.pr, write=True,
                       plot=args.plot, seeds=args.over_seeds, vs_best=args.vs_best)
