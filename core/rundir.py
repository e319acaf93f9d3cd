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
