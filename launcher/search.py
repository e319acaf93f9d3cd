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
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core.fileio import atomic_write_json, read_json
from core.identity import folder_hashes
from core.results import has_results, now_iso
from core.rundir import (
    BUDGET_FILE,
    CHECKPOINTS,
    ERROR_FILE,
    JOB_FILE,
    PROGRESS_FILE,
    RESULTS,
    SEARCH_FILE,
    RunDir,
    refuse_links,
)
from core.search import (
    SEARCH_SCHEMA,
    Budget,
    SearchSpec,
    asha_promotions,
    budget_from_doc,
    decide,
    metric_of,
    rank,
)
from launcher.backends.slurm import DECIDER_FILE
from launcher.errors import SearchStateError, SubmitError
from launcher.state import ACTIVE, RunState, run_states

__all__ = ["DECIDER_FILE", "SearchStateError", "advance", "run_rungs_here"]


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
            or not isinstance(doc.get("rungs"), list) or not isinstance(doc.get("spec"), dict):
        raise SearchStateError(f"{path}: not a medsweep search record (schema "
                               f"{SEARCH_SCHEMA}); restore it or remove the sweep folder")
    for i, entry in enumerate(doc["rungs"]):
        why = _entry_problem(entry, i)
        if why:
            raise SearchStateError(f"{path}: rungs[{i}] {why}; restore the file or remove the "
                                   "sweep folder to search afresh")
    why = _asha_problem(doc.get("asha"))
    if why:
        raise SearchStateError(f"{path}: asha {why}; restore the file or remove the sweep "
                               "folder to search afresh")
    return doc


def _asha_problem(asha: object) -> str | None:
    """What is wrong with search.json's asynchronous record (None: nothing, or none there)."""
    if asha is None:
        return None
    if not isinstance(asha, dict):
        return "is not a mapping"
    scores, events, stopped = asha.get("scores"), asha.get("promotions"), asha.get("stopped")
    if not isinstance(scores, dict) or not all(
            isinstance(k, str) and k.isdigit() and isinstance(v, dict)
            and all(map(plain_run_id, v)) for k, v in scores.items()):
        return "scores is not {rung: {run id: score}}"
    if not isinstance(events, list) or not all(
            isinstance(e, dict) and plain_run_id(e.get("run"))
            and isinstance(e.get("rung"), int) and not isinstance(e.get("rung"), bool)
            and e["rung"] >= 0 for e in events):
        return "promotions is not a list of {run, rung}"
    if not isinstance(stopped, dict) or not all(map(plain_run_id, stopped)):
        return "stopped is not {run id: why}"
    return None


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


def plain_run_id(value: object) -> bool:
    """A run id as medsweep names run folders: one plain name (no separator, no "..")."""
    return isinstance(value, str) and bool(_RUN_NAME.match(value)) and ".." not in value \
        and len(value) <= 255


def _entry_problem(entry: object, i: int) -> str | None:
    """What is wrong with one decided rung of search.json (None: nothing)."""
    if not isinstance(entry, dict):
        return "is not a decided rung"
    rung = entry.get("rung")
    if not isinstance(rung, int) or isinstance(rung, bool) or rung != i:
        return f"has rung {rung!r}, expected {i}"
    promoted, stopped = entry.get("promoted"), entry.get("stopped")
    if not isinstance(promoted, list) or not all(map(plain_run_id, promoted)):
        return "has a promoted list that is not a list of run ids"
    if not isinstance(stopped, dict) or not all(map(plain_run_id, stopped)):
        return "has a stopped record that is not {run id: why}"
    return None


def start_search(folder: Path, spec: SearchSpec, sweep_path: Path) -> dict[str, Any]:
    """search.json for a new search, or the one there if its spec is this sweep's."""
    doc = read_search(folder)
    if doc is None:
        doc = {"schema": SEARCH_SCHEMA, "spec": spec.as_dict(), "started_at": now_iso(),
               "rungs": []}
        atomic_write_json(folder / SEARCH_FILE, doc)
    elif doc.get("spec") != spec.as_dict():
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


def members(folder: Path, doc: dict[str, Any], rung: int,
            known: set[str] | None = None) -> list[str]:
    """The runs of a rung: every run of the search at rung 0, then each rung's promoted; only
    runs of the user's sweep (known) where it is given, never a folder planted beside them."""
    if rung == 0:
        ids = [p.name for p in folder.iterdir() if plain_run_id(p.name) and p.is_dir()
               and not p.is_symlink() and RunDir(p).budget.is_file()]
    else:
        ids = list(doc["rungs"][rung - 1]["promoted"])
    return sorted(r for r in ids if known is None or r in known)


def known_runs(folder: Path, run_ids: list[str]) -> set[str]:
    """The run folders of the user's sweep: its run ids, and the folders an older medsweep
    named for the same configs (their config.yaml's hashes)."""
    known = {r for r in run_ids if plain_run_id(r)}
    hashes = {r.rsplit("-", 1)[-1] for r in known}
    if all((folder / r).is_dir() for r in known):
        return known
    for p in folder.iterdir():
        if p.name not in known and plain_run_id(p.name) and p.is_dir() \
                and folder_hashes(RunDir(p)) & hashes:
            known.add(p.name)
    return known


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


def _checked_run(folder: Path, run_id: str, rung: int) -> RunDir:
    """The run folder a decision acts on: a plain name in the sweep folder with no link on the
    way to what a promotion moves or deletes (SubmitError naming the link otherwise)."""
    if not plain_run_id(run_id):
        raise SubmitError(f"{folder / SEARCH_FILE}: {run_id!r} is not a run id; restore the "
                          "file or remove the sweep folder")
    rd = RunDir(folder / run_id)
    archive = rd.rung_archive(rung).relative_to(rd.path)
    try:
        refuse_links(rd.path, (archive.parts[0], str(archive), f"{archive}/{RESULTS}",
                               f"{archive}/{JOB_FILE}", f"{archive}/{PROGRESS_FILE}", RESULTS,
                               JOB_FILE, PROGRESS_FILE, ERROR_FILE, BUDGET_FILE, CHECKPOINTS))
    except ValueError as exc:
        raise SubmitError(str(exc)) from None
    return rd


def _archive(rd: RunDir, rung: int) -> None:
    """Move a promoted run's rung files (job.json, results/, progress.json) under
    rungs/<rung>/."""
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
    if rd.progress.is_file():
        rd.progress.replace(dest / rd.progress.name)  # the rung's loss curve stays readable
    if rd.error.is_file():
        rd.error.unlink()


def apply_decision(folder: Path, spec: SearchSpec, entry: dict[str, Any],
                   known: set[str] | None = None) -> None:
    """Move a decided rung's promoted runs on and drop its stopped runs' checkpoints
    (idempotent: each step checks what is already done). Only runs of the user's sweep
    (known) are acted on; a name search.json alone gives is not."""
    rung = int(entry["rung"])
    for run_id in entry["promoted"]:
        _promote(folder, spec, run_id, rung, known)
    for run_id in entry["stopped"]:
        if known is not None and run_id not in known:
            continue
        ckpt = _checked_run(folder, run_id, rung).checkpoints
        if ckpt.is_dir():
            # A stopped run keeps its model (adapter/) and results; its checkpoints would
            # only serve a promotion.
            shutil.rmtree(ckpt, ignore_errors=True)


def advance(folder: Path, spec: SearchSpec, known: set[str] | None = None) -> list[str]:
    """Decide every rung whose runs have all ended, move its promoted runs on, and return
    the runs promoted by this call (they now wait to be submitted at their new rung).
    known: the runs of the user's sweep (known_runs); only they are ranked and acted on."""
    doc = read_search(folder)
    if doc is None:
        return []
    for entry in doc["rungs"]:  # finish what a killed decider left
        apply_decision(folder, spec, entry, known)
    promoted: list[str] = []
    while len(doc["rungs"]) < len(spec.rungs):
        rung = len(doc["rungs"])
        ids = members(folder, doc, rung, known)
        states = {s.run_id: s for s in run_states(folder)}
        if not ids or not all(_settled(folder, r, rung, states.get(r)) for r in ids):
            break
        scores = {r: metric_of(spec, _performance(RunDir(folder / r), rung)) for r in ids}
        if all(s is None for s in scores.values()):
            break  # every run failed (a transient out-of-memory?): resubmit runs them again
        d = decide(spec, rung, scores)
        entry = {"rung": rung, "budget": spec.rungs[rung], "decided_at": now_iso(),
                 "scores": d.scores, "promoted": list(d.promoted), "stopped": d.stopped}
        doc["rungs"].append(entry)
        atomic_write_json(folder / SEARCH_FILE, doc)
        apply_decision(folder, spec, entry, known)
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
    doc = read_search(folder) or {}
    return {r for e in doc.get("rungs", []) for r in e.get("stopped", {})} | set(
        (doc.get("asha") or {}).get("stopped", {}))


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
    asha = doc.get("asha") or {}
    for ev in asha.get("promotions", []):
        k = int(ev["rung"]) + 1
        out[str(ev["run"])] = RunRung(k, rungs[k] if k < len(rungs) else 0.0, "promoted")
    for r, why in asha.get("stopped", {}).items():
        b = budget_of(RunDir(folder / r)) if plain_run_id(r) else None
        out[r] = RunRung(b.rung if b else 0, b.epochs if b else 0.0, str(why))
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


def prepare(folder: Path, spec: SearchSpec, run_ids: list[str], sweep_path: Path) -> None:
    """Before a submit of an adaptive sweep marks its runs: search.json started (or checked
    against this sweep's spec), runs added after rung 0 refused, finished rungs decided."""
    try:
        refuse_links(folder, (SEARCH_FILE,))
    except ValueError as exc:
        raise SubmitError(str(exc)) from None
    start_search(folder, spec, sweep_path)
    refuse_new_runs(folder, run_ids, sweep_path)
    step(spec)(folder, spec, known_runs(folder, run_ids))


def step(spec: SearchSpec) -> Callable[[Path, SearchSpec, set[str] | None], list[str]]:
    """The strategy's decision step: it decides what the finished runs allow, moves the
    promoted runs on, and returns them (they wait to be run at their new rung)."""
    return asha_step if spec.strategy == "asha" else advance


def asha_step(folder: Path, spec: SearchSpec, known: set[str] | None = None) -> list[str]:
    """Asynchronous successive halving: record the score of each run that has finished its
    rung, promote each run now in the top keep of its rung's finished runs
    (core.search.asha_promotions), and stop the rest once their rung can promote no more.
    Decisions are written to search.json before any run is moved on (idempotent, as advance)."""
    doc = read_search(folder)
    if doc is None:
        return []
    asha = doc.setdefault("asha", {"scores": {}, "promotions": [], "stopped": {}})
    for ev in asha["promotions"]:  # finish what a killed call left
        _promote(folder, spec, str(ev["run"]), int(ev["rung"]), known)
    ids = sorted(known) if known is not None else members(folder, doc, 0)
    changed = _record_scores(folder, spec, asha, ids)
    new: list[dict[str, Any]] = []
    for k in range(len(spec.rungs)):
        scores = asha["scores"].get(str(k), {})
        done = {e["run"] for e in asha["promotions"] if e["rung"] == k} | {
            e["run"] for e in new if e["rung"] == k}
        complete = _rung_complete(asha, ids, k)
        for r, why in asha_promotions(spec, k, scores, done, complete):
            new.append({"run": r, "rung": k, "why": why, "at": now_iso()})
        if complete:
            for r in scores:
                if r not in done and r not in {e["run"] for e in new} \
                        and r not in asha["stopped"]:
                    asha["stopped"][r] = _asha_stop_why(spec, k, scores, r)
                    changed = True
    if new or changed:
        asha["promotions"] += new
        atomic_write_json(folder / SEARCH_FILE, doc)
    for ev in new:
        _promote(folder, spec, ev["run"], ev["rung"], known)
    for r in asha["stopped"]:
        ckpt = RunDir(folder / r).checkpoints
        if plain_run_id(r) and (known is None or r in known) and ckpt.is_dir() \
                and not ckpt.is_symlink():
            shutil.rmtree(ckpt, ignore_errors=True)  # it will not be promoted: no resume
    return [ev["run"] for ev in new]


def _record_scores(folder: Path, spec: SearchSpec, asha: dict[str, Any],
                   ids: list[str]) -> bool:
    """Each run's score at the rung it has settled at (results, or an error: no score)."""
    states = {s.run_id: s for s in run_states(folder)}
    changed = False
    for r in ids:
        b = budget_of(RunDir(folder / r))
        if b is None or r in asha["scores"].get(str(b.rung), {}):
            continue
        if _settled(folder, r, b.rung, states.get(r)):
            perf = _performance(RunDir(folder / r), b.rung)
            asha["scores"].setdefault(str(b.rung), {})[r] = metric_of(spec, perf)
            changed = True
    return changed


def _rung_complete(asha: dict[str, Any], ids: list[str], k: int) -> bool:
    """Whether every run that will ever reach rung k has finished it."""
    if k == 0:
        return bool(ids) and set(ids) <= set(asha["scores"].get("0", {}))
    promoted_in = {e["run"] for e in asha["promotions"] if e["rung"] == k - 1}
    return _rung_complete(asha, ids, k - 1) and promoted_in <= set(
        asha["scores"].get(str(k), {}))


def _asha_stop_why(spec: SearchSpec, k: int, scores: dict[str, Any], r: str) -> str:
    if k + 1 >= len(spec.rungs):
        return "finished (top rung)"
    if scores.get(r) is None:
        return f"failed at rung {k} (no {spec.metric})"
    order = rank(spec, scores)
    return (f"stopped at rung {k}: rank {order.index(r) + 1} of {len(scores)} by "
            f"{spec.metric} ({scores[r]:.4f})")


def _promote(folder: Path, spec: SearchSpec, run_id: str, rung: int,
             known: set[str] | None) -> None:
    """Move one run on from rung to rung + 1 (idempotent)."""
    if (known is not None and run_id not in known) or rung + 1 >= len(spec.rungs):
        return
    rd = _checked_run(folder, run_id, rung)
    b = budget_of(rd)
    if b is not None and b.rung > rung:
        return
    _archive(rd, rung)
    write_budget(rd, spec, rung + 1)


def rung_of(folder: Path, run_id: str) -> int:
    b = budget_of(RunDir(folder / run_id))
    return b.rung if b else 0


def run_rungs_here(folder: Path, spec: SearchSpec, known: set[str],
                   run: Callable[[list[str]], None], on_event: Callable[[str], None]) -> None:
    """For a backend whose runs end before its submit returns: decide each rung as it ends
    and run the promoted runs on (run: start these run ids at their new rung and wait)."""
    while True:
        promoted = step(spec)(folder, spec, known)
        if not promoted:
            return
        on_event(f"search: rung {rung_of(folder, promoted[0])} with "
                 f"{len(promoted)} run(s): {', '.join(promoted)}")
        run(promoted)
