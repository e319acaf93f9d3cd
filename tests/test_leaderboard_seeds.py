"""leaderboard --over-seeds: one row per configuration, mean and sd over its seeds."""

import json
import statistics

import yaml

from core.results import performance_doc
from launcher.cli import main

F1 = {(8, 1): 0.40, (8, 2): 0.44, (8, 3): 0.42, (16, 1): 0.50, (16, 2): 0.30, (16, 3): 0.40}


def _sweep(tmp_path, seeds=True):
    folder = tmp_path / "runs" / "s"
    folder.mkdir(parents=True)
    spec = {"name": "s", "grid": {"peft.rank": [8, 16]}}
    if seeds:
        spec["seeds"] = [1, 2, 3]
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec))
    for (rank, seed), f1 in F1.items():
        if not seeds and seed != 1:
            continue
        run = folder / f"r{rank}-s{seed}"
        (run / "results").mkdir(parents=True)
        varied = {"peft.rank": rank, **({"train.seed": seed} if seeds else {})}
        (run / "job.json").write_text(json.dumps({"varied": varied}))  # as submit writes it
        scores = {"total": {"exact": {"p": f1, "r": f1, "f1": f1}}, "labels": {},
                  "macro": {"exact": {"p": f1, "r": f1, "f1": f1}},
                  "ci95": {"exact": {"p": [0, 1], "r": [0, 1], "f1": [f1 - 0.1, f1 + 0.1]}}}
        doc = performance_doc(scores, num_examples=10, avg_inference_time=0.1 * seed,
                              parse={"failure_rate": 0.0}, hallucination_rate=0.0,
                              config={"peft": {"rank": rank}, "train": {"seed": seed}},
                              extra={"timings": {"train_s": 10.0 * seed}})
        (run / "results" / "performance.json").write_text(json.dumps(doc))
    return folder


def test_over_seeds_merges_the_seeds_of_each_configuration(tmp_path, capsys):
    folder = _sweep(tmp_path)
    args = ["leaderboard", "s", "--runs-dir", str(folder.parent), "--over-seeds"]
    assert main([*args, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["peft.rank"] for r in rows] == [8, 16]  # mean 0.42 vs 0.40, though rank 16 has the best single run
    by_rank = {r["peft.rank"]: r for r in rows}
    for rank in (8, 16):
        vals = [F1[(rank, s)] for s in (1, 2, 3)]
        assert by_rank[rank]["seeds"] == 3
        assert abs(by_rank[rank]["exact.f1"] - statistics.fmean(vals)) < 1e-12
        assert abs(by_rank[rank]["exact.f1.sd"] - statistics.stdev(vals)) < 1e-12
        assert by_rank[rank]["train_s"] == 20.0
        assert "train.seed" not in by_rank[rank]
    assert main(args) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert "seeds" in header and "exact.f1 sd" in header and "95% CI" not in header
    assert "run_id" not in header
    # The sweep folder's leaderboard files keep one row per run.
    assert (folder / "leaderboard.csv").read_text().count("\n") == 1 + len(F1)


def test_over_seeds_without_seeds_says_how_to_add_them(tmp_path, capsys):
    folder = _sweep(tmp_path, seeds=False)
    assert main(["leaderboard", "s", "--runs-dir", str(folder.parent), "--over-seeds"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seeds: [1, 2, 3]" in err and str(folder) in err
