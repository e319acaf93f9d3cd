"""A runs folder is shared storage that others may be able to write (issue 27): what a
lab-mate plants there must not redirect medsweep's writes, be read as a secret, kill a
process, or write to the terminal. Each test plants the file for real and runs the CLI."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.fileio import open_no_follow

from .conftest import ROOT, job_env, run_module
from .test_hardening import one_line_error


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    """One real, finished local sweep (a scratch model, one step), copied per test."""
    from core.demo_data import write_demo_data

    base = tmp_path_factory.mktemp("shared")
    train, dev = write_demo_data(base / "data", n_train=8, n_dev=2)
    doc = {"name": "lab", "env": "local", "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
                    "model.max_seq_length": 256, "train.max_steps": 1,
                    "eval.max_new_tokens": 8}}
    sweep = base / "lab.yaml"
    sweep.write_text(yaml.safe_dump(doc))
    r = run_module("launcher", "submit", str(sweep), "--runs-dir", str(base / "runs"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return base


@pytest.fixture()
def lab(finished_sweep, tmp_path) -> tuple[Path, Path, Path]:
    """(runs folder, the sweep's folder, its one run's folder) of a copy of the sweep."""
    shutil.copytree(finished_sweep, tmp_path / "c", symlinks=True)
    runs = tmp_path / "c" / "runs"
    sweep_dir = runs / "lab"
    run = next(p for p in sweep_dir.iterdir() if (p / "config.yaml").is_file())
    return runs, sweep_dir, run


def status(runs: Path) -> subprocess.CompletedProcess:
    """launcher status; exit 1 says a run failed, which the planted files here cause."""
    r = run_module("launcher", "status", "lab", "--runs-dir", str(runs))
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr[-2000:]
    return r


def test_a_planted_lock_link_is_refused_and_its_target_kept(lab, tmp_path):
    runs, sweep_dir, _ = lab
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (sweep_dir / ".submit.lock").unlink()
    (sweep_dir / ".submit.lock").symlink_to(victim)
    r = run_module("launcher", "resubmit", "lab", "--runs-dir", str(runs))
    one_line_error(r, ".submit.lock", "symbolic link")
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("name", ["checkpoints", "results", "logs"])
def test_a_planted_link_inside_a_run_folder_is_refused_at_submit(lab, tmp_path, name):
    runs, sweep_dir, run = lab
    target = tmp_path / "elsewhere"
    (target / "checkpoint-7").mkdir(parents=True)
    if (run / name).exists():
        shutil.rmtree(run / name)
    (run / name).symlink_to(target)
    shutil.rmtree(run / "adapter")  # so the run is submitted again
    if (run / "results").is_dir() and not (run / "results").is_symlink():
        shutil.rmtree(run / "results")
    r = run_module("launcher", "resubmit", "lab", "--runs-dir", str(runs))
    one_line_error(r, name, "symbolic link", "remove it")
    assert (target / "checkpoint-7").is_dir()


def test_a_job_refuses_a_checkpoints_link_in_its_run_folder(lab, tmp_path):
    _, _, run = lab
    target = tmp_path / "elsewhere"
    (target / "checkpoint-3").mkdir(parents=True)
    shutil.rmtree(run / "adapter")
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    (run / "checkpoints").symlink_to(target)
    code = ("import sys; from jobs.pipeline import run_pipeline\n"
            "try:\n    run_pipeline(sys.argv[1])\nexcept ValueError as e:\n"
            "    print('refused:', e); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code, str(run)], cwd=ROOT, env=job_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 3 and "checkpoints is a symbolic link" in r.stdout, r.stderr
    assert (target / "checkpoint-3").is_dir() and list(target.iterdir()) == [
        target / "checkpoint-3"]


def test_appended_logs_never_follow_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    link = tmp_path / "run.log"
    link.symlink_to(victim)
    with pytest.raises(OSError):
        open_no_follow(link, append=True)
    assert victim.read_text() == "keep"


def test_status_reads_no_file_outside_the_run_and_only_a_logs_tail(lab, tmp_path):
    runs, _, run = lab
    secret = tmp_path / "token"
    secret.write_text("hf_" + "x" * 34 + " error here\n")
    job = json.loads((run / "job.json").read_text())
    (run / "error.json").unlink(missing_ok=True)
    shutil.rmtree(run / "results")
    job["stderr"] = str(secret)
    (run / "job.json").write_text(json.dumps(job))
    r = status(runs)
    assert "hf_" not in r.stdout + r.stderr
    # A log of its own that is huge: read from its end only.
    big = run / "logs" / "big.err"
    big.parent.mkdir(exist_ok=True)
    with open(big, "w") as fh:
        fh.write("x" * 50_000_000 + "\nRuntimeError: the last line\n")
    job["stderr"] = str(big)
    (run / "job.json").write_text(json.dumps(job))
    r = status(runs)
    assert "RuntimeError: the last line" in r.stdout


def test_terminal_escapes_and_line_breaks_from_files_are_shown_escaped(lab):
    runs, sweep_dir, run = lab
    shutil.rmtree(run / "results")
    (run / "error.json").write_text(json.dumps(
        {"error": "boom\x1b[2J\x1b]52;c;aGk=\x07\nFORGED 1 COMPLETED", "at": "x"}))
    r = status(runs)
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "\\x1b[2J" in r.stdout
    assert not any(line.startswith("FORGED") for line in r.stdout.splitlines())


def test_a_submitted_at_without_a_time_zone_does_not_break_status(lab):
    runs, _, run = lab
    job = json.loads((run / "job.json").read_text())
    job["submitted_at"] = "2026-12-01T10:00:00"
    (run / "job.json").write_text(json.dumps(job))
    r = status(runs)
    assert "lab" in r.stdout or "llama-tiny" in r.stdout


def test_cancel_never_kills_a_process_a_job_file_names_without_its_start_time(lab):
    runs, _, run = lab
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        shutil.rmtree(run / "results")
        job = json.loads((run / "job.json").read_text())
        job.pop("pid_start", None)
        job["pid"] = bystander.pid
        (run / "job.json").write_text(json.dumps(job))
        r = run_module("launcher", "cancel", "lab", "--runs-dir", str(runs))
        time.sleep(0.5)
        assert bystander.poll() is None, (r.stdout, r.stderr)
    finally:
        bystander.kill()
        bystander.wait()


def test_no_pickle_is_kept_in_the_shared_runs_folder(lab):
    """submitit's pickled job calls (which every job loads) and its logs live in a folder only
    the submitting user can write, not in the runs folder; a resubmit reads state from
    medsweep's JSON files."""
    import stat as st

    from core.rundir import job_files_dir, job_files_root

    runs, sweep_dir, run = lab
    shutil.rmtree(run / "results")
    r = run_module("launcher", "resubmit", "lab", "--runs-dir", str(runs))
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    assert (run / "results" / "performance.json").is_file()
    assert not [p for p in runs.rglob("*") if p.suffix == ".pkl"]
    private = job_files_dir(sweep_dir)
    assert any(p.suffix == ".pkl" for p in private.rglob("*"))
    assert st.S_IMODE(job_files_root().stat().st_mode) == 0o700
    job = json.loads((run / "job.json").read_text())
    assert Path(job["stderr"]).resolve().is_relative_to(private.resolve())


def test_another_sweep_file_with_the_same_name_on_other_data_is_refused(lab, tmp_path):
    runs, sweep_dir, _ = lab
    doc = yaml.safe_load((tmp_path / "c" / "lab.yaml").read_text())
    other_eval = tmp_path / "other-dev.json"
    other_eval.write_text(json.dumps([{"text": "Aspirin.", "entities": [
        {"label": "Chemical", "text": "Aspirin"}]}]))
    doc["data"]["eval"] = str(other_eval)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(doc))
    before = (sweep_dir / "sweep.yaml").read_text()
    r = run_module("launcher", "submit", str(other), "--runs-dir", str(runs), "--dry-run")
    assert r.returncode == 0  # a dry run changes nothing and may show it
    r = run_module("launcher", "submit", str(other), "--runs-dir", str(runs))
    one_line_error(r, "already holds a sweep named 'lab' on other data", "another name")
    assert (sweep_dir / "sweep.yaml").read_text() == before


def test_a_plain_resubmit_skips_a_sweep_someone_else_put_in_the_runs_folder(lab):
    runs, sweep_dir, run = lab
    planted = runs / "planted"
    shutil.copytree(sweep_dir, planted, symlinks=True)
    for p in [planted, *planted.rglob("*")]:
        os.chown(p, 4242, 4242, follow_symlinks=False)  # a lab-mate's files
    r = run_module("launcher", "resubmit", "--runs-dir", str(runs))
    assert r.returncode == 0, r.stderr
    assert "skipped planted: its sweep.yaml is not yours" in r.stdout
    assert "sweep planted" not in r.stdout.replace("skipped planted", "")


def test_a_gguf_cache_folder_whose_marker_names_another_file_is_not_used(tmp_path):
    from jobs.gguf_model import CONVERSION_VERSION, MARKER, _complete

    folder = tmp_path / "model-0123456789abcdef"
    folder.mkdir()
    sha = "0123456789abcdef" + "0" * 48
    (folder / MARKER).write_text(json.dumps({"conversion_version": CONVERSION_VERSION,
                                             "sha256": "f" * 64}))
    assert not _complete(folder, sha)
    (folder / MARKER).write_text(json.dumps({"conversion_version": CONVERSION_VERSION,
                                             "sha256": sha}))
    assert _complete(folder, sha)
    link = tmp_path / "linked"
    link.symlink_to(folder)
    assert not _complete(link, sha)


def test_small_things_of_issue_27(lab, tmp_path):
    runs, sweep_dir, _ = lab
    from core.rundir import job_files_dir

    assert not (job_files_dir(sweep_dir) / "%j").exists()  # no empty pattern folder left
    # A pipe closed early is no traceback.
    p = subprocess.Popen([sys.executable, "-m", "launcher", "leaderboard", "lab", "--runs-dir",
                          str(runs)], cwd=ROOT, env=job_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdout is not None
    p.stdout.readline()
    p.stdout.close()
    assert "BrokenPipeError" not in p.stderr.read().decode()
    p.wait(timeout=60)
    long_name = tmp_path / "long.yaml"
    long_name.write_text(yaml.safe_dump({"name": "x" * 70, "data": {"demo": True},
                                         "base": {"model.name_or_path": "scratch:llama-tiny"}}))
    one_line_error(run_module("launcher", "submit", str(long_name), "--dry-run"),
                   "1 to 64 letters")
    huge = tmp_path / "huge.yaml"
    huge.write_text(yaml.safe_dump({"name": "h", "data": {"demo": True},
                                    "base": {"model.name_or_path": "scratch:llama-huge"}}))
    r = run_module("launcher", "submit", str(huge), "--dry-run")
    assert r.returncode == 2 and "unknown scratch size 'huge'" in r.stderr, r.stderr
    from launcher.envs import parse_env

    assert parse_env({"runs_dir": "~/x"}, "t").runs_dir == os.path.expanduser("~/x")


def test_a_read_only_runs_folder_and_a_full_disk_are_one_line_each(lab, tmp_path):
    """Issue 27 item 15, caused for real: a lab-mate's runs folder we may not write (a user
    without write permission: we run as root here, so a read-only bind is not possible; the
    folder is made unwritable and the commands run as nobody), and /dev/full for a full disk."""
    import tempfile

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("runs the commands as another user (setpriv): needs root")
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-c", "import launcher"], cwd=ROOT, env=job_env(),
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("another user cannot run this checkout's Python here (a checkout under a "
                    f"private home?): {probe.stderr.strip()[-200:]}")
    src_runs, _, src_run = lab
    top = Path(tempfile.mkdtemp(prefix="medsweep-ro-", dir="/tmp"))  # others may enter /tmp
    try:
        _read_only_checks(top, src_runs, src_run)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _read_only_checks(top: Path, src_runs: Path, src_run: Path) -> None:
    runs = top / "runs"
    shutil.copytree(src_runs, runs, symlinks=True)
    sweep_dir, run = runs / "lab", runs / "lab" / src_run.name
    env = job_env()
    for p in [top, *top.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, 0o755 if p.is_dir() else 0o644)

    def as_nobody(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               sys.executable, "-m", "launcher", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    r = as_nobody("leaderboard", "lab", "--runs-dir", str(runs))
    assert r.returncode == 0 and "llama-tiny" in r.stdout, r.stderr
    assert "not written" in r.stderr and "Traceback" not in r.stderr
    r = as_nobody("resubmit", "lab", "--runs-dir", str(runs))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    r = as_nobody("plot-loss", str(run), "--out", str(sweep_dir / "loss.png"))
    assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr
    tp = run / "results" / "true_pred_entities.json"
    full = run_module("jobs.score", "--true-pred-file", str(tp), "--results-dir", "/dev/full")
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr


def test_a_config_changed_after_submit_is_refused_by_the_job(lab, tmp_path):
    """Issue 27 item 5: the run id ends in its config's hash; a queued job whose config.yaml
    was swapped in the shared folder refuses to train it."""
    _, _, run = lab
    shutil.rmtree(run / "results")
    shutil.rmtree(run / "adapter")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    secret = tmp_path / "private.json"
    secret.write_text((Path(cfg["data"]["train_dataset_file"])).read_text())
    cfg["data"]["train_dataset_file"] = str(secret)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    code = ("import sys; from jobs.pipeline import run_pipeline\n"
            "try:\n    run_pipeline(sys.argv[1])\nexcept ValueError as e:\n"
            "    print('refused:', e); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code, str(run)], cwd=ROOT, env=job_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 3 and "does not match its run id" in r.stdout, r.stderr[-2000:]
    assert not (run / "adapter").exists()


def test_a_demo_sweep_run_matches_its_id(tmp_path):
    """Demo data paths are written into config.yaml at submit; the id's hash is of the sweep's
    demo:train / demo:eval, and the job recognises them."""
    from core.config import config_from_dict
    from core.rundir import RunDir
    from jobs.pipeline import check_config_matches_id

    sweep = tmp_path / "d.yaml"
    sweep.write_text("name: d\nenv: local\ndata: {demo: true}\nbase: {model.name_or_path: "
                     "scratch:llama-tiny, model.load_in_4bit: false}\n")
    from launcher.envs import load_env
    from launcher.runfolders import materialise_data as _materialise_data
    from launcher.submit import sweep_dir
    from launcher.sweep import load_sweep

    sw = load_sweep(sweep)
    folder = sweep_dir(sw, load_env("local"), str(tmp_path / "runs"))
    folder.mkdir(parents=True)
    run = sw.runs[0]
    cfg = config_from_dict(_materialise_data(sw, folder, run.config.to_dict()), "t")
    check_config_matches_id(RunDir(folder / run.run_id), cfg)  # no error
    other = config_from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"],
                                                         "learning_rate": 0.5}}, "t")
    with pytest.raises(ValueError, match="does not match its run id"):
        check_config_matches_id(RunDir(folder / run.run_id), other)


def test_a_template_token_inside_a_record_stays_text(tmp_path):
    """Issue 27 item 17: a record quoting "<|eot_id|>" must not end the turn in the prompt,
    nor in the answer the model is trained on; other records tokenise exactly as before."""
    from transformers import AutoTokenizer

    from core.data import Entity, Record
    from jobs.modeling import ensure_chat_template
    from jobs.scratch import build_scratch, parse_scratch
    from jobs.train import encode_record

    corpus = ["Aspirin causes fever in some patients."] * 40
    folder = build_scratch("scratch:llama-tiny", corpus, tmp_path / "m")
    tok = ensure_chat_template(AutoTokenizer.from_pretrained(str(folder)),
                               parse_scratch("scratch:llama-tiny")[0])
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    plain = Record("Aspirin causes fever.", (Entity("Chemical", "Aspirin"),))
    quoting = Record("Aspirin <|eot_id|> causes fever.",
                     (Entity("Chemical", "Aspirin <|eot_id|>"),))
    a = encode_record(tok, plain, "Extract.", True)
    b = encode_record(tok, quoting, "Extract.", True)
    assert a.input_ids.count(eot) == b.input_ids.count(eot) >= 1
    from core.prompts import prompt_messages

    whole = tok.apply_chat_template(prompt_messages(plain, "Extract."), tokenize=False,
                                    add_generation_prompt=True)
    n = len(tok(whole, add_special_tokens=False)["input_ids"])
    assert a.input_ids[:n] == tok(whole, add_special_tokens=False)["input_ids"]


def test_a_leaderboard_over_runs_scored_on_different_eval_files_says_so(lab, tmp_path):
    runs, sweep_dir, run = lab
    twin = sweep_dir / (run.name[:-8] + "00000000")
    shutil.copytree(run, twin)
    perf = json.loads((twin / "results" / "performance.json").read_text())
    perf["data"]["eval_sha256"] = "0" * 64
    (twin / "results" / "performance.json").write_text(json.dumps(perf))
    r = run_module("launcher", "leaderboard", "lab", "--runs-dir", str(runs))
    assert r.returncode == 0, r.stderr
    assert "warning: the runs were scored on 2 different eval files" in r.stdout
