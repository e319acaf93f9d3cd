"""The checkpoint policy: when a training run writes a checkpoint it can resume from.

Checkpoints cost real time (the optimizer state, the weights; on one H200 ten saves per run
took 75% of a Gemma 3 270M run), so they are written by time and on demand, not by count:

* every ``train.checkpoint_every_min`` minutes of training (a crash loses at most that much);
* every ``train.save_steps`` optimizer steps, where the user asks for it (0: never by count);
* at the end of the epoch that reaches a budget (``stop_at_epoch``, an adaptive sweep's rung):
  the checkpoint a promotion resumes from, after which training stops and the model is saved;
* when the job is told it will stop: Slurm's time-limit warning (USR2, which submitit turns
  into a requeue), a preemption's SIGTERM, or a pack stopping its runs. The request is taken at
  the end of the optimizer step in flight: the checkpoint is written, training stops, and
  ``train`` raises :class:`StoppedToResume` instead of saving a final model. A restart on the
  same folder resumes from that checkpoint, bit-exact.

The tokenizer is not part of a checkpoint (resuming does not read it; the final model folder
gets it once).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

RESUMABLE_EXIT = 75
"""Exit status of a process whose training stopped on request after a checkpoint: running it
again resumes (EX_TEMPFAIL)."""


class StoppedToResume(Exception):
    """Training stopped on request after writing a checkpoint; run again to resume."""

    def __init__(self, step: int, reason: str, signum: int | None = None) -> None:
        super().__init__(f"training stopped at step {step} ({reason}) after writing "
                         f"checkpoint-{step}; run again on the same folder to resume")
        self.step = step
        self.reason = reason
        self.signum = signum
        """The signal that asked for the stop, where one did."""


@dataclass
class CheckpointPolicy:
    """When to checkpoint: every_s seconds of training, every_steps steps (0: never by
    count), and at once when stop() is called (a signal handler may call it)."""

    every_s: float
    every_steps: int = 0
    clock: Callable[[], float] = time.monotonic
    stop_reason: str | None = None
    stop_signal: int | None = None
    saves: int = 0
    stop_at_epoch: float | None = None
    """Stop (after a checkpoint) at the end of the epoch reaching this many epochs."""
    budget_reached: bool = False
    _last: float = field(default=0.0, init=False)

    def start(self) -> None:
        self._last = self.clock()

    def stop(self, reason: str, signum: int | None = None) -> None:
        """Checkpoint at the end of the current optimizer step, then stop training."""
        if self.stop_reason is None:
            self.stop_reason, self.stop_signal = reason, signum

    def due(self, step: int) -> bool:
        """Whether the step that just ended should be checkpointed.

        >>> t = [0.0]
        >>> p = CheckpointPolicy(every_s=60, every_steps=0, clock=lambda: t[0]); p.start()
        >>> p.due(1)
        False
        >>> t[0] = 61.0; p.due(2)
        True
        >>> p.saved(); p.due(3)
        False
        >>> p.stop("signal USR2"); p.due(4)
        True
        """
        if self.stop_reason is not None:
            return True
        if self.every_steps and step % self.every_steps == 0:
            return True
        return self.every_s > 0 and self.clock() - self._last >= self.every_s

    def at_budget(self, epoch: float | None) -> bool:
        """Whether training has reached stop_at_epoch (an epoch's end is a whole number).

        >>> p = CheckpointPolicy(every_s=0, stop_at_epoch=2.0)
        >>> p.at_budget(1.0), p.at_budget(2.0), CheckpointPolicy(every_s=0).at_budget(5.0)
        (False, True, False)
        """
        return (self.stop_at_epoch is not None and epoch is not None
                and epoch >= self.stop_at_epoch - 1e-6)

    def saved(self) -> None:
        self.saves += 1
        self._last = self.clock()

    def callback(self) -> Any:
        """The trainer callback that applies this policy."""
        from transformers import TrainerCallback

        policy = self

        class _Checkpoints(TrainerCallback):  # type: ignore[misc]
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                policy.start()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if policy.due(state.global_step) and state.global_step < state.max_steps:
                    control.should_save = True
                if policy.stop_reason is not None:
                    control.should_save = state.global_step < state.max_steps
                    control.should_training_stop = True

            def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if policy.at_budget(state.epoch) and state.global_step < state.max_steps:
                    # The trainer then validates (eval_strategy epoch) and saves: the checkpoint
                    # holds this epoch's validation loss, as a straight run's log does.
                    policy.budget_reached = True
                    control.should_save = True
                    control.should_training_stop = True

            def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                policy.saved()

        return _Checkpoints()


STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
"""Slurm's time-limit warning (--signal=USR2@...) and a preemption's or scancel's TERM."""


@contextmanager
def stop_on_signals(policy: CheckpointPolicy,
                    signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """While training, the given signals ask the policy to checkpoint and stop (in the main
    thread only; elsewhere nothing is installed). The handlers in place before come back
    afterwards."""
    try:
        old = {s: signal.getsignal(s) for s in signals}
        for s in signals:
            signal.signal(s, lambda signum, _frame: policy.stop(
                f"signal {signal.Signals(signum).name}", signum))
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint whose trainer_state.json reads back: one a crash or a full disk
    left half-written is named in the log and passed over for the one before it."""
    if not ckpt_dir.is_dir():
        return None
    cks = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
                  and (p / "trainer_state.json").is_file()),
                 key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for ck in cks:
        why = unreadable_state(ck / "trainer_state.json")
        if why is None:
            return ck
        from jobs.joblog import log

        log(f"{ck / 'trainer_state.json'}: {why}; resuming from the checkpoint before it")
    return None


def unreadable_state(path: Path) -> str | None:
    """Why a checkpoint's trainer_state.json cannot be resumed from (None: it can)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable ({type(exc).__name__}: {str(exc)[:80]})"
    return None if isinstance(doc, dict) else "not a trainer state"
