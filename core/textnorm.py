"""Text normalisation shared by targets, metrics and hallucination checks.

Both gold and predicted texts go through the same function (the seed's tool lower-cased gold
only, so a correct prediction in the original case never matched).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)

# Function words that must not make two entity texts "overlap" on their own.
STOPWORDS = frozenset("""
a an the of and or in on at to for from by with without into onto as is are was were be been
being this that these those it its their his her our your my no not nor than then so such via
per vs versus de la le et
""".split())


def fold(text: str) -> str:
    """NFKC, case-folded, each run of whitespace one space (normalise without its strip: what
    constrained decoding compares a value with as it grows).

    >>> fold("1.19\u2009KG"), fold("5 \u2005 years ")
    ('1.19 kg', '5 years ')
    """
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold())


@lru_cache(maxsize=65536)
def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed and stripped."""
    return fold(text).strip()


def find_spans(source: str, needle: str) -> list[tuple[int, int]]:
    """Every (start, end) of the normalised needle in the normalised source."""
    src, ndl = normalise(source), normalise(needle)
    if not ndl:
        return []
    out = []
    start = src.find(ndl)
    while start != -1:
        out.append((start, start + len(ndl)))
        start = src.find(ndl, start + 1)
    return out


@lru_cache(maxsize=65536)
def find_word_spans(source: str, needle: str) -> tuple[tuple[int, int], ...]:
    """find_spans, keeping only occurrences that start and end on word boundaries (where the
    needle itself starts or ends with a word character): "in" is not located inside "aspirin".

    >>> find_word_spans("He was given aspirin.", "in"), find_word_spans("stress ulcers", "ulcers")
    ((), ((7, 13),))
    """
    src, ndl = normalise(source), normalise(needle)
    if not ndl:
        return ()
    head, tail = _WORD.match(ndl[0]) is not None, _WORD.match(ndl[-1]) is not None
    out = []
    for s0, s1 in find_spans(source, needle):
        if head and s0 > 0 and _WORD.match(src[s0 - 1]):
            continue
        if tail and s1 < len(src) and _WORD.match(src[s1]):
            continue
        out.append((s0, s1))
    return tuple(out)


@lru_cache(maxsize=65536)
def content_tokens(text: str) -> frozenset[str]:
    return frozenset(t for t in _WORD.findall(normalise(text)) if t not in STOPWORDS)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """Text from a file (a shared runs folder) as one printable line: control characters
    (terminal escapes, line breaks, bidirectional overrides) shown as \\xNN / \\uNNNN.

    >>> terminal_safe("ok\\x1b]52;c;aGk=\\x07 line\\nforged")
    'ok\\\\x1b]52;c;aGk=\\\\x07 line\\\\x0aforged'
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)
