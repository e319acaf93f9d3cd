"""eval.max_item_repeats: an answer caught in a loop (greedy decoding giving the same cycle of
entity items until the token budget; MACCROBAT's parse failures, benchmarks/RESULTS.md) ends
at the first item given once too often, keeps the items before it and is closed as a list.
On a real transformers model (random weights, CPU) forced to write a looping answer through
model.generate, so the stop runs inside generation as it does on the card."""

import string

import pytest

from core.config import ConfigError, build_config
from core.parsing import OK, AnswerEnd, close_loop, parse_output

torch = pytest.importorskip("torch")

CHARS = '[]{}":, ' + string.ascii_lowercase
LOOP = '[{"label": "a", "text": "x"}, {"label": "b", "text": "y"}, ' + \
    '{"label": "a", "text": "x"}, {"label": "b", "text": "y"}, ' * 40


class _Tok:
    """One token per character of CHARS (ids from 3), 0 pad, 1 end."""

    pad_token_id = 0
    eos_token_id = 1

    def decode(self, ids, skip_special_tokens=False):
        return "".join(CHARS[i - 3] for i in ids if i >= 3)

    def encode(self, text):
        return [CHARS.index(c) + 3 for c in text]


class _Force:
    """A logits processor that makes every row write `text`, one character per step."""

    def __init__(self, ids, width):
        self.ids, self.width = ids, width

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.width
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.ids[step] if step < len(self.ids) else 1] = 0.0
        return forced


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(CHARS) + 3, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=1024, pad_token_id=0, eos_token_id=1)
    return LlamaForCausalLM(cfg).eval()


def _generate(model, repeats, budget=300):
    from transformers import LogitsProcessorList

    from jobs.evaluate import generate_all

    tok = _Tok()
    prompts = [[5, 6, 7], [5, 6, 7]]
    cfg = build_config({"model.name_or_path": "scratch:llama-tiny",
                        "eval.max_item_repeats": repeats, "eval.batch_size": 2})
    kw = {"do_sample": False, "eos_token_id": [1],
          "logits_processor": LogitsProcessorList([_Force(tok.encode(LOOP), 3)])}
    decode: dict = {}
    out, _ = generate_all(model, tok, prompts, cfg, budget, kw, decode=decode)
    return out, decode


def test_a_looping_answer_ends_at_the_first_item_given_once_too_often(model):
    out, decode = _generate(model, 1)
    assert out == ['[{"label": "a", "text": "x"}, {"label": "b", "text": "y"}]'] * 2
    assert decode["loops_cut"] == 2
    assert decode["steps"] < 100 and decode["at_budget"] == 0
    res = parse_output(out[0])
    assert res.status == OK and len(res.entities) == 2


def test_without_the_key_the_loop_runs_to_the_budget_as_before(model):
    out, decode = _generate(model, 0)
    assert decode["loops_cut"] == 0 and decode["at_budget"] == 1
    assert out[0] == LOOP[:300]


def test_a_higher_limit_keeps_that_many_copies(model):
    out, decode = _generate(model, 2)
    assert out[0] == LOOP[:LOOP.index('{"label": "a"', 100)].rstrip(", ") + "]"
    assert out[0].count('"text": "x"') == 2 and decode["loops_cut"] == 2


def test_items_compare_by_content_not_by_spacing_outside_strings():
    assert close_loop('[{"label":"a","text":"x"}, { "label": "a", "text": "x" }]', 1) == \
        '[{"label":"a","text":"x"}]'
    # Inside a string spacing counts: "x y" and "xy" are two entities.
    assert close_loop('[{"text": "x y"}, {"text": "xy"}]', 1) is None


def test_an_answer_that_is_not_a_list_never_loops():
    end = AnswerEnd(1)
    end.feed('{"entities": [{"t": "a"}, {"t": "a"}]}')
    assert end.done and not end.looped


def test_a_negative_limit_is_refused():
    with pytest.raises(ConfigError, match="--eval-max-item-repeats must be >= 0"):
        build_config({"model.name_or_path": "scratch:llama-tiny", "eval.max_item_repeats": -1})


def test_the_job_says_how_many_answers_looped():
    from jobs.evaluate import summary_lines

    doc = {"metrics": {"total": {"exact": {"p": 1.0, "r": 1.0, "f1": 1.0}}},
           "parse": {"failure_rate": 0.0}, "avg_inference_time": 0.01,
           "generation": {"decode": {"loops_cut": 3}}}
    assert any(line.startswith("3 answers looped") for line in summary_lines(doc))
    doc["generation"]["decode"]["loops_cut"] = 0
    assert not any("looped" in line for line in summary_lines(doc))
