"""The GPUs of this machine, for the local executor (a workstation without Slurm).

Read from ``nvidia-smi`` (no torch in the launcher), within a ``CUDA_VISIBLE_DEVICES`` the user
already set, or named by the env profile's ``gpus`` key. The local executor then plans runs as
on a one-node cluster of these cards: each run (or pack of small runs, ``runs_per_gpu``) gets
its own card(s), a run too big for one card gets several, and runs start as cards come free.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from core.errors import UserError
from launcher.envs import EnvProfile, Partition

LOCAL_PARTITION = "local"
"""The partition name a local profile's GPUs are planned under."""


@dataclass(frozen=True)
class LocalGpu:
    index: int
    name: str
    vram_gb: float


class GpuError(UserError):
    """The GPUs asked for cannot be used."""


def parse_smi(text: str) -> list[LocalGpu]:
    """``nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits``.

    >>> parse_smi("0, NVIDIA H200, 143771\\n1, NVIDIA H200, 143771\\n")
    [LocalGpu(index=0, name='NVIDIA H200', vram_gb=140.4), LocalGpu(index=1, name='NVIDIA H200', vram_gb=140.4)]
    """
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        mib = _float(parts[2]) if len(parts) == 3 else None
        if len(parts) != 3 or not _is_index(parts[0]) or mib is None or not 0 < mib < 1e8:
            raise GpuError(f"nvidia-smi listed {line.strip()[:120]!r}, not a card with its "
                           f"memory; {NO_CARD_FIX}")
        gpus.append(LocalGpu(int(parts[0]), parts[1], round(mib / 1024, 1)))  # GiB
    if len({g.index for g in gpus}) != len(gpus):
        raise GpuError(f"nvidia-smi listed a card twice; {NO_CARD_FIX}")
    return gpus


NO_CARD_FIX = ("fix the driver (nvidia-smi must list the cards), or set gpus: none in the env "
               "profile to train on the CPU")
SMI_TIMEOUT_S = 30


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None  # NaN is no size


def _is_index(token: str) -> bool:
    """An ASCII card index ("²" is a digit to str.isdigit, not to int)."""
    return token.isascii() and token.isdigit() and len(token) <= 4


def _query_smi() -> list[LocalGpu] | None:
    """The cards nvidia-smi lists; None where there is no nvidia-smi (a CPU machine). On a
    machine with one, a failure, a hang or no card is an error, not a silent CPU run."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total",
                            "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=SMI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise GpuError(f"nvidia-smi did not answer in {SMI_TIMEOUT_S} s; {NO_CARD_FIX}") from None
    except OSError as exc:
        raise GpuError(f"nvidia-smi could not run ({exc.strerror}); {NO_CARD_FIX}") from None
    if r.returncode != 0:
        said = (r.stderr or r.stdout).strip().splitlines()
        raise GpuError(f"nvidia-smi failed ({said[0][:160] if said else f'exit {r.returncode}'}"
                       f"); {NO_CARD_FIX}")
    gpus = parse_smi(r.stdout)
    if not gpus:
        raise GpuError(f"nvidia-smi lists no GPU; {NO_CARD_FIX}")
    return gpus


def _indices(value: str, what: str) -> list[int]:
    tokens = [t.strip() for t in value.split(",") if t.strip()]
    if not all(_is_index(t) for t in tokens):
        raise GpuError(f"{what}={value!r}: medsweep places local runs by GPU index; give "
                       "indices such as 0,1 (not UUIDs or MIG names)")
    if len(set(tokens)) != len(tokens):
        raise GpuError(f"{what}={value!r}: a card is named twice; name each once")
    return [int(t) for t in tokens]


def detect_gpus(env: EnvProfile, environ: Mapping[str, str] | None = None,
                query: Sequence[LocalGpu] | None = None) -> tuple[LocalGpu, ...]:
    """The GPUs a local sweep may use: none for a Slurm profile or ``gpus: none``; else the
    cards nvidia-smi lists, narrowed to the profile's ``gpus`` indices and to a
    CUDA_VISIBLE_DEVICES already set (empty or -1: no GPU)."""
    environ = os.environ if environ is None else environ
    if not env.runs_here or env.gpus == "none":
        return ()
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return ()
    queried = _query_smi() if query is None else list(query)
    if queried is None:
        return ()  # no nvidia-smi: a CPU machine
    found = list(queried)
    by_index = {g.index: g for g in found}
    wanted = [g.index for g in found]
    if visible is not None:
        asked = _indices(visible, "CUDA_VISIBLE_DEVICES")
        absent = [i for i in asked if i not in by_index]
        if absent:
            raise GpuError(f"CUDA_VISIBLE_DEVICES={visible} names card(s) "
                           f"{', '.join(map(str, absent))}, which nvidia-smi does not list "
                           f"(this machine's: {', '.join(map(str, by_index)) or 'none'}); "
                           "name cards it lists")
        wanted = asked
    if env.gpus != "auto":
        listed = _indices(env.gpus, f"{env.name}: gpus")
        missing = [i for i in listed if i not in wanted]
        if missing:
            raise GpuError(f"{env.name}: gpus lists {', '.join(map(str, missing))}, which this "
                           f"machine does not offer (usable: "
                           f"{', '.join(map(str, wanted)) or 'none'}); edit the profile's gpus")
        wanted = listed
    return tuple(by_index[i] for i in wanted)


def gpu_type(name: str) -> str:
    """A short type for a card's name: 'NVIDIA H200' -> 'h200'.

    >>> gpu_type("NVIDIA H200"), gpu_type("NVIDIA GeForce RTX 4090")
    ('h200', 'geforce-rtx-4090')
    """
    short = re.sub(r"^nvidia\s+", "", name.strip().lower())
    return re.sub(r"[^a-z0-9.]+", "-", short).strip("-") or "gpu"


def with_local_gpus(env: EnvProfile, gpus: Sequence[LocalGpu]) -> EnvProfile:
    """A local profile planned as one node of these GPUs (the smallest card's memory for
    all); unchanged without GPUs or for Slurm."""
    if not env.runs_here or not gpus:
        return env
    types = sorted({gpu_type(g.name) for g in gpus})
    node = Partition(LOCAL_PARTITION, "+".join(types), min(g.vram_gb for g in gpus), len(gpus))
    return dataclasses.replace(env, partitions=(node,))


T = TypeVar("T")


def place(tasks: Sequence[T], needs: Sequence[int], free: list[int]) -> list[tuple[T, list[int]]]:
    """Tasks (in order) that can start now on the free GPUs, each with its cards; the cards
    taken leave ``free``. A task needing more cards than are free waits; a later, smaller one
    may start before it.

    >>> free = [0, 1, 2]
    >>> place(["a", "b", "c", "d"], [1, 2, 1, 1], free), free
    ([('a', [0]), ('b', [1, 2])], [])
    """
    started = []
    for task, need in zip(tasks, needs, strict=True):
        if 0 < need <= len(free):
            started.append((task, free[:need]))
            del free[:need]
    return started
