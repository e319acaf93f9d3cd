"""jobs.export on a scratch model: the merged 16-bit model loads with plain transformers (no
Unsloth in that process) and gives the same greedy output as the adapter."""

import json
import subprocess
import sys

import pytest

from .conftest import ROOT, job_env, run_module

pytestmark = pytest.mark.slow

_GEN = """
import json, sys
model_dir, use_unsloth, prompts = sys.argv[1], sys.argv[2] == "1", json.loads(sys.argv[3])
if use_unsloth:
    from pathlib import Path
    from jobs.evaluate import saved_config
    from jobs.modeling import load_model
    from unsloth import FastLanguageModel
    cfg = saved_config(Path(model_dir)).replace({"model.load_in_4bit": False})
    model, tok = load_model(model_dir, cfg, for_training=False)
    FastLanguageModel.for_inference(model)
else:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert "unsloth" not in sys.modules
import torch
model = model.float()
outs = []
for p in prompts:
    text = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                   add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False)
    outs.append(out[0, ids.shape[1]:].tolist())
print(json.dumps(outs))
"""


def test_merged_export_matches_the_adapter_and_loads_without_unsloth(demo_data, tmp_path):
    train_file, _ = demo_data
    model_dir, merged = tmp_path / "m", tmp_path / "merged"
    r = run_module("jobs.train", "--train-dataset-file", str(train_file), "--output-dir",
                   str(model_dir), "--model-name", "scratch:llama-tiny", "--model-load-in-4bit",
                   "false", "--model-max-seq-length", "256", "--train-max-steps", "20",
                   "--train-learning-rate", "3e-3", "--train-per-device-batch-size", "8")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_module("jobs.export", "--model-dir", str(model_dir), "--output-dir", str(merged))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    prompts = json.dumps(["Extract medical entities from: Fever and cough.",
                          "Extract medical entities from: Started on metformin."])
    gen = []
    for folder, unsloth in ((model_dir, "1"), (merged, "0")):
        out = subprocess.run([sys.executable, "-c", _GEN, str(folder), unsloth, prompts],
                             capture_output=True, text=True, cwd=ROOT, env=job_env(),
                             timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        gen.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert gen[0] == gen[1]


def test_export_errors_name_what_is_missing(tmp_path):
    r = run_module("jobs.export", "--model-dir", str(tmp_path), "--output-dir",
                   str(tmp_path / "o"))
    assert r.returncode == 2 and "no trained model" in r.stderr
    (tmp_path / "adapter_config.json").write_text("{}")
    r = run_module("jobs.export", "--model-dir", str(tmp_path), "--output-dir",
                   str(tmp_path / "o"), "--format", "gguf", env=job_env(LLAMA_CPP_DIR=""))
    assert r.returncode == 2 and "GGUF export needs llama.cpp" in r.stderr
    env = job_env()
    env.pop("HF_TOKEN", None)
    r = run_module("jobs.export", "--model-dir", str(tmp_path), "--output-dir",
                   str(tmp_path / "o"), "--push-to-hub", "me/model", env=env)
    assert r.returncode == 2 and "export HF_TOKEN" in r.stderr


def _bare_adapter(tmp_path):
    """A folder export accepts as a model (an adapter_config.json), with nothing trained."""
    model = tmp_path / "adapter"
    model.mkdir()
    (model / "adapter_config.json").write_text("{}")
    return model


def test_lora_export_refuses_a_link_in_the_model_folder(tmp_path):
    model = _bare_adapter(tmp_path)
    secret = tmp_path / "token"
    secret.write_text("hf_secret")
    (model / "notes.txt").symlink_to(secret)
    r = run_module("jobs.export", "--model-dir", str(model), "--output-dir",
                   str(tmp_path / "o"), "--format", "lora")
    assert r.returncode == 2 and "notes.txt is a symbolic link" in r.stderr, r.stderr
    assert not (tmp_path / "o" / "notes.txt").exists()


def test_export_output_a_file_and_push_while_offline_are_one_line(tmp_path):
    model = _bare_adapter(tmp_path)
    a_file = tmp_path / "afile"
    a_file.write_text("")
    r = run_module("jobs.export", "--model-dir", str(model), "--output-dir", str(a_file))
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr, r.stderr
    r = run_module("jobs.export", "--model-dir", str(model), "--output-dir",
                   str(tmp_path / "o"), "--push-to-hub", "me/model",
                   env=job_env(HF_TOKEN="hf_" + "x" * 34, HF_HUB_OFFLINE="1"))
    assert r.returncode == 2 and "while HF_HUB_OFFLINE is set" in r.stderr, r.stderr
    assert "hf_xxx" not in r.stderr
