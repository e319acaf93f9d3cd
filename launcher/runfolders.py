"""What a submit writes in the sweep folder before any job starts: the sweep file as
submitted and each run's config, sharing and budget files."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from core.demo_data import DEMO_FILES, demo_path, write_demo_data
from core.fileio import atomic_write_json, atomic_write_text, atomic_write_yaml, open_no_follow
from core.identity import text_sha256
from core.rundir import DEMO_DATA, SUBMIT_LOCK, SWEEP_FILE, RunDir
from core.search import Budget
from launcher.errors import SubmitError
from launcher.sweep import Sweep
from launcher.tasks import PlannedRun


def materialise_data(sweep: Sweep, folder: Path, cfg_dict: dict[str, Any]) -> dict[str, Any]:
    if sweep.demo_data:
        demo = folder / DEMO_DATA
        if not all((demo / name).is_file() for name in DEMO_FILES.values()):
            write_demo_data(demo)
        for key in ("train_dataset_file", "eval_dataset_file"):
            cfg_dict["data"][key] = demo_path(cfg_dict["data"][key], demo)
    return cfg_dict


def _saved_sweep(sweep: Sweep) -> dict[str, Any]:
    """The sweep as submitted, with data paths made absolute so resubmit works anywhere."""
    raw = dict(sweep.raw)
    if not sweep.demo_data and sweep.runs:
        data = sweep.runs[0].config.data
        raw["data"] = {"train": data.train_dataset_file, "eval": data.eval_dataset_file}
        if data.validation_dataset_file:
            raw["data"]["validation"] = data.validation_dataset_file
    return raw


def refuse_other_data(folder: Path, sweep: Sweep) -> None:
    """A sweep folder holds one sweep's runs: a submit of another sweep file with the same
    name on other data would mix runs scored on different files in one leaderboard."""
    saved_file = folder / SWEEP_FILE
    if not saved_file.is_file():
        return
    try:
        saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        saved = {}
    before = saved.get("data") if isinstance(saved, dict) else None
    now = _saved_sweep(sweep).get("data")
    if before is not None and before != now:
        raise SubmitError(
            f"{sweep.path}: {folder} already holds a sweep named {sweep.name!r} on other data "
            f"({_data_line(before)}); give this sweep another name: or another --runs-dir")


def _data_line(data: Any) -> str:
    if not isinstance(data, dict):
        return "unreadable"
    return ", ".join(f"{k} {v}" for k, v in sorted(data.items()))[:200]




def _write_sharing(rd: RunDir, p: PlannedRun) -> None:
    """The run's shared_training.json and followers.json as planned (stale ones removed)."""
    for path, doc in ((rd.shared_training, {"trained_in": p.trained_in} if p.trained_in
                       else None),
                      (rd.followers, {"runs": [f.run_id for f in p.followers]}
                       if p.followers else None)):
        if doc is not None:
            atomic_write_json(path, doc)
        elif path.exists():
            path.unlink()


def write_run_folders(todo: list[PlannedRun], sweep: Sweep, folder: Path) -> list[Path]:
    """The sweep file and each run's config (stale error and cancel files removed); the run
    folders this call created."""
    atomic_write_yaml(folder / SWEEP_FILE, _saved_sweep(sweep))
    created = []
    for p in todo:
        rd = RunDir(folder / p.run_id)
        if not rd.path.exists():
            created.append(rd.path)
        cfg = materialise_data(sweep, folder, p.run.config.to_dict())
        text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
        atomic_write_text(rd.config, text)
        p.config_sha256 = text_sha256(text)
        _write_sharing(rd, p)
        if sweep.search is not None and not rd.budget.exists():
            atomic_write_json(rd.budget, Budget(0, sweep.search.rungs[0]).as_dict())
        for stale in (rd.error, rd.cancel_request):
            if stale.exists():
                stale.unlink()
    return created


@contextmanager
def sweep_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = open_no_follow(folder / SUBMIT_LOCK)
    except OSError as exc:
        hint = ("it is a symbolic link: remove it" if (folder / SUBMIT_LOCK).is_symlink()
                else "the sweep folder must be yours and writable")
        raise SubmitError(f"{folder / SUBMIT_LOCK}: cannot open the sweep's lock file "
                          f"({exc.strerror}); {hint}") from None
    with os.fdopen(fd, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
