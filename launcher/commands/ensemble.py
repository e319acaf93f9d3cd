"""``ensemble SWEEP [--top K | --runs A,B,C] [--min-votes N]``: the best runs vote."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.errors import UserError
from launcher.commands.common import add_sweep_arg, sweep_folders
from launcher.ensemble import DEFAULT_TOP, EnsembleResult, make_ensemble


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ensemble", help="the best runs of a sweep vote, record by record",
        description="Per record, an entity (label, text) is kept when at least --min-votes "
        "members answered it; votes are cast on the members' saved answers (no model is "
        "loaded). The ensemble becomes a row of the sweep (ensemble-top3-...) with its own "
        "performance.json, and is paired with its best member. Choose members on the dev "
        "split; touch test once, with the chosen ensemble's members.")
    add_sweep_arg(p)
    p.add_argument("--top", type=int, default=None,
                   help=f"Members: the K best runs by --sort on the eval file of the best "
                   f"(default {DEFAULT_TOP}).")
    p.add_argument("--runs", default=None, metavar="A,B,...",
                   help="Members named instead (run ids of the sweep, comma-separated).")
    p.add_argument("--min-votes", type=int, default=None, metavar="N",
                   help="Votes an entity needs (default: a majority of the members).")
    p.add_argument("--sort", default="exact.f1",
                   help="How --top ranks the runs (a leaderboard column, e.g. relaxed.f1).")


def show(r: EnsembleResult) -> list[str]:
    lo, hi = r.vs_best["ci95"] or [0.0, 0.0]
    return [f"ensemble {r.run_id}: {len(r.members)} members ({', '.join(r.members)}), "
            f"at least {r.min_votes} vote(s)",
            f"  exact.f1 {r.f1:.3f} (95% CI {r.ci[0]:.3f}-{r.ci[1]:.3f}); best member "
            f"{r.best_member} {r.vs_best['b']:.3f}",
            f"  ensemble - best member = {r.vs_best['diff']:+.3f} (paired 95% CI {lo:+.3f} to "
            f"{hi:+.3f}, {r.vs_best['records']} records)",
            f"  folder: {r.path}"]


def run(args: argparse.Namespace) -> int:
    folders = sweep_folders(args)
    if len(folders) != 1:
        raise UserError(f"ensemble: give one sweep (got {len(folders)}: "
                        f"{', '.join(f.name for f in folders)})")
    if args.top is not None and args.runs is not None:
        raise UserError("ensemble: give --top or --runs, not both")
    runs = [r.strip() for r in args.runs.split(",") if r.strip()] if args.runs else None
    result = make_ensemble(Path(folders[0]), top=args.top, runs=runs,
                           min_votes=args.min_votes, sort=args.sort)
    print("\n".join(show(result)))
    return 0
