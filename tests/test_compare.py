"""launcher compare: a paired bootstrap between two runs' saved predictions (files only)."""

import json

from core.data import Entity as E
from core.metrics import bootstrap_ci, paired_bootstrap, record_counts
from core.results import true_pred_doc
from core.rundir import TRUE_PRED
from launcher.cli import main


def _records(n):
    texts = [f"Patient {i} was given drug{i} for disease{i}." for i in range(n)]
    gold = [[E("Chemical", f"drug{i}"), E("Disease", f"disease{i}")] for i in range(n)]
    return texts, gold


def _write_run(folder, texts, gold, right):
    """A run folder whose predictions get the records in `right` fully right and miss the
    disease elsewhere."""
    pred = [list(g) if i in right else [g[0]] for i, g in enumerate(gold)]
    (folder / "results").mkdir(parents=True)
    (folder / "results" / TRUE_PRED).write_text(
        json.dumps(true_pred_doc(gold, pred, texts, ["" for _ in texts])))
    return folder


def test_paired_resampling_sees_a_difference_that_separate_intervals_hide():
    texts, gold = _records(60)
    a_pred = [list(g) if i < 36 else [g[0]] for i, g in enumerate(gold)]
    b_pred = [list(g) if i < 30 else [g[0]] for i, g in enumerate(gold)]
    a = record_counts(gold, a_pred, texts, "exact")
    b = record_counts(gold, b_pred, texts, "exact")
    a_lo, _ = bootstrap_ci(a)["f1"]
    _, b_hi = bootstrap_ci(b)["f1"]
    assert a_lo < b_hi  # the runs' own intervals overlap ...
    r = paired_bootstrap(a, b)
    assert r["ci95"][0] > 0 and r["a_better"] > 0.97  # ... yet A is better on every record
    assert r["diff"] == round(r["a"] - r["b"], 6) and r["records"] == 60


def test_compare_two_runs_of_a_sweep(tmp_path, capsys):
    texts, gold = _records(40)
    runs = tmp_path / "runs"
    _write_run(runs / "s" / "good", texts, gold, right=set(range(34)))
    _write_run(runs / "s" / "weak", texts, gold, right=set(range(8)))
    assert main(["compare", "s/good", "s/weak", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "A is better: the interval lies above 0" in out
    assert main(["compare", str(runs / "s" / "weak"), str(runs / "s" / "good" / "results"),
                 "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["metric"] == "exact.f1" and r["diff"] < 0 and r["ci95"][1] < 0
    assert r["verdict"].startswith("B is better") and r["a_better"] == 0.0
    # Precision: both runs predict only true entities, so they tie.
    assert main(["compare", "s/weak", "s/good", "--runs-dir", str(runs), "--metric",
                 "overlap", "--stat", "p", "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["metric"] == "overlap.p" and r["diff"] == 0.0


def test_a_run_against_itself_shows_no_difference(tmp_path, capsys):
    texts, gold = _records(20)
    run = _write_run(tmp_path / "r", texts, gold, right={1, 2, 3})
    assert main(["compare", str(run), str(run), "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["diff"] == 0.0 and r["ci95"] == [0.0, 0.0] and r["a_better"] == 0.0
    assert r["verdict"].startswith("no clear difference")


def test_runs_on_different_records_or_unfinished_are_refused(tmp_path, capsys):
    texts, gold = _records(20)
    a = _write_run(tmp_path / "a", texts, gold, right={1})
    b = _write_run(tmp_path / "b", texts[:19], gold[:19], right={1})
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "same eval file" in err
    assert str(a / "results" / TRUE_PRED) in err and str(b / "results" / TRUE_PRED) in err
    (tmp_path / "c").mkdir()
    assert main(["compare", str(a), str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"no {TRUE_PRED} found" in err and "evaluation has finished" in err


def _ranked_sweep(tmp_path):
    """Three runs on the same 60 records: best (48 right), close (46) and weak (20)."""
    from core.metrics import score
    from core.results import performance_doc

    texts, gold = _records(60)
    folder = tmp_path / "runs" / "s"
    for name, n_right in (("best", 48), ("close", 46), ("weak", 20)):
        run = _write_run(folder / name, texts, gold, right=set(range(n_right)))
        tp = json.loads((run / "results" / TRUE_PRED).read_text())
        pred = [[E(e["label"], e["text"]) for e in p] for p in tp["pred_ents"]]
        doc = performance_doc(score(gold, pred, texts), num_examples=60, avg_inference_time=0.1,
                              parse={"failure_rate": 0.0}, hallucination_rate=0.0,
                              config={"eval": {"unique_entities": True}}, extra={})
        (run / "results" / "performance.json").write_text(json.dumps(doc))
    (folder / "sweep.yaml").write_text("name: s\n")
    return folder


def test_leaderboard_vs_best_marks_ties_and_worse_runs(tmp_path, capsys):
    folder = _ranked_sweep(tmp_path)
    args = ["leaderboard", "s", "--runs-dir", str(folder.parent), "--vs-best"]
    assert main([*args, "--format", "json"]) == 0
    rows = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["best"]["vs_best"] == "best"
    assert rows["close"]["vs_best"].startswith("tied (-")
    assert rows["weak"]["vs_best"].startswith("worse (-")
    # The same interval as `compare best close`, negated (run - best).
    assert main(["compare", "s/best", "s/close", "--runs-dir", str(folder.parent),
                 "--format", "json"]) == 0
    lo, hi = json.loads(capsys.readouterr().out)["ci95"]
    assert rows["close"]["vs_best"] == f"tied ({-hi:+.3f} to {-lo:+.3f})"
    # Written leaderboard files stay the plain per-run table.
    assert "vs_best" not in (folder / "leaderboard.csv").read_text()


def test_leaderboard_vs_best_needs_a_metric_sort(tmp_path, capsys):
    folder = _ranked_sweep(tmp_path)
    assert main(["leaderboard", "s", "--runs-dir", str(folder.parent), "--vs-best",
                 "--sort", "train_s"]) == 2
    assert "--vs-best: needs --sort on a metric" in capsys.readouterr().err
    # Sorted by recall without --pr: the column still shows.
    assert main(["leaderboard", "s", "--runs-dir", str(folder.parent), "--vs-best",
                 "--sort", "exact.r"]) == 0
    out = capsys.readouterr().out
    assert "vs_best" in out.splitlines()[0] and "worse (" in out


def test_compare_refuses_other_gold_or_other_counting(tmp_path, capsys):
    """Issue 27 item 16: the same texts scored against different gold, or one run counted per
    unique pair and the other per mention, are not comparable."""
    texts, gold = _records(20)
    runs = tmp_path / "runs"
    _write_run(runs / "s" / "a", texts, gold, right=set(range(15)))
    other_gold = [[E("Chemical", f"drug{i}")] for i in range(20)]
    _write_run(runs / "s" / "b", texts, other_gold, right=set(range(20)))
    assert main(["compare", "s/a", "s/b", "--runs-dir", str(runs)]) == 2
    assert "different gold answers" in capsys.readouterr().err
    _write_run(runs / "s" / "c", texts, gold, right=set(range(10)))
    (runs / "s" / "c" / "results" / "performance.json").write_text(
        json.dumps({"config": {"eval": {"unique_entities": False}}}))
    assert main(["compare", "s/a", "s/c", "--runs-dir", str(runs)]) == 2
    assert "counted differently" in capsys.readouterr().err
