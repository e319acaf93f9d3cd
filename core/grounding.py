"""Grounded answers: an extractor may only predict text that is in its input.

Two layers, both pure functions here. ``ground`` drops predicted entities whose text cannot be
located in the input (after the normalisation every metric uses), so an invented entity is never
counted as a prediction; evaluation records how many it dropped and scores both ways. The
constrained decoder (``jobs/constrained.py``) asks ``json_value_state`` and ``allowed_piece``
whether a token may come next, so that inside a JSON ``"text"`` value the model can only write a
span of the input, and inside ``"label"`` only a label seen in training.

>>> kept, dropped = ground([Entity("Disease", "Fever"), Entity("Disease", "sepsis")],
...                        "fever and cough")
>>> [e.text for e in kept], [e.text for e in dropped]
(['Fever'], ['sepsis'])
"""

from __future__ import annotations

import json
from typing import Sequence

from core.data import Entity
from core.textnorm import find_spans, fold

REPLACEMENT = "\ufffd"
"""What a token that holds part of a multi-byte character decodes to on its own."""


def ground(entities: Sequence[Entity], text: str) -> tuple[list[Entity], list[Entity]]:
    """(kept, dropped): kept entities have a text found in the input (normalised)."""
    kept: list[Entity] = []
    dropped: list[Entity] = []
    for e in entities:
        (kept if find_spans(text, e.text) else dropped).append(e)
    return kept, dropped


def ground_all(pred: Sequence[Sequence[Entity]], texts: Sequence[str]
               ) -> tuple[list[list[Entity]], int]:
    """Grounded predictions per record, and how many entities were dropped in all."""
    out, dropped = [], 0
    for ents, text in zip(pred, texts, strict=True):
        kept, gone = ground(ents, text)
        out.append(kept)
        dropped += len(gone)
    return out, dropped


def json_value_state(prefix: str) -> tuple[str, str] | None:
    """Where a partial JSON answer stands: (key, raw value so far) when it ends inside the
    string value of a "text" or "label" key, else None.

    >>> json_value_state('[{"label": "Disease", "text": "acute hep')
    ('text', 'acute hep')
    >>> json_value_state('[{"label": "Dis')
    ('label', 'Dis')
    >>> json_value_state('[{"label": "Disease", "te') is None
    True
    """
    in_str = esc = is_key = False
    expecting_key = False
    last_key = ""
    start = 0
    for i, ch in enumerate(prefix):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
                if is_key:
                    last_key = prefix[start:i]
        elif ch == '"':
            in_str, is_key, start = True, expecting_key, i + 1
        elif ch in "{,":
            expecting_key = True
        elif ch in ":[":
            expecting_key = False
    if in_str and not is_key and last_key in ("text", "label"):
        return last_key, prefix[start:]
    return None


def _split_at_quote(piece: str, escaped: bool) -> tuple[str, bool]:
    """(the part of piece inside the string, whether piece closes it)."""
    for i, ch in enumerate(piece):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return piece[:i], True
    return piece, False


def _ends_escaped(raw: str) -> bool:
    n = len(raw) - len(raw.rstrip("\\"))
    return n % 2 == 1


MAX_PENDING_BYTES = 3
"""Byte fragments that can wait for one more: UTF-8 writes a character in at most 4 bytes."""


def escaped_source(text: str) -> str:
    """The input as it appears inside a JSON string (what the model writes), folded
    (core.textnorm.fold: the metrics' normalisation without its strip)."""
    return fold(json.dumps(text, ensure_ascii=False)[1:-1])


def allowed_piece(piece: str, state: tuple[str, str], source: str, labels: Sequence[str],
                  pending: int = 0, fragments: bool = True) -> bool:
    """Whether a token that decodes to piece may follow a partial answer in state.

    source: escaped_source(input text). Inside "text": the value must stay a span of the input
    (fold: a thin space in the input matches the model's plain one, as in the metrics) and
    may close only when non-empty. Inside "label": the value must stay a prefix of a known label
    and close only as a whole one. A piece with a broken multi-byte character (a byte fragment)
    passes where the input has non-ASCII text (fragments: the caller knows, since fold
    may make it ASCII), the value so far is a span of it, and at most MAX_PENDING_BYTES
    fragments wait for their character (pending: the raw value ends in U+FFFD); while one
    waits, nothing else passes. So a constraint never walks a row into an endless run of them.

    >>> src = escaped_source("Cocaine-induced hepatitis")
    >>> allowed_piece(" hep", ("text", "cocaine-induced"), src, [])
    True
    >>> allowed_piece(" liver", ("text", "cocaine-induced"), src, [])
    False
    >>> allowed_piece('"}', ("text", ""), src, []), allowed_piece('"}', ("text", "cocaine"), src, [])
    (False, True)
    >>> allowed_piece('ease"', ("label", "Dis"), src, ["Disease"])
    True
    >>> allowed_piece('"', ("label", "Dis"), src, ["Disease"])
    False
    """
    key, raw = state
    inside, closes = _split_at_quote(piece, _ends_escaped(raw))
    value = raw + inside
    if key == "text":
        if REPLACEMENT in inside:
            return (fragments and pending <= MAX_PENDING_BYTES
                    and fold(raw.rstrip(REPLACEMENT)) in source)
        if pending:
            return False
        folded = fold(value)
        if closes and not folded.strip():
            return False
        return folded in source
    if closes:
        return value in labels
    return any(lab.startswith(value) for lab in labels)
