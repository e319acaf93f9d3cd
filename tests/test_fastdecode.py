"""The static decoder (jobs.fastdecode, eval.decoder: static) gives generate()'s greedy answers
token for token, with the same decoding record, on real transformers models (random weights,
float32, CPU): Llama (one mask), Gemma 3 with sliding-window layers shorter than the prompts
(a mask per kind), stragglers continued, answers ended by the JSON rules; and it steps aside
for generate() where it does not apply or fails. On the CPU the step runs eagerly; the
captured CUDA graph is checked on the card (tests/test_gpu.py)."""

import pytest

from core.config import build_config

from .conftest import IdTokenizer as _Tok
from .conftest import tiny_llama

torch = pytest.importorskip("torch")


def _gemma(attn="sdpa"):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=96, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=16, max_position_embeddings=256, pad_token_id=0,
                           bos_token_id=2, eos_token_id=1, sliding_window=5,
                           layer_types=["sliding_attention", "full_attention",
                                        "sliding_attention", "full_attention"],
                           attn_implementation=attn)
    return Gemma3ForCausalLM(cfg).eval()


def _prompts(n, low=3, high=12):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 96, (int(torch.randint(low, high, (1,), generator=g)),),
                          generator=g).tolist() for _ in range(n)]


def _run(model, prompts, decoder, budget=16, batch=8, release=None, eos=(1,), repeats=0):
    from jobs.evaluate import generate_all

    cfg = build_config({"model.name_or_path": "scratch:llama-tiny", "eval.batch_size": batch,
                        "eval.decoder": decoder, "eval.max_item_repeats": repeats})
    decode: dict = {}
    out, n = generate_all(model, _Tok(), prompts, cfg, budget,
                          {"do_sample": False, "eos_token_id": list(eos)}, decode=decode,
                          release=release)
    return out, n, decode


def _common_tokens(model, prompts):
    """Tokens the rows tend to emit a few steps in: as stop tokens, the rows end at different
    steps."""
    free, _, _ = _run(model, prompts, "generate", budget=12)
    common = [int(t.strip("<")) for o in free for t in o.split(">")[3:5] if t]
    return sorted(set(common))[:6]


@pytest.mark.parametrize("make", [tiny_llama, _gemma, lambda: _gemma("eager")],
                         ids=["llama", "gemma3-sliding", "gemma3-eager"])
def test_the_static_decoder_answers_as_generate_does(make, monkeypatch):
    from jobs import fastdecode

    model = make()
    before = model.config._attn_implementation
    prompts = _prompts(20, 3, 14)  # longer than the sliding window of 5
    stops = _common_tokens(model, prompts)
    ref, n_ref, d_ref = _run(model, prompts, "generate", eos=stops)
    steps = []

    def counted(module, query, *args, **kwargs):
        steps.append(query.shape[2])
        return grouped(module, query, *args, **kwargs)

    grouped = fastdecode.grouped_attention
    monkeypatch.setattr(fastdecode, "grouped_attention", counted)
    got, n_got, d_got = _run(model, prompts, "static", eos=stops)
    # Decoding steps went through the grouped attention, and the model has its own back.
    assert steps.count(1) > 0 and max(steps) > 1
    assert model.config._attn_implementation == before
    assert d_got["engine"] == "static" and d_ref["engine"] == "generate"
    assert len({len(o) for o in ref}) > 2, "the rows should end at different steps"
    assert got == ref and n_got == n_ref
    for key in ("steps", "batches", "at_budget", "continued"):
        assert d_got[key] == d_ref[key], key


def test_stragglers_and_budget_match_generate():
    model = _gemma()
    prompts = _prompts(24)
    stops = _common_tokens(model, prompts)
    # Stop a batch once any row has finished: the rest are continued, as generate() does.
    ref = _run(model, prompts, "generate", budget=20, release=lambda rows: rows - 1, eos=stops)
    got = _run(model, prompts, "static", budget=20, release=lambda rows: rows - 1, eos=stops)
    assert got[2]["continued"] > 0 and got[2]["continued"] == ref[2]["continued"]
    assert got[0] == ref[0] and got[1] == ref[1]
    # No stop token at all: every batch runs to its budget.
    ref = _run(model, prompts, "generate", budget=9, eos=())
    got = _run(model, prompts, "static", budget=9, eos=())
    assert got[0] == ref[0] and got[2]["at_budget"] == ref[2]["at_budget"] == 3


def test_answer_end_rules_cut_rows_where_generate_cuts_them():
    from jobs.evaluate import AnswerStop

    class Pieces:  # token 5 closes the answer ("]"), token 1 stops
        def __call__(self, t):
            return {4: '[{"label": "A", "text": "x"}', 5: "]"}.get(t, " ")

    stop = AnswerStop(Pieces(), 3, {1}, [[], [], [], []], release=1)
    stop.feed_rows([[4, 9], [4, 9], [9, 1], [9, 9]])
    assert stop.end_step() is None  # one row ended, three unfinished
    stop.feed_rows([[5, 9], [9, 9], [9, 9], [9, 9]])
    assert stop.end_step() is None  # two ended
    stop.feed_rows([[9, 9], [5, 9], [9, 9], [9, 9]])
    # Rows end at new tokens 3, 2 and 5; with one row allowed unfinished, the batch stops at 5.
    assert stop.end_step() == 5
    assert [stop.ended_at(r) for r in range(4)] == [3, 5, 2, None]
    assert [stop.finished(r) for r in range(4)] == [True, True, True, False]


def test_where_the_static_decoder_does_not_apply_generate_runs():
    from jobs.fastdecode import choose

    model = tiny_llama()
    greedy = {"do_sample": False}
    assert choose(model, "static", greedy, False).name == "static"
    auto = choose(_gemma(), "auto", greedy, False)
    assert auto.name == "generate" and "no CUDA card" in auto.reason
    assert "architecture llama" in choose(model, "auto", greedy, False).reason
    multimodal = _gemma()
    multimodal.config.model_type = "gemma3"  # Gemma 3 4B and up: not checked on the card
    assert "architecture gemma3 " in choose(multimodal, "auto", greedy, False).reason
    assert "sampled" in choose(model, "static", {"do_sample": True}, False).reason
    assert "constrained" in choose(model, "static", greedy, True).reason
    assert choose(model, "generate", greedy, False).reason == "eval.decoder: generate"
    model.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in choose(model, "static", greedy, False).reason


def test_a_failing_static_decoder_falls_back_to_generate_with_the_same_answers(monkeypatch):
    from jobs import fastdecode

    model = tiny_llama()
    prompts = _prompts(10)
    ref, _, _ = _run(model, prompts, "generate")

    def broken(self, *args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(fastdecode.StaticDecoder, "next_token", broken)
    got, _, decode = _run(model, prompts, "static")
    assert got == ref
    assert decode["engine"] == "generate"
    assert "static decoder failed: RuntimeError" in decode["engine_reason"]


def test_the_generation_can_be_profiled_into_a_file(monkeypatch, tmp_path):
    from jobs.evaluate import PROFILE_ENV, _profiled

    assert _profiled(lambda: 7) == 7  # no profile asked: nothing written
    monkeypatch.setenv(PROFILE_ENV, str(tmp_path / "prof.txt"))
    assert _profiled(lambda: torch.ones(64, 64).matmul(torch.ones(64, 64)).sum().item()) == \
        64.0 * 64 * 64
    table = (tmp_path / "prof.txt").read_text()
    assert "aten::matmul" in table or "aten::mm" in table


def test_a_prompt_prefilled_in_chunks_answers_as_in_one(monkeypatch):
    from jobs import fastdecode

    model = _gemma()
    prompts = _prompts(12, 3, 14)
    ref, _, _ = _run(model, prompts, "generate")
    monkeypatch.setattr(fastdecode, "MASK_ELEMENTS", 1)  # one prompt position per chunk
    got, _, decode = _run(model, prompts, "static")
    assert decode["engine"] == "static" and got == ref
