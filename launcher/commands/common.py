"""Shared argument handling: which sweep folders a command works on."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.rundir import SWEEP_FILE
from launcher.envs import load_env
from launcher.sweep import load_sweep
from launcher.yamlio import YamlError

DEFAULT_RUNS_DIR = "runs"


def add_sweep_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", nargs="*", help="Sweep name(s), sweep YAML file(s) or sweep "
                   "folder(s); default: every sweep under --runs-dir.")
    p.add_argument("--runs-dir", default=None,
                   help=f"Folder holding the sweeps (default: the env's, else {DEFAULT_RUNS_DIR}).")


def sweep_folders(args: argparse.Namespace) -> list[Path]:
    """Resolve the positional sweeps to existing sweep folders; YamlError if none."""
    runs_dir = Path(args.runs_dir or DEFAULT_RUNS_DIR)
    if not args.sweep:
        if not runs_dir.is_dir():
            raise YamlError(f"{runs_dir}: no runs folder here; submit a sweep first or pass "
                            "--runs-dir")
        found = sorted(p for p in runs_dir.iterdir() if (p / SWEEP_FILE).is_file())
        if not found:
            raise YamlError(f"{runs_dir}: holds no sweeps; submit one first")
        return found
    out = []
    for s in args.sweep:
        p = Path(s)
        if p.is_file() and p.suffix in (".yaml", ".yml"):
            sw = load_sweep(p)
            base = Path(args.runs_dir or load_env(sw.env).runs_dir)
            folder = base / sw.name
        elif p.is_dir() and (p / SWEEP_FILE).is_file():
            folder = p
        else:
            folder = runs_dir / s
        if not (folder / SWEEP_FILE).is_file():
            raise YamlError(f"{s}: no submitted sweep at {folder}; check the name or "
                            "--runs-dir")
        out.append(folder)
    return out


