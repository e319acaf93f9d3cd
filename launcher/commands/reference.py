"""``reference``: print the sweep / env key reference (docs/reference.md)."""

from __future__ import annotations

import argparse
from typing import Any

from launcher.reference import render


def add_parser(sub: Any) -> None:
    sub.add_parser("reference", help="print the reference of every sweep and env key")


def run(args: argparse.Namespace) -> int:
    print(render(), end="")
    return 0
