"""A pack's CUDA MPS daemon (jobs.mps). This machine has no GPU and no MPS, so the control
program is a stand-in script on PATH that records how it was called; the real daemon ran on
the GPU machine (benchmarks/sweep_throughput.py, RESULTS.md)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from jobs.mps import CARDS_ENV, LOG_ENV, MPS_STATUS_ENV, PIPE_ENV, MpsDaemon

FAKE_CONTROL = """#!/bin/sh
# Records each call: its arguments, its MPS folders and what it read on stdin.
stdin=""
[ "$1" = "-d" ] || stdin=$(cat)
printf '%s|%s|%s|%s\\n' "$*" "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY" "$stdin" \
    >> "$MPS_CALLS"
exit "${MPS_EXIT:-0}"
"""


@pytest.fixture
def fake_mps(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("nvidia-cuda-mps-control", FAKE_CONTROL), ("nvidia-smi", "#!/bin/sh\n")):
        p = bin_dir / name
        p.write_text(text)
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("MPS_CALLS", str(calls))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv(PIPE_ENV, raising=False)
    monkeypatch.delenv("SLURM_TMPDIR", raising=False)
    return calls


def _calls(path: Path) -> list[list[str]]:
    return [line.split("|") for line in path.read_text().splitlines()]


def test_the_daemon_is_started_in_private_folders_and_quit_after(fake_mps, tmp_path):
    with MpsDaemon() as mps:
        assert mps.status == "started"
        pipe, log = Path(mps.env[PIPE_ENV]), Path(mps.env[LOG_ENV])
        assert pipe.is_dir() and log.is_dir() and pipe.parent.parent == tmp_path
        assert _calls(fake_mps) == [["-d", str(pipe), str(log), ""]]
    assert _calls(fake_mps)[1] == ["", str(pipe), str(log), "quit"]
    assert not pipe.parent.exists()  # its folders are gone


def test_no_daemon_when_not_wanted_missing_failing_or_the_clusters_own(fake_mps, monkeypatch,
                                                                       tmp_path):
    with MpsDaemon(wanted=False) as mps:
        assert (mps.status, mps.env) == ("off", {})
    monkeypatch.setenv("MPS_EXIT", "1")
    with MpsDaemon() as mps:
        assert (mps.status, mps.env) == ("failed", {})
    assert not list(tmp_path.glob("medsweep-mps-*"))  # nothing left behind
    monkeypatch.setenv(PIPE_ENV, "/run/nvidia-mps")
    with MpsDaemon() as mps:
        assert (mps.status, mps.env) == ("cluster", {})  # the clients find it themselves
    monkeypatch.delenv(PIPE_ENV)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with MpsDaemon() as mps:
        assert (mps.status, mps.env) == ("unavailable", {})
    assert len(_calls(fake_mps)) == 1  # only the failed start ran the control program


def test_a_packs_runs_get_the_daemon_and_a_share_of_the_cpus(fake_mps, tmp_path, monkeypatch):
    import jobs.pack as pack
    from core.rundir import RunDir

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        runs.append(RunDir(tmp_path / name))
    seen = []

    def start(self, rd):
        seen.append(dict(self._child_env))
        rd.performance.parent.mkdir(parents=True, exist_ok=True)
        rd.performance.write_text(json.dumps({"schema": 1}))
        return type("P", (), {"poll": lambda _s: 0})()

    monkeypatch.setattr(pack.PackJob, "_start", start)
    monkeypatch.setattr(pack, "has_results", lambda p: Path(p).is_file())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # the pack's card on a 4-card machine
    pack.PackJob([str(r.path) for r in runs])()
    assert len(seen) == 2 and seen[0] == seen[1]
    assert seen[0][MPS_STATUS_ENV] == "started" and PIPE_ENV in seen[0]
    # The daemon serves card 3 as its device 0: the runs must ask for 0 (NVIDIA's MPS docs).
    assert seen[0]["CUDA_VISIBLE_DEVICES"] == "0" and seen[0][CARDS_ENV] == "3"
    assert int(seen[0]["OMP_NUM_THREADS"]) == max(1, len(pack.os.sched_getaffinity(0)) // 2)
    assert [c[0] for c in _calls(fake_mps)] == ["-d", ""]  # started, then quit

    for r in runs:
        r.performance.unlink()
    seen.clear()
    pack.PackJob([str(r.path) for r in runs], mps=False)()
    assert seen[0][MPS_STATUS_ENV] == "off" and PIPE_ENV not in seen[0]
    assert "CUDA_VISIBLE_DEVICES" not in seen[0]  # time-sliced: the card keeps its number
    pack.PackJob([str(runs[0].path)])()  # one run left to do: nothing to share the GPU with
    assert len(_calls(fake_mps)) == 2


def test_the_env_key_reaches_the_pack(tmp_path):
    from launcher.envs import parse_env

    assert parse_env({"name": "x"}, "x.yaml").cuda_mps is True
    assert parse_env({"name": "x", "cuda_mps": False}, "x.yaml").cuda_mps is False
    with pytest.raises(Exception, match="cuda_mps: expected bool"):
        parse_env({"name": "x", "cuda_mps": "sometimes"}, "x.yaml")
