"""How many records go through the model at once: the micro-batch grown into the free memory
of the card (its share, where runs share it), kept across a resume, and halved (with the
accumulation doubled, so the step is the same) when CUDA runs out of memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import RunConfig
from core.fileio import atomic_write_json, read_json
from core.rundir import MICRO_BATCH_FILE
from jobs.checkpointing import CheckpointPolicy, last_checkpoint
from jobs.errors import TrainError
from jobs.mps import PACK_RUNS_ENV


@dataclass
class _Fit:
    out: Any
    trainer: Any
    bs: int
    ga: int
    oom_retries: list[dict[str, Any]]


def halved_batch(bs: int, ga: int) -> tuple[int, int]:
    """The micro-batch after an out-of-memory error: half the rows, the same examples per
    optimizer step (or one more, when bs x ga is odd).

    >>> halved_batch(64, 1), halved_batch(5, 3)
    ((32, 2), (2, 8))
    """
    new_bs = bs // 2
    return new_bs, -(-bs * ga // new_bs)


def _at_budget_already(trainer: Any, resume: Path | None, policy: CheckpointPolicy) -> Any:
    """Where the checkpoint to resume from already reached the budget (the job stopped after
    it and before saving the model), load it and train nothing: the trainer would otherwise
    run the next epoch before its epoch-end check. Returns the TrainOutput, or None."""
    if resume is None or policy.stop_at_epoch is None:
        return None
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
    if not policy.at_budget(state.epoch):
        return None
    trainer._load_from_checkpoint(str(resume))
    trainer.state = state
    policy.budget_reached = True
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    return TrainOutput(state.global_step, losses[-1] if losses else 0.0, {})


def _fit_with_oom_retry(make_trainer: Callable[[int, int], Any], model: Any, bs: int, ga: int,
                        checkpoint_dir: Path, writer: Any, progress_path: Path | None,
                        cuda: bool, policy: CheckpointPolicy | None = None) -> _Fit:
    """trainer.train(), resumed from the last checkpoint where there is one; an out-of-memory
    error halves the micro-batch (halved_batch) and trains again from that checkpoint, or from
    the initial weights where none was written yet. Batch 1 out of memory is a TrainError."""
    import gc

    import torch

    from jobs import modeling

    # Trainable weights as they start, to undo partial steps after an out-of-memory error
    # that strikes before the first checkpoint.
    initial = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
               if p.requires_grad}
    oom_retries: list[dict[str, Any]] = []
    while True:
        trainer = make_trainer(bs, ga)
        resume = last_checkpoint(checkpoint_dir)
        if resume is not None:
            modeling.log(f"resuming from {resume.name}")
            hist = read_json(progress_path) if progress_path and progress_path.is_file() else {}
            writer.history = [h for h in hist.get("history", [])
                              if h.get("step", 0) <= int(resume.name.split("-")[-1])]
        else:
            writer.history = []
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in initial:
                        p.copy_(initial[n].to(p.device))
        try:
            out = _at_budget_already(trainer, resume, policy) if policy else None
            if out is None:
                out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            return _Fit(out, trainer, bs, ga, oom_retries)
        except torch.OutOfMemoryError as exc:
            step = int(trainer.state.global_step)
            del trainer
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            if bs == 1:
                raise TrainError(
                    f"out of GPU memory at per-device batch 1 (step {step}): load in 4-bit "
                    "(--model-load-in-4bit true), lower --model-max-seq-length, or plan a "
                    "bigger GPU") from exc
            new_bs, new_ga = halved_batch(bs, ga)
            oom_retries.append({"step": step, "from": f"{bs}x{ga}", "to": f"{new_bs}x{new_ga}",
                                "error": str(exc).splitlines()[0][:200]})
            modeling.log(f"out of memory at step {step} with batch {bs} x GA {ga}; retrying "
                         f"with {new_bs} x {new_ga}")
            bs, ga = new_bs, new_ga
            _save_micro_batch(checkpoint_dir, bs, ga, {"after_oom_at_step": step})


def _micro_batch(cfg: RunConfig, model: Any, examples: list[Any], checkpoint_dir: Path,
                 cuda: bool, free_bytes: int | None = None,
                 checkpointing: bool = True, chunked_head: bool = True,
                 answer_only: bool = False) -> tuple[int, int]:
    """The (per-device batch, accumulation) this run trains with; see core.batching.
    free_bytes: the GPU memory free now (read from the device when None); answer_only: the
    head is applied at the answers' tokens only (resolved_answer_only)."""
    from jobs import modeling

    bs, ga = cfg.train.per_device_batch_size, cfg.train.gradient_accumulation_steps
    saved = checkpoint_dir / MICRO_BATCH_FILE
    if saved.is_file() and last_checkpoint(checkpoint_dir) is not None:
        # A resumed run keeps the split its checkpoints were made with (the length-grouped
        # order depends on it), whatever memory this card has free.
        doc = read_json(saved)
        return int(doc["per_device_batch_size"]), int(doc["gradient_accumulation_steps"])
    if cuda and cfg.train.grow_micro_batch and ga > 1 and examples:
        from core.batching import fits_free_memory, grow_micro_batch
        from core.vram import ModelShape

        # Multimodal configs (Gemma 3 4B+) keep the language model's shape in text_config.
        c = getattr(model.config, "text_config", None) or model.config
        shape = ModelShape(0.0, c.hidden_size, c.num_hidden_layers, c.intermediate_size,
                           c.vocab_size)
        free = free_share(modeling.free_gpu_bytes() if free_bytes is None else free_bytes)
        longest = max(len(e.input_ids) for e in examples)
        answers = (max(sum(1 for x in e.labels if x != -100) for e in examples)
                   if answer_only and not chunked_head else 0)
        new_bs, new_ga = grow_micro_batch(bs, ga, fits_free_memory(
            shape, longest, free, checkpointing, chunked_head, answer_tokens=answers))
        if (new_bs, new_ga) != (bs, ga):
            modeling.log(f"micro-batch {bs} x GA {ga} -> {new_bs} x GA {new_ga} (same "
                         f"{bs * ga} examples per optimizer step; longest record {longest} "
                         f"tokens, {free / 2**30:.1f} GiB free; --train-grow-micro-batch false "
                         "keeps it as given)")
        bs, ga = new_bs, new_ga
    _save_micro_batch(checkpoint_dir, bs, ga, {})
    return bs, ga


def free_share(free: int, environ: Mapping[str, str] = os.environ) -> int:
    """This run's share of the free GPU memory: all of it alone, 1/N of it in a pack of N
    runs starting side by side on one card (jobs.pack sets the count).

    >>> free_share(120, {}), free_share(120, {"MEDSWEEP_PACK_RUNS": "12"})
    (120, 10)
    >>> free_share(120, {"MEDSWEEP_PACK_RUNS": "x"})
    120
    """
    try:
        runs = int(environ.get(PACK_RUNS_ENV, "1"))
    except ValueError:
        runs = 1
    return free // max(1, runs)


def _save_micro_batch(checkpoint_dir: Path, bs: int, ga: int, extra: dict[str, Any]) -> None:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(checkpoint_dir / MICRO_BATCH_FILE,
                      {"per_device_batch_size": bs, "gradient_accumulation_steps": ga, **extra})
