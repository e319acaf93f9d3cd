"""Chat formatting of records: the messages a model sees and the JSON answer it must give.

Pure functions; the tokenizer's chat template turns messages into text in jobs/.
"""

from __future__ import annotations

import json
from typing import Iterable

from core.data import Entity, Record
from core.textnorm import find_spans, normalise

INSTRUCTION = "Extract medical entities from: {text}"
EARLIER = "Earlier in the document (context only): {context}"
LATER = "Later in the document (context only): {context}"
"""With data.context_sentences / context_after: the earlier, then the later sentences, each
its own paragraph before the seed's instruction."""


def target_entities(record: Record, unique: bool = True) -> list[Entity]:
    """Entities in order of first appearance in the text; deduplicated on (label, text) if asked.

    Entities that cannot be located keep their relative order after the located ones. The
    sort is stable, so the result is a pure function of the record.
    """
    ents: Iterable[Entity] = record.entities
    if unique:
        seen: set[tuple[str, str]] = set()
        kept = []
        for e in ents:
            key = (e.label, normalise(e.text))
            if key not in seen:
                seen.add(key)
                kept.append(e)
        ents = kept
    positions = []
    for idx, e in enumerate(ents):
        spans = find_spans(record.text, e.text)
        positions.append(((spans[0][0] if spans else len(record.text) + 1), idx, e))
    return [e for _, _, e in sorted(positions, key=lambda t: (t[0], t[1]))]


def target_json(record: Record, unique: bool = True) -> str:
    return json.dumps([e.to_dict() for e in target_entities(record, unique)], ensure_ascii=False)


def user_message(record: Record) -> str:
    """What the user turn says: the seed's instruction, after the context where there is one."""
    parts = [EARLIER.format(context=record.context)] if record.context else []
    if record.context_after:
        parts.append(LATER.format(context=record.context_after))
    return "\n\n".join([*parts, INSTRUCTION.format(text=record.text)])


def prompt_literal(record: Record) -> str:
    """The part of the prompt that is data from a file (tokenised as plain text): the record's
    text, or with context the whole user turn."""
    return user_message(record) if record.context or record.context_after else record.text


def prompt_messages(record: Record, system_prompt: str) -> list[dict[str, str]]:
    msgs = []
    if system_prompt:
        msgs.append({"role": "system", "content": system_prompt})
    msgs.append({"role": "user", "content": user_message(record)})
    return msgs


def training_messages(record: Record, system_prompt: str, unique: bool = True
                      ) -> list[dict[str, str]]:
    return prompt_messages(record, system_prompt) + [
        {"role": "assistant", "content": target_json(record, unique)}
    ]
