"""Run identity across medsweep versions: the hash at the end of a run id covers the values
that differ from the defaults, so a key a later medsweep adds (at its default) changes no run
id; run folders written with the earlier hash (every key, defaults included) are still found by
submit and accepted by the job."""

import yaml

from core.config import RunConfig, build_config, config_hash, legacy_config_hash
from core.fileio import atomic_write_json, atomic_write_yaml
from core.identity import submitted_hashes
from core.rundir import RunDir

from .test_launcher_unit import data_files, sweep_doc  # noqa: F401 (fixture)

ADDED_IN_STOP_38 = {("data", "context_after"), ("eval", "max_item_repeats")}


def _as_an_older_medsweep_wrote_it(cfg: RunConfig) -> dict:
    """config.yaml as the medsweep before stop 38 wrote it: every key it had, no later ones."""
    doc = cfg.to_dict()
    for section, key in ADDED_IN_STOP_38:
        doc[section].pop(key)
    return doc


def test_a_run_id_hash_is_pinned_and_blind_to_keys_at_their_defaults():
    cfg = build_config({"model.name_or_path": "scratch:llama-tiny", "peft.rank": 16,
                        "train.learning_rate": 1e-4})
    # Pinned: a new key with a default must not move it (every finished run would run again).
    assert config_hash(cfg) == "fb1c9965"
    assert config_hash(cfg.replace({"data.context_after": 0})) == "fb1c9965"
    assert config_hash(cfg.replace({"data.context_after": 2})) != "fb1c9965"
    assert config_hash(cfg.replace({"train.num_epochs": 3})) == config_hash(
        cfg.replace({"train.num_epochs": 3.0}))  # YAML writes either


def test_the_job_accepts_a_folder_an_older_medsweep_submitted_and_refuses_an_edit(tmp_path):
    import pytest

    from jobs.pipeline import check_config_matches_id

    cfg = build_config({"model.name_or_path": "scratch:llama-tiny", "peft.rank": 16})
    raw = _as_an_older_medsweep_wrote_it(cfg)
    old = legacy_config_hash(raw)
    assert old != config_hash(cfg)
    rd = RunDir(tmp_path / "sweep" / f"r16-{old}")
    check_config_matches_id(rd, cfg, raw)  # no error
    edited = {**raw, "peft": {**raw["peft"], "rank": 64}}
    with pytest.raises(ValueError, match="changed after the submit"):
        check_config_matches_id(rd, build_config({"model.name_or_path": "scratch:llama-tiny",
                                                  "peft.rank": 64}), edited)
    assert old in submitted_hashes(rd.path, cfg, raw)


def test_resubmit_after_an_upgrade_finds_the_finished_runs(data_files, capsys):  # noqa: F811
    from launcher.cli import main
    from launcher.sweep import parse_sweep

    tmp, train, dev = data_files
    doc = sweep_doc(train, dev, grid={"peft.rank": [8, 16]})
    doc["base"]["model.name_or_path"] = "scratch:llama-tiny"
    sweep = tmp / "s.yaml"
    sweep.write_text(yaml.safe_dump(doc))
    runs = parse_sweep(doc, sweep).runs
    # Both runs finished under an older medsweep: its config.yaml and its hash in the name.
    for run in runs:
        raw = _as_an_older_medsweep_wrote_it(run.config)
        folder = tmp / "runs" / "t" / f"{run.run_id.rsplit('-', 1)[0]}-{legacy_config_hash(raw)}"
        (folder / "results").mkdir(parents=True)
        atomic_write_yaml(folder / "config.yaml", raw)
        atomic_write_json(folder / "results" / "performance.json", {
            "schema_version": 2, "num_examples": 1, "avg_inference_time": 0.0, "macro": {},
            "parse": {}, "config": raw,
            "metrics": {"total": {"exact": {"p": 1.0, "r": 1.0, "f1": 1.0}}}})
    assert main(["submit", str(sweep), "--runs-dir", str(tmp / "runs")]) == 0
    out = capsys.readouterr().out
    assert "2 skip-done" in out, out
    assert len([d for d in (tmp / "runs" / "t").iterdir() if d.is_dir()]) == 2
