"""``plot-loss RUN_DIR... --out FILE.png``: training-loss curves from progress.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.rundir import SWEEP_FILE, RunDir
from launcher.plots import plot_losses


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plot-loss", help="plot training-loss curves of runs")
    p.add_argument("runs", nargs="+", type=Path,
                   help="Run folders, or a sweep folder (all its runs).")
    p.add_argument("--out", type=Path, default=Path("loss.png"), help="PNG to write.")


def run(args: argparse.Namespace) -> int:
    dirs: list[Path] = []
    for p in args.runs:
        if (p / SWEEP_FILE).is_file():
            dirs += sorted(d for d in p.iterdir() if RunDir(d).config.is_file())
        elif RunDir(p).config.is_file() or RunDir(p).progress.is_file():
            dirs.append(p)
        else:
            raise UserError(f"{p}: not a run folder (no config.yaml) nor a sweep folder")
    out, skipped = plot_losses(dirs, args.out)
    for name in skipped:
        print(f"no loss history yet: {name}")
    print(f"wrote {out}")
    return 0
