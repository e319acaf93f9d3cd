"""Ensembles: the best runs of a sweep vote on their saved answers (launcher ensemble, the
sweep's `ensemble:` key); hand-made answers, with ties, missing records and mismatched files."""

import json
from pathlib import Path

import pytest
import yaml

from core.data import Entity as E
from core.ensemble import parse_ensemble, vote
from core.fileio import atomic_write_json
from core.results import performance_doc, true_pred_doc
from core.rundir import TRUE_PRED
from launcher.cli import main
from launcher.sweep import load_sweep
from launcher.yamlio import YamlError

TEXTS = ["aspirin for flu", "ibuprofen for gout", "rest for cold", "nothing here"]
GOLD = [[E("Chemical", "aspirin"), E("Disease", "flu")],
        [E("Chemical", "ibuprofen"), E("Disease", "gout")],
        [E("Disease", "cold")], []]


def write_member(folder: Path, run_id: str, pred, *, texts=TEXTS, gold=GOLD, f1=None):
    run = folder / run_id
    (run / "results").mkdir(parents=True)
    atomic_write_json(run / "results" / TRUE_PRED,
                      true_pred_doc(gold, pred, texts, ["" for _ in texts]))
    f1 = f1 if f1 is not None else 0.5
    prf = {"p": f1, "r": f1, "f1": f1}
    doc = performance_doc({"total": {"exact": prf}, "labels": {}, "macro": {}},
                          num_examples=len(texts), avg_inference_time=0.1, parse={},
                          hallucination_rate=0.0,
                          config={"train": {"seed": int(run_id[-1]), "learning_rate": 1e-4},
                                  "eval": {"unique_entities": True}},
                          extra={"data": {"eval_sha256": "same"}})
    atomic_write_json(run / "results" / "performance.json", doc)
    atomic_write_json(run / "job.json", {"varied": {"train.seed": int(run_id[-1])}})


def _sweep(tmp_path: Path) -> Path:
    folder = tmp_path / "runs" / "s"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"name": "s"}))
    return folder


def _members(folder: Path) -> None:
    """Four members: every one finds aspirin; three find flu; two (a tie among four) find
    gout; one finds a spurious "rest"."""
    a, f, i, g = GOLD[0][0], GOLD[0][1], GOLD[1][0], GOLD[1][1]
    write_member(folder, "r1", [[a, f], [i, g], [E("Chemical", "rest")], []], f1=0.9)
    write_member(folder, "r2", [[a, f], [i, g], [], []], f1=0.8)
    write_member(folder, "r3", [[a, f], [i], [], []], f1=0.7)
    write_member(folder, "r4", [[a], [], [], []], f1=0.6)


def _voted(path: Path) -> list[list[tuple[str, str]]]:
    """The voted answers in a run folder (results/) or a results folder."""
    file = path / "results" / TRUE_PRED if (path / "results").is_dir() else path / TRUE_PRED
    doc = json.loads(file.read_text())
    return [[(e["label"], e["text"]) for e in rec] for rec in doc["pred_ents"]]


def _only_ensemble(folder: Path) -> Path:
    found = [p for p in folder.iterdir() if p.name.startswith("ensemble-")]
    assert len(found) == 1, found
    return found[0]


def test_a_majority_keeps_what_most_members_answered_and_a_tie_is_not_a_majority(
        tmp_path, capsys):
    folder = _sweep(tmp_path)
    _members(folder)
    assert main(["ensemble", "--runs-dir", str(tmp_path / "runs"), "s", "--top", "4"]) == 0
    out = capsys.readouterr().out
    assert "4 members (r1, r2, r3, r4), at least 3 vote(s)" in out
    ens = _only_ensemble(folder)
    # gout: 2 of 4 votes, a tie, not a majority; the spurious "rest": 1 vote.
    assert _voted(ens) == [[("Chemical", "aspirin"), ("Disease", "flu")],
                           [("Chemical", "ibuprofen")], [], []]
    perf = json.loads((ens / "results" / "performance.json").read_text())
    assert perf["ensemble"]["members"] == ["r1", "r2", "r3", "r4"]
    assert perf["ensemble"]["min_votes"] == 3
    assert perf["ensemble"]["vs_best_member"]["run"] == "r1"
    # The members' shared settings stay; the seed they differ in is not the ensemble's.
    assert perf["config"]["train"] == {"learning_rate": 1e-4}
    assert perf["metrics"]["total"]["exact"]["f1"] == pytest.approx(2 * 3 / 5 / (3 / 5 + 1))


def test_min_votes_two_keeps_the_tie(tmp_path, capsys):
    folder = _sweep(tmp_path)
    _members(folder)
    assert main(["ensemble", "--runs-dir", str(tmp_path / "runs"), "s", "--runs",
                 "r4,r2,r1,r3", "--min-votes", "2"]) == 0
    ens = _only_ensemble(folder)
    assert _voted(ens)[1] == [("Chemical", "ibuprofen"), ("Disease", "gout")]
    # Named members are listed best first, whatever order they were given in.
    assert "(r1, r2, r3, r4)" in capsys.readouterr().out


def test_the_ensemble_is_a_row_of_the_leaderboard_and_compare_pairs_it(tmp_path, capsys):
    folder = _sweep(tmp_path)
    _members(folder)
    assert main(["ensemble", "--runs-dir", str(tmp_path / "runs"), "s"]) == 0
    ens = _only_ensemble(folder)
    assert ens.name.startswith("ensemble-top3-v2-")
    capsys.readouterr()
    assert main(["leaderboard", "--runs-dir", str(tmp_path / "runs"), "s"]) == 0
    board = capsys.readouterr().out
    assert "members" in board.splitlines()[0] and "r1, r2, r3" in board
    assert main(["compare", str(ens), str(folder / "r1")]) == 0
    assert "A - B =" in capsys.readouterr().out
    # A second vote never takes the ensemble itself as a member.
    assert main(["ensemble", "--runs-dir", str(tmp_path / "runs"), "s", "--top", "4"]) == 0
    assert "(r1, r2, r3, r4)" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    ({"texts": TEXTS[:3], "gold": GOLD[:3]}, "hold different records (3 vs 4)"),
    ({"texts": ["x", *TEXTS[1:]]}, "hold different records"),
    ({"gold": [[], *GOLD[1:]]}, "different gold answers"),
])
def test_members_of_other_records_or_gold_are_refused(tmp_path, capsys, change, message):
    folder = _sweep(tmp_path)
    write_member(folder, "r1", GOLD, f1=0.9)
    n = len(change.get("texts", TEXTS))
    write_member(folder, "r2", [[] for _ in range(n)], f1=0.8, **change)
    assert main(["ensemble", "--runs-dir", str(tmp_path / "runs"), "s", "--top", "2"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not [p for p in folder.iterdir() if p.name.startswith("ensemble-")]


@pytest.mark.parametrize("args, message", [
    (["--top", "5"], "--top 5 needs 5 finished runs"),
    (["--top", "1"], "at least 2 members"),
    (["--runs", "r1,nope"], "no finished run nope"),
    (["--top", "2", "--min-votes", "3"], "--min-votes 3: give a number from 1 to the 2"),
    (["--top", "2", "--runs", "r1,r2"], "give --top or --runs, not both"),
])
def test_bad_choices_get_one_line(tmp_path, capsys, args, message):
    folder = _sweep(tmp_path)
    _members(folder)
    assert main(["ensemble", "--runs-dir", str(tmp_path / "runs"), "s", *args]) == 2
    assert message in capsys.readouterr().err


def test_vote_in_member_order_and_spelling():
    flu, flu2 = E("Disease", "flu"), E("Disease", " Flu")
    assert vote([[flu], [flu2], []], 2) == [flu]
    assert vote([[flu, flu], [], []], 2) == []  # a member votes once per pair


def test_the_sweep_key_is_checked_with_every_problem_at_once(tmp_path):
    errs: list[str] = []
    assert parse_ensemble({"top": 3, "min_votes": 2}, "s.yaml", errs) is not None and not errs
    parse_ensemble({"top": "three", "min_vote": 2}, "s.yaml", errs)
    assert any("ensemble.top: 'three'" in e for e in errs)
    assert any("min_vote" in e and "did you mean min_votes" in e for e in errs)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "data": {"demo": True},
                                    "base": {"model.name_or_path": "scratch:llama-tiny"},
                                    "ensemble": {"top": 0}}))
    with pytest.raises(YamlError, match="ensemble.top: 0"):
        load_sweep(path)


@pytest.mark.slow
def test_several_model_dirs_vote_as_the_sweeps_ensemble_of_the_same_runs(finished_demo,
                                                                        tmp_path):
    """jobs.evaluate with the demo's three best models, each generating once, votes the same
    answers as the demo's `ensemble: {top: 3}` cast on those runs' saved answers."""
    import subprocess
    import sys

    from .conftest import job_env

    sweep = finished_demo.sweep
    ens = _only_ensemble(sweep)
    perf = json.loads((ens / "results" / "performance.json").read_text())
    members = perf["ensemble"]["members"]
    argv = [sys.executable, "-m", "jobs.evaluate", "--eval-dataset-file",
            str(sweep / "demo-data" / "dev.json"), "--results-dir", str(tmp_path / "ens")]
    for run_id in members:
        argv += ["--model-dir", str(sweep / run_id / "adapter")]
    r = subprocess.run(argv, env=job_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ensemble of 3 models, at least 2 vote(s) each entity:" in r.stdout
    # Each model generated once, into its own results; the same answers as in the sweep.
    for i, run_id in enumerate(members, 1):
        own = json.loads((sweep / run_id / "results" / TRUE_PRED).read_text())
        again = json.loads((tmp_path / "ens" / "members" / f"{i}-adapter" / TRUE_PRED)
                           .read_text())
        assert again["pred_ents"] == own["pred_ents"], run_id
    assert _voted(tmp_path / "ens") == _voted(ens)
    mine = json.loads((tmp_path / "ens" / "performance.json").read_text())
    assert mine["metrics"]["total"] == perf["metrics"]["total"]
    bad = subprocess.run([*argv[:7], "--model-dir", str(sweep / members[0] / "adapter"),
                          "--min-votes", "2"], env=job_env(), capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "give several --model-dir" in bad.stderr
