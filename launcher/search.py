"""Adaptive sweeps in the sweep folder: rungs decided from files, promotions as resumes.

``advance`` is the one place a rung is decided. It runs under the sweep's submit lock, from
``launcher submit`` (the local executor calls it after each rung; on Slurm a one-CPU decider
job with an ``afterany`` dependency on the rung's jobs calls submit again, and so does a user's
next ``launcher submit``). It is idempotent: the decision is written to ``search.json`` first,
then each promoted run is moved on (its rung's job.json and results archived under
``rungs/<i>/``, then its ``budget.json`` raised), so a decider killed at any point leaves a
state the next call finishes. The spec and the ranking are core.search's.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.fileio import atomic_write_json, read_json
from core.identity import folder_hashes
from core.results import has_results, now_iso
from core.rundir import SEARCH_FILE, RunDir
from core.search import SEARCH_SCHEMA, Budget, SearchSpec, budget_from_doc, decide, metric_of
from launcher.state import ACTIVE, RunState, run_states

DECIDER_FILE = "search-decider.json"
"""The last decider job submitted (Slurm), for status."""


class SearchStateError(ValueError):
    """search.json or a budget.json that cannot be read back; the message names the fix."""


@dataclass
class RunRung:
    """Where one run of a search stands."""

    rung: int
    budget: float
    outcome: str
    """running / waiting / promoted / stopped: <why> / finished (top rung)."""


def read_search(folder: Path) -> dict[str, Any] | None:
    path = folder / SEARCH_FILE
    if not path.is_file():
        return None
    try:
        doc = read_json(path)
    except ValueError as exc:
        raise SearchStateError(f"{exc}; restore it or remove the sweep folder") from None
    if not isinstance(doc, dict) or doc.get("schema") != SEARCH_SCHEMA \
            or not isinstance(doc.get("rungs"), list):
        raise SearchStateError(f"{path}: not a medsweep search record (schema "
                               f"{SEARCH_SCHEMA}); restore it or remove the sweep folder")
    return doc


def start_search(folder: Path, spec: SearchSpec, sweep_path: Path) -> dict[str, Any]:
    """search.json for a new search, or the one there if its spec is this sweep's."""
    doc = read_search(folder)
    if doc is None:
        doc = {"schema": SEARCH_SCHEMA, "spec": spec.as_dict(), "started_at": now_iso(),
               "rungs": []}
        atomic_write_json(folder / SEARCH_FILE, doc)
    elif doc.get("spec") != spec.as_dict():
        from launcher.submit import SubmitError

        raise SubmitError(f"{sweep_path}: {folder} holds a search with another spec "
                          f"({doc.get('spec')}); give the sweep another name to start afresh")
    return doc


def refuse_new_runs(folder: Path, run_ids: list[str], sweep_path: Path) -> None:
    """Runs added to a search after its first rung was decided would train to rung 0 and
    never be ranked: refused (SubmitError), naming them and the fix."""
    doc = read_search(folder)
    if not doc or not doc["rungs"]:
        return
    known = set(doc["rungs"][0].get("scores", {}))
    hashes = {k.rsplit("-", 1)[-1] for k in known}
    if any(r.rsplit("-", 1)[-1] not in hashes for r in run_ids):
        # Runs an older medsweep named with its hash: their config.yaml says which run each is.
        for k in known:
            if Path(k).name == k and k not in (".", ".."):  # a folder of this sweep, no path
                hashes |= folder_hashes(RunDir(folder / k))
    new = [r for r in run_ids if r not in known and r.rsplit("-", 1)[-1] not in hashes]
    if new:
        from launcher.submit import SubmitError

        raise SubmitError(f"{sweep_path}: the search in {folder} decided rung 0 without "
                          f"{len(new)} run(s) of this sweep ({', '.join(new[:3])}"
                          f"{', ...' if len(new) > 3 else ''}); give the changed sweep another "
                          "name to search it afresh")


def budget_of(rd: RunDir) -> Budget | None:
    """The run's budget.json as the job reads it (core.search.budget_from_doc), None where it
    is missing or unusable."""
    if not rd.budget.is_file():
        return None
    try:
        return budget_from_doc(read_json(rd.budget), str(rd.budget), math.inf)
    except ValueError:
        return None


def write_budget(rd: RunDir, spec: SearchSpec, rung: int) -> None:
    atomic_write_json(rd.budget, Budget(rung, spec.rungs[rung]).as_dict())


def members(folder: Path, doc: dict[str, Any], rung: int) -> list[str]:
    """The runs of a rung: every run of the search at rung 0, then each rung's promoted."""
    if rung == 0:
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and RunDir(p).budget.is_file())
    return list(doc["rungs"][rung - 1]["promoted"])


def _performance(rd: RunDir, rung: int) -> Any:
    """The run's performance.json if it is this rung's."""
    if not has_results(rd.performance):
        return None
    try:
        doc = read_json(rd.performance)
    except ValueError:
        return None
    b = doc.get("budget") if isinstance(doc, dict) else None
    return doc if isinstance(b, dict) and b.get("rung") == rung else None


def _settled(folder: Path, run_id: str, rung: int, st: RunState | None) -> bool:
    """Whether a run of a rung has its outcome: this rung's results, or an error the job
    recorded (error.json) after it ended. A run that ended without either (stopped by a
    Ctrl-C, killed, out of time after its requeues) could still resume: the rung waits for
    it (`resubmit` or the next `submit` runs it on)."""
    if st is None or st.state in ACTIVE or st.state == "NOT_SUBMITTED":
        return False
    rd = RunDir(folder / run_id)
    return _performance(rd, rung) is not None or rd.error.is_file()


def _archive(rd: RunDir, rung: int) -> None:
    """Move a promoted run's rung files (job.json, results/) under rungs/<rung>/."""
    dest = rd.rung_archive(rung)
    dest.mkdir(parents=True, exist_ok=True)
    if rd.job.is_file():
        try:
            job_rung = read_json(rd.job).get("rung")
        except (ValueError, AttributeError):
            job_rung = None
        if job_rung == rung:
            rd.job.replace(dest / rd.job.name)
    if _performance(rd, rung) is not None:
        if (dest / rd.results.name).exists():
            shutil.rmtree(dest / rd.results.name)
        rd.results.replace(dest / rd.results.name)
    for stale in (rd.error, rd.progress):
        if stale.is_file():
            stale.unlink()


def apply_decision(folder: Path, spec: SearchSpec, entry: dict[str, Any]) -> None:
    """Move a decided rung's promoted runs on and drop its stopped runs' checkpoints
    (idempotent: each step checks what is already done)."""
    rung = int(entry["rung"])
    for run_id in entry["promoted"]:
        rd = RunDir(folder / run_id)
        b = budget_of(rd)
        if b is not None and b.rung > rung:
            continue
        _archive(rd, rung)
        write_budget(rd, spec, rung + 1)
    for run_id in entry["stopped"]:
        ckpt = RunDir(folder / run_id).checkpoints
        if ckpt.is_dir():
            # A stopped run keeps its model (adapter/) and results; its checkpoints would
            # only serve a promotion.
            shutil.rmtree(ckpt, ignore_errors=True)


def advance(folder: Path, spec: SearchSpec) -> list[str]:
    """Decide every rung whose runs have all ended, move its promoted runs on, and return
    the runs promoted by this call (they now wait to be submitted at their new rung)."""
    doc = read_search(folder)
    if doc is None:
        return []
    for entry in doc["rungs"]:  # finish what a killed decider left
        apply_decision(folder, spec, entry)
    promoted: list[str] = []
    while len(doc["rungs"]) < len(spec.rungs):
        rung = len(doc["rungs"])
        ids = members(folder, doc, rung)
        states = {s.run_id: s for s in run_states(folder)}
        if not ids or not all(_settled(folder, r, rung, states.get(r)) for r in ids):
            break
        scores = {r: metric_of(spec, _performance(RunDir(folder / r), rung)) for r in ids}
        d = decide(spec, rung, scores)
        entry = {"rung": rung, "budget": spec.rungs[rung], "decided_at": now_iso(),
                 "scores": d.scores, "promoted": list(d.promoted), "stopped": d.stopped}
        doc["rungs"].append(entry)
        atomic_write_json(folder / SEARCH_FILE, doc)
        apply_decision(folder, spec, entry)
        promoted += list(d.promoted)
        if not d.promoted:
            break
    return promoted


def rung_progress(folder: Path, doc: dict[str, Any],
                  states: list[RunState]) -> tuple[int, int, int]:
    """(the rung being run, its runs, how many of them have their outcome) for status, from
    the run states status has read already."""
    rung = len(doc["rungs"])
    ids = members(folder, doc, rung)
    by_id = {s.run_id: s for s in states}
    return rung, len(ids), sum(_settled(folder, r, rung, by_id.get(r)) for r in ids)


def stopped_runs(folder: Path) -> set[str]:
    """Runs the search has stopped (never submitted again)."""
    doc = read_search(folder)
    return {r for e in (doc or {}).get("rungs", []) for r in e.get("stopped", {})}


def run_rungs(folder: Path) -> dict[str, RunRung]:
    """Each run's rung, budget and outcome, for status and the leaderboard (from files)."""
    try:
        doc = read_search(folder)
    except SearchStateError:
        return {}
    if doc is None:
        return {}
    rungs = [float(b) for b in doc.get("spec", {}).get("rungs", [])]
    out: dict[str, RunRung] = {}
    for entry in doc["rungs"]:
        rung = int(entry["rung"])
        budget = rungs[rung] if rung < len(rungs) else 0.0
        for r in entry.get("promoted", []):
            out[r] = RunRung(rung + 1, rungs[rung + 1] if rung + 1 < len(rungs) else budget,
                             "promoted")
        for r, why in entry.get("stopped", {}).items():
            out[r] = RunRung(rung, budget, str(why))
    for p in folder.iterdir():
        rd = RunDir(p)
        if p.is_dir() and rd.budget.is_file() and p.name not in out:
            b = budget_of(rd)
            if b is not None:
                out[p.name] = RunRung(b.rung, b.epochs, "in rung")
    return out
