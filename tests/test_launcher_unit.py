import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.vram import shape_of
from launcher.envs import load_env, parse_env
from launcher.plan import PlanError, plan_run, sbatch_parameters
from launcher.sweep import load_sweep, parse_sweep
from launcher.yamlio import YamlError, load_yaml_mapping

from .conftest import ROOT

SEED_MODELS = ["unsloth/llama-3-8b-Instruct", "unsloth/Llama-3.1-8B-Instruct",
               "unsloth/Llama-3.2-1B-Instruct", "unsloth/Llama-3.2-3B-Instruct",
               "unsloth/gemma-3-4b-it", "unsloth/gemma-3-270m-it", "unsloth/gemma-3n-E2B-it",
               "unsloth/gemma-3n-E4B-it", "unsloth/medgemma-4b-it"]


@pytest.fixture()
def data_files(tmp_path):
    from core.demo_data import write_demo_data

    train, dev = write_demo_data(tmp_path / "data", n_train=10, n_dev=4)
    return tmp_path, train, dev


def sweep_doc(train, dev, **extra):
    doc = {"name": "t", "env": "local", "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.max_seq_length": 512},
           "grid": {"model.name_or_path": ["scratch:llama-tiny", "scratch:gemma-tiny"],
                    "peft.rank": [8, 16]}}
    doc.update(extra)
    return doc


def test_importing_launcher_never_imports_torch():
    code = ("import sys, launcher.cli, launcher.submit, launcher.state, launcher.leaderboard, "
            "jobs.pipeline, core.metrics, core.config; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'transformers' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_grid_expansion_and_stable_distinct_ids(data_files):
    tmp, train, dev = data_files
    s1 = parse_sweep(sweep_doc(train, dev), tmp / "s.yaml")
    s2 = parse_sweep(sweep_doc(train, dev), tmp / "s.yaml")
    assert len(s1.runs) == 4
    ids = [r.run_id for r in s1.runs]
    assert ids == [r.run_id for r in s2.runs]
    assert len(set(ids)) == 4
    assert ids[0].startswith("llama-tiny-r8-")
    assert s1.varied_keys == ["model.name_or_path", "peft.rank"]


def test_a_validation_file_reaches_every_run_and_is_checked(data_files):
    tmp, train, dev = data_files
    doc = sweep_doc(train, dev)
    doc["data"]["validation"] = str(dev)
    s = parse_sweep(doc, tmp / "s.yaml")
    assert {r.config.data.validation_dataset_file for r in s.runs} == {str(dev.resolve())}
    assert parse_sweep(sweep_doc(train, dev), tmp / "s.yaml").runs[0].config.data \
        .validation_dataset_file == ""
    doc["data"]["validation"] = str(tmp / "nope.json")
    with pytest.raises(YamlError, match=r"data.validation: .*nope.json does not exist"):
        parse_sweep(doc, tmp / "s.yaml")


def test_changed_config_changes_the_id(data_files):
    tmp, train, dev = data_files
    a = parse_sweep(sweep_doc(train, dev), tmp / "s.yaml").runs[0].run_id
    doc = sweep_doc(train, dev)
    doc["base"]["train.learning_rate"] = 1e-3
    b = parse_sweep(doc, tmp / "s.yaml").runs[0].run_id
    assert a != b and a.rsplit("-", 1)[0] == b.rsplit("-", 1)[0]


def test_paired_lists_and_seeds(data_files):
    tmp, train, dev = data_files
    doc = sweep_doc(train, dev, grid={"model.name_or_path": ["scratch:llama-tiny"]},
                    paired=[{"peft.rank": [8, 16], "peft.lora_alpha": [16, 32]}],
                    seeds=[1, 2, 3])
    s = parse_sweep(doc, tmp / "s.yaml")
    assert len(s.runs) == 6
    assert {(r.config.peft.rank, r.config.peft.lora_alpha) for r in s.runs} == {(8, 16),
                                                                               (16, 32)}
    assert {r.config.train.seed for r in s.runs} == {1, 2, 3}


def test_runs_over_several_corpora_are_named_by_corpus_once(data_files):
    import shutil

    tmp, train, dev = data_files
    corpora = []
    for name in ("bc5cdr", "ncbi_disease"):
        (tmp / name).mkdir()
        corpora.append((shutil.copy(train, tmp / name / "train.json"),
                        shutil.copy(dev, tmp / name / "dev.json")))
    pairs = {"data.train_dataset_file": [str(t) for t, _ in corpora],
             "data.eval_dataset_file": [str(d) for _, d in corpora]}
    s = parse_sweep(sweep_doc(train, dev, grid={"model.name_or_path": ["scratch:llama-tiny"]},
                              paired=[pairs]), tmp / "s.yaml")
    assert sorted(r.run_id.rsplit("-", 1)[0] for r in s.runs) == ["bc5cdr", "ncbi-disease"]
    assert {Path(r.config.data.eval_dataset_file).parent.name for r in s.runs} == {
        "bc5cdr", "ncbi_disease"}


def test_a_relative_dataset_path_in_a_grid_is_taken_from_the_base_dir_like_data(data_files,
                                                                                  monkeypatch):
    import shutil

    tmp, train, dev = data_files
    (tmp / "corpus").mkdir()
    shutil.copy(train, tmp / "corpus" / "train.json")
    monkeypatch.chdir(tmp.parent)  # not where the paths are: only base_dir finds them
    doc = sweep_doc(train, dev, paired=[{"data.train_dataset_file": ["corpus/train.json"],
                                         "train.num_epochs": [2]}])
    run = parse_sweep(doc, tmp / "s.yaml", base_dir=tmp).runs[0]
    assert run.config.data.train_dataset_file == str((tmp / "corpus" / "train.json").resolve())
    doc["paired"][0]["data.train_dataset_file"] = ["corpus/nope.json"]
    with pytest.raises(YamlError, match=r"data.train_dataset_file: .*corpus/nope.json does not"):
        parse_sweep(doc, tmp / "s.yaml", base_dir=tmp)


def test_a_paired_key_may_repeat_a_value_but_not_a_whole_combination(data_files):
    tmp, train, dev = data_files
    three = {"model.compile": [False, True, True], "model.flex_attention": [False, False, True]}
    s = parse_sweep(sweep_doc(train, dev, paired=[three]), tmp / "s.yaml")
    combos = [(r.config.model.compile, r.config.model.flex_attention) for r in s.runs]
    assert set(combos) == {("false", False), ("true", False), ("true", True)}
    assert len(set(combos.count(c) for c in combos)) == 1  # each combination as often
    slugs = {r.run_id for r in s.runs}
    for part in ("-no-flex-attention-compile-false-", "-no-flex-attention-compile-true-",
                 "-flex-attention-compile-true-"):
        assert any(part in slug for slug in slugs), (part, slugs)
    again = {"peft.rank": [8, 16, 8], "peft.lora_alpha": [16, 32, 16]}
    with pytest.raises(YamlError, match=r"paired\[0\]: combination 3 repeats an earlier one"):
        parse_sweep(sweep_doc(train, dev, paired=[again]), tmp / "s.yaml")
    with pytest.raises(YamlError, match=r"grid: peft.rank: repeated values"):
        parse_sweep(sweep_doc(train, dev, grid={"peft.rank": [8, 8]}), tmp / "s.yaml")


def test_every_problem_at_once_with_file_and_key(data_files):
    tmp, train, dev = data_files
    doc = sweep_doc(train, dev, grid={"model.name_or_path": [], "peft.rnk": [1],
                                      "peft.rank": ["x"]},
                    paired=[{"peft.lora_alpha": [1, 2], "peft.lora_dropout": [0.0]}],
                    extra_key=1)
    with pytest.raises(YamlError) as e:
        parse_sweep(doc, tmp / "s.yaml")
    msg = str(e.value)
    for part in ("unknown key 'extra_key'", "model.name_or_path: empty list",
                 "unknown key 'peft.rnk'", "peft.rank: expected an integer",
                 "lists must have equal lengths"):
        assert part in msg
    assert all(line.startswith(str(tmp / "s.yaml")) for line in msg.splitlines())


def test_clashing_combination_names_the_run(data_files):
    tmp, train, dev = data_files
    doc = sweep_doc(train, dev, grid={"model.name_or_path": ["scratch:llama-tiny"],
                                      "model.full_finetuning": [False, True]})
    with pytest.raises(YamlError, match="model.full_finetuning=True.*needs 16-bit"):
        parse_sweep(doc, tmp / "s.yaml")


def test_secret_in_sweep_is_refused(data_files):
    tmp, train, dev = data_files
    doc = sweep_doc(train, dev)
    doc["base"]["model.hf_token"] = "hf_x"
    with pytest.raises(YamlError, match="must not be written in a sweep file"):
        parse_sweep(doc, tmp / "s.yaml")


def test_duplicate_yaml_keys_and_syntax_errors(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("name: a\nname: b\n")
    with pytest.raises(YamlError, match="line 2 column 1: duplicate key 'name'"):
        load_yaml_mapping(p)
    p.write_text("name: [a\n")
    with pytest.raises(YamlError, match=str(p)):
        load_yaml_mapping(p)


def test_unknown_env_lists_known_profiles():
    with pytest.raises(YamlError, match="known profiles: .*local.*slurm"):
        load_env("nosuchcluster")


def test_env_errors_reported_together():
    with pytest.raises(YamlError) as e:
        parse_env({"executor": "pbs", "max_parallel": 0, "colour": "red",
                   "env_vars": {"HF_TOKEN": "x"}}, "e.yaml")
    msg = str(e.value)
    assert "unknown key 'colour'" in msg and "executor: 'pbs'" in msg
    assert "max_parallel must be >= 1" in msg and "HF_TOKEN must not be written" in msg


@pytest.mark.parametrize("path", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_env_file_loads(path):
    env = load_env(str(path))
    assert env.name == path.stem


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").rglob("*.yaml")),
                         ids=lambda p: str(p.relative_to(ROOT / "sweeps")))
def test_every_sweep_file_loads_and_starts_with_its_command(path, tmp_path, monkeypatch):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# python -m launcher submit " + str(path.relative_to(ROOT)))
    raw = load_yaml_mapping(path)
    if not raw["data"].get("demo"):
        # The sweep's own data paths (its `data` block and any dataset file a run varies), made
        # to exist here.
        paths = [raw["data"]["train"], raw["data"]["eval"]]
        for block in [raw.get("base") or {}, raw.get("grid") or {}, *(raw.get("paired") or [])]:
            for key, value in block.items():
                if key.endswith("_dataset_file"):
                    paths += value if isinstance(value, list) else [value]
        for rel in paths:
            target = tmp_path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps([{"text": "flu", "entities": []}]))
            # Its document ids too (data.context_sentences reads them).
            target.with_name(target.stem + ".ids.json").write_text('["d:s0"]')
    sweep = parse_sweep(raw, path, base_dir=tmp_path)
    assert sweep.runs
    env = load_env(sweep.env)
    for run in sweep.runs:
        plan_run(run.config, env)


def test_vram_plan_for_seed_models_against_slurm_profile(data_files):
    """Each seed model, 4-bit QLoRA r16: one card, the smallest that fits."""
    tmp, train, dev = data_files
    env = load_env("slurm")
    doc = sweep_doc(train, dev, grid={"model.name_or_path": SEED_MODELS},
                    base={"peft.rank": 16, "model.max_seq_length": 4096})
    for run in parse_sweep(doc, tmp / "s.yaml").runs:
        res, est = plan_run(run.config, env)
        assert res.gpus == 1, run.run_id
        assert res.partition == "gpu-a10", (run.run_id, est)
        assert est.total_gb < 24 * env.vram_margin


def test_vram_plan_16bit_full_finetune_moves_up_and_splits(data_files):
    tmp, train, dev = data_files
    env = load_env("slurm")
    base = {"model.load_in_4bit": False, "model.full_finetuning": True}
    doc = sweep_doc(train, dev, base=base, grid={"model.name_or_path": [
        "unsloth/Llama-3.2-1B-Instruct", "unsloth/Llama-3.1-8B-Instruct",
        "unsloth/gemma-3-27b-it"]})
    runs = parse_sweep(doc, tmp / "s.yaml").runs
    small, mid, big = (plan_run(r.config, env)[0] for r in runs)
    assert (small.partition, small.gpus) == ("gpu-a10", 1)
    assert (mid.partition, mid.gpus) == ("gpu-h100", 1)
    assert big.gpus > 1 and big.gpus <= 8


def test_vram_plan_impossible_run_says_how_much(data_files):
    tmp, train, dev = data_files
    env = parse_env({"executor": "slurm", "partitions": [
        {"name": "small", "gpu_type": "t4", "vram_gb": 16, "gpus_per_node": 1}]}, "e.yaml")
    doc = sweep_doc(train, dev, base={"model.load_in_4bit": False},
                    grid={"model.name_or_path": ["unsloth/Llama-3.1-8B-Instruct"]})
    run = parse_sweep(doc, tmp / "s.yaml").runs[0]
    with pytest.raises(PlanError, match=r"needs about \d+ GB.*1 x 16 GB in small"):
        plan_run(run.config, env)


def test_shape_from_local_config_and_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 2048, "num_hidden_layers": 16, "intermediate_size": 8192,
        "vocab_size": 128256}))
    shape, src = shape_of(str(tmp_path))
    assert src == "config.json" and 1.0 < shape.params_b < 1.6
    shape, src = shape_of("someone/Model-13B-chat")
    assert src == "name" and shape.params_b == 13.0


@pytest.mark.parametrize("case", ["medical_llama1b", "medical_8b_full", "ci_tiny"])
def test_sbatch_parameters_match_expected_files(case, data_files):
    tmp, train, dev = data_files
    model, env_name, base = {
        "medical_llama1b": ("unsloth/Llama-3.2-1B-Instruct", "slurm", {}),
        "medical_8b_full": ("unsloth/Llama-3.1-8B-Instruct", "slurm",
                            {"model.load_in_4bit": False, "model.full_finetuning": True}),
        "ci_tiny": ("scratch:llama-tiny", "localci", {}),
    }[case]
    doc = sweep_doc(train, dev, base=base, grid={"model.name_or_path": [model]})
    run = parse_sweep(doc, tmp / "s.yaml").runs[0]
    env = load_env(env_name)
    res, _ = plan_run(run.config, env)
    got = sbatch_parameters(res, env)
    expected_file = ROOT / "tests" / "expected" / f"sbatch_{case}.json"
    assert got == json.loads(expected_file.read_text())


def test_dry_run_prints_every_run_and_submits_nothing(tmp_path, data_files, capsys):
    from launcher.cli import main

    _, train, dev = data_files
    doc = sweep_doc(train, dev, env="localci")
    p = tmp_path / "sw.yaml"
    p.write_text(yaml.safe_dump(doc))
    rc = main(["submit", str(p), "--dry-run", "--runs-dir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("scratch:") == 4
    assert "--gres=gpu:h100:1" in out and "--constraint=vram80g" in out
    assert not (tmp_path / "runs").exists()


def test_bad_sweep_exits_2_with_one_line_per_problem(tmp_path, capsys):
    from launcher.cli import main

    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndata: {train: nope.json, eval: nope.json}\ngrid: {peft.rank: []}\n")
    rc = main(["submit", str(p), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "data.train" in err and "peft.rank: empty list" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_sweep_file_loads_from_disk(tmp_path, data_files):
    _, train, dev = data_files
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(sweep_doc(train, dev)))
    assert len(load_sweep(p).runs) == 4


def test_key_reference_is_current():
    from launcher.reference import render

    assert (ROOT / "docs" / "reference.md").read_text() == render(), \
        "regenerate: python -m launcher reference > docs/reference.md"


def _cache_model(cache: Path, model: str) -> None:
    snap = cache / ("models--" + model.replace("/", "--")) / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")


def test_offline_env_refuses_models_missing_from_the_cache(tmp_path, data_files, capsys):
    from launcher.cli import main

    _, train, dev = data_files
    cache = tmp_path / "hf" / "hub"
    env = yaml.safe_load((ROOT / "envs" / "slurm.yaml").read_text())
    env["env_vars"]["HF_HOME"] = str(tmp_path / "hf")
    env_path = tmp_path / "offline.yaml"
    env_path.write_text(yaml.safe_dump(env))
    doc = sweep_doc(train, dev, env=str(env_path), grid={"model.name_or_path": [
        "unsloth/Llama-3.2-1B-Instruct", "unsloth/gemma-3-4b-it", "scratch:llama-tiny"]})
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump(doc))
    _cache_model(cache, "unsloth/gemma-3-4b-it")
    runs = tmp_path / "runs"
    assert main(["submit", str(sweep), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1 but 1 model(s) are not in" in err
    assert "unsloth/Llama-3.2-1B-Instruct" in err and "gemma" not in err.split("are not in")[1]
    assert "launcher prefetch" in err and not runs.exists()
    assert main(["submit", str(sweep), "--dry-run"]) == 0
    assert "warning: env" in capsys.readouterr().out
    _cache_model(cache, "unsloth/Llama-3.2-1B-Instruct")
    assert main(["prefetch", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "every model of t is in" in out and out.count("cached ") == 2


def test_run_ids_ignore_grid_key_order_and_one_value_grids(data_files):
    tmp, train, dev = data_files
    grid_a = {"peft.rank": [8, 16], "train.seed": [1], "model.name_or_path": ["scratch:llama-tiny"]}
    grid_b = {"train.seed": [1], "model.name_or_path": ["scratch:llama-tiny"], "peft.rank": [8, 16]}
    a = parse_sweep(sweep_doc(train, dev, grid=grid_a), tmp / "s.yaml")
    b = parse_sweep(sweep_doc(train, dev, grid=grid_b), tmp / "s.yaml")
    base = sweep_doc(train, dev, grid={"peft.rank": [8, 16]})
    base["base"].update({"train.seed": 1, "model.name_or_path": "scratch:llama-tiny"})
    c = parse_sweep(base, tmp / "s.yaml")
    ids = sorted(r.run_id for r in a.runs)
    assert ids == sorted(r.run_id for r in b.runs) == sorted(r.run_id for r in c.runs)
    assert all(i.startswith(("r8-", "r16-")) for i in ids), ids


def test_resubmit_finds_a_run_submitted_under_another_slug(data_files, capsys):
    from core.fileio import atomic_write_json
    from launcher.cli import main

    tmp, train, dev = data_files
    doc = sweep_doc(train, dev, grid={"peft.rank": [8]})
    doc["base"]["model.name_or_path"] = "scratch:llama-tiny"
    p = tmp / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    run = parse_sweep(doc, p).runs[0]
    assert run.run_id.startswith("llama-tiny-")  # a single run is named after its model
    # The same config, finished under an older slug (the hash at the end is what counts).
    old = tmp / "runs" / "t" / f"old-slug-{run.run_id.rsplit('-', 1)[-1]}"
    (old / "results").mkdir(parents=True)
    from core.fileio import atomic_write_yaml

    atomic_write_yaml(old / "config.yaml", run.config.to_dict())
    atomic_write_json(old / "results" / "performance.json", {
        "schema_version": 2, "num_examples": 1, "avg_inference_time": 0.0, "macro": {},
        "parse": {}, "config": run.config.to_dict(),
        "metrics": {"total": {"exact": {"p": 1.0, "r": 1.0, "f1": 1.0}}}})
    assert main(["submit", str(p), "--runs-dir", str(tmp / "runs")]) == 0
    out = capsys.readouterr().out
    assert "skip-done" in out, out
    assert [d.name for d in (tmp / "runs" / "t").iterdir() if d.is_dir()] == [old.name]


def test_resubmit_never_takes_an_env_file_named_by_the_runs_folder(data_files, capsys):
    from launcher.cli import main

    tmp, train, dev = data_files
    evil = tmp / "evil.yaml"
    evil.write_text("name: evil\nexecutor: local\nenv_vars: {PYTHONPATH: /tmp/evil}\n")
    runs = tmp / "runs" / "t"
    runs.mkdir(parents=True)
    doc = sweep_doc(train, dev, env=str(evil))
    (runs / "sweep.yaml").write_text(yaml.safe_dump(doc))
    assert main(["resubmit", "t", "--runs-dir", str(tmp / "runs")]) == 2
    err = capsys.readouterr().err
    assert "not trusted to choose the jobs' environment: pass --env" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in runs.iterdir()) == ["sweep.yaml"]  # nothing submitted


def test_a_reused_pid_is_not_a_running_local_job():
    import os

    from launcher.backends.local import local_process_alive, process_start

    me = os.getpid()
    assert local_process_alive({"pid": me, "pid_start": process_start(me)})
    # The same PID, but a process that started at another time: not our job.
    assert not local_process_alive({"pid": me, "pid_start": "1"})
    assert not local_process_alive({"pid": 2**22 + 12345})
    assert not local_process_alive({"pid": "junk"})


def test_cancel_of_a_local_sweep_never_calls_scancel(tmp_path, capsys, monkeypatch):
    import os

    from core.fileio import atomic_write_json, atomic_write_yaml
    from launcher.backends.local import process_start
    from launcher.cli import main

    run = tmp_path / "runs" / "loc" / "r1-deadbeef"
    run.mkdir(parents=True)
    (run.parent / "sweep.yaml").write_text("name: loc\n")
    atomic_write_yaml(run / "config.yaml", {})
    # A local job whose PID was reused by this very test process: alive, but not ours.
    atomic_write_json(run / "job.json", {"cluster": "local", "job_id": str(os.getpid()),
                                         "pid": os.getpid(), "pid_start": "1"})
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    rc = main(["cancel", "loc", "--runs-dir", str(tmp_path / "runs")])
    out = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out.err
    assert "scancel" not in out.err and ("nothing to cancel" in out.out
                                         or "stopped 0 local run(s)" in out.out)
    assert process_start(os.getpid()) is not None  # and we are still here


def test_leaderboard_markdown_escapes_config_text():
    from launcher.leaderboard import Board, render

    board = Board(rows=[{"run_id": "a", "model.system_prompt": "x | y\n| fake | row |",
                         "exact.f1": 0.5}])
    md = render(board, ["run_id", "model.system_prompt", "exact.f1"], "github")
    lines = md.splitlines()
    assert len(lines) == 3  # header, rule, one row: no row injected
    assert "x \\| y \\| fake \\| row \\|" in lines[2]


@pytest.mark.parametrize("garbage", ['[1,2,3]', '{"total":"x"}', '{"step":"5"}',
                                     '{"total":-1,"step":1e8}', '{"total":10,"step":1e300}',
                                     '{"history":[{"step":"a","loss":null}, 5]}', 'not json'])
def test_garbage_progress_never_breaks_status_or_plot_loss(tmp_path, capsys, garbage):
    from launcher.cli import main

    run = tmp_path / "runs" / "s" / "r1-abcdef12"
    run.mkdir(parents=True)
    (run.parent / "sweep.yaml").write_text("name: s\n")
    (run / "config.yaml").write_text("{}\n")
    (run / "progress.json").write_text(garbage)
    assert main(["status", "s", "--runs-dir", str(tmp_path / "runs")]) in (0, 1)
    assert main(["plot-loss", str(run.parent), "--out", str(tmp_path / "l.png")]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_local_sweep_progress_lines_show_change_at_most_every_few_seconds(tmp_path):
    from core.fileio import atomic_write_json
    from core.rundir import RunDir
    from launcher.backends.local import progress_line

    rd = RunDir(tmp_path / "r1-abcdef12")
    rd.path.mkdir()
    shown: dict = {}
    assert progress_line(rd, shown) is None  # nothing yet
    atomic_write_json(rd.progress, {"phase": "train", "step": 3, "total": 40, "loss": 2.5,
                                    "eta_s": 12.4})
    assert progress_line(rd, shown, every_s=60) == "r1-abcdef12: train 3/40 loss 2.500 eta 12s"
    atomic_write_json(rd.progress, {"phase": "train", "step": 4, "total": 40, "loss": 2.4})
    assert progress_line(rd, shown, every_s=60) is None  # too soon after the last line
    assert progress_line(rd, shown, every_s=0) == "r1-abcdef12: train 4/40 loss 2.400"
    assert progress_line(rd, shown, every_s=0) is None  # unchanged


def test_status_shows_queued_runs_model_and_local_elapsed(tmp_path, capsys):
    from core.fileio import atomic_write_json, atomic_write_yaml
    from core.results import now_iso
    from launcher.state import run_states

    sweep = tmp_path / "s"
    done, queued = sweep / "r8-aaaaaaaa", sweep / "r16-bbbbbbbb"
    for d, rank in ((done, 8), (queued, 16)):
        d.mkdir(parents=True)
        atomic_write_yaml(d / "config.yaml", {"model": {"name_or_path": "scratch:llama-tiny"},
                                              "peft": {"rank": rank}})
    atomic_write_json(done / "job.json", {"cluster": "local", "job_id": "1", "pid": 1,
                                          "varied": {"peft.rank": 8}, "model": "scratch:x",
                                          "submitted_at": now_iso()})
    atomic_write_json(done / "results" / "performance.json", {
        "schema_version": 2, "num_examples": 1, "avg_inference_time": 0.0, "macro": {},
        "parse": {}, "config": {}, "metrics": {"total": {"exact": {"p": 1, "r": 1, "f1": 1}}}})
    by_id = {s.run_id: s for s in run_states(sweep)}
    q = by_id[queued.name]
    assert q.state == "NOT_SUBMITTED" and q.model == "scratch:llama-tiny"
    assert q.varied == {"peft.rank": 16}
    assert by_id[done.name].state == "COMPLETED"
    assert by_id[done.name].elapsed.startswith("0:00:")


def test_decider_partition_is_checked_like_a_slurm_name(tmp_path):
    from launcher.envs import parse_env

    doc = {"name": "c", "executor": "slurm", "decider_partition": "cpu",
           "partitions": [{"name": "gpu", "gpu_type": "a100", "vram_gb": 40, "gpus_per_node": 8}]}
    assert parse_env(doc, "c.yaml").decider_partition == "cpu"
    with pytest.raises(YamlError, match="decider_partition: 'cpu; rm' is not a valid Slurm"):
        parse_env({**doc, "decider_partition": "cpu; rm"}, "c.yaml")


def test_every_key_names_its_values_in_run_ids_its_own_way():
    """Two varied keys never read the same in a run id (context_sentences and context_after
    both read `contex-` once; eval and data unique_entities one switch name)."""
    from core.config import SPECS
    from launcher.sweep import _slug_value

    for probe in (3, True, False):
        names = {}
        for key, spec in SPECS.items():
            if (spec.type is bool) != isinstance(probe, bool) or key.endswith("_dataset_file"):
                continue
            names.setdefault(_slug_value(key, probe), []).append(key)
        clashes = {n: ks for n, ks in names.items() if len(ks) > 1}
        assert not clashes, clashes


def test_prefetch_names_the_gguf_cache_the_jobs_will_use(tmp_path, data_files, capsys,
                                                          monkeypatch):
    """The jobs dequantize into their HF_HOME (the profile's env_vars), not the caller's."""
    from launcher.cli import main

    _, train, dev = data_files
    monkeypatch.delenv("MEDSWEEP_GGUF_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    env = yaml.safe_load((ROOT / "envs" / "slurm.yaml").read_text())
    env["env_vars"]["HF_HOME"] = str(tmp_path / "hf")
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(env))
    doc = sweep_doc(train, dev, env=str(tmp_path / "e.yaml"),
                    grid={"model.name_or_path": ["pypi:smollm2-135m-instruct"]})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    assert main(["prefetch", str(tmp_path / "s.yaml")]) == 0  # dev.sh installs the model
    assert f"{tmp_path / 'hf' / 'medsweep-gguf'}" in capsys.readouterr().out
