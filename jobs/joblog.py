"""The one way a job says something to its log: a ``[medsweep]`` line on stderr (a leaf
module: every job module may import it)."""

from __future__ import annotations

import sys


def log(msg: str) -> None:
    print(f"[medsweep] {msg}", file=sys.stderr, flush=True)
