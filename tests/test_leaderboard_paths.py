"""The leaderboard table names dataset files by the shortest tail that tells them apart; the
JSON and CSV keep the paths the runs read."""

import json

import yaml

from core.results import performance_doc
from launcher.cli import main


def _sweep(tmp_path):
    folder = tmp_path / "runs" / "s"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"name": "s"}))
    for corpus, f1 in (("bc5cdr", 0.8), ("ncbi_disease", 0.7)):
        train = str(tmp_path / "corpora" / corpus / "train.json")
        run = folder / corpus
        (run / "results").mkdir(parents=True)
        (run / "job.json").write_text(json.dumps({"varied": {"data.train_dataset_file": train}}))
        scores = {"total": {"exact": {"p": f1, "r": f1, "f1": f1}}, "labels": {},
                  "macro": {"exact": {"p": f1, "r": f1, "f1": f1}}}
        doc = performance_doc(scores, num_examples=10, avg_inference_time=0.1,
                              parse={"failure_rate": 0.0}, hallucination_rate=0.0,
                              config={"data": {"train_dataset_file": train}}, extra={})
        (run / "results" / "performance.json").write_text(json.dumps(doc))
    return folder


def test_dataset_columns_show_the_distinguishing_tail(tmp_path, capsys):
    folder = _sweep(tmp_path)
    args = ["leaderboard", "s", "--runs-dir", str(folder.parent)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| bc5cdr/train.json" in table and "| ncbi_disease/train.json" in table
    assert str(tmp_path) not in table
    assert main([*args, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["data.train_dataset_file"] for r in rows} == {
        str(tmp_path / "corpora" / c / "train.json") for c in ("bc5cdr", "ncbi_disease")}
