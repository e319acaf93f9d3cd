"""leaderboard --plot and plot-loss write real PNGs (opened and checked, not just found)."""

import json
from pathlib import Path

import pytest
import yaml

from launcher.cli import main


def _png_ok(path: Path, min_w: int = 400, min_h: int = 300) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    assert img.shape[0] >= min_h and img.shape[1] >= min_w, img.shape
    flat = img[..., :3].reshape(-1, 3)
    assert flat.std() > 0.05, "blank image"
    assert len({tuple(px) for px in flat[:: max(1, len(flat) // 20000)].round(2)}) > 8


@pytest.fixture()
def sweep(tmp_path):
    from core.results import performance_doc

    folder = tmp_path / "runs" / "s"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"name": "s", "grid": {
        "model.name_or_path": ["m/a", "m/b"], "peft.rank": [8, 16],
        "train.num_epochs": [1, 3]}}))
    i = 0
    for model in ("m/a", "m/b"):
        for rank in (8, 16):
            for epochs in (1, 3):
                i += 1
                run = folder / f"run-{i}"
                (run / "results").mkdir(parents=True)
                (run / "config.yaml").write_text("{}")
                (run / "job.json").write_text(json.dumps({"varied": {
                    "model.name_or_path": model, "peft.rank": rank, "train.num_epochs": epochs}}))
                f1 = 0.1 * i / 2
                scores = {"total": {"exact": {"p": f1, "r": f1, "f1": f1}},
                          "labels": {}, "macro": {"exact": {"p": f1, "r": f1, "f1": f1}}}
                doc = performance_doc(
                    scores, num_examples=10, avg_inference_time=0.1,
                    parse={"failure_rate": 0.0}, hallucination_rate=0.0,
                    config={"model": {"name_or_path": model}, "peft": {"rank": rank},
                            "train": {"num_epochs": epochs}}, extra={})
                (run / "results" / "performance.json").write_text(json.dumps(doc))
                hist = [{"step": s, "loss": 5.0 / (s + i)} for s in range(1, 30)]
                (run / "progress.json").write_text(json.dumps({"history": hist}))
    return folder


def test_leaderboard_plot(sweep, tmp_path, capsys):
    png = tmp_path / "f1.png"
    assert main(["leaderboard", "s", "--runs-dir", str(sweep.parent), "--plot", str(png)]) == 0
    assert f"plot: {png}" in capsys.readouterr().out
    _png_ok(png, min_w=800)  # two panels: epochs 1 and 3


def test_plot_loss(sweep, tmp_path, capsys):
    png = tmp_path / "loss.png"
    assert main(["plot-loss", str(sweep), "--out", str(png)]) == 0
    assert "no loss history" not in capsys.readouterr().out
    _png_ok(png)


def test_plot_loss_rejects_a_non_run_folder(tmp_path, capsys):
    assert main(["plot-loss", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_leaderboard_shows_the_gpu_count_only_where_a_run_was_split(sweep, capsys):
    args = ["leaderboard", "s", "--runs-dir", str(sweep.parent), "--format", "json"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows and all("gpus" not in r for r in rows)
    perf = sweep / "run-3" / "results" / "performance.json"
    doc = json.loads(perf.read_text())
    doc["hardware"] = {"gpu_count": 2, "peak_vram_gb_per_gpu": [7.7, 9.3]}
    perf.write_text(json.dumps(doc))
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert sorted(r["gpus"] for r in rows if r["gpus"] is not None) == [2]


def test_leaderboard_shows_the_sort_metrics_interval_where_runs_have_one(sweep, capsys):
    # run-1..run-7 are as older medsweep wrote them (no ci95); run-8 has an interval.
    perf = sweep / "run-8" / "results" / "performance.json"
    doc = json.loads(perf.read_text())
    doc["ci95"] = {"level": 0.95, "reps": 1000, "seed": 0, "resampled": "records",
                   "exact": {"p": [0.3, 0.5], "r": [0.3, 0.5], "f1": [0.312, 0.489]}}
    perf.write_text(json.dumps(doc))
    base = ["leaderboard", "s", "--runs-dir", str(sweep.parent)]
    assert main(base) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert "exact.f1 95% CI" in header
    assert header.index("exact.f1 95% CI") > header.index("exact.f1 ")
    top = out.splitlines()[2]
    assert "run-8" in top and "0.312-0.489" in top
    assert main([*base, "--format", "csv"]) == 0
    rows = list(__import__("csv").DictReader(capsys.readouterr().out.splitlines()))
    by_id = {r["run_id"]: r for r in rows}
    assert float(by_id["run-8"]["exact.f1.ci95.low"]) == 0.312
    assert float(by_id["run-8"]["exact.f1.ci95.high"]) == 0.489
    assert by_id["run-1"]["exact.f1.ci95.low"] == ""
    # Sorted by another column, no interval column is shown.
    assert main([*base, "--sort", "train_s"]) == 0
    assert "95% CI" not in capsys.readouterr().out
