"""progress.json: what `launcher status` shows while a run trains or evaluates.

Written atomically by a trainer callback, with the loss history that `plot-loss` reads. The
file holds the whole history, so it is rewritten at most every WRITE_EVERY_S seconds (and at
each checkpoint and at the end), not on every step: rewriting it per step costs O(steps^2)
bytes over a long run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from core.fileio import atomic_write_json, read_json
from core.results import now_iso

WRITE_EVERY_S = 2.0


class ProgressWriter:
    def __init__(self, path: Path | None, phase: str, keep_history: bool = False) -> None:
        self.path = path
        self.phase = phase
        self.start = time.time()
        self.history: list[dict[str, float]] = []
        self.last_line = 0.0
        self.last_write = 0.0
        if keep_history and path is not None and path.is_file():
            try:
                self.history = list(read_json(path).get("history", []))
            except (ValueError, AttributeError):
                self.history = []

    def update(self, step: int, total: int, force: bool = False, **extra: Any) -> None:
        elapsed = time.time() - self.start
        eta = (elapsed / step * (total - step)) if step and total >= step else None
        doc = {"phase": self.phase, "step": step, "total": total, "elapsed_s": round(elapsed, 1),
               "eta_s": None if eta is None else round(eta, 1), "updated_at": now_iso(),
               **extra, "history": self.history}
        now = time.time()
        if self.path is not None and (force or step == total
                                      or now - self.last_write >= WRITE_EVERY_S):
            self.last_write = now
            atomic_write_json(self.path, doc)
        # One line per interval in logs: no carriage-return bars in job files.
        if time.time() - self.last_line > 10 or step == total:
            self.last_line = time.time()
            loss = extra.get("loss")
            print(f"[medsweep] {self.phase} {step}/{total}"
                  + (f" loss={loss:.4f}" if isinstance(loss, float) else "")
                  + (f" eta={eta:.0f}s" if eta is not None else ""), file=sys.stderr, flush=True)


def trainer_callback(writer: ProgressWriter) -> Any:
    from transformers import TrainerCallback

    class _Cb(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:
            logs = logs or {}
            if "loss" in logs:
                writer.history.append({"step": state.global_step, "loss": float(logs["loss"]),
                                       "epoch": float(state.epoch or 0)})
                writer.update(state.global_step, state.max_steps, loss=float(logs["loss"]),
                              epoch=float(state.epoch or 0))

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            # A resumed run keeps the history up to its checkpoint: make sure it is on disk.
            last = writer.history[-1] if writer.history else {}
            writer.update(state.global_step, state.max_steps, force=True,
                          loss=last.get("loss"), epoch=float(state.epoch or 0))

    return _Cb()
