"""Constrained decoding: inside a JSON ``"text"`` value the model may only write a span of its
input, inside ``"label"`` only a label seen in training (rules in ``core/grounding.py``).

A transformers ``LogitsProcessor``: at each step, for every row that is inside such a value, the
candidates are tried in order of score and every one that breaks the rule is masked. Greedy
decoding keeps the best allowed token (the exact constrained argmax whenever one of the first
``max_candidates`` is allowed); sampling keeps the allowed ones among the first ``top_k``.
Outside those values the model writes freely, so JSON structure is its own.
"""

from __future__ import annotations

from typing import Any, Sequence

from core.grounding import REPLACEMENT, allowed_piece, escaped_source, json_value_state


class TokenPieces:
    """What each token decodes to on its own, decoded once per evaluation (the constraint and
    the answer-end stop both read it every step)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        p = self._cache.get(token_id)
        if p is None:
            p = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._cache[token_id] = p
        return p

    def joined(self, token_ids: list[int]) -> str:
        """What these tokens decode to together (byte fragments joined into characters)."""
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=False))


class SpanConstraint:
    """Per-row state for one generate() call over left-padded prompts of width prompt_width."""

    def __init__(self, tokenizer: Any, sources: Sequence[str], labels: Sequence[str],
                 prompt_width: int, *, greedy: bool, top_k: int = 64,
                 max_candidates: int = 2048, pieces: TokenPieces | None = None):
        self.piece = pieces or TokenPieces(tokenizer)
        self.sources = [escaped_source(s) for s in sources]
        self.non_ascii = [not s.isascii() for s in sources]
        """Whether byte fragments may appear in a row's values: its input has a character
        beyond ASCII (escaped_source may have normalised it away)."""
        self.labels = list(labels)
        self.width = prompt_width
        self.greedy = greedy
        self.top_k = top_k
        self.max_candidates = max_candidates
        self.texts = [""] * len(sources)
        """Each row's answer so far: finished pieces, then its byte fragments decoded together."""
        self.seen = [0] * len(sources)
        self._done = [""] * len(sources)
        self._frags: list[list[int]] = [[] for _ in sources]
        self.pending = [0] * len(sources)
        """Byte fragments at the end of each row still waiting for their character."""
        self.masked_steps = 0
        """Row-steps at which a constraint removed the model's first choice."""

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        ids = input_ids[:, self.width:].tolist()
        for row, gen in enumerate(ids):
            if self.seen[row] < len(gen):
                self._extend(row, gen[self.seen[row]:])
                self.seen[row] = len(gen)
        rows = [(r, st) for r in range(len(ids))
                if (st := json_value_state(self.texts[r])) is not None]
        if not rows:
            return scores
        k = min(self.max_candidates if self.greedy else self.top_k, scores.shape[-1])
        order = torch.topk(scores[[r for r, _ in rows]], k, dim=-1).indices.tolist()
        for (row, state), cands in zip(rows, order, strict=True):
            keep = []
            for tok in cands:
                if allowed_piece(self.piece(tok), state, self.sources[row], self.labels,
                                 self.pending[row], self.non_ascii[row]):
                    keep.append(tok)
                    if self.greedy:
                        break
            if not keep:
                continue  # nothing allowed in reach: leave the row to the model
            if keep[0] != cands[0]:
                self.masked_steps += 1
            mask = torch.full_like(scores[row], float("-inf"))
            idx = torch.tensor(keep, device=scores.device)
            mask[idx] = scores[row, idx]
            scores[row] = mask
        return scores

    def _extend(self, row: int, tokens: list[int]) -> None:
        """Add a row's new tokens to its text. A token that decodes to U+FFFD on its own is a
        byte fragment of a multi-byte character: the row's trailing fragments are decoded
        together, so a complete character reads as itself (per piece it would stay U+FFFD and
        no later piece could match the input)."""
        for t in tokens:
            piece = self.piece(t)
            if REPLACEMENT in piece:
                self._frags[row].append(t)
                continue
            if self._frags[row]:
                self._done[row] += self.piece.joined(self._frags[row])
                self._frags[row] = []
            self._done[row] += piece
        tail = self.piece.joined(self._frags[row]) if self._frags[row] else ""
        self.pending[row] = len(tail) - len(tail.rstrip(REPLACEMENT))
        self.texts[row] = self._done[row] + tail


def logits_processors(constraint: SpanConstraint) -> Any:
    from transformers import LogitsProcessorList

    return LogitsProcessorList([constraint])
