"""Launcher at scale: each figure is the wall time of one real CLI process.

1. ``submit --dry-run`` of a 1,000-run sweep (10 models x 10 ranks x 10 epoch counts,
   against envs/slurm.yaml);
2. a real ``submit`` of 200 runs to the local Slurm (one job array; jobs are cancelled after
   the measurements, so they are trivially short), and of the same 200 to a worker pool;
3. ``status`` of those 200 (one sacct call), and ``cancel``;
4. ``leaderboard`` over 10,000 generated result files.

    python benchmarks/launcher_scale.py --out /tmp/scale      # starts a local Slurm if needed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ["unsloth/Llama-3.2-1B-Instruct", "unsloth/Llama-3.2-3B-Instruct",
          "unsloth/Llama-3.1-8B-Instruct", "unsloth/llama-3-8b-Instruct",
          "unsloth/gemma-3-4b-it", "unsloth/gemma-3-270m-it", "unsloth/gemma-3n-E2B-it",
          "unsloth/gemma-3n-E4B-it", "unsloth/medgemma-4b-it", "unsloth/gemma-3-27b-it"]


def _counts(status: str) -> str:
    """status's line of run counts (e.g. "184 PENDING, 16 RUNNING")."""
    return next((ln.strip() for ln in status.splitlines()
                 if ln.strip() and ln.strip()[0].isdigit() and ("PENDING" in ln
                                                                 or "RUNNING" in ln)), "")


def _submit_status_cancel(py: str, out: Path, runs: str, env: dict[str, str],
                          sweep: dict[str, object], tag: str, said: str,
                          figures: dict[str, object]) -> None:
    """A real submit of the sweep, its status once sacct lists it, then cancel: each timed
    into figures as submit_200{tag}_s, status_200{tag}_s (and _counts), cancel_200{tag}_s."""
    name = str(sweep["name"])
    (out / f"{name}.yaml").write_text(yaml.safe_dump(sweep))
    wall, stdout = timed([py, "-m", "launcher", "submit", str(out / f"{name}.yaml"),
                          "--runs-dir", runs], env)
    assert said in stdout, stdout
    figures[f"submit_200{tag}_s"] = round(wall, 2)
    print(f"submit 200 runs{tag}: {wall:.2f} s", flush=True)
    time.sleep(5)  # let sacct see the array
    wall, stdout = timed([py, "-m", "launcher", "status", name, "--runs-dir", runs], env)
    figures[f"status_200{tag}_s"] = round(wall, 2)
    figures[f"status_200{tag}_counts"] = _counts(stdout)
    print(f"status 200 runs{tag}: {wall:.2f} s ({_counts(stdout)})", flush=True)
    wall, _ = timed([py, "-m", "launcher", "cancel", name, "--runs-dir", runs], env)
    figures[f"cancel_200{tag}_s"] = round(wall, 2)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t
    if out.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return wall, out.stdout


def fake_performance(rng: random.Random, i: int, rank: int, epochs: int) -> dict:
    from core.results import performance_doc

    def prf() -> dict:
        p, r = rng.random(), rng.random()
        return {"p": p, "r": r, "f1": 2 * p * r / (p + r), "tp": 1, "fp": 1, "fn": 1,
                "support": 2}

    scores = {"total": {m: prf() for m in ("exact", "relaxed", "overlap")},
              "labels": {"Disease": {m: prf() for m in ("exact", "relaxed", "overlap")}},
              "macro": {m: {"p": 0.5, "r": 0.5, "f1": 0.5} for m in ("exact",)}}
    cfg = {"model": {"name_or_path": MODELS[i % len(MODELS)]}, "peft": {"rank": rank},
           "train": {"num_epochs": epochs}}
    return performance_doc(scores, num_examples=100, avg_inference_time=0.01,
                           parse={"ok": 99, "salvaged": 0, "failed": 1, "failure_rate": 0.01},
                           hallucination_rate=0.02, config=cfg,
                           extra={"timings": {"train_s": 100.0}, "peak_vram_gb": 5.0})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--results", type=Path, help="Where to write the JSON of figures.")
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    from core.demo_data import write_demo_data

    train, dev = write_demo_data(out / "data", n_train=50, n_dev=10)
    figures: dict[str, object] = {"machine": f"{platform.node()} ({os.cpu_count()} cores, "
                                  f"{platform.platform()})", "python": platform.python_version()}

    # 1. dry run of 1,000 runs
    sweep1k = {"name": "scale1k", "env": "slurm",
               "data": {"train": str(train), "eval": str(dev)},
               "grid": {"model.name_or_path": MODELS, "peft.rank": [4, 8, 12, 16, 24, 32, 48,
                                                                      64, 96, 128],
                        "train.num_epochs": list(range(1, 11))}}
    (out / "scale1k.yaml").write_text(yaml.safe_dump(sweep1k))
    wall, stdout = timed([py, "-m", "launcher", "submit", str(out / "scale1k.yaml"),
                          "--dry-run", "--runs-dir", str(out / "runs")])
    assert "1000 runs" in stdout, stdout[:500]
    figures["dry_run_1000_s"] = round(wall, 2)
    print(f"dry-run 1000 runs: {wall:.2f} s", flush=True)

    # 2-3. real submit of 200 runs, then status, against a local Slurm
    env = dict(os.environ)
    state = None
    if "SLURM_CONF" not in env:
        state = Path("/tmp/medsweep-scale-slurm")
        state.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["bash", str(ROOT / "ci" / "slurm-local-up.sh"), str(state)], check=True,
                       capture_output=True)
        env["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
    try:
        sweep200: dict[str, object] = {
            "name": "scale200", "env": "localci", "data": {"train": str(train), "eval": str(dev)},
            "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
                     "train.max_steps": 1},
            "seeds": list(range(200))}
        runs = str(out / "runs")
        _submit_status_cancel(py, out, runs, env, sweep200, "", "200 submit", figures)
        # The same 200 runs through a worker pool (warm_workers: true, the Slurm default):
        # one queue of 200 items and an array of max_parallel tasks; measured once the
        # cancelled array has left the machine (its jobs' processes would share the cores).
        deadline = time.time() + 120
        while time.time() < deadline and subprocess.run(
                ["squeue", "-h"], capture_output=True, text=True, env=env).stdout.strip():
            time.sleep(1)
        pool_env = yaml.safe_load((ROOT / "envs" / "localci.yaml").read_text())
        pool_env.update(name="localci-pool", warm_workers=True)
        (out / "localci-pool.yaml").write_text(yaml.safe_dump(pool_env))
        sweep200.update(name="scale200pool", env=str(out / "localci-pool.yaml"))
        _submit_status_cancel(py, out, runs, env, sweep200, "_pool",
                              "200 run(s) queued for a pool", figures)
    finally:
        if state is not None:
            subprocess.run(["bash", str(ROOT / "ci" / "slurm-local-down.sh"), str(state),
                            "--purge"], capture_output=True)

    # 4. leaderboard over 10,000 result files
    from core.fileio import atomic_write_json

    big = out / "runs10k" / "scale10k"
    rng = random.Random(0)
    (big).mkdir(parents=True, exist_ok=True)
    (big / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "scale10k", "grid": {"model.name_or_path": MODELS, "peft.rank": [8],
                                     "train.num_epochs": [1]}}))
    if not (big / "run-09999" / "results" / "performance.json").is_file():
        for i in range(10000):
            atomic_write_json(big / f"run-{i:05d}" / "results" / "performance.json",
                              fake_performance(rng, i, 8 * (1 + i % 4), 1 + i % 10))
    wall, stdout = timed([py, "-m", "launcher", "leaderboard", "scale10k", "--runs-dir",
                          str(out / "runs10k"), "--format", "csv"])
    assert len(stdout.splitlines()) >= 10001, len(stdout.splitlines())
    figures["leaderboard_10000_s"] = round(wall, 2)
    print(f"leaderboard 10,000 results: {wall:.2f} s", flush=True)
    print(json.dumps(figures, indent=2))
    if args.results:
        args.results.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
