"""A warm worker keeps the base model it loaded for full fine-tuning, so its next run of the same
model starts from memory instead of from disk (issue 44: the load was 7-8.5 s of a later item's
12-20 s to its first step on an H100).

When an item of a warm worker (jobs.worker) loads a model to fine-tune in full, the loaded model
stays in the worker with a host copy of its weights as loaded. The next item that loads the same
model with the same settings gets that model back with every weight, buffer and requires_grad
flag restored from the copy, its gradients dropped, and what the previous trainer attached
(accelerate's mixed-precision forward wrapper) removed: the same model a fresh load gives, so
training is the same (tests/test_warm_model.py compares the trained weights byte for byte with a
process of its own). A load of another model drops the kept one first.

Only where it is safe and cheap: full fine-tuning (LoRA rewires the model's modules), no 4- or
8-bit loading, one device (no device_map), weights of at most KEEP_MAX_BYTES (the kept model
stays on the card between items), and not with MEDSWEEP_KEEP_MODEL=0. Outside a warm worker
nothing is kept.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

KEEP_MAX_BYTES = 3 * 2**30
"""The largest model (its weights' bytes) a worker keeps between items: a 270M to 1B model in
bf16; larger ones are loaded again (their load time matters less beside their training)."""
KEEP_ENV = "MEDSWEEP_KEEP_MODEL"


@dataclass
class _Kept:
    key: tuple[Any, ...]
    model: Any
    tokenizer: Any
    params: dict[str, Any]
    """Host copies of the parameters as loaded (tied weights once)."""
    buffers: dict[str, Any]
    requires_grad: dict[str, bool]
    attrs: frozenset[str]
    """The model's own instance attributes as loaded (a trainer's additions go)."""
    use_cache: Any
    encoded: dict[str, Any] = field(default_factory=dict)
    """Data sets tokenised with this model's tokenizer, by what they depend on (encoded)."""


_kept: _Kept | None = None
taken = False
"""Whether the last training load of this process took the kept model."""


def wanted(full_finetuning: bool, quantised: bool, device_map: Any) -> bool:
    """Whether this load may keep (or take) a kept model."""
    import jobs

    return (jobs.WORKER_ITEM > 0 and full_finetuning and not quantised and device_map is None
            and os.environ.get(KEEP_ENV, "1") != "0")


def take(key: tuple[Any, ...]) -> tuple[Any, Any] | None:
    """The kept model and tokenizer for this key, restored to their loaded state; None (and
    the kept one dropped) where another model is kept."""
    global taken
    taken = False
    if _kept is None:
        return None
    if _kept.key != key:
        drop()
        return None
    _restore(_kept)
    taken = True
    return _kept.model, _kept.tokenizer


def keep(key: tuple[Any, ...], model: Any, tokenizer: Any) -> bool:
    """Keep a freshly loaded model for the worker's next items (False: too big)."""
    global _kept
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if size > KEEP_MAX_BYTES:
        return False
    params = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}
    buffers = {n: b.detach().to("cpu", copy=True) for n, b in model.named_buffers()}
    _kept = _Kept(key, model, tokenizer, params, buffers,
                  {n: p.requires_grad for n, p in model.named_parameters()},
                  frozenset(vars(model)), getattr(model.config, "use_cache", None))
    return True


def drop() -> None:
    """Forget the kept model (its memory goes with the next collection)."""
    global _kept, taken
    _kept, taken = None, False


def _restore(k: _Kept) -> None:
    import torch

    model = k.model
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(k.params[n])
            p.requires_grad_(k.requires_grad[n])
            p.grad = None
        for n, b in model.named_buffers():
            if n in k.buffers:
                b.copy_(k.buffers[n])
    for attr in set(vars(model)) - k.attrs:  # e.g. accelerate's forward and _original_forward
        delattr(model, attr)
    if k.use_cache is not None:
        model.config.use_cache = k.use_cache
    model.train()


def encoded(tokenizer: Any, records: Any, settings: tuple[Any, ...],
            encode: Callable[[], Any]) -> Any:
    """encode(), or what it returned for the same records and settings with the kept model's
    tokenizer (a worker's runs of one model on one data set tokenise it once)."""
    if _kept is None or tokenizer is not _kept.tokenizer:
        return encode()
    key = hashlib.sha256(repr((records, settings)).encode()).hexdigest()
    if key not in _kept.encoded:
        _kept.encoded[key] = encode()
    return _kept.encoded[key]
