"""End to end on the CPU through the real Unsloth CPU backend: the seed's commands with a
scratch model, every output file checked against its schema, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.results import SCHEMA_VERSION, check_performance
from core.rundir import TRAIN_SUMMARY

from .conftest import ROOT, job_env, run_module

pytestmark = pytest.mark.slow

FAST = ["--model-max-seq-length", "512", "--train-num-epochs", "1",
        "--train-per-device-batch-size", "8", "--train-gradient-accumulation-steps", "1"]


def seed_train_argv(train_file: Path, out: Path, model: str) -> list[str]:
    """The seed's example script's flags, unchanged except the model and the run length."""
    return [
        "--train-dataset-file", str(train_file), "--output-dir", str(out),
        "--model-name", model, "--model-load-in-4bit", "true", "--model-load-in-8bit", "false",
        "--model-full-finetuning", "false", "--peft-ft-vision-layers", "false",
        "--peft-ft-language-layers", "true", "--peft-ft-attention-modules", "true",
        "--peft-ft-mlp-modules", "true", "--peft-rank", "8", "--peft-lora-alpha", "16",
        "--peft-lora-dropout", "0.0", "--peft-lora-bias", "false",
        "--train-learning-rate", "2e-4", "--train-weight-decay", "0.01",
        "--train-warmup-steps", "5", "--train-lr-scheduler-type", "linear",
        "--train-seed", "42",
        "--model-system-prompt", "You are a medical entity extractor from clinical texts. "
        "Extract the entities from the text and return them in a structured JSON format.",
        "--unique-entities", "true", *FAST]


@pytest.mark.parametrize("model", ["scratch:llama-tiny", "scratch:gemma-tiny"])
def test_train_then_evaluate_then_rescore(model, demo_data, tmp_path):
    train_file, dev_file = demo_data
    out, res = tmp_path / "model", tmp_path / "results"
    r = run_module("jobs.train", *seed_train_argv(train_file, out, model))
    assert r.returncode == 0, r.stderr[-3000:]
    # Unsloth patches only what is imported after it; building the scratch model imports
    # transformers, so the job must import Unsloth before that.
    assert "Unsloth should be imported before" not in r.stderr
    # One progress line per logged step: not the trainer's dict as well.
    assert "{'loss'" not in r.stdout + r.stderr and "train 8/8" in r.stderr
    summary = json.loads((out / TRAIN_SUMMARY).read_text())
    assert summary["global_step"] == 8 and summary["skipped_too_long"] == 0
    # model.compile auto: a small Gemma 3 trains eager (no flex attention), others compiled.
    eager = "gemma" in model
    assert (summary["compiled"], summary["flex_attention"]) == (not eager, not eager)
    # Where the start-up went, each part measured, the whole from process start.
    st = summary["startup"]
    assert all(st[k] > 0 for k in ("import_s", "model_load_s", "tokenize_s",
                                   "trainer_to_first_step_s")), st
    assert st["worker_item"] == 0  # a process of its own, not a warm worker's item
    assert st["process_to_first_step_s"] >= (st["import_s"] + st["model_load_s"]
                                             + st["trainer_to_first_step_s"]), st
    assert (out / "adapter_config.json").is_file() and (out / "tokenizer.json").is_file()
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 8 and adapter_cfg["bias"] == "none"
    assert "HF_TOKEN" not in (out / TRAIN_SUMMARY).read_text()

    r = run_module("jobs.evaluate", "--eval-dataset-file", str(dev_file), "--results-dir",
                   str(res), "--model-dir", str(out), "--model-max-seq-length", "512",
                   "--model-load-in-4bit", "true", "--eval-batch-size", "4",
                   "--unique-entities", "true", "--eval-max-new-tokens", "24")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "exact" in r.stdout and "F1=" in r.stdout
    perf = json.loads((res / "performance.json").read_text())
    assert check_performance(perf) == []
    assert perf["num_examples"] == 12 and perf["schema_version"] == SCHEMA_VERSION
    for m in ("exact", "relaxed", "overlap"):
        assert set(perf["metrics"]["total"][m]) >= {"p", "r", "f1", "tp", "fp", "fn"}
        lo, hi = perf["ci95"][m]["f1"]
        assert lo <= perf["metrics"]["total"][m]["f1"] <= hi
    assert perf["ci95"]["reps"] == 1000 and perf["ci95"]["resampled"] == "records"
    # Every mention counted, beside the unique pairs: the same predictions against every gold
    # mention, so never more gold found than mentions there are.
    ml = perf["mention_level"]["exact"]
    assert ml["tp"] + ml["fn"] >= perf["metrics"]["total"]["exact"]["tp"] + \
        perf["metrics"]["total"]["exact"]["fn"]
    assert perf["generation"]["do_sample"] is False
    assert perf["data"]["eval_sha256"] and perf["data"]["train_sha256"]
    assert perf["family"] == ("llama3" if "llama" in model else "gemma3")
    assert perf["timings"]["generated_tokens"] > 0
    # 12 records in batches of 4, at most 24 new tokens: a batch runs until its last row ends,
    # and the tokens counted stop where each row's answer did.
    dec = perf["generation"]["decode"]
    assert dec["batches"] == 3 and 0 < dec["steps"] <= 3 * 24 and dec["at_budget"] <= 3
    assert perf["timings"]["generated_tokens"] <= 4 * dec["steps"]
    tp = json.loads((res / "true_pred_entities.json").read_text())
    assert set(tp) >= {"true_ents", "pred_ents", "texts", "raw_outputs"}
    assert len(tp["true_ents"]) == len(tp["pred_ents"]) == len(tp["raw_outputs"]) == 12
    assert dec["engine"] == "generate" and "4- or 8-bit" in dec["engine_reason"]
    if "gemma" in model:  # the static decoder, asked for on the CPU: generate()'s answers
        got = {}
        for decoder in ("generate", "static"):
            r = run_module("jobs.evaluate", "--eval-dataset-file", str(dev_file),
                           "--results-dir", str(tmp_path / decoder), "--model-dir", str(out),
                           "--model-max-seq-length", "512", "--eval-batch-size", "4",
                           "--eval-max-new-tokens", "24", "--eval-decoder", decoder,
                           "--model-load-in-4bit", "false")
            assert r.returncode == 0, r.stderr[-3000:]
            got[decoder] = (
                json.loads((tmp_path / decoder / "true_pred_entities.json").read_text()),
                json.loads((tmp_path / decoder / "performance.json").read_text()))
        assert got["static"][0]["raw_outputs"] == got["generate"][0]["raw_outputs"]
        sdec, gdec = (got[d][1]["generation"]["decode"] for d in ("static", "generate"))
        assert (sdec["engine"], gdec["engine"]) == ("static", "generate")
        assert sdec["steps"] == gdec["steps"] and gdec["engine_reason"] == \
            "eval.decoder: generate"

    # Re-scoring the file without a model gives the same numbers.
    r = run_module("jobs.score", "--true-pred-file", str(res / "true_pred_entities.json"),
                   "--results-dir", str(tmp_path / "rescored"))
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "rescored" / "performance.json").read_text())
    assert again["metrics"]["total"] == perf["metrics"]["total"]
    assert again["ci95"] == perf["ci95"]  # seeded: the same interval from the same records
    assert again["parse"] == perf["parse"]  # re-parsed from the kept raw outputs
    assert again["hallucination_rate"] == perf["hallucination_rate"]

    # A second train on the same folder recognises the finished model.
    r = run_module("jobs.train", *seed_train_argv(train_file, out, model))
    assert r.returncode == 0 and "nothing to do" in r.stderr


def test_killed_training_resumes_from_its_last_checkpoint(demo_data, tmp_path):
    train_file, _ = demo_data
    out = tmp_path / "model"
    argv = [sys.executable, "-m", "jobs.train", "--train-dataset-file", str(train_file),
            "--output-dir", str(out), "--model-name", "scratch:llama-tiny",
            "--model-load-in-4bit", "false", "--model-max-seq-length", "512",
            "--train-per-device-batch-size", "2", "--train-gradient-accumulation-steps", "1",
            "--train-max-steps", "120", "--train-save-steps", "10"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=job_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ck = out / "checkpoints"
    while time.time() < deadline:
        if ck.is_dir() and any((p / "trainer_state.json").is_file() for p in ck.glob("checkpoint-*")):
            break
        if proc.poll() is not None:
            pytest.fail("training ended before its first checkpoint")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # what a node loss or an OOM killer does
    proc.wait()
    assert not (out / TRAIN_SUMMARY).exists()
    r = subprocess.run(argv, cwd=ROOT, env=job_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from checkpoint-" in r.stderr
    summary = json.loads((out / TRAIN_SUMMARY).read_text())
    assert summary["resumed_from"].startswith("checkpoint-")
    assert int(summary["resumed_from"].split("-")[1]) >= 10
    assert summary["global_step"] == 120


def test_different_config_on_same_folder_is_refused(demo_data, tmp_path):
    train_file, _ = demo_data
    out = tmp_path / "model"
    base = ["--train-dataset-file", str(train_file), "--output-dir", str(out),
            "--model-name", "scratch:llama-tiny", "--model-load-in-4bit", "false",
            "--train-max-steps", "2", "--model-max-seq-length", "512"]
    assert run_module("jobs.train", *base).returncode == 0
    r = run_module("jobs.train", *base, "--peft-rank", "4")
    assert r.returncode == 2
    assert "different configuration; use a new --output-dir" in r.stderr


def test_too_long_records_are_left_out_and_counted(tmp_path):
    data = [{"text": "Fever. " * 5, "entities": [{"label": "S", "text": "Fever"}]}] * 6 + [
        {"text": "word " * 400, "entities": [{"label": "S", "text": "word"}]}]
    f = tmp_path / "d.json"
    f.write_text(json.dumps(data))
    r = run_module("jobs.train", "--train-dataset-file", str(f), "--output-dir",
                   str(tmp_path / "m"), "--model-name", "scratch:llama-tiny",
                   "--model-load-in-4bit", "false", "--model-max-seq-length", "128",
                   "--train-max-steps", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 of 7 records are longer than --model-max-seq-length 128" in r.stderr
    s = json.loads((tmp_path / "m" / TRAIN_SUMMARY).read_text())
    assert s["skipped_too_long"] == 1 and s["examples"] == 6


def test_bad_dataset_is_a_one_line_error_and_writes_nothing(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('[{"text": "a", "entities": [{"label": "X"}]}]')
    r = run_module("jobs.train", "--train-dataset-file", str(f), "--output-dir",
                   str(tmp_path / "m"), "--model-name", "scratch:llama-tiny")
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {f}: record 0, entity 0: missing key 'text' " \
        "(entities need 'label' and 'text')"
    assert not (tmp_path / "m").exists()


def test_hf_token_from_environment_is_never_written(demo_data, tmp_path):
    train_file, _ = demo_data
    secret = "hf_TESTSECRET_do_not_write_123"
    r = run_module("jobs.train", "--train-dataset-file", str(train_file), "--output-dir",
                   str(tmp_path / "m"), "--model-name", "scratch:llama-tiny",
                   "--model-load-in-4bit", "false", "--train-max-steps", "2",
                   "--model-max-seq-length", "512", "--model-hf-token", secret,
                   env=job_env(HF_TOKEN=secret))
    assert r.returncode == 0, r.stderr[-2000:]
    assert secret not in r.stdout + r.stderr
    for p in (tmp_path / "m").rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p


def test_ported_seed_script_runs_with_quoted_values(demo_data, tmp_path):
    train_file, dev_file = demo_data
    env = job_env(
        BASE_STORAGE_DIR=str(tmp_path), BASE_PROJECT_DIR=str(tmp_path),
        DATASET_DIR="data", TRAIN_DATASET_FILE=train_file.name, TEST_DATASET_FILE=dev_file.name,
        MODEL_NAME="scratch:llama-tiny", MODEL_MAX_SEQ_LENGTH="512", TRAIN_NUM_EPOCHS="1",
        TRAIN_PER_DEVICE_BATCH_SIZE="8", TRAIN_GRADIENT_ACCUMULATION_STEPS="1",
        SYSTEM_PROMPT="You extract entities.  Answer in JSON; keep   spacing.",
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    (tmp_path / "data").mkdir()
    for f in (train_file, dev_file):
        (tmp_path / "data" / f.name).write_bytes(f.read_bytes())
    env.pop("PYTHONPATH", None)  # run from elsewhere, as a user would: the script finds jobs/
    r = subprocess.run(["bash", str(ROOT / "scripts" / "train_eval.sh")], env=env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    perf = next((tmp_path / "results").rglob("performance.json"))
    doc = json.loads(perf.read_text())
    assert doc["config"]["model"]["system_prompt"] == \
        "You extract entities.  Answer in JSON; keep   spacing."
    assert any((tmp_path / "models").rglob("adapter_model.safetensors")), "adapter kept"


def _train_reporting_to(tracker: str, steps: int, train_file, out, unset: str) -> None:
    """jobs.train on a scratch model with --train-report-to tracker, the tracker's own
    location variable unset so the run folder is used."""
    env = job_env()
    env.pop(unset, None)
    r = run_module("jobs.train", "--train-dataset-file", str(train_file), "--output-dir",
                   str(out), "--model-name", "scratch:llama-tiny", "--model-load-in-4bit",
                   "false", "--model-max-seq-length", "256", "--train-max-steps", str(steps),
                   "--train-report-to", tracker, env=env)
    assert r.returncode == 0, r.stderr[-2000:]


def test_tensorboard_tracking_writes_loss_scalars_into_the_run_folder(demo_data, tmp_path):
    train_file, _ = demo_data
    out = tmp_path / "m"
    _train_reporting_to("tensorboard", 4, train_file, out, "TENSORBOARD_LOGGING_DIR")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, list(out.rglob("*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4]


def test_mlflow_tracking_logs_the_loss_to_a_local_store(demo_data, tmp_path):
    train_file, _ = demo_data
    out = tmp_path / "m"
    _train_reporting_to("mlflow", 3, train_file, out, "MLFLOW_TRACKING_URI")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    runs = client.search_runs(experiment_ids=["0"])
    assert len(runs) == 1
    history = client.get_metric_history(runs[0].info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3]


def test_missing_tracker_package_is_a_clear_error(demo_data, tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here; this checks the message when it is not")
    train_file, _ = demo_data
    r = run_module("jobs.train", "--train-dataset-file", str(train_file), "--output-dir",
                   str(tmp_path / "m"), "--model-name", "scratch:llama-tiny",
                   "--train-report-to", "wandb")
    assert r.returncode == 2
    assert "the wandb package is not installed; pip install wandb" in r.stderr


def test_lora_bias_flag_is_honoured(demo_data, tmp_path):
    train_file, _ = demo_data
    out = tmp_path / "m"
    r = run_module("jobs.train", "--train-dataset-file", str(train_file), "--output-dir",
                   str(out), "--model-name", "scratch:llama-tiny", "--model-load-in-4bit",
                   "false", "--model-max-seq-length", "256", "--train-max-steps", "1",
                   "--peft-lora-bias", "true", "--peft-ft-mlp-modules", "false")
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["bias"] == "lora_only"
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_validation_loss_is_recorded_per_epoch_with_the_best_epoch(demo_data, tmp_path):
    """The seed tells users to monitor validation loss; --validation-dataset-file records it."""
    train_file, dev_file = demo_data
    out = tmp_path / "m"
    r = run_module("jobs.train", "--train-dataset-file", str(train_file), "--output-dir",
                   str(out), "--model-name", "scratch:llama-tiny", "--validation-dataset-file",
                   str(dev_file), "--model-load-in-4bit", "false", "--train-num-epochs", "2",
                   "--train-per-device-batch-size", "16", "--train-gradient-accumulation-steps",
                   "1", "--train-learning-rate", "1e-3", "--model-max-seq-length", "512",
                   env=job_env())
    assert r.returncode == 0, r.stderr[-3000:]
    # No noise that says nothing about the run (issue 17.7).
    assert "_pytree" not in r.stderr and "gemm_4bit_forward" not in r.stderr, r.stderr[:2000]
    v = json.loads((out / TRAIN_SUMMARY).read_text())["validation"]
    assert v["file"] == str(dev_file)
    assert [e["epoch"] for e in v["per_epoch"]] == [1.0, 2.0]
    losses = [e["loss"] for e in v["per_epoch"]]
    assert all(0 < x < 20 for x in losses)
    assert v["best_loss"] == min(losses)
    assert v["best_epoch"] == v["per_epoch"][losses.index(min(losses))]["epoch"]
    ident = json.loads((out / TRAIN_SUMMARY).read_text())["identity"]
    assert len(ident["data"]["validation_sha256"]) == 64
