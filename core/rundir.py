"""The run directory: the contract between the launcher and the jobs, and the one home of
its file names (nothing else spells them).

runs/<sweep>/sweep.yaml, demo-data/, .submit.lock, search.json, and per run: config.yaml,
job.json, progress.json, error.json, cancel.request, budget.json, rungs/<i>/, checkpoints/ (trainer checkpoints,
micro_batch.json), adapter/ (the trained model folder: medsweep_train.json, medsweep_train_started.json),
logs/ (run.log: a packed run's own output),
results/{performance.json,true_pred_entities.json}.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

# The sweep folder
SWEEP_FILE = "sweep.yaml"
DEMO_DATA = "demo-data"
SUBMITIT = "_submitit"
"""Where submitit's files went before they moved to job_files_dir (still never followed)."""
SUBMIT_LOCK = ".submit.lock"
SEARCH_FILE = "search.json"
"""An adaptive sweep's decisions (core.search)."""
# A run folder
CONFIG_FILE = "config.yaml"
JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
ERROR_FILE = "error.json"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
RESULTS = "results"
LOGS = "logs"
CANCEL_REQUEST = "cancel.request"
BUDGET_FILE = "budget.json"
"""An adaptive sweep's run: the rung and the epochs it is to train to (core.search)."""
SHARED_TRAINING_FILE = "shared_training.json"
"""A run that differs from another of its sweep only in what evaluation reads: the run whose
trained model it is evaluated with ({"trained_in": RUN_ID}; launcher.sharing)."""
FOLLOWERS_FILE = "followers.json"
"""The runs that a run's job evaluates with its model once it is trained ({"runs": [...]})."""
RUNG_ARCHIVE = "rungs"
"""A promoted run's earlier rungs: rungs/<i>/{job.json,performance.json,true_pred...}."""
"""Written by ``launcher cancel`` for a run that shares its job with others (a pack): the
pack stops that run's process alone."""
# logs/
RUN_LOG = "run.log"
"""stdout and stderr of a packed run's own process (an unpacked run logs in its sweep's
job_files_dir)."""
# results/
PERFORMANCE = "performance.json"
TRUE_PRED = "true_pred_entities.json"
# A trained model folder (adapter/, or any --output-dir of jobs.train)
TRAIN_SUMMARY = "medsweep_train.json"
TRAIN_STARTED = "medsweep_train_started.json"
# checkpoints/
MICRO_BATCH_FILE = "micro_batch.json"


JOB_FILES_ENV = "MEDSWEEP_JOB_FILES"
DEFAULT_JOB_FILES = "~/.cache/medsweep/jobs"


def job_files_root() -> Path:
    """Where submitit's files of your sweeps go (the pickled job calls every job loads, the
    job logs): a folder only you can write, never the shared runs folder. MEDSWEEP_JOB_FILES
    moves it (on a cluster: to private storage the compute nodes can read)."""
    return Path(os.environ.get(JOB_FILES_ENV) or DEFAULT_JOB_FILES).expanduser()


def job_files_dir(sweep_folder: Path) -> Path:
    """This sweep's folder of submitit files under job_files_root(), named after the sweep and
    its resolved path (two runs folders' sweeps of one name do not mix)."""
    real = str(Path(sweep_folder).resolve())
    digest = hashlib.sha256(real.encode()).hexdigest()[:12]
    return job_files_root() / f"{Path(real).name}-{digest}"


def private_job_files_dir(sweep_folder: Path) -> Path:
    """job_files_dir(), created with its root readable and writable by you alone (0700); a
    root that is a link or someone else's is refused (ValueError)."""
    root = job_files_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    _own_private_folder(root, f"point {JOB_FILES_ENV} at a private folder")
    folder = job_files_dir(sweep_folder)
    folder.mkdir(exist_ok=True, mode=0o700)
    # Its name is predictable: one planted before the root was made private (a link, or a
    # folder of someone else's) would receive the pickled job calls every job loads.
    _own_private_folder(folder, "remove it and submit again")
    return folder


def _own_private_folder(path: Path, fix: str) -> None:
    """A real folder of yours, then made 0700; ValueError naming it and the fix otherwise."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ValueError(f"{path}: not a folder of yours (a link, or another user's); {fix}")
    os.chmod(path, 0o700)


WRITTEN_IN_RUN = (CHECKPOINTS, ADAPTER, RESULTS, LOGS, f"{LOGS}/{RUN_LOG}", PROGRESS_FILE,
                  ERROR_FILE, JOB_FILE, CONFIG_FILE, BUDGET_FILE, RUNG_ARCHIVE,
                  SHARED_TRAINING_FILE, FOLLOWERS_FILE,
                  f"{ADAPTER}/scratch_base",
                  f"{RESULTS}/{PERFORMANCE}", f"{RESULTS}/{TRUE_PRED}")
"""What medsweep writes inside a run folder: none of them may be a symbolic link."""


def planted_links(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """The paths among folder/name (and folder itself) that are symbolic links: a runs folder
    may be shared storage, and a write must never follow a link someone put there."""
    return [p for p in (folder, *(folder / n for n in names)) if p.is_symlink()]


def refuse_links(folder: Path, names: tuple[str, ...]) -> None:
    """ValueError naming the first planted link (planted_links) and the fix."""
    links = planted_links(folder, names)
    if links:
        raise ValueError(f"{links[0]} is a symbolic link; medsweep never writes through a link "
                         "in a runs folder (it may be shared): remove it and submit again")


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def job(self) -> Path:
        return self.path / JOB_FILE

    @property
    def progress(self) -> Path:
        return self.path / PROGRESS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def performance(self) -> Path:
        return self.results / PERFORMANCE

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    @property
    def error(self) -> Path:
        return self.path / ERROR_FILE

    @property
    def cancel_request(self) -> Path:
        return self.path / CANCEL_REQUEST

    @property
    def run_log(self) -> Path:
        return self.logs / RUN_LOG

    @property
    def budget(self) -> Path:
        return self.path / BUDGET_FILE

    @property
    def shared_training(self) -> Path:
        return self.path / SHARED_TRAINING_FILE

    @property
    def followers(self) -> Path:
        return self.path / FOLLOWERS_FILE

    def rung_archive(self, rung: int) -> Path:
        return self.path / RUNG_ARCHIVE / str(rung)


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
