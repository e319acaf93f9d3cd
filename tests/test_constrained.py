"""jobs.constrained.SpanConstraint on a byte-level toy tokenizer: byte fragments of a multi-
byte character are read together, and a model that keeps choosing fragments is not walked
into an endless run of them (what MACCROBAT's thin spaces did on the card)."""

import pytest

torch = pytest.importorskip("torch")

PIECES = ['[{"label": "Weight", "text": "', "1.19", " kg", " lb", '"}]', "\u2009kg"]
BYTES = [0xE2, 0x80, 0x89]  # U+2009 THIN SPACE in UTF-8


class ByteTokenizer:
    """Ids 0..5: the whole pieces above; 6..8: single bytes of a thin space."""

    def decode(self, ids, skip_special_tokens=False):
        data = b"".join(PIECES[i].encode() if i < len(PIECES) else bytes([BYTES[i - 6]])
                        for i in ids)
        return data.decode("utf-8", errors="replace")


def _step(c, gen, prefer):
    scores = torch.zeros((1, 9))
    for rank, tok in enumerate(prefer):
        scores[0, tok] = 10.0 - rank
    return int(c(torch.tensor([[99] + gen]), scores)[0].argmax())


def _constraint():
    from jobs.constrained import SpanConstraint

    return SpanConstraint(ByteTokenizer(), ["Weight 1.19\u2009kg at birth"], ["Weight"], 1,
                          greedy=True, max_candidates=9)


def test_a_plain_space_for_a_thin_one_is_the_model_s_choice():
    assert _step(_constraint(), [0, 1], [2, 3]) == 2  # " kg"


def test_fragments_joined_into_the_input_s_character_then_the_value_goes_on():
    c = _constraint()
    assert _step(c, [0, 1], [6, 3]) == 6          # E2: a character may start here
    assert _step(c, [0, 1, 6], [7, 3]) == 7       # 80: it is still waiting; " lb" is not
    assert c.texts[0].endswith("1.19\ufffd") and c.pending[0] >= 1
    assert _step(c, [0, 1, 6, 7], [8, 3]) == 8    # 89 completes U+2009
    _step(c, [0, 1, 6, 7, 8], [2])
    assert c.texts[0].endswith("1.19\u2009") and c.pending[0] == 0
    # The joined character counts as the input's: "kg" may follow it, "lb" may not.
    assert _step(c, [0, 1, 6, 7, 8], [3, 5]) == 5


def test_a_run_of_fragments_is_cut_off_after_four():
    """Stray continuation bytes never make a character: after four the constraint allows
    neither another fragment nor anything else, so it leaves the row's scores as they are
    instead of steering it further (before the fix it kept allowing fragments only)."""
    c = _constraint()
    gen = [0, 1]
    for _ in range(4):
        assert _step(c, gen, [7, 2]) == 7   # allowed while at most three wait
        gen.append(7)
    scores = torch.zeros((1, 9))
    scores[0, 7], scores[0, 2] = 10.0, 9.0
    out = c(torch.tensor([[99] + gen]), scores.clone())
    assert c.pending[0] >= 4 and torch.equal(out, scores)
