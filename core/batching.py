"""How many examples go through the GPU at once: the micro-batch the job actually uses.

The seed's batch settings (16 per device x 4 accumulated) were chosen for long records on small
cards. On short records (a BC5CDR sentence is ~120 tokens) a 16-row micro-batch leaves an H100
idle most of the step: the host launching kernels sets the pace (benchmarks/RESULTS.md, profile:
GPU busy 18% of the step). Raising the micro-batch while lowering accumulation keeps the examples
per optimizer step, so the optimisation is the same, and costs only memory that is free anyway
(Slurm hands a job the whole card).

>>> grow_micro_batch(16, 4, lambda rows: rows * 300 <= 20_000)
(64, 1)
>>> grow_micro_batch(16, 4, lambda rows: rows * 300 <= 12_000)
(32, 2)
>>> grow_micro_batch(16, 4, lambda rows: False)
(16, 4)
>>> grow_micro_batch(8, 3, lambda rows: True)
(24, 1)
"""

from __future__ import annotations

from typing import Callable

from core.vram import ModelShape, activation_bytes

# Share of the memory free after loading the model that the grown micro-batch's activations
# may take; the optimizer states and allocator slack need the rest. Measured on one H100
# (benchmarks/RESULTS.md, stop 41): Gemma 3 270M with the answer-only head, BC5CDR, estimated
# 26.2 / 52.3 GB of activations for 32 / 64 rows, peaks 28.9 / 52.4 GB with the model and
# optimizer. At 0.5 the job stayed at 32 x 2 (214 examples/s) where 64 x 1 ran (423).
FREE_SHARE = 0.8


def grow_micro_batch(batch: int, accumulation: int, fits: Callable[[int], bool]
                     ) -> tuple[int, int]:
    """The largest micro-batch batch*k (k divides accumulation) for which fits(rows) holds,
    with accumulation // k: the examples per optimizer step never change."""
    for k in range(accumulation, 1, -1):
        if accumulation % k == 0 and fits(batch * k):
            return batch * k, accumulation // k
    return batch, accumulation


def fits_free_memory(shape: ModelShape, longest_tokens: int, free_bytes: int,
                     checkpointing: bool = True, chunked_head: bool = True,
                     answer_tokens: int = 0) -> Callable[[int], bool]:
    """fits(rows): a padded micro-batch of the longest records stays within FREE_SHARE of the
    free GPU memory (length-grouped batches are never wider than the longest record).
    answer_tokens: with the LM head applied only at the answers (train.answer_only_logits),
    the longest answer's tokens, the logits' positions per row; 0: every position's.

    >>> from core.vram import ModelShape
    >>> gemma = ModelShape(0.27, 640, 18, 2048, 262144)
    >>> full = fits_free_memory(gemma, 400, 70 * 2**30, False, False)
    >>> answers = fits_free_memory(gemma, 400, 70 * 2**30, False, False, answer_tokens=60)
    >>> full(32), full(64), answers(64)
    (True, False, True)
    """
    return lambda rows: (activation_bytes(
        shape, rows * longest_tokens, checkpointing, chunked_head,
        rows * answer_tokens if answer_tokens else None) <= FREE_SHARE * free_bytes)
