"""Malformed inputs, kept as fixture files: each gets a one-line error that names the file and
the record or key, exit code 2, no traceback, and nothing is written or submitted."""

from pathlib import Path

import pytest

from .conftest import FIXTURES, run_module

BROKEN = FIXTURES / "broken"

DATA = {
    "data_json_lines.json": "looks like JSON Lines (one record per line)",
    "data_zero_width_label.json": "'label' holds only invisible characters",
    "data_invalid_json.json": "invalid JSON at line 1 column 32",
    "data_not_a_list.json": "top level is a JSON dict, expected a list",
    "data_empty_list.json": "the dataset is empty",
    "data_empty_file.json": "file is empty",
    "data_null.json": "top level is a JSON null",
    "data_trailing_garbage.json": "invalid JSON at line 1 column 4: Extra data",
    "data_lone_surrogate.json": "record 0: 'text' holds a lone UTF-16 surrogate",
    "data_huge_number.json": "unreadable JSON value (Exceeds the limit (4300 digits)",
    "data_missing_entities.json": "record 0: missing key 'entities'",
    "data_missing_text.json": "record 0: missing key 'text'",
    "data_text_not_string.json": "record 1: 'text' must be a string, got a number",
    "data_entities_not_list.json": "record 0: 'entities' must be a list, got a string",
    "data_entity_missing_text.json": "record 0, entity 0: missing key 'text'",
    "data_entity_label_not_string.json": "record 0, entity 0: 'label' must be a string",
    "data_entity_not_object.json": "record 0, entity 0: expected an object",
    "data_record_not_object.json": "record 0: expected an object",
    "data_empty_text.json": "record 0: 'text' is empty",
    "data_entity_empty_label.json": "record 0, entity 0: 'label' is empty",
    "data_deeply_nested.json": "nested too deeply",
    "data_non_utf8.json": "not UTF-8 (byte 0xe9 at offset 14)",
}

SWEEPS = {
    "sweep_syntax.yaml": "line 2 column 1",
    "sweep_nan_learning_rate.yaml": "train.learning_rate: expected a finite number",
    "sweep_demo_string.yaml": "data.demo: expected true or false, got 'false'",
    "sweep_too_many_runs.yaml": "the grid expands to 100,000 runs, more than max_runs 10,000",
    "sweep_alias_bomb_value.yaml": "model.system_prompt: expected a string, got [[",
    "sweep_data_in_grid_missing.yaml": "/nonexistent/dev.json does not exist",
    "sweep_data_in_base_folder.yaml": "data.train_dataset_file: /tmp is a folder",
    "sweep_unknown_top_key.yaml": "unknown key 'colour'; valid keys: name,",
    "sweep_unknown_config_key.yaml": "unknown key 'peft.rnk'; did you mean peft.rank?",
    "sweep_wrong_type.yaml": "peft.rank: expected an integer, got 'eight'",
    "sweep_empty_grid.yaml": "peft.rank: empty list",
    "sweep_unknown_env.yaml": "env 'nosuchcluster': no such profile",
    "sweep_duplicate_key.yaml": "line 2 column 1: duplicate key 'name'",
    "sweep_impossible.yaml": "needs about",
    "sweep_missing_data.yaml": "data.train:",
    "sweep_empty.yaml": "file is empty",
    "sweep_not_mapping.yaml": "top level must be a mapping",
    "sweep_paired_unequal.yaml": "lists must have equal lengths",
    "sweep_secret.yaml": "model.hf_token must not be written in a sweep file",
    "sweep_bad_name.yaml": "name: required, 1 to 64 letters, digits",
    "sweep_clash.yaml": "--model-load-in-4bit and --model-load-in-8bit are both true",
    "sweep_no_model.yaml": "model.name_or_path: set it in base or grid",
    "sweep_unknown_family.yaml": "unknown model family 'gpt'",
}

ENVS = {
    "env_syntax.yaml": "line 2 column 1",
    "env_unknown_key.yaml": "unknown key 'colour'; valid keys:",
    "env_bad_executor.yaml": "executor: 'pbs' is not one of local, slurm",
    "env_wrong_type.yaml": "max_parallel: expected int, got 'many'",
    "env_no_partitions.yaml": "partitions: a slurm profile needs at least one partition",
    "env_partition_missing_vram.yaml": "partitions[0]: missing vram_gb",
    "env_token.yaml": "HF_TOKEN must not be written in a profile",
    "env_zero_time.yaml": "time_limit_min must be >= 1",
    "env_var_name_injection.yaml": "is not a variable name",
    "env_partition_newline.yaml": "partitions[0]: name:",
    "env_partition_space.yaml": "is not a valid Slurm name",
    "env_account_newline.yaml": "account:",
    "env_gpu_type_newline.yaml": "partitions[0]: gpu_type:",
    "env_setup_token.yaml": "setup[0]: a Hugging Face token must not be written",
    "env_nul_value.yaml": "contains a NUL character",
}

RESULTS = {
    "result_truncated_true_pred.json": "invalid JSON at line 1",
    "result_wrong_schema_true_pred.json": "true_ents must be a list",
    "result_unpaired_true_pred.json": "1 true_ents but 2 pred_ents",
    "result_not_true_pred.json": "expected an object with 'true_ents' and 'pred_ents'",
}

FLAGS = [
    (["--model-load-in-4bit", "maybe"], "--model-load-in-4bit: expected true or false"),
    (["--peft-rank", "0"], "--peft-rank must be positive, got 0"),
    (["--train-per-device-batch-size", "-4"], "--train-per-device-batch-size must be positive"),
    (["--model-family", "gpt"], "unknown model family 'gpt'"),
    (["--train-learning-rate", "fast"], "--train-learning-rate: expected a number"),
    (["--train-learning-rate", "nan"], "--train-learning-rate: expected a finite number"),
    (["--train-num-epochs", "inf"], "--train-num-epochs: expected a finite number"),
    (["--train-weight-decay", "NaN"], "--train-weight-decay: expected a finite number"),
    (["--peft-lora-dropout", "1.5"], "--peft-lora-dropout must be in [0, 1)"),
    (["--train-num-epochs", "0"], "--train-num-epochs must be positive"),
    (["--model-name", "scratch:dolphin-tiny"], "unknown scratch family"),
]


def assert_one_line_error(r, *must_contain: str, lines_expected: int = 1) -> None:
    """One line per problem (each fixture has one, sweep_missing_data two), all on stderr."""
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == lines_expected, lines
    for part in must_contain:
        assert part in lines[0], lines[0]
    assert all(must_contain[0] in ln for ln in lines), lines


def test_there_are_at_least_40_broken_fixtures():
    assert len(list(BROKEN.iterdir())) + len(FLAGS) >= 40


@pytest.mark.parametrize("name", sorted(DATA))
def test_broken_dataset(name, tmp_path):
    path = BROKEN / name
    out = tmp_path / "out"
    r = run_module("jobs.train", "--train-dataset-file", str(path), "--output-dir", str(out),
                   "--model-name", "scratch:llama-tiny")
    assert_one_line_error(r, str(path), DATA[name])
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(DATA))
def test_broken_dataset_is_refused_at_submit_even_through_a_symlink(name, tmp_path):
    """Found by submit, not by the job after the queue wait (issue 15.4)."""
    from core.demo_data import write_demo_data

    _, dev = write_demo_data(tmp_path / "d", n_train=4, n_dev=2)
    link = tmp_path / "train.json"
    link.symlink_to(BROKEN / name)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\nenv: local\ndata: {{train: {link}, eval: {dev}}}\n"
                     "base: {model.name_or_path: scratch:llama-tiny}\n")
    runs = tmp_path / "runs"
    r = run_module("launcher", "submit", str(sweep), "--runs-dir", str(runs), "--dry-run")
    assert_one_line_error(r, str(sweep), "data.train_dataset_file", str(BROKEN / name),
                          DATA[name])
    assert not runs.exists()


@pytest.mark.slow
def test_enormous_record_is_left_out_and_nothing_is_written(tmp_path):
    path = BROKEN / "data_enormous_record.json"
    out = tmp_path / "out"
    r = run_module("jobs.train", "--train-dataset-file", str(path), "--output-dir", str(out),
                   "--model-name", "scratch:llama-tiny", "--model-load-in-4bit", "false")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}: every record is longer than --model-max-seq-length")
    assert "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_broken_sweep(name, tmp_path):
    path = BROKEN / name
    runs = tmp_path / "runs"
    r = run_module("launcher", "submit", str(path), "--runs-dir", str(runs), cwd=tmp_path)
    assert_one_line_error(r, str(path), SWEEPS[name],
                          lines_expected=2 if name == "sweep_missing_data.yaml" else 1)
    assert not runs.exists()


@pytest.mark.parametrize("name", sorted(ENVS))
def test_broken_env(name, tmp_path):
    sweep = tmp_path / "ok.yaml"
    sweep.write_text("name: ok\ndata: {demo: true}\nbase: {model.name_or_path: scratch:llama-tiny}\n")
    path = BROKEN / name
    runs = tmp_path / "runs"
    r = run_module("launcher", "submit", str(sweep), "--env", str(path), "--runs-dir", str(runs))
    assert_one_line_error(r, str(path), ENVS[name])
    assert not runs.exists()


@pytest.mark.parametrize("argv,expect", FLAGS, ids=[a[0] for a, _ in FLAGS])
def test_broken_flags(argv, expect, tmp_path):
    from core.demo_data import write_demo_data

    train, _ = write_demo_data(tmp_path / "d", n_train=4, n_dev=2)
    out = tmp_path / "out"
    base = ["--train-dataset-file", str(train), "--output-dir", str(out)]
    if "--model-name" not in argv:
        base += ["--model-name", "scratch:llama-tiny"]
    r = run_module("jobs.train", *base, *argv)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert expect in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_broken_result_file(name, tmp_path):
    path = BROKEN / name
    r = run_module("jobs.score", "--true-pred-file", str(path), "--results-dir",
                   str(tmp_path / "r"))
    assert_one_line_error(r, str(path), RESULTS[name])
    assert not (tmp_path / "r").exists()


def test_leaderboard_lists_corrupt_results_without_crashing(tmp_path):
    from launcher.cli import main

    sweep = tmp_path / "runs" / "s"
    (sweep / "a" / "results").mkdir(parents=True)
    (sweep / "b" / "results").mkdir(parents=True)
    (sweep / "c").mkdir(parents=True)
    (sweep / "sweep.yaml").write_text("name: s\n")
    (sweep / "a" / "results" / "performance.json").write_text('{"schema_version": 1, "num_')
    (sweep / "b" / "results" / "performance.json").write_text(
        '{"schema_version": 99, "num_examples": 1, "avg_inference_time": 0, "metrics": '
        '{"total": {}}, "macro": {}, "parse": {}, "config": {}}')
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["leaderboard", "s", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = buf.getvalue()
    assert f"unreadable: {sweep / 'a' / 'results' / 'performance.json'}: invalid JSON" in out
    assert "schema_version 99 is newer than this medsweep" in out
    assert "1 run(s) without results yet" in out
    assert Path(sweep / "leaderboard.md").is_file()


def test_a_long_record_with_one_word_under_many_labels_validates(tmp_path):
    """Issue 27 item 12: validation listed every occurrence of every entity text."""
    import json

    from core.data import load_dataset

    text = ("fever " * 33000)[:200000]
    ents = [{"label": f"L{i}", "text": "fever"} for i in range(300)]
    ents.append({"label": "X", "text": "cough"})
    path = tmp_path / "long.json"
    path.write_text(json.dumps([{"text": text, "entities": ents}]))
    ds = load_dataset(path)
    assert len(ds.records[0].entities) == 301
    assert ds.warnings and "1 of 301 entity texts do not occur" in ds.warnings[0]
