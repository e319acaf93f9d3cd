"""Where a training run's time goes, step by step: recorded in medsweep_train.json.

A trainer callback takes a clock reading at each event of the training loop and adds the time
since the previous reading to one bucket:

* ``data``: from the end of the previous step's work to the next step's start (the trainer
  fetches and collates the step's micro-batches and moves them to the device);
* ``compute``: forward, backward and optimizer step (on CUDA the callback synchronises at the
  step's end, so the GPU's work is inside it), less ``compile``;
* ``compile``: torch dynamo compiling inside a step (``compiles``: graphs compiled, counted by
  dynamo's own counter);
* ``logging``, ``validation``, ``checkpoint``: the trainer's log, evaluation and save after a
  step.
"""

from __future__ import annotations

import time
from typing import Any, Callable

BUCKETS = ("compute", "compile", "data", "logging", "validation", "checkpoint")


def dynamo_compile_stats() -> tuple[float, int]:
    """Seconds torch dynamo has spent compiling in this process, and graphs it compiled."""
    try:
        from torch._dynamo import utils
    except ImportError:  # pragma: no cover - torch always has dynamo here
        return 0.0, 0
    seconds = sum(utils.compilation_time_metrics.get("_compile.compile_inner", []))
    return float(seconds), int(utils.counters["stats"].get("unique_graphs", 0))


class StepClock:
    """Accumulates the buckets above; breakdown() is what the summary records."""

    def __init__(self, sync: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.perf_counter,
                 compile_stats: Callable[[], tuple[float, int]] = dynamo_compile_stats) -> None:
        self.sync = sync
        self.clock = clock
        self.compile_stats = compile_stats
        self.seconds = dict.fromkeys(BUCKETS, 0.0)
        self.steps = 0
        self._t0: float | None = None
        self._mark: float | None = None
        self._step_start = 0.0
        self._compile_at_start = 0.0
        self._graphs_at_train_start = 0
        self._total = 0.0
        self.compiles = 0

    def _add(self, bucket: str) -> None:
        now = self.clock()
        if self._mark is not None:
            self.seconds[bucket] += now - self._mark
        self._mark = now

    def train_begin(self) -> None:
        self._t0 = self._mark = self.clock()
        self._graphs_at_train_start = self.compile_stats()[1]

    def step_begin(self) -> None:
        self._add("data")
        self._step_start = self._mark or self.clock()
        self._compile_at_start = self.compile_stats()[0]

    def step_end(self) -> None:
        self.sync()
        now = self.clock()
        compiled, graphs = self.compile_stats()
        in_compile = max(0.0, min(compiled - self._compile_at_start, now - self._step_start))
        self.seconds["compile"] += in_compile
        self.seconds["compute"] += now - self._step_start - in_compile
        self.compiles = graphs - self._graphs_at_train_start
        self.steps += 1
        self._mark = now

    def after(self, bucket: str) -> None:
        self._add(bucket)

    def train_end(self) -> None:
        if self._t0 is not None:
            self._total = self.clock() - self._t0

    def breakdown(self) -> dict[str, Any]:
        """Seconds and share of the training loop's wall time per bucket.

        >>> t = iter([0.0, 1.0, 3.0, 3.5, 4.0, 6.0, 10.0, 10.0])
        >>> c = StepClock(clock=lambda: next(t), compile_stats=lambda: (0.0, 0))
        >>> c.train_begin(); c.step_begin(); c.step_end(); c.after("logging")
        >>> c.step_begin(); c.step_end(); c.after("checkpoint"); c.train_end()
        >>> b = c.breakdown(); b["seconds"]["compute"], b["seconds"]["data"], b["share"]["checkpoint"]
        (4.0, 1.5, 0.4)
        """
        total = self._total or sum(self.seconds.values())
        return {"steps": self.steps, "loop_s": round(total, 3),
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "share": {k: round(v / total, 4) if total > 0 else 0.0
                          for k, v in self.seconds.items()},
                "compiles": self.compiles,
                "s_per_step": round(total / self.steps, 4) if self.steps else None}

    def callback(self) -> Any:
        from transformers import TrainerCallback

        clock = self

        class _Clock(TrainerCallback):  # type: ignore[misc]
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                clock.train_begin()

            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                clock.step_begin()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                clock.step_end()

            def on_log(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                clock.after("logging")

            def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                clock.after("validation")

            def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                clock.after("checkpoint")

            def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                clock.train_end()

        return _Clock()
