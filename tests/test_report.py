"""launcher report: one self-contained HTML page per sweep, from the sweep's files (fabricated
here; tests/test_report_browser.py opens a real demo sweep's page in Chromium)."""

import base64
import hashlib
import html
import json
import re
from pathlib import Path

import yaml

from core.data import Entity as E
from core.fileio import atomic_write_json
from core.results import performance_doc, true_pred_doc
from core.rundir import TRUE_PRED, RunDir
from launcher import search as lsearch
from launcher.cli import main
from launcher.report import REPORT_FILE

HOSTILE_RUN = "<img src=x onerror=document.body.setAttribute('data-pwned','1')>"
HOSTILE_TEXT = "</script><script>document.body.setAttribute('data-pwned','2')</script>"


def _texts_gold(n: int) -> tuple[list[str], list[list[E]]]:
    texts = [f"Patient {i} was given drug{i} for disease{i}." for i in range(n)]
    return texts, [[E("Chemical", f"drug{i}"), E("Disease", f"disease{i}")] for i in range(n)]


def write_run(folder: Path, run_id: str, varied: dict, right: int, *, n: int = 20,
              steps: int = 30, text0: str | None = None) -> Path:
    """A finished run: job.json as submit writes it, progress.json with a loss history,
    results/ with performance.json and true_pred_entities.json (records < right fully right,
    the others missing their disease and with a spurious answer)."""
    run = folder / run_id
    (run / "results").mkdir(parents=True)
    atomic_write_json(run / "job.json", {"run_id": run_id, "cluster": "local", "job_id": "1",
                                         "pid": 999999999, "pid_start": "1",
                                         "varied": varied,
                                         "submitted_at": "2026-12-01T10:00:00+00:00"})
    history = [{"step": s, "loss": 3.0 / s, "epoch": s / 10} for s in range(1, steps + 1)]
    atomic_write_json(run / "progress.json", {"phase": "evaluate", "step": n, "total": n,
                                              "history": history})
    texts, gold = _texts_gold(n)
    if text0 is not None:
        texts[0] = text0
    pred = [list(g) if i < right else [g[0], E("Disease", "fever")] for i, g in enumerate(gold)]
    raw = ["[]" for _ in texts]
    raw[-1] = "I cannot answer that."
    atomic_write_json(run / "results" / TRUE_PRED, true_pred_doc(gold, pred, texts, raw))
    f1 = right / n
    prf = {"p": f1, "r": f1, "f1": f1, "tp": right, "fp": n - right, "fn": n - right,
           "support": 2 * n}
    config: dict = {}
    for key, value in varied.items():
        section, name = key.split(".")
        config.setdefault(section, {})[name] = value
    scores = {"total": {"exact": prf},
              "labels": {"Chemical": {"exact": {**prf, "f1": 1.0}},
                         "Disease": {"exact": {**prf, "f1": f1 / 2}}},
              "macro": {"exact": prf},
              "ci95": {"exact": {"p": [0, 1], "r": [0, 1], "f1": [f1 - 0.1, f1 + 0.1]}}}
    doc = performance_doc(scores, num_examples=n, avg_inference_time=0.1,
                          parse={"failure_rate": 0.05}, hallucination_rate=0.0, config=config,
                          extra={"timings": {"train_s": 100.0, "eval_s": 10.0},
                                 "training": {"examples_per_s": 42.0, "validation": {
                                     "per_epoch": [{"epoch": 1.0, "step": 10, "loss": 0.5},
                                                   {"epoch": 2.0, "step": 20, "loss": 0.4}]}},
                                 "hardware": {"gpu_count": 1}, "peak_vram_gb": 3.5,
                                 "created_at": "2026-12-01T10:05:00+00:00"})
    atomic_write_json(run / "results" / "performance.json", doc)
    return run


def _sweep_folder(tmp_path: Path, name: str = "s") -> Path:
    folder = tmp_path / "runs" / name
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"name": name, "grid": {}}))
    return folder


def _report(tmp_path: Path, name: str = "s", *extra: str) -> str:
    assert main(["report", "--runs-dir", str(tmp_path / "runs"), name, *extra]) == 0
    return (tmp_path / "runs" / name / REPORT_FILE).read_text(encoding="utf-8")


def _grid(folder: Path) -> None:
    k = 0
    for lr in (1e-5, 1e-4, 1e-3):
        for rank in (8, 16):
            for seed in (1, 2):
                k += 1
                write_run(folder, f"lr{lr:g}-r{rank}-s{seed}",
                          {"train.learning_rate": lr, "peft.rank": rank,
                           "model.name_or_path": f"org/model-{rank}", "train.seed": seed},
                          right=(k * 3) % 17 + 2)


def test_a_sweep_report_holds_every_section_and_only_its_own_script(tmp_path, capsys):
    folder = _sweep_folder(tmp_path)
    _grid(folder)
    page = _report(tmp_path)
    assert capsys.readouterr().out.strip() == f"report: {folder / REPORT_FILE}"
    for section in ("leaderboard", "by-key", "loss", "labels", "paired", "errors", "cost"):
        assert f'id="{section}"' in page
    # A chart per varied key but the seed, and parallel coordinates (three keys vary).
    assert page.count('aria-label="exact.f1 against ') == 3
    assert 'aria-label="parallel coordinates"' in page
    assert "mean of 2 seed(s)" in page
    # Loss curves: a toggle per run, train and validation lines with the same data-series.
    assert page.count("<button type=\"button\" data-series=") == 12
    assert page.count('class="dashed"') == 12
    # The best run's worst errors, its parse failure, each run against the best.
    best = re.search(r'id="errors".*?<p class="meta">([^:]+):', page, re.S).group(1)
    assert "disease" in page and "I cannot answer that." in page
    assert "Parse failures: 1." in page and ">best<" in page and "worse (" in page
    assert best.strip().startswith("lr")
    # Offline and locked down: nothing fetched, one script, named by its hash in the CSP.
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    policy = html.unescape(re.search(r'Content-Security-Policy" content="([^"]*)"', page)[1])
    assert f"script-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy


def test_names_and_texts_from_run_files_are_shown_as_text(tmp_path):
    folder = _sweep_folder(tmp_path)
    write_run(folder, "plain", {"train.learning_rate": 1e-4}, right=5)
    write_run(folder, HOSTILE_RUN, {"train.learning_rate": HOSTILE_TEXT}, right=15,
              text0=HOSTILE_TEXT)
    page = _report(tmp_path)
    assert "<img src=x" not in page and HOSTILE_TEXT not in page
    assert "&lt;img src=x onerror=" in page
    assert "&lt;/script&gt;&lt;script&gt;document.body" in page
    assert page.count("<script>") == 1


def test_failed_and_unfinished_runs_are_listed_with_their_state(tmp_path):
    folder = _sweep_folder(tmp_path)
    write_run(folder, "good", {"train.learning_rate": 1e-4}, right=12)
    bad = folder / "broken"
    bad.mkdir()
    atomic_write_json(bad / "job.json", {"run_id": "broken", "cluster": "local", "job_id": "2",
                                         "pid": 999999999, "pid_start": "1",
                                         "varied": {"train.learning_rate": 1e-3}})
    atomic_write_json(bad / "error.json", {"error": "torch.OutOfMemoryError: CUDA out of memory"})
    page = _report(tmp_path)
    row = re.search(r"<tr>\s*<td data-v=\"broken\".*?</tr>", page, re.S).group(0)
    assert "FAILED" in row and "OutOfMemoryError" in row
    assert "1 COMPLETED" in page and "1 FAILED" in page


def test_an_empty_sweep_gets_a_page_that_says_so(tmp_path):
    _sweep_folder(tmp_path)
    page = _report(tmp_path)
    assert "No runs in this sweep yet." in page and "No run has logged a loss yet." in page


def test_a_search_report_pictures_each_runs_rungs_in_status_words(tmp_path):
    from core.search import SearchSpec

    folder = _sweep_folder(tmp_path)
    spec = SearchSpec((1, 3, 9), keep=0.5, keep_text="1/2")
    lsearch.start_search(folder, spec, tmp_path / "s.yaml")
    for i, right in enumerate([4, 12, 8, 2]):
        run = write_run(folder, f"r{i}", {"train.learning_rate": 10.0 ** -(i + 3)}, right=right)
        atomic_write_json(RunDir(run).budget, {"schema": 1, "rung": 0, "epochs": 1})
        doc = json.loads(RunDir(run).performance.read_text())
        doc["budget"] = {"schema": 1, "rung": 0, "epochs": 1}
        atomic_write_json(RunDir(run).performance, doc)
        RunDir(run).checkpoints.mkdir()
    assert lsearch.advance(folder, spec) == ["r1", "r2"]
    page = _report(tmp_path)
    assert 'aria-label="rungs of the search"' in page
    assert page.count('class="rung promoted"') == 2 and page.count('class="rung stopped"') == 2
    assert page.count('class="rung running"') == 2  # the promoted runs, now at rung 1
    assert "stopped at rung 0: rank 3 of 4" in page
    # The promoted runs' rung-0 scores come from their archive.
    assert ">0.600<" in page and ">0.400<" in page


def test_a_linked_result_file_is_not_read(tmp_path):
    folder = _sweep_folder(tmp_path)
    write_run(folder, "good", {"train.learning_rate": 1e-4}, right=12)
    other = write_run(tmp_path / "elsewhere", "secret", {"train.learning_rate": 1e-3}, right=20)
    planted = folder / "planted"
    (planted / "results").mkdir(parents=True)
    (planted / "results" / "performance.json").symlink_to(other / "results" / "performance.json")
    page = _report(tmp_path)
    assert "is a symbolic link" in page
    assert not re.search(r"<td data-v=\"planted\"[^<]*>planted</td>\s*<td[^>]*>1e-03", page)


def test_a_hundred_run_sweep_stays_small(tmp_path):
    folder = _sweep_folder(tmp_path)
    for i in range(100):
        write_run(folder, f"run{i:03d}", {"train.learning_rate": 1e-5 * (1 + i),
                                          "peft.rank": 8 * (1 + i % 4)},
                  right=i % 20, steps=2000)
    page = _report(tmp_path)
    assert len(page.encode()) < 3_000_000


def test_output_takes_one_sweep(tmp_path, capsys):
    _sweep_folder(tmp_path, "a")
    _sweep_folder(tmp_path, "b")
    out = tmp_path / "page.html"
    assert main(["report", "--runs-dir", str(tmp_path / "runs"), "a", "b",
                 "--output", str(out)]) == 2
    assert "give one sweep with --output" in capsys.readouterr().err and not out.exists()
    assert main(["report", "--runs-dir", str(tmp_path / "runs"), "a", "--output",
                 str(out)]) == 0
    assert out.is_file() and not (tmp_path / "runs" / "a" / REPORT_FILE).exists()


def test_status_says_where_the_report_is(tmp_path, capsys):
    _sweep_folder(tmp_path)
    assert main(["status", "--runs-dir", str(tmp_path / "runs"), "s"]) == 0
    assert "report: none yet; write it with: python -m launcher report" in capsys.readouterr().out
    _report(tmp_path)
    capsys.readouterr()
    assert main(["status", "--runs-dir", str(tmp_path / "runs"), "s"]) == 0
    assert f"report: {tmp_path / 'runs' / 's' / REPORT_FILE}" in capsys.readouterr().out
