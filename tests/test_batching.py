"""The micro-batch the job trains with (core.batching, jobs.microbatch._micro_batch)."""

from __future__ import annotations

import json

import pytest

from core.batching import FREE_SHARE, fits_free_memory, grow_micro_batch
from core.config import build_config
from core.vram import ModelShape, activation_bytes

LLAMA_1B = ModelShape(1.24, 2048, 16, 8192, 128256)
LLAMA_8B = ModelShape(8.03, 4096, 32, 14336, 128256)
GIB = 2**30


@pytest.mark.parametrize(("bs", "ga", "limit", "want"), [
    (16, 4, 64, (64, 1)), (16, 4, 63, (32, 2)), (16, 4, 31, (16, 4)), (16, 4, 0, (16, 4)),
    (4, 6, 12, (12, 2)), (4, 6, 24, (24, 1)), (8, 1, 10**6, (8, 1)), (2, 7, 13, (2, 7)),
])
def test_grow_keeps_examples_per_step(bs, ga, limit, want):
    got = grow_micro_batch(bs, ga, lambda rows: rows <= limit)
    assert got == want
    assert got[0] * got[1] == bs * ga


def test_never_asks_about_the_given_batch_and_asks_larger_first():
    asked: list[int] = []
    grow_micro_batch(16, 4, lambda rows: asked.append(rows) or False)
    assert asked == [64, 32]


def test_short_records_grow_on_an_h100_but_not_on_a_small_card():
    # BC5CDR: longest of 1,536 sentences is 342 tokens; 75 GiB free after loading on an H100.
    assert grow_micro_batch(16, 4, fits_free_memory(LLAMA_8B, 342, 70 * GIB)) == (64, 1)
    # 8 GiB left on a 24 GB card: the 64-row batch of the longest records would not fit, a
    # 32-row one would; with 4 GiB left neither does.
    fits = fits_free_memory(LLAMA_8B, 342, 8 * GIB)
    assert activation_bytes(LLAMA_8B, 64 * 342) > FREE_SHARE * 8 * GIB
    assert grow_micro_batch(16, 4, fits) == (32, 2)
    assert grow_micro_batch(16, 4, fits_free_memory(LLAMA_8B, 342, 4 * GIB)) == (16, 4)
    # Long clinical notes (MACCROBAT-like, 4k tokens): an 8B shape stays as given even on an
    # H100; a 1B one has room for two 16-row micro-batches' worth, not four.
    assert grow_micro_batch(16, 4, fits_free_memory(LLAMA_8B, 4096, 70 * GIB)) == (16, 4)
    assert grow_micro_batch(16, 4, fits_free_memory(LLAMA_1B, 4096, 70 * GIB)) == (32, 2)


def test_cpu_keeps_the_batch_as_given(tmp_path):
    from jobs.microbatch import MICRO_BATCH_FILE, _micro_batch

    cfg = build_config({"model.name_or_path": "scratch:llama-tiny",
                        "data.train_dataset_file": "x.json"})
    assert _micro_batch(cfg, None, [object()], tmp_path / "ck", cuda=False) == (16, 4)
    saved = json.loads((tmp_path / "ck" / MICRO_BATCH_FILE).read_text())
    assert (saved["per_device_batch_size"], saved["gradient_accumulation_steps"]) == (16, 4)


def test_resume_keeps_the_split_of_its_checkpoints(tmp_path):
    from jobs.microbatch import MICRO_BATCH_FILE, _micro_batch

    ck = tmp_path / "ck"
    (ck / "checkpoint-2").mkdir(parents=True)
    (ck / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (ck / MICRO_BATCH_FILE).write_text(json.dumps({"per_device_batch_size": 64,
                                                   "gradient_accumulation_steps": 1}))
    cfg = build_config({"model.name_or_path": "scratch:llama-tiny",
                        "data.train_dataset_file": "x.json"})
    assert _micro_batch(cfg, None, [object()], ck, cuda=False) == (64, 1)
    # Without a checkpoint there is nothing to match: the split is chosen afresh.
    (ck / "checkpoint-2" / "trainer_state.json").unlink()
    assert _micro_batch(cfg, None, [object()], ck, cuda=False) == (16, 4)


class _Example:
    def __init__(self, n: int) -> None:
        self.input_ids = [0] * n


def _model_with(config):
    return type("M", (), {"config": config})()


def test_job_reads_the_shape_from_the_model_config_and_logs_the_change(tmp_path, capsys):
    from transformers import Gemma3Config, Gemma3TextConfig, LlamaConfig

    from jobs.microbatch import MICRO_BATCH_FILE, _micro_batch

    cfg = build_config({"model.name_or_path": "x", "data.train_dataset_file": "x.json"})
    examples = [_Example(120), _Example(342)]
    llama = _model_with(LlamaConfig(hidden_size=4096, num_hidden_layers=32,
                                    intermediate_size=14336, vocab_size=128256))
    assert _micro_batch(cfg, llama, examples, tmp_path / "a", True, 70 * GIB) == (64, 1)
    assert "micro-batch 16 x GA 4 -> 64 x GA 1" in capsys.readouterr().err
    assert json.loads((tmp_path / "a" / MICRO_BATCH_FILE).read_text())[
        "per_device_batch_size"] == 64
    assert _micro_batch(cfg, llama, examples, tmp_path / "b", True, 4 * GIB) == (16, 4)
    # Multimodal Gemma 3: the language model's shape is under text_config.
    gemma = _model_with(Gemma3Config(text_config=Gemma3TextConfig(
        hidden_size=2560, num_hidden_layers=34, intermediate_size=10240, vocab_size=262208)))
    assert _micro_batch(cfg, gemma, examples, tmp_path / "c", True, 70 * GIB) == (64, 1)
    off = cfg.replace({"train.grow_micro_batch": False})
    assert _micro_batch(off, llama, examples, tmp_path / "d", True, 70 * GIB) == (16, 4)


def test_eager_counts_the_full_logits_and_grows_less():
    """Gemma 3 270M trained eager (model.compile auto) holds its whole 262k-vocabulary logits:
    on one H200 a micro-batch of 64 BC5CDR records peaked at 73 GB, against 21 GB compiled."""
    gemma = ModelShape(0.27, 640, 18, 2048, 262144)
    tokens = 64 * 350
    eager = activation_bytes(gemma, tokens, checkpointing=False, chunked_head=False)
    compiled = activation_bytes(gemma, tokens, checkpointing=False)
    assert 40e9 < eager < 80e9 and compiled < 25e9
    h200, h100 = 120 * GIB, 72 * GIB  # free after loading the model
    # BC5CDR's longest training record with Gemma's template: 521 tokens.
    assert grow_micro_batch(16, 4, fits_free_memory(gemma, 521, h200, False,
                                                    chunked_head=False)) == (64, 1)
    assert grow_micro_batch(16, 4, fits_free_memory(gemma, 521, h100, False)) == (64, 1)
    assert grow_micro_batch(16, 4, fits_free_memory(gemma, 521, h100, False,
                                                    chunked_head=False)) == (32, 2)


def test_the_answer_only_head_grows_to_what_ran_on_an_h100():
    """Measured (RESULTS.md, stop 41): Gemma 3 270M full fine-tuning on BC5CDR (longest record
    521 tokens, longest answer 295) with the answer-only head ran 64 x 1 on one H100 at a
    52.4 GB peak, 423 examples/s; the job's check must allow it there and the full logits not."""
    gemma = ModelShape(0.27, 640, 18, 2048, 262144)
    h100 = 72 * GIB
    answers = fits_free_memory(gemma, 521, h100, False, False, answer_tokens=295)
    assert grow_micro_batch(16, 4, answers) == (64, 1)
    assert grow_micro_batch(16, 4, fits_free_memory(gemma, 521, h100, False, False)) == (32, 2)
