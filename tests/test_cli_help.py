"""`--help` of every command line a user types exits 0 and says what it is, run as typed
(a `%` in a generated help text once ended `python -m jobs.train --help` in a traceback)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
JOB_CLIS = ["jobs.train", "jobs.evaluate", "jobs.score", "jobs.export"]
LAUNCHER = [[], *([name] for name in COMMANDS)]


def _help(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", *args, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", JOB_CLIS)
def test_job_cli_help_exits_0(module):
    out = _help([module])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage:") and "Traceback" not in out.stderr


@pytest.mark.parametrize("sub", LAUNCHER, ids=lambda s: " ".join(s) or "launcher")
def test_launcher_help_exits_0(sub):
    out = _help(["launcher", *sub])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage:") and "Traceback" not in out.stderr


def test_a_percent_in_a_config_help_is_shown_as_written():
    import argparse

    from core.cliargs import add_config_flags, keys_of

    p = argparse.ArgumentParser()
    add_config_flags(p, keys_of("train"))
    assert "80% of the free memory" in " ".join(p.format_help().split())
