"""``python -m launcher <command>``: a thin dispatcher; each command lives in commands/."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from core.errors import UserError
from launcher.commands import (
    cancel,
    compare,
    ensemble,
    leaderboard,
    plot_loss,
    prefetch,
    reference,
    report,
    resubmit,
    status,
    submit,
)

COMMANDS = {"submit": submit, "status": status, "leaderboard": leaderboard, "cancel": cancel,
            "resubmit": resubmit, "compare": compare, "ensemble": ensemble, "prefetch": prefetch,
            "plot-loss": plot_loss, "reference": reference,
            "report": report}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        # The console script says its own name; `python -m launcher` otherwise.
        prog="medsweep" if Path(sys.argv[0]).name == "medsweep" else "python -m launcher",
        description="Run sweeps of Unsloth fine-tuning + evaluation runs, one job per "
                    "configuration, on Slurm or this machine, and rank the results.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for _name, mod in COMMANDS.items():
        mod.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command].run(args))
    except UserError as exc:
        # The one place a launcher command reports a problem the user can fix.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            # The reader went away (`leaderboard | head -1`): nothing more to say to it.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
        # A read-only folder, a full disk: one line naming the file, not a traceback.
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}; check that the folder is "
              "yours and writable and that the disk has room", file=sys.stderr)
        return 2
