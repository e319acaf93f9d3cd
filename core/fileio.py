"""Atomic file writes and safe reads: many jobs write at once on a shared filesystem.

A reader sees the old file or the new one, never half of either (temp file in the same folder,
fsync, then os.replace).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml


def atomic_write_text(path: str | Path, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        # mkstemp makes 0600; results on shared storage should read as any other file would.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def open_no_follow(path: str | Path, *, append: bool = False) -> int:
    """A file descriptor for writing to path, created if missing (0644 less the umask),
    never truncated, and never through a symbolic link: a runs folder may be shared, and a
    planted link must not redirect a write (OSError ELOOP then)."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    if append:
        flags |= os.O_APPEND
    return os.open(path, flags, 0o644)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_yaml(path: str | Path, data: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; raise ValueError naming the file on any problem."""
    p = Path(path)
    if p.exists() and not p.is_file() and not p.is_dir():
        # A FIFO or device would block the read (or never end); results are regular files.
        raise ValueError(f"{p}: not a regular file; give a JSON file")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: file not found") from None
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not UTF-8") from None
    except IsADirectoryError:
        raise ValueError(f"{p}: is a folder; give a JSON file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                         f"{exc.msg}") from None
    except RecursionError:
        raise ValueError(f"{p}: JSON nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise ValueError(f"{p}: unreadable JSON value ({str(exc).split(';')[0]})") from None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_problem(path: str | Path, flag: str) -> str | None:
    """Why path cannot be an output folder (it exists as something else), or None."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                return (f"{flag} {p}: {q} is a file, not a folder; give a folder path "
                        "(it is created if missing)")
            return None
    return None
