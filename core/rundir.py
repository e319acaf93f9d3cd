"""The run directory: the contract between the launcher and the jobs.

runs/<sweep>/sweep.yaml, and per run: config.yaml, job.json, progress.json, checkpoints/,
adapter/, results/{performance.json,true_pred_entities.json}, logs/, error.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ERROR_FILE = "error.json"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def job(self) -> Path:
        return self.path / "job.json"

    @property
    def progress(self) -> Path:
        return self.path / "progress.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def results(self) -> Path:
        return self.path / "results"

    @property
    def performance(self) -> Path:
        return self.results / "performance.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def error(self) -> Path:
        return self.path / ERROR_FILE


def clean_progress(doc: object) -> dict | None:
    """A progress.json as status and plots may trust it: only well-typed fields survive.

    Another process writes it (and anyone who can write the runs folder could), so a garbled
    or hostile file must not crash status or make it allocate from its numbers.

    >>> clean_progress({"step": "5", "total": 10, "loss": float("nan"), "history": [5]})
    {'total': 10, 'history': []}
    >>> clean_progress([1, 2, 3]) is None
    True
    """
    import math

    if not isinstance(doc, dict):
        return None

    def count(v: object) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**12 else None

    def real(v: object) -> float | None:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return float(v) if ok else None  # type: ignore[arg-type]

    out: dict = {}
    for key in ("step", "total"):
        v = count(doc.get(key))
        if v is not None and (key == "step" or v > 0):
            out[key] = v
    if "step" in out and "total" in out and out["step"] > out["total"]:
        out["step"] = out["total"]
    for key in ("loss", "eta_s", "epoch"):
        x = real(doc.get(key))
        if x is not None:
            out[key] = x
    if isinstance(doc.get("phase"), str):
        out["phase"] = doc["phase"][:40]
    if isinstance(doc.get("done"), bool):
        out["done"] = doc["done"]
    hist = doc.get("history")
    if isinstance(hist, list):
        out["history"] = [{"step": h["step"], "loss": float(h["loss"])} for h in hist[:100_000]
                          if isinstance(h, dict) and count(h.get("step")) is not None
                          and real(h.get("loss")) is not None]
    return out
