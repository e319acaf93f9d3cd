"""The README's commands run as written, on a fresh demo (its "first hour"): every line of its
bash blocks but `bash dev.sh ...` (which CI itself runs) exits 0 in a folder where the demo ran."""

import re
import shlex
import subprocess
import sys

import pytest

from .conftest import ROOT, job_env

README = ROOT / "README.md"


def readme_commands() -> list[str]:
    """The command lines of the README's bash blocks, continuation lines joined, comments cut."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    out = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            cmd = line.split("  #")[0].strip()
            if cmd and not cmd.startswith("bash dev.sh"):
                out.append(cmd)
    return out


def test_the_readme_names_its_commands_and_stays_a_guide():
    cmds = readme_commands()
    assert any(c.startswith("python -m launcher status") for c in cmds)
    assert any(c.startswith("python -m jobs.train") for c in cmds)
    assert len(README.read_text().splitlines()) <= 200


@pytest.mark.slow
def test_every_readme_command_runs_as_written_after_the_demo(finished_demo):
    env = job_env()
    env["PYTHONPATH"] = str(ROOT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cwd = finished_demo.cwd
    # The demo's three best runs vote (its `ensemble:` key), and it ends by saying where its
    # report is (bash dev.sh demo shows the same lines).
    assert "ensemble ensemble-top3-v2-" in finished_demo.stdout
    assert (finished_demo.stdout.count("ensemble - best member = ") == 1)
    assert finished_demo.stdout.rstrip().splitlines()[-1] == (
        f"report: {finished_demo.sweep / 'report.html'}")
    for cmd in readme_commands():
        argv = shlex.split(cmd)
        assert argv[:2] == ["python", "-m"], cmd
        r = subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, (cmd, r.stdout[-1500:], r.stderr[-1500:])
        assert "Traceback" not in r.stderr, (cmd, r.stderr[-1500:])
    assert (cwd / "results" / "tiny" / "performance.json").is_file()
