"""The leaderboard table names dataset files by the shortest tail that tells them apart (the
JSON and CSV keep the paths the runs read), and ranks runs scored on different dev files each
within its own file."""

import json

import yaml

from core.results import performance_doc
from launcher.cli import main


def _sweep_folder(tmp_path):
    folder = tmp_path / "runs" / "s"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"name": "s"}))
    return folder


def _write_run(folder, name, varied, f1, config, extra):
    """A finished run as submit and evaluate leave it: job.json and performance.json."""
    run = folder / name
    (run / "results").mkdir(parents=True)
    (run / "job.json").write_text(json.dumps({"varied": varied}))
    scores = {"total": {"exact": {"p": f1, "r": f1, "f1": f1}}, "labels": {},
              "macro": {"exact": {"p": f1, "r": f1, "f1": f1}}}
    doc = performance_doc(scores, num_examples=10, avg_inference_time=0.1,
                          parse={"failure_rate": 0.0}, hallucination_rate=0.0,
                          config=config, extra=extra)
    (run / "results" / "performance.json").write_text(json.dumps(doc))


def test_dataset_columns_show_the_distinguishing_tail(tmp_path, capsys):
    folder = _sweep_folder(tmp_path)
    for corpus, f1 in (("bc5cdr", 0.8), ("ncbi_disease", 0.7)):
        train = str(tmp_path / "corpora" / corpus / "train.json")
        _write_run(folder, corpus, {"data.train_dataset_file": train}, f1,
                   {"data": {"train_dataset_file": train}}, {})
    args = ["leaderboard", "s", "--runs-dir", str(folder.parent)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| bc5cdr/train.json" in table and "| ncbi_disease/train.json" in table
    assert str(tmp_path) not in table
    assert main([*args, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["data.train_dataset_file"] for r in rows} == {
        str(tmp_path / "corpora" / c / "train.json") for c in ("bc5cdr", "ncbi_disease")}


def test_runs_on_different_eval_files_are_ranked_within_each_file(tmp_path, capsys):
    folder = _sweep_folder(tmp_path)
    f1s = {("bc5cdr", 1): 0.80, ("bc5cdr", 2): 0.84, ("maccrobat", 1): 0.60,
           ("maccrobat", 2): 0.55}
    for (corpus, seed), f1 in f1s.items():
        dev = str(tmp_path / "corpora" / corpus / "dev.json")
        _write_run(folder, f"{corpus}-{seed}", {"train.seed": seed}, f1,
                   {"train": {"seed": seed}},
                   {"data": {"eval_file": dev, "eval_sha256": corpus * 4}})
    args = ["leaderboard", "s", "--runs-dir", str(folder.parent)]
    assert main([*args, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    # MACCROBAT's 0.60 is below BC5CDR's 0.80, yet ranks first within its own file.
    assert [r["run_id"] for r in rows] == ["bc5cdr-2", "bc5cdr-1", "maccrobat-1", "maccrobat-2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| eval_file" in out and "| bc5cdr/dev.json" in out
    assert "each file's runs are ranked on their own" in out
    assert main([*args, "--over-seeds", "--format", "json"]) == 0
    merged = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["eval_file"].split("/")[-2], r["seeds"]) for r in merged] == [
        ("bc5cdr", 2), ("maccrobat", 2)]


def test_the_fast_github_table_writes_what_tabulate_would():
    import random

    from tabulate import tabulate

    from launcher.leaderboard import github_table

    rng = random.Random(1)
    for _ in range(300):
        n = rng.randint(1, 6)
        headers = ["".join(rng.choice("abc._") for _ in range(rng.randint(1, 9))) for _ in range(n)]
        rows = [["".join(rng.choice("xyz0.1|- ") for _ in range(rng.randint(0, 12)))
                 for _ in range(n)] for _ in range(rng.randint(0, 5))]
        assert github_table(rows, headers) == tabulate(rows, headers=headers, tablefmt="github",
                                                       disable_numparse=True)
