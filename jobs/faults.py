"""Fault injection for the test suite: faults that cannot be caused for real on a CPU machine.

Only a CUDA out-of-memory qualifies (there is no GPU on CI). The hooks raise the very exception
class torch raises (``torch.OutOfMemoryError``, which ``torch.cuda.OutOfMemoryError`` names),
so the recovery code runs exactly as it would on a GPU. Inactive unless the variables are set.

MEDSWEEP_FAULT_OOM_TRAIN_BATCH_ABOVE=N   training micro-batches larger than N run out of memory
MEDSWEEP_FAULT_OOM_EVAL_BATCH_ABOVE=N    generation batches larger than N run out of memory
MEDSWEEP_FAULT_OOM_TRAIN_LENGTH_ABOVE=N  training with max_seq_length above N runs out of memory
                                         at every batch (one run of a sweep fails, not all)
MEDSWEEP_FAULT_STEP_SLEEP_S=S            each training step takes S seconds more (a run as long
                                         as a time-limit test needs, on a fast or a slow machine)
"""

from __future__ import annotations

import os
import time
from typing import Any


def _limit(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def check_eval_batch(size: int) -> None:
    limit = _limit("MEDSWEEP_FAULT_OOM_EVAL_BATCH_ABOVE")
    if limit is not None and size > limit:
        import torch

        raise torch.OutOfMemoryError(f"CUDA out of memory (injected: batch {size} > {limit})")


def train_callbacks() -> list[Any]:
    limit = _limit("MEDSWEEP_FAULT_OOM_TRAIN_BATCH_ABOVE")
    length = _limit("MEDSWEEP_FAULT_OOM_TRAIN_LENGTH_ABOVE")
    sleep_s = float(os.environ.get("MEDSWEEP_FAULT_STEP_SLEEP_S") or 0)
    if limit is None and length is None and not sleep_s:
        return []
    import torch
    from transformers import TrainerCallback

    class _OOM(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if limit is not None and args.per_device_train_batch_size > limit \
                    and state.global_step >= 1:
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory (injected: batch {args.per_device_train_batch_size} "
                    f"> {limit})")
            if length is not None and (args.max_length or 0) > length:
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory (injected: length {args.max_length} > {length})")
            if sleep_s:
                time.sleep(sleep_s)

    return [_OOM()]
