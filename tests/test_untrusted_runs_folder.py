"""A runs folder may be written by lab-mates; the private job-files folder (0700) and the
user's own sweep file are what medsweep acts on. Each test plants the file for real: a run
id that is a path, a link on a promotion's way, a follower or a config the submit never
wrote, a process the private folder never recorded, a link where the private folder goes."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.fileio import atomic_write_json
from core.rundir import SEARCH_FILE, RunDir, job_files_dir, private_job_files_dir
from core.search import SearchSpec
from launcher import search as lsearch
from launcher.backends.local import process_start, same_process
from launcher.errors import SubmitError

from .conftest import job_env, run_module
from .test_hardening import one_line_error
from .test_search import _finished_rung, _sweep


def _search_sweep(tmp_path: Path) -> tuple[Path, Path, dict]:
    """(the sweep file, its folder in the runs folder, its search spec as search.json has it)."""
    from launcher.sweep import parse_sweep

    doc = _sweep(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = parse_sweep(doc, path).search
    assert spec is not None
    return path, tmp_path / "runs" / "s", spec.as_dict()


@pytest.mark.parametrize("where", ["promoted", "stopped"])
def test_a_planted_search_json_naming_a_path_moves_and_deletes_nothing(tmp_path, where):
    sweep, folder, spec = _search_sweep(tmp_path)
    victim = tmp_path / "victim"
    (victim / "checkpoints").mkdir(parents=True)
    (victim / "job.json").write_text("{}")
    folder.mkdir(parents=True)
    entry = {"rung": 0, "budget": 1, "scores": {}, "promoted": [], "stopped": {}}
    entry[where] = [str(victim)] if where == "promoted" else {str(victim): "planted"}
    atomic_write_json(folder / SEARCH_FILE, {"schema": 1, "spec": spec, "rungs": [entry]})
    r = run_module("launcher", "submit", str(sweep), "--runs-dir", str(tmp_path / "runs"))
    one_line_error(r, "search.json", "rungs[0]", "not a list of run ids"
                   if where == "promoted" else "not {run id: why}")
    assert (victim / "checkpoints").is_dir() and (victim / "job.json").is_file()
    assert not (victim / "budget.json").exists()


@pytest.mark.parametrize("entry", [{"budget": 1, "promoted": [], "stopped": {}},
                                   {"rung": 0, "promoted": "r1", "stopped": {}},
                                   {"rung": 0, "promoted": [], "stopped": ["r1"]},
                                   {"rung": 5, "promoted": [], "stopped": {}}, "x"])
def test_a_malformed_rung_in_search_json_is_one_line_for_submit_and_status(tmp_path, entry):
    sweep, folder, spec = _search_sweep(tmp_path)
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(sweep.read_text())
    atomic_write_json(folder / SEARCH_FILE, {"schema": 1, "spec": spec, "rungs": [entry]})
    r = run_module("launcher", "submit", str(sweep), "--runs-dir", str(tmp_path / "runs"))
    one_line_error(r, "search.json", "rungs[0]", "remove the sweep folder")
    st = run_module("launcher", "status", "s", "--runs-dir", str(tmp_path / "runs"))
    assert "Traceback" not in st.stderr and "rungs[0]" in st.stdout + st.stderr


def _rung0(tmp_path: Path) -> tuple[Path, SearchSpec]:
    spec = SearchSpec((1, 3), keep=0.5, keep_text="1/2")
    folder = tmp_path / "sweep"
    folder.mkdir()
    lsearch.start_search(folder, spec, tmp_path / "s.yaml")
    for i, f1 in enumerate([0.2, 0.6]):
        _finished_rung(folder, f"r{i}", 0, f1)
    return folder, spec


@pytest.mark.parametrize("link", ["rungs/0", "rungs"])
def test_a_link_on_a_promotions_way_is_refused_before_anything_moves(tmp_path, link):
    folder, spec = _rung0(tmp_path)
    victim = tmp_path / "victim"
    (victim / "results").mkdir(parents=True)
    (victim / "0" / "results").mkdir(parents=True)
    winner = RunDir(folder / "r1")
    (winner.path / link).parent.mkdir(parents=True, exist_ok=True)
    (winner.path / link).symlink_to(victim / "0" if link == "rungs/0" else victim)
    with pytest.raises(SubmitError, match="symbolic link"):
        lsearch.advance(folder, spec, {"r0", "r1"})
    assert (victim / "results").is_dir() and (victim / "0" / "results").is_dir()
    assert winner.job.is_file() and winner.performance.is_file()  # nothing moved


def test_only_runs_of_the_users_sweep_join_a_rung_or_are_acted_on(tmp_path):
    folder, spec = _rung0(tmp_path)
    planted = _finished_rung(folder, "planted", 0, 0.99)  # would win rung 0
    assert lsearch.advance(folder, spec, {"r0", "r1"}) == ["r1"]
    doc = json.loads((folder / SEARCH_FILE).read_text())
    assert set(doc["rungs"][0]["scores"]) == {"r0", "r1"}
    assert planted.performance.is_file() and planted.checkpoints.is_dir()


def test_a_promotion_keeps_the_rungs_loss_curve(tmp_path):
    folder, spec = _rung0(tmp_path)
    winner = RunDir(folder / "r1")
    atomic_write_json(winner.progress, {"phase": "train", "step": 3, "total": 3})
    lsearch.advance(folder, spec, {"r0", "r1"})
    assert (winner.rung_archive(0) / "progress.json").is_file() and not winner.progress.exists()


def _written_run(tmp_path: Path) -> tuple[RunDir, dict[str, str]]:
    """A run folder written by submit (launcher.runfolders) and the digests its job call
    carries (launcher.tasks.identities)."""
    from core.demo_data import write_demo_data
    from launcher.runfolders import write_run_folders
    from launcher.sweep import parse_sweep
    from launcher.tasks import PlannedRun, Task, identities

    train, dev = write_demo_data(tmp_path / "d", n_train=4, n_dev=2)
    doc = {"name": "t", "env": "local", "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.name_or_path": "scratch:llama-tiny"}}
    sw = parse_sweep(doc, tmp_path / "t.yaml")
    folder = tmp_path / "runs" / "t"
    folder.mkdir(parents=True)
    p = PlannedRun(sw.runs[0], None, 1.0)  # type: ignore[arg-type]
    write_run_folders([p], sw, folder)
    return RunDir(folder / p.run_id), identities(Task([p]))


def test_the_job_trains_only_the_config_its_private_call_names(tmp_path):
    from jobs.pipeline import _load_config

    rd, ids = _written_run(tmp_path)
    assert _load_config(rd, ids).model.name_or_path == "scratch:llama-tiny"
    # A config.yaml forged to keep the run id's 8 hex digits still differs in its SHA-256:
    # here, the same values written in another order.
    raw = yaml.safe_load(rd.config.read_text())
    rd.config.write_text(yaml.safe_dump(raw, sort_keys=True))
    with pytest.raises(ValueError, match="not the config submit wrote"):
        _load_config(rd, ids)


def test_a_planted_follower_without_a_hash_suffix_is_not_run(tmp_path):
    from jobs.pipeline import _followers, _load_config

    rd, ids = _written_run(tmp_path)
    planted = RunDir(rd.path.parent / "patients")
    planted.path.mkdir()
    planted.config.write_text(rd.config.read_text())
    atomic_write_json(rd.followers, {"runs": ["patients"]})
    assert _followers(rd, ids) == []
    with pytest.raises(ValueError, match="not a run this job was submitted for"):
        _load_config(planted, ids)


def test_cancel_signals_no_process_the_private_folder_did_not_record(tmp_path):
    """Another user reads any PID's start time from /proc: a planted job.json names it."""
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run = tmp_path / "runs" / "lab" / "r1-deadbeef"
        run.mkdir(parents=True)
        (run.parent / "sweep.yaml").write_text("name: lab\n")
        (run / "config.yaml").write_text("{}\n")
        atomic_write_json(run / "job.json", {
            "cluster": "local", "job_id": str(victim.pid), "pid": victim.pid,
            "pid_start": process_start(victim.pid), "run_id": run.name})
        r = run_module("launcher", "cancel", "lab", "--runs-dir", str(tmp_path / "runs"))
        assert r.returncode == 0, r.stderr
        assert "stopped 0 local run(s)" in r.stdout
        assert victim.poll() is None  # still alive
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()


def test_a_local_follower_is_cancelled_alone(tmp_path, capsys):
    """Cancelling a run evaluated in its model's run's job asks that job to skip it; the
    owner's training and the other followers go on."""
    from launcher.cli import main

    folder = tmp_path / "runs" / "lab"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text("name: lab\n")
    me, started = os.getpid(), process_start(os.getpid())
    for name, extra in (("owner", {}), ("f1", {"trained_in": "owner"}),
                        ("f2", {"trained_in": "owner"})):
        (folder / name).mkdir(parents=True)
        (folder / name / "config.yaml").write_text("{}\n")
        atomic_write_json(folder / name / "job.json", {
            "cluster": "local", "job_id": str(me), "pid": me, "pid_start": started,
            "run_id": name, **extra})
    assert main(["cancel", "lab", "--runs-dir", str(tmp_path / "runs"), "--run", "f1"]) == 0
    out = capsys.readouterr().out
    assert "asked 1 run(s) to stop" in out and "stopped" not in out
    assert RunDir(folder / "f1").cancel_request.is_file()
    assert not RunDir(folder / "owner").cancel_request.exists()


def test_cancel_request_is_not_written_through_a_dangling_link(tmp_path, capsys):
    from launcher.cli import main

    folder = tmp_path / "runs" / "lab"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text("name: lab\n")
    me, started = os.getpid(), process_start(os.getpid())
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        atomic_write_json(folder / name / "job.json", {
            "cluster": "local", "job_id": str(me), "pid": me, "pid_start": started,
            "run_id": name, "pack": {"runs": ["a", "b"]}})
    target = tmp_path / "elsewhere" / "planted"
    target.parent.mkdir()
    (folder / "a" / "cancel.request").symlink_to(target)
    assert main(["cancel", "lab", "--runs-dir", str(tmp_path / "runs"), "--run", "a"]) == 2
    assert "symbolic link" in capsys.readouterr().err and not target.exists()


def test_a_process_of_another_user_reads_as_alive(monkeypatch):
    """os.kill(pid, 0) says EPERM for a lab-mate's process: it exists (status must not call a
    running run FAILED and invite a second job into its folder)."""
    import launcher.backends.procs as local

    def eperm(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    me = os.getpid()
    monkeypatch.setattr(local.os, "kill", eperm)
    assert same_process(me, process_start(me))
    assert not same_process(me, "1")


def test_a_link_planted_where_the_private_job_files_go_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "jobfiles"
    monkeypatch.setenv("MEDSWEEP_JOB_FILES", str(root))
    sweep_folder = tmp_path / "runs" / "demo"
    theirs = tmp_path / "planter"
    theirs.mkdir()
    root.mkdir()
    job_files_dir(sweep_folder).symlink_to(theirs)
    with pytest.raises(ValueError, match="not a folder of yours"):
        private_job_files_dir(sweep_folder)
    r = run_module("launcher", "submit", "--runs-dir", str(tmp_path / "runs"),
                   env={**job_env(), "MEDSWEEP_JOB_FILES": str(root)})
    one_line_error(r, str(job_files_dir(sweep_folder)), "not a folder of yours")
    assert list(theirs.iterdir()) == []
    assert not sweep_folder.exists()  # nothing half-done: no sweep.yaml, no config.yaml


def test_a_rung_whose_runs_all_failed_waits_for_a_resubmit(tmp_path):
    """A transient failure of every run of a rung stops none of them: resubmit runs them."""
    spec = SearchSpec((1, 3), keep=0.5, keep_text="1/2")
    folder = tmp_path / "sweep"
    folder.mkdir()
    lsearch.start_search(folder, spec, tmp_path / "s.yaml")
    for name in ("a", "b"):
        _finished_rung(folder, name, 0, None)
    assert lsearch.advance(folder, spec, {"a", "b"}) == []
    assert json.loads((folder / SEARCH_FILE).read_text())["rungs"] == []
    assert lsearch.stopped_runs(folder) == set()


@pytest.mark.parametrize("rungs", [[0.5, 1], [1, float("inf")], [1, float("nan")],
                                   [1, int("9" * 400)], [3, 1]])
def test_rungs_that_cannot_be_trained_as_written_are_refused_at_submit(rungs):
    from core.search import parse_search

    errors: list[str] = []
    parse_search({"rungs": rungs}, "s.yaml", errors)
    assert len(errors) == 1 and "search.rungs" in errors[0], errors


@pytest.mark.parametrize("delay", [-5, 3600, 99999])
def test_a_checkpoint_warning_outside_the_time_limit_is_refused(delay):
    from launcher.envs import parse_env
    from launcher.yamlio import YamlError

    with pytest.raises(YamlError, match="signal_delay_s must be from 0"):
        parse_env({"name": "x", "time_limit_min": 60, "signal_delay_s": delay}, "x.yaml")


@pytest.mark.parametrize("values,words", [
    ({"train.pad_to_multiple_of": 4096, "model.max_seq_length": 512}, "is above"),
    ({"train.checkpoint_every_min": float("1" + "0" * 300)}, "at most 10080"),
    ({"train.checkpoint_every_min": float("nan")}, "finite"),
    ({"data.context_after": 30000000}, "from 0 to 1000"),
])
def test_values_that_pass_types_but_cannot_be_run_are_refused(values, words):
    from core.config import ConfigError, build_config

    with pytest.raises(ConfigError, match=words):
        build_config(values)


def test_an_id_position_of_thousands_of_digits_is_one_line(tmp_path):
    from core.data import DataError, load_ids

    (tmp_path / "train.json").write_text("[]")
    (tmp_path / "train.ids.json").write_text(json.dumps(["doc:s" + "9" * 5000]))
    with pytest.raises(DataError, match="k at most 9 digits") as e:
        load_ids(tmp_path / "train.json", 1)
    assert len(str(e.value)) < 600


def test_leaderboard_problem_lines_show_folder_names_escaped(tmp_path, capsys):
    from launcher.cli import main

    folder = tmp_path / "runs" / "lab"
    bad = folder / "run\x1b]52;c;aGk=\x07-1"
    (bad / "results").mkdir(parents=True)
    (bad / "results" / "performance.json").write_text("{broken")
    (folder / "sweep.yaml").write_text("name: lab\n")
    main(["leaderboard", "lab", "--runs-dir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert "unreadable:" in out and "\x1b" not in out and "\\x1b" in out


def test_a_follower_folder_swapped_for_a_link_gets_no_error_json_through_it(tmp_path):
    from jobs.pipeline import _fail_followers

    rd, ids = _written_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (rd.path.parent / "f-00000000").symlink_to(elsewhere)
    atomic_write_json(rd.followers, {"runs": ["f-00000000"]})
    _fail_followers(rd, RuntimeError("boom"), {**ids, "f-00000000": "0" * 64})
    assert list(elsewhere.iterdir()) == []


def test_submit_reads_the_train_file_once(tmp_path, monkeypatch, capsys):
    import core.data
    from core.demo_data import write_demo_data
    from launcher.cli import main

    train, dev = write_demo_data(tmp_path / "d", n_train=8, n_dev=2)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({
        "name": "t", "env": "slurm", "data": {"train": str(train), "eval": str(dev)},
        "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False}}))
    reads: list[str] = []
    real = core.data.load_dataset
    monkeypatch.setattr(core.data, "load_dataset", lambda p, *a: reads.append(str(p)) or real(p, *a))
    assert main(["submit", str(tmp_path / "s.yaml"), "--dry-run"]) == 0
    assert reads.count(str(train)) == 1, reads
