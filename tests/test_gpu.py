"""GPU tier (``pytest -m gpu`` on a CUDA machine): the Unsloth GPU kernels end to end.

Models are random-initialised from real architectures' shapes (``scratch:<family>-1b``: the
Llama-3.2-1B dimensions; the Gemma one uses the Gemma 3 text architecture at the same size),
data are real BC5CDR sentences (MEDSWEEP_SHARED_DATA, a folder of CORPUS/train.json and
dev.json; without it, synthetic clinical sentences), tokenizers are built locally.
MEDSWEEP_GPU_SIZE=tiny with MEDSWEEP_GPU_TESTS_ON_CPU=1 runs the same tests on a CPU, for
checking the test code itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from core.config import build_config
from core.fileio import atomic_write_json
from core.results import check_performance
from core.rundir import TRAIN_SUMMARY

from .conftest import ROOT, job_env

pytestmark = pytest.mark.gpu

SIZE = os.environ.get("MEDSWEEP_GPU_SIZE", "1b")
MODES = {
    "4bit-lora": {"model.load_in_4bit": True},
    "8bit-lora": {"model.load_in_4bit": False, "model.load_in_8bit": True},
    "16bit-lora": {"model.load_in_4bit": False},
    "16bit-full": {"model.load_in_4bit": False, "model.full_finetuning": True,
                   "train.learning_rate": 1e-5},
}


@pytest.fixture(scope="module", autouse=True)
def needs_gpu():
    import torch

    if not torch.cuda.is_available() and os.environ.get("MEDSWEEP_GPU_TESTS_ON_CPU") != "1":
        pytest.skip("no CUDA GPU here; run `python -m pytest -m gpu` on the GPU machine")
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"\nGPU tier on: {name}, torch {torch.__version__}")


@pytest.fixture(scope="module")
def bc5(tmp_path_factory):
    """A 256-record training subset and 32 dev records of BC5CDR where the corpora are
    (MEDSWEEP_SHARED_DATA), else as many synthetic clinical sentences (core.demo_data): the
    tier runs in a user's clone too."""
    from core.demo_data import write_demo_data

    from .conftest import SHARED_DATA

    folder = tmp_path_factory.mktemp("bc5")
    if not (SHARED_DATA / "bc5cdr" / "train.json").is_file():
        return write_demo_data(folder, n_train=256, n_dev=32)
    train = json.loads((SHARED_DATA / "bc5cdr" / "train.json").read_text())[:256]
    dev = json.loads((SHARED_DATA / "bc5cdr" / "dev.json").read_text())[:32]
    atomic_write_json(folder / "train.json", train)
    atomic_write_json(folder / "dev.json", dev)
    return folder / "train.json", folder / "dev.json"


@pytest.fixture(scope="module", autouse=True)
def shared_scratch(tmp_path_factory):
    # One random base model per family for the whole module, not one per test.
    os.environ["MEDSWEEP_SCRATCH_DIR"] = str(tmp_path_factory.mktemp("scratch"))


def cfg_for(family: str, mode: str, bc5, **extra):
    train, dev = bc5
    values = {"model.name_or_path": f"scratch:{family}-{SIZE}",
              "model.max_seq_length": 512, "data.train_dataset_file": str(train),
              "data.eval_dataset_file": str(dev), "peft.lora_dropout": 0.0,
              "train.per_device_batch_size": 8, "train.gradient_accumulation_steps": 1,
              "train.max_steps": 4, "train.save_steps": 2, "eval.batch_size": 16,
              "eval.max_examples": 16, "eval.max_new_tokens": 32, **MODES[mode], **extra}
    return build_config(values)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_train_and_evaluate_each_mode(family, mode, bc5, tmp_path):
    import torch

    from jobs.evaluate import evaluate
    from jobs.train import train

    cfg = cfg_for(family, mode, bc5)
    summary = train(cfg, tmp_path / "model")
    assert summary["global_step"] == 4
    assert summary["final_loss"] is not None and summary["final_loss"] == summary["final_loss"]
    if torch.cuda.is_available():
        assert summary["device"]["gpu_count"] >= 1 and summary["peak_vram_gb"] > 0
        assert summary["padding_free"] is False and summary["optim"] == "adamw_8bit"
    saved = {p.name for p in (tmp_path / "model").iterdir()}
    if mode == "16bit-full":
        assert "config.json" in saved and "adapter_config.json" not in saved
    else:
        assert "adapter_config.json" in saved
    doc = evaluate(cfg, tmp_path / "model", tmp_path / "results")
    assert check_performance(doc) == []
    assert doc["num_examples"] == 16 and doc["timings"]["generated_tokens"] > 0
    print(f"\n{family} {mode}: loss {summary['first_loss']:.3f}->{summary['final_loss']:.3f} "
          f"train {summary['train_s']:.1f}s peak {summary['peak_vram_gb']} GB "
          f"eval {doc['timings']['eval_s']:.2f}s")
    torch.cuda.empty_cache() if torch.cuda.is_available() else None


def test_grown_micro_batch_trains_like_the_given_one(bc5, tmp_path):
    """4 x GA 4 grown to 16 x GA 1 on the GPU: same examples per step (random order, so the
    same examples too), so the same losses up to bf16 summation order."""
    import torch

    from jobs.train import train

    base = {"model.load_in_4bit": True, "train.per_device_batch_size": 4,
            "train.gradient_accumulation_steps": 4, "train.group_by_length": False,
            "train.max_steps": 4, "train.learning_rate": 1e-3}
    grown = train(cfg_for("llama", "4bit-lora", bc5, **base), tmp_path / "grown")
    given = train(cfg_for("llama", "4bit-lora", bc5, **base, **{
        "train.grow_micro_batch": False}), tmp_path / "given")
    assert given["per_device_batch_size"] == 4 and given["gradient_accumulation_steps"] == 4
    assert grown["batch_as_given"] == "4x4"
    if torch.cuda.is_available():
        assert (grown["per_device_batch_size"], grown["gradient_accumulation_steps"]) == (16, 1)
    print(f"\nloss 4x4 {given['first_loss']:.4f}->{given['final_loss']:.4f}, "
          f"{grown['per_device_batch_size']}x{grown['gradient_accumulation_steps']} "
          f"{grown['first_loss']:.4f}->{grown['final_loss']:.4f}")
    assert abs(grown["first_loss"] - given["first_loss"]) <= 0.01 * given["first_loss"]
    assert abs(grown["final_loss"] - given["final_loss"]) <= 0.02 * given["final_loss"]


@pytest.mark.parametrize("family", ["gemma", "llama"])
def test_answer_only_logits_train_like_the_full_logits(family, bc5, tmp_path):
    """train.answer_only_logits on the card (Gemma 3 trains eager by model.compile auto, where
    Unsloth's trainer computes the full logits): the same losses as without, the same micro-
    batch (as given, no growth), and less peak memory."""
    base = {"train.per_device_batch_size": 8, "train.gradient_accumulation_steps": 2,
            "train.grow_micro_batch": False, "train.group_by_length": False,
            "train.max_steps": 4, "train.save_steps": 0}
    from jobs.train import train

    full = train(cfg_for(family, "16bit-full", bc5, **base,
                         **{"train.answer_only_logits": False}), tmp_path / "full")
    part = train(cfg_for(family, "16bit-full", bc5, **base,
                         **{"train.answer_only_logits": True}), tmp_path / "answer")
    print(f"\n{family}: loss {full['first_loss']:.4f}->{full['final_loss']:.4f} full logits, "
          f"{part['first_loss']:.4f}->{part['final_loss']:.4f} answer only; peak "
          f"{full['peak_vram_gb']} -> {part['peak_vram_gb']} GB; "
          f"{full['examples_per_s']} -> {part['examples_per_s']} examples/s")
    assert part["answer_only_logits"] is True and full["answer_only_logits"] is False
    assert abs(part["first_loss"] - full["first_loss"]) <= 0.01 * full["first_loss"]
    assert abs(part["final_loss"] - full["final_loss"]) <= 0.02 * full["final_loss"]
    if full["peak_vram_gb"]:
        assert part["peak_vram_gb"] < full["peak_vram_gb"]


_LOGITS = """
import sys, torch
from pathlib import Path
from core.config import config_from_dict
from jobs.evaluate import saved_config
from jobs.modeling import load_model
model_dir, ids_file, out_file = sys.argv[1:4]
cfg = saved_config(Path(model_dir))
model, tok = load_model(model_dir, cfg, for_training=False)
from unsloth import FastLanguageModel
FastLanguageModel.for_inference(model)
ids = torch.load(ids_file)
dev = next(model.parameters()).device
with torch.inference_mode():
    logits = model(input_ids=ids.to(dev)).logits.float().cpu()
torch.save(logits, out_file)
"""


def test_reloaded_adapter_gives_the_same_logits(bc5, tmp_path):
    import torch
    from unsloth import FastLanguageModel

    from jobs.train import train_model

    cfg = cfg_for("llama", "4bit-lora", bc5, **{"train.learning_rate": 1e-3})
    res = train_model(cfg, tmp_path / "model")
    model, tok = res.model, res.tokenizer
    FastLanguageModel.for_inference(model)
    text = tok.apply_chat_template([{"role": "user", "content": "Extract medical entities "
                                     "from: Naloxone reverses clonidine."}],
                                   tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        here = model(input_ids=ids.to(next(model.parameters()).device)).logits.float().cpu()
    torch.save(ids, tmp_path / "ids.pt")
    r = subprocess.run([sys.executable, "-c", _LOGITS, str(tmp_path / "model"),
                        str(tmp_path / "ids.pt"), str(tmp_path / "logits.pt")],
                       capture_output=True, text=True, cwd=ROOT, env=job_env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    fresh = torch.load(tmp_path / "logits.pt")
    diff = (here - fresh).abs().max().item()
    agree = (here.argmax(-1) == fresh.argmax(-1)).float().mean().item()
    print(f"\nreload: max |logit diff| {diff:.4g}, argmax agreement {agree:.3f}")
    assert agree == 1.0
    assert diff < 0.05 * max(1.0, here.abs().max().item())


def _answering_model(family, bc5, tmp_path, n, **extra):
    """A 16-bit LoRA model trained enough to answer with peaked distributions (greedy ties are
    noise), ready for generation, with its config, the first n dev prompts and greedy kwargs."""
    from unsloth import FastLanguageModel

    from core.data import load_dataset
    from core.prompts import prompt_messages
    from jobs.modeling import stop_token_ids
    from jobs.train import train_model

    cfg = cfg_for(family, "16bit-lora", bc5, **{"train.max_steps": 30,
                                                "train.learning_rate": 2e-3, **extra})
    res = train_model(cfg, tmp_path / "model")
    model, tok = res.model, res.tokenizer
    FastLanguageModel.for_inference(model)
    tok.padding_side = "left"
    records = load_dataset(cfg.data.eval_dataset_file).records[:n]
    prompts = [tok(tok.apply_chat_template(prompt_messages(r, cfg.model.system_prompt),
                                           tokenize=False, add_generation_prompt=True),
                   add_special_tokens=False)["input_ids"] for r in records]
    return model, tok, cfg, prompts, {"eos_token_id": stop_token_ids(tok), "do_sample": False}


def test_batched_left_padded_generation_equals_one_at_a_time(bc5, tmp_path):
    from jobs.evaluate import generate_all

    model, tok, cfg, prompts, kw = _answering_model("llama", bc5, tmp_path, 16)
    batched, _ = generate_all(model, tok, prompts, cfg, 32, kw)
    single, _ = generate_all(model, tok, prompts, cfg.replace({"eval.batch_size": 1}), 32, kw)
    differ = [i for i, (a, b) in enumerate(zip(batched, single, strict=True)) if a != b]
    print(f"\nbatched == single for {len(prompts) - len(differ)}/{len(prompts)} prompts")
    # bf16 batched matmuls round differently from single-row ones, so a greedy pick between
    # two near-equal logits may flip; a padding or position bug moves logits by far more.
    for i in differ:
        margin, logit = _margin_where_they_part(model, tok, prompts[i], batched[i], kw)
        print(f"  prompt {i}: parts where single's top-2 logits differ by {margin:.4f} "
              f"(top logit {logit:.2f})")
        assert margin <= max(0.125, 0.02 * abs(logit)), (i, batched[i], single[i], margin)
    assert len(differ) <= len(prompts) // 4, [(batched[i], single[i]) for i in differ]


@pytest.mark.parametrize("family", ["gemma", "llama"])
def test_the_static_decoder_answers_as_generate_on_the_card(family, bc5, tmp_path):
    """The static cache and the captured CUDA graph step (jobs.fastdecode; eval.decoder auto
    for Gemma 3, static asked for Llama) give generate()'s greedy answers, up to bf16
    near-ties."""
    import torch

    from jobs.evaluate import generate_all

    model, tok, cfg, prompts, kw = _answering_model(family, bc5, tmp_path, 32,
                                                    **{"eval.batch_size": 32})
    runs = {}
    fast = "auto" if family == "gemma" else "static"  # auto: Gemma 3 only (fastdecode)
    for decoder in ("generate", fast):
        decode: dict = {}
        t0 = time.time()
        out, n = generate_all(model, tok, prompts, cfg.replace({"eval.decoder": decoder}), 48,
                              kw, decode=decode)
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        runs[decoder] = (out, n, decode, time.time() - t0)
    (ref, _, dref, tref), (got, _, dgot, tgot) = runs["generate"], runs[fast]
    want = "static-graphs" if torch.cuda.is_available() else {"auto": "generate"}.get(fast, fast)
    assert dgot["engine"] == want, dgot
    differ = [i for i, (a, b) in enumerate(zip(got, ref, strict=True)) if a != b]
    print(f"\n{family}: static == generate for {len(prompts) - len(differ)}/{len(prompts)} "
          f"prompts; generate {tref:.2f}s, static {tgot:.2f}s; steps {dref['steps']} / "
          f"{dgot['steps']}")
    for i in differ:
        margin, logit = _margin_where_they_part(model, tok, prompts[i], got[i], kw)
        print(f"  prompt {i}: parts where generate's top-2 logits differ by {margin:.4f}")
        assert margin <= max(0.125, 0.02 * abs(logit)), (i, got[i], ref[i], margin)
    assert len(differ) <= len(prompts) // 4, [(got[i], ref[i]) for i in differ]


def _margin_where_they_part(model, tok, prompt, other_text, kw):
    """Single-row greedy decoding of prompt: the top-1 minus top-2 logit at the first token
    whose text leaves other_text."""
    import torch

    dev = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor([prompt], device=dev), max_new_tokens=32,
                             output_scores=True, return_dict_in_generate=True, **kw)
    toks = out.sequences[0, len(prompt):].tolist()
    # Where the texts part; if single's whole text is a prefix of the other's, they parted
    # at single's last step (it stopped, the other went on).
    k = next((k for k in range(len(toks)) if not other_text.startswith(
        tok.decode(toks[:k + 1], skip_special_tokens=True))), len(toks) - 1)
    top = torch.topk(out.scores[k][0].float(), 2).values
    return (top[0] - top[1]).item(), top[0].item()


def test_killed_run_resumes_on_gpu(bc5, tmp_path):
    train, _ = bc5
    out = tmp_path / "model"
    argv = [sys.executable, "-m", "jobs.train", "--train-dataset-file", str(train),
            "--output-dir", str(out), "--model-name", f"scratch:llama-{SIZE}",
            "--model-max-seq-length", "512", "--train-per-device-batch-size", "4",
            "--train-gradient-accumulation-steps", "1", "--train-max-steps", "60",
            "--train-save-steps", "5", "--peft-lora-dropout", "0.0"]
    env = job_env(MEDSWEEP_SCRATCH_DIR=os.environ["MEDSWEEP_SCRATCH_DIR"])
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ck = out / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline:
        if ck.is_dir() and any((p / "trainer_state.json").is_file()
                               for p in ck.glob("checkpoint-*")):
            break
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from checkpoint-" in r.stderr
    summary = json.loads((out / TRAIN_SUMMARY).read_text())
    assert summary["global_step"] == 60 and summary["resumed_from"]
    print(f"\nresumed from {summary['resumed_from']}, finished at step 60")


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_jobs_cli_on_gpu_seed_flags(family, bc5, tmp_path):
    """The seed's two commands, verbatim flags, scratch model; each a fresh process, so Unsloth
    must be imported before transformers there too (else it warns that patches may not apply)."""
    train, dev = bc5
    env = job_env(MEDSWEEP_SCRATCH_DIR=os.environ["MEDSWEEP_SCRATCH_DIR"])
    r = subprocess.run([sys.executable, "-m", "jobs.train", "--train-dataset-file", str(train),
                        "--output-dir", str(tmp_path / "m"), "--model-name",
                        f"scratch:{family}-{SIZE}", "--model-load-in-4bit", "true",
                        "--peft-rank", "16", "--peft-lora-alpha", "32",
                        "--train-max-steps", "3", "--model-max-seq-length", "512"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    logs = r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "jobs.evaluate", "--eval-dataset-file", str(dev),
                        "--results-dir", str(tmp_path / "r"), "--model-dir", str(tmp_path / "m"),
                        "--eval-batch-size", "16", "--eval-max-new-tokens", "32"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Unsloth should be imported before" not in logs + r.stdout + r.stderr
    assert check_performance(json.loads((tmp_path / "r" / "performance.json").read_text())) == []


def _train_8b_16bit_lora(bc5, out, gpus: str) -> dict:
    """jobs.train in a fresh process that sees the GPUs in `gpus` (device_map='balanced' when
    it sees several); the micro-batch pinned, so one and two GPUs run the same steps."""
    train, _ = bc5
    env = job_env(MEDSWEEP_SCRATCH_DIR=os.environ["MEDSWEEP_SCRATCH_DIR"],
                  CUDA_VISIBLE_DEVICES=gpus)
    r = subprocess.run([sys.executable, "-m", "jobs.train", "--train-dataset-file", str(train),
                        "--output-dir", str(out), "--model-name", "scratch:llama-8b",
                        "--model-load-in-4bit", "false", "--model-max-seq-length", "512",
                        "--train-per-device-batch-size", "8",
                        "--train-gradient-accumulation-steps", "2",
                        "--train-grow-micro-batch", "false", "--train-max-steps", "4",
                        "--train-learning-rate", "1e-4", "--peft-lora-dropout", "0.0"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / TRAIN_SUMMARY).read_text())


def test_8b_16bit_lora_split_over_two_gpus(bc5, tmp_path):
    """Llama-3.1-8B shape, 16-bit LoRA, device_map='balanced' over 2 GPUs: the layers really
    sit on both cards, the losses match a one-GPU run of the same seed, and it evaluates."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs (device_map='balanced'); run `pytest -m gpu` on a "
                    "multi-GPU machine")
    one = _train_8b_16bit_lora(bc5, tmp_path / "one", "0")
    two = _train_8b_16bit_lora(bc5, tmp_path / "two", "0,1")
    print(f"\n8B 16-bit LoRA layers {one['layers_per_device']} vs {two['layers_per_device']}; "
          f"loss 1 GPU {one['first_loss']:.4f}->{one['final_loss']:.4f}, 2 GPUs "
          f"{two['first_loss']:.4f}->{two['final_loss']:.4f}; peak GiB per GPU "
          f"{one['device']['peak_vram_gb_per_gpu']} vs {two['device']['peak_vram_gb_per_gpu']}")
    assert one["layers_per_device"] == {"cuda:0": 32}
    assert set(two["layers_per_device"]) == {"cuda:0", "cuda:1"}
    assert sum(two["layers_per_device"].values()) == 32
    assert min(two["layers_per_device"].values()) >= 8
    assert all(g > 1.0 for g in two["device"]["peak_vram_gb_per_gpu"])
    for key in ("first_loss", "final_loss"):
        assert abs(two[key] - one[key]) <= 0.02 * abs(one[key]), (key, one[key], two[key])

    _, dev = bc5
    env = job_env(MEDSWEEP_SCRATCH_DIR=os.environ["MEDSWEEP_SCRATCH_DIR"],
                  CUDA_VISIBLE_DEVICES="0,1")
    r = subprocess.run([sys.executable, "-m", "jobs.evaluate", "--eval-dataset-file", str(dev),
                        "--results-dir", str(tmp_path / "r"), "--model-dir",
                        str(tmp_path / "two"), "--eval-batch-size", "16",
                        "--eval-max-examples", "16", "--eval-max-new-tokens", "32"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "r" / "performance.json").read_text())
    assert check_performance(doc) == []
    assert set(doc["hardware"]["layers_per_device"]) == {"cuda:0", "cuda:1"}
    assert doc["num_examples"] == 16 and doc["timings"]["generated_tokens"] > 0


def test_launcher_submit_on_a_gpu_workstation_trains_each_run_on_its_card(bc5, tmp_path):
    """The user's path (issue 26): `launcher submit` with the workstation profile places the
    runs on this machine's GPUs; each run's medsweep_train.json says it trained on CUDA, on
    the card it was given, and its step-time breakdown is recorded."""
    import torch
    import yaml

    if not torch.cuda.is_available():
        pytest.skip("needs a real CUDA card: the local executor reads nvidia-smi")
    train, dev = bc5
    doc = {"name": "gpu-ws", "env": "workstation",
           "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.name_or_path": f"scratch:llama-{SIZE}", "model.load_in_4bit": False,
                    "train.max_steps": 6, "eval.max_new_tokens": 16},
           "grid": {"peft.rank": [8, 16]}}
    sweep = tmp_path / "ws.yaml"
    sweep.write_text(yaml.safe_dump(doc))
    env = job_env()
    env.pop("CUDA_VISIBLE_DEVICES", None)
    r = subprocess.run([sys.executable, "-m", "launcher", "submit", str(sweep), "--runs-dir",
                        str(tmp_path / "runs")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = [p for p in (tmp_path / "runs" / "gpu-ws").iterdir() if (p / "config.yaml").is_file()]
    assert len(runs) == 2
    for run in runs:
        summary = json.loads((run / "adapter" / TRAIN_SUMMARY).read_text())
        job = json.loads((run / "job.json").read_text())
        assert summary["device"]["cuda"] is True, summary["device"]
        assert summary["device"]["cuda_visible_devices"] == ",".join(
            map(str, job["sbatch"]["gpus"]))
        assert summary["step_time"]["steps"] == 6
        assert check_performance(json.loads((run / "results" / "performance.json").read_text()))\
            == []


def test_a_warm_workers_kept_model_trains_like_a_fresh_load_on_the_card(bc5, tmp_path):
    """jobs.warm_model on CUDA (Unsloth's GPU path): one worker on the card takes two full
    fine-tuning runs of one model; the second takes the kept model and trains as the same run
    does in a process of its own (losses within GPU non-determinism; on the CPU the weights are
    byte-identical, tests/test_warm_model.py)."""
    import shutil

    import torch
    import yaml

    if not torch.cuda.is_available():
        pytest.skip("needs a real CUDA card: the local executor reads nvidia-smi")
    train, dev = bc5
    env_doc = yaml.safe_load((ROOT / "envs" / "workstation.yaml").read_text())
    env_doc.update(name="ws-one", runs_per_gpu=1)
    (tmp_path / "ws-one.yaml").write_text(yaml.safe_dump(env_doc))
    doc = {"name": "kept", "env": str(tmp_path / "ws-one.yaml"),
           "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.name_or_path": f"scratch:llama-{SIZE}", "model.load_in_4bit": False,
                    "model.full_finetuning": True, "train.max_steps": 8,
                    "eval.max_new_tokens": 16, "eval.max_examples": 8},
           "grid": {"train.learning_rate": [1e-5, 2e-5]}}
    sweep = tmp_path / "kept.yaml"
    sweep.write_text(yaml.safe_dump(doc))
    env = job_env(MEDSWEEP_SCRATCH_DIR=os.environ["MEDSWEEP_SCRATCH_DIR"])
    env.pop("CUDA_VISIBLE_DEVICES", None)
    r = subprocess.run([sys.executable, "-m", "launcher", "submit", str(sweep), "--runs-dir",
                        str(tmp_path / "runs")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = {p: json.loads((p / "adapter" / TRAIN_SUMMARY).read_text())
            for p in (tmp_path / "runs" / "kept").iterdir() if (p / "config.yaml").is_file()}
    second, s2 = max(runs.items(), key=lambda kv: kv[1]["startup"]["worker_item"])
    assert s2["startup"]["model_kept"] is True, s2["startup"]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(second / "config.yaml", alone / "config.yaml")
    p = subprocess.run([sys.executable, "-m", "jobs.pack", str(alone)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    fresh = json.loads((alone / "adapter" / TRAIN_SUMMARY).read_text())
    assert fresh["startup"]["model_kept"] is False
    kept_losses = [h["loss"] for h in json.loads((second / "progress.json").read_text())[
        "history"] if "loss" in h]
    fresh_losses = [h["loss"] for h in json.loads((alone / "progress.json").read_text())[
        "history"] if "loss" in h]
    assert kept_losses and len(kept_losses) == len(fresh_losses)
    assert kept_losses[0] == pytest.approx(fresh_losses[0], rel=1e-3)  # the same start
    assert s2["final_loss"] == pytest.approx(fresh["final_loss"], rel=2e-2)
