"""Parsing a model's answer into entities, tolerant of what generation really produces.

>>> parse_output('```json\\n[{"label": "Disease", "text": "flu"}]\\n``` done').entities
[Entity(label='Disease', text='flu')]
>>> parse_output('[{"label": "Disease", "text": "flu"}, {"label": "Dis').status
'salvaged'
>>> parse_output('no idea').status
'failed'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from core.data import Entity

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)
_OBJECT = re.compile(r"\{[^{}\[\]]*\}")
_DECODER = json.JSONDecoder()

OK, SALVAGED, FAILED = "ok", "salvaged", "failed"


@dataclass(frozen=True)
class ParseResult:
    entities: list[Entity]
    status: str
    """ok: a JSON list was decoded; salvaged: complete objects recovered from broken or
    truncated JSON; failed: nothing usable."""
    invalid_items: int = 0
    """Items of the list that were not {label, text} objects (dropped)."""


def _entities_from(items: list[Any]) -> tuple[list[Entity], int]:
    out, bad = [], 0
    for item in items:
        if (isinstance(item, dict) and isinstance(item.get("label"), str)
                and isinstance(item.get("text"), str) and item["text"].strip()):
            out.append(Entity(item["label"].strip(), item["text"]))
        else:
            bad += 1
    return out, bad


MAX_NESTING = 32
"""An answer is a list of flat objects: text nested deeper than this is not one, and decoding
it would recurse once per level (1,000 '[' raised RecursionError and failed the evaluation)."""


def _nesting(text: str) -> int:
    """The deepest bracket nesting in text, strings skipped (a quick upper bound).

    >>> _nesting('[{"text": "a [b"}]'), _nesting("[" * 50)
    (2, 50)
    """
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def _first_json(text: str) -> Any:
    """Decode the first JSON list or object in text, ignoring what precedes or follows it."""
    if _nesting(text) > MAX_NESTING:
        raise ValueError("nested too deeply to be an answer")
    for i, ch in enumerate(text):
        if ch in "[{":
            try:
                value, _ = _DECODER.raw_decode(text, i)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and "entities" not in value and ch == "{":
                # A lone entity object inside a broken list: not the answer as a whole.
                if {"label", "text"} <= set(value):
                    continue
            return value
    raise ValueError("no JSON value")


def parse_output(raw: str) -> ParseResult:
    body = raw.strip()
    fence = _FENCE.search(body)
    candidates = [fence.group(1), body] if fence else [body]
    for cand in candidates:
        try:
            value = _first_json(cand)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("entities"), list):
            value = value["entities"]
        if isinstance(value, list):
            ents, bad = _entities_from(value)
            return ParseResult(ents, OK, bad)
    # Truncated or otherwise broken: keep the complete {label, text} objects.
    objs = []
    for m in _OBJECT.finditer(body):
        try:
            objs.append(json.loads(m.group(0)))
        except json.JSONDecodeError:
            continue
    ents, bad = _entities_from(objs)
    if ents:
        return ParseResult(ents, SALVAGED, bad)
    return ParseResult([], FAILED, 0)


class AnswerEnd:
    """Tells, fed a model's output piece by piece, when its JSON answer is complete: the first
    top-level list or object closed. Generation can stop a row there (the parser reads only the
    first JSON value), so one row that talks on after its answer does not hold its batch to the
    token budget. An answer that does not start with JSON (a code fence, prose) never ends here.

    With max_repeats > 0 a top-level list also ends at an item (an object or list inside it)
    given for the max_repeats + 1-th time: an answer caught in a loop (greedy decoding repeating
    a cycle of items until the budget). ``looped`` is then set and ``cut`` is the offset, in
    the characters fed, where that item starts (close_loop).

    >>> end = AnswerEnd()
    >>> [end.feed(p) for p in ['[{"label": "D", ', '"text": "a]b"}', '] and more']]
    [False, False, True]
    >>> AnswerEnd().feed("```json [] ```")
    False
    >>> end = AnswerEnd(max_repeats=1)
    >>> end.feed('[{"t": "a"}, {"t": "b"}, {"t": "a"}')
    True
    >>> end.looped, end.cut
    (True, 25)
    """

    def __init__(self, max_repeats: int = 0) -> None:
        self.depth = 0
        self.started = self.done = self.failed = self.looped = False
        self.in_str = self.esc = False
        self.max_repeats, self.list_top = max_repeats, False
        self.pos = self.cut = self.item_start = 0
        self.item: list[str] = []
        self.counts: dict[str, int] = {}

    def feed(self, piece: str) -> bool:
        for ch in piece:
            if self.done or self.failed:
                break
            self.pos += 1
            if not self.started:
                if ch.isspace():
                    continue
                if ch not in "[{":
                    self.failed = True
                    break
                self.started, self.list_top = True, ch == "["
            self._char(ch)
        return self.done

    def _char(self, ch: str) -> None:
        if self.in_str:
            if self.esc:
                self.esc = False
            elif ch == "\\":
                self.esc = True
            elif ch == '"':
                self.in_str = False
            self._record(ch)
            return
        if ch == '"':
            self.in_str = True
        elif ch in "[{":
            self.depth += 1
            if self.depth == 2:
                self.item, self.item_start = [], self.pos - 1
        elif ch in "]}":
            self.depth -= 1
            if self.depth == 0:
                self.done = True
            elif self.depth == 1:
                self._record(ch)
                self._item_done()
                return
        if not ch.isspace():
            self._record(ch)

    def _record(self, ch: str) -> None:
        if self.depth >= 2 and self.max_repeats > 0:
            self.item.append(ch)

    def _item_done(self) -> None:
        if self.max_repeats <= 0 or not self.list_top:
            return
        key = "".join(self.item)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] > self.max_repeats:
            self.looped = self.done = True
            self.cut = self.item_start


def close_loop(text: str, max_repeats: int) -> str | None:
    """The answer ended before its first item given more than max_repeats times, as a closed
    JSON list; None where the answer does not loop (or max_repeats is 0).

    >>> close_loop('[{"t": "a"}, {"t": "b"}, {"t": "a"}, {"t": "b"}', 1)
    '[{"t": "a"}, {"t": "b"}]'
    >>> close_loop('[{"t": "a"}, {"t": "a"}]', 2) is None
    True
    """
    end = AnswerEnd(max_repeats)
    end.feed(text)
    if not end.looped:
        return None
    return text[:end.cut].rstrip().rstrip(",").rstrip() + "]"


def parse_stats(results: Sequence[ParseResult], too_long: int) -> dict[str, Any]:
    """Counts of each parse outcome and the failure rate (broken or salvaged answers) over the
    answers that were generated; too_long prompts were not generated and are counted apart."""
    n = len(results)
    counts = {s: sum(1 for r in results if r.status == s) for s in (OK, SALVAGED, FAILED)}
    return {**counts, "too_long": too_long, "invalid_items": sum(r.invalid_items
                                                                  for r in results),
            "failure_rate": (counts[FAILED] + counts[SALVAGED]) / n if n else 0.0}
