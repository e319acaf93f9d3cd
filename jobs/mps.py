"""CUDA MPS for a pack of runs on one GPU.

Without MPS the runs' processes each hold a CUDA context and the GPU time-slices between them:
one process's kernels never overlap another's, and a small model's kernels leave most of the
card idle. An MPS control daemon, started by the pack for its own GPU with its pipe and log
folders in the task's private temporary folder, lets the runs' kernels share the card at once.
No root is needed: the daemon runs as the user, for the GPUs the task was given.

Where the cluster runs its own MPS (``CUDA_MPS_PIPE_DIRECTORY`` is set), that one is used. Where
the daemon is missing or does not start, the pack says so in its log and runs time-sliced.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from jobs.joblog import log as _log

CONTROL = "nvidia-cuda-mps-control"
PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
LOG_ENV = "CUDA_MPS_LOG_DIRECTORY"
MPS_STATUS_ENV = "MEDSWEEP_PACK_MPS"  # a packed run's record of how it shared its GPU
CARDS_ENV = "MEDSWEEP_CARDS"
"""The machine's card(s) of a run whose CUDA_VISIBLE_DEVICES an MPS daemon remapped."""
PACK_RUNS_ENV = "MEDSWEEP_PACK_RUNS"
"""How many runs of a pack share the card: each grows its micro-batch into its share of the
free memory only (12 runs that each saw the whole card free ran it out of memory)."""


def client_devices(status: str, visible: str | None) -> dict[str, str]:
    """What a client of a daemon this pack started must see: the daemon was started with the
    pack's CUDA_VISIBLE_DEVICES and its server renumbers those cards from 0, so a client that
    kept "2" would find no card 2 (NVIDIA's MPS documentation, "CUDA_VISIBLE_DEVICES"). The
    machine's card numbers go on in CARDS_ENV. Nothing changes without our own daemon or
    without a CUDA_VISIBLE_DEVICES.

    >>> client_devices("started", "2")
    {'CUDA_VISIBLE_DEVICES': '0', 'MEDSWEEP_CARDS': '2'}
    >>> client_devices("started", "GPU-1a,GPU-2b")["CUDA_VISIBLE_DEVICES"]
    '0,1'
    >>> client_devices("cluster", "2"), client_devices("started", "")
    ({}, {})
    """
    cards = [c for c in (visible or "").split(",") if c.strip()]
    if status != "started" or not cards:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(cards))),
            CARDS_ENV: ",".join(cards)}


def mps_folders(root: Path) -> dict[str, str]:
    """The environment that points a daemon and its clients at one private MPS instance.

    >>> mps_folders(Path("/tmp/x"))
    {'CUDA_MPS_PIPE_DIRECTORY': '/tmp/x/pipe', 'CUDA_MPS_LOG_DIRECTORY': '/tmp/x/log'}
    """
    return {PIPE_ENV: str(root / "pipe"), LOG_ENV: str(root / "log")}


class MpsDaemon:
    """``with MpsDaemon(): ...`` starts a private daemon (when it can) and quits it after;
    ``env`` is what the runs' processes need in their environment to use it."""

    def __init__(self, wanted: bool = True) -> None:
        self.wanted = wanted
        self.env: dict[str, str] = {}
        self.status = "off"
        self._root: Path | None = None
        self._control = CONTROL

    def __enter__(self) -> MpsDaemon:
        if not self.wanted:
            return self
        if os.environ.get(PIPE_ENV):
            self.status = "cluster"
            _log(f"CUDA MPS: using the cluster's ({PIPE_ENV}={os.environ[PIPE_ENV]})")
            return self
        control = shutil.which(CONTROL)
        if control is None or shutil.which("nvidia-smi") is None:
            self.status = "unavailable"
            _log(f"CUDA MPS: no {CONTROL} here; the runs share the GPU time-sliced")
            return self
        base = os.environ.get("SLURM_TMPDIR") or os.environ.get("TMPDIR") or None
        self._root = Path(tempfile.mkdtemp(prefix="medsweep-mps-", dir=base))
        env = mps_folders(self._root)
        for d in env.values():
            Path(d).mkdir()
        r = subprocess.run([control, "-d"], env={**os.environ, **env}, capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            self.status = "failed"
            _log(f"CUDA MPS: {CONTROL} -d failed ({(r.stderr or r.stdout).strip()[:200]}); "
                 "the runs share the GPU time-sliced")
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            return self
        self.env, self.status, self._control = env, "started", control
        _log(f"CUDA MPS: started a daemon for this pack ({PIPE_ENV}={env[PIPE_ENV]})")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status != "started" or self._root is None:
            return
        try:
            subprocess.run([self._control], input="quit\n", env={**os.environ, **self.env},
                           capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            _log(f"CUDA MPS: quitting the daemon failed: {err}")
        shutil.rmtree(self._root, ignore_errors=True)
