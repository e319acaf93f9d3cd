"""Batched generation that lets a batch stop with a few rows unfinished and continues those
rows afterwards (jobs.evaluate.generate_all's stragglers) gives the answers of plain batched
generation, token for token, on a real transformers model (random weights, float32, CPU)."""

import pytest

from core.config import build_config

from .conftest import IdTokenizer as _Tok
from .conftest import tiny_llama

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def _prompts(n):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 96, (int(torch.randint(3, 12, (1,), generator=g)),),
                          generator=g).tolist() for _ in range(n)]


def test_continued_stragglers_give_the_same_answers(model):
    from jobs.evaluate import generate_all

    tok, prompts = _Tok(), _prompts(24)
    cfg = build_config({"model.name_or_path": "scratch:llama-tiny", "eval.batch_size": 8})
    # Stop tokens: what the rows tend to emit a few steps in, so rows end at different steps.
    free, _ = generate_all(model, tok, prompts, cfg, 12, {"do_sample": False})
    common = [int(t.strip("<")) for o in free for t in o.split(">")[3:5] if t]
    kw = {"do_sample": False, "eos_token_id": sorted(set(common))[:6]}

    def run(release):
        decode: dict = {}
        out, n = generate_all(model, tok, prompts, cfg, 20, kw, decode=decode,
                              release=release)
        return out, n, decode

    plain, n_plain, d_plain = run(lambda rows: 0)
    eager, n_eager, d_eager = run(lambda rows: rows - 1)  # stop once any row has finished
    assert d_plain["continued"] == 0 and d_eager["continued"] > 0
    lengths = {len(o) for o in plain}
    assert len(lengths) > 2, "the rows should end at different steps"
    assert eager == plain and n_eager == n_plain
    # The continued rows ran in one pass after the three first batches.
    assert d_eager["batches"] > d_plain["batches"] == 3


def test_a_batch_under_32_rows_is_never_cut():
    from jobs.evaluate import straggler_release

    assert straggler_release(31) == 0 and straggler_release(64) == 2
