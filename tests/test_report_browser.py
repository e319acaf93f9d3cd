"""The report of a real demo sweep in a real browser: headless Chromium (Debian's `chromium`,
which `bash dev.sh test` installs with apt where it is missing) loads the page with no console
message, draws its charts, and shows a hostile run's name as text without running it.

A screenshot is kept as a test artifact: $MEDSWEEP_TEST_ARTIFACTS/report.png (default
.test-artifacts/ in the checkout)."""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, job_env

HOSTILE_RUN = "<img src=x onerror=document.body.setAttribute('data-pwned','1')>"
HOSTILE_VALUE = "</script><script>document.body.setAttribute('data-pwned','2')</script>"
ARTIFACTS = Path(os.environ.get("MEDSWEEP_TEST_ARTIFACTS", ROOT / ".test-artifacts"))


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium here: install Debian's chromium package (bash dev.sh test does it "
                "with apt-get where it runs as root)")


def browse(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --no-sandbox: CI runs the suite as root, where Chromium's sandbox refuses to start.
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage",
                           "--hide-scrollbars", "--enable-logging=stderr", "--v=0", *args,
                           page.as_uri()], capture_output=True, text=True, timeout=120)


def _plant_hostile_run(sweep: Path) -> None:
    """A copy of the demo's best run under a hostile name, ranked first, with a hostile
    config value and sentence: all of it must show as text."""
    best = next(csv.DictReader(io.StringIO((sweep / "leaderboard.csv").read_text())))["run_id"]
    hostile = sweep / HOSTILE_RUN
    shutil.copytree(sweep / best, hostile, ignore=shutil.ignore_patterns("adapter",
                                                                         "checkpoints"))
    perf_path = hostile / "results" / "performance.json"
    perf = json.loads(perf_path.read_text())
    perf["metrics"]["total"]["exact"]["f1"] = 0.99
    perf["config"]["model"]["name_or_path"] = HOSTILE_VALUE
    perf_path.write_text(json.dumps(perf))
    tp_path = hostile / "results" / "true_pred_entities.json"
    tp = json.loads(tp_path.read_text())
    tp["texts"][0] = HOSTILE_VALUE
    tp_path.write_text(json.dumps(tp))


@pytest.mark.slow
def test_the_report_of_a_demo_sweep_opens_in_a_browser(finished_demo, tmp_path):
    page = finished_demo.sweep / "report.html"
    assert page.is_file(), "submit writes the report at the end of a sweep that ran here"
    sweep = tmp_path / "runs" / "demo"
    shutil.copytree(finished_demo.sweep, sweep, ignore=shutil.ignore_patterns("adapter",
                                                                              "checkpoints"))
    _plant_hostile_run(sweep)
    env = job_env()
    made = subprocess.run([sys.executable, "-m", "launcher", "report", "demo"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    page = sweep / "report.html"
    assert made.stdout.strip() == f"report: {Path('runs/demo/report.html')}"

    dom = browse(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The page's script ran to its end, and nothing logged to the console (an error, or a
    # script the Content-Security-Policy blocked).
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-ready="1"' in body and "data-pwned" not in body
    assert "CONSOLE" not in dom.stderr, [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln]
    # The charts are drawn: metric against each varied key, loss curves, points and lines.
    assert dom.stdout.count("<svg") >= 3
    assert "<circle" in dom.stdout and "<polyline" in dom.stdout
    # The hostile name and values are text.
    assert "&lt;img src=x onerror=" in dom.stdout and "<img" not in dom.stdout
    assert "&lt;/script&gt;&lt;script&gt;document.body" in dom.stdout

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    taken = browse(page, f"--screenshot={shot}", "--window-size=1280,2400")
    assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr[-2000:]
