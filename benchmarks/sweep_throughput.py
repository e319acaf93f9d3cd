"""Whole-sweep throughput on one GPU: one run after another (what one job per run gives on one
card) against packs of runs side by side (jobs.pack.PackJob, what `runs_per_gpu` submits).

Both modes run the same run folders' configs through the same code (``python -m jobs.pack
RUN_DIR`` is run_pipeline in a process of its own), with no Slurm: the GPU machine has none. The
Slurm side of packing is tested on the local cluster (tests/test_slurm_packs.py).

    python benchmarks/sweep_throughput.py --train ../shared/data/bc5cdr/train.json \\
        --dev ../shared/data/bc5cdr/dev.json --model pypi:smollm2-135m-instruct --runs 8 \\
        --pack 4 --out /tmp/st

Modes: ``serial`` (one run after another), ``packed`` (packs of ``--pack`` side by side through a
CUDA MPS daemon, the default of ``cuda_mps``) and ``packed-timesliced`` (the same packs without
MPS). Writes OUT/sweep_throughput.json (per mode: wall s, GPU-seconds per run, GPU utilisation
and memory samples; per run: final loss, exact F1, train and eval s, start-up breakdown, how it
shared the GPU) and prints a summary. Modes run by an earlier call on the same OUT are kept, so
the modes can be split over calls.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOT_STARTED = "not started before the deadline"
GRID = [{"peft.rank": r, "train.learning_rate": lr} for r in (8, 16, 32, 64)
        for lr in (2e-4, 5e-4)]


def make_runs(folder: Path, args: argparse.Namespace) -> list[Path]:
    from core.config import RunConfig

    out = []
    for i, varied in enumerate(GRID[:args.runs]):
        cfg = RunConfig().to_dict()
        cfg["model"].update({"name_or_path": args.model, "load_in_4bit": False})
        cfg["data"].update({"train_dataset_file": str(Path(args.train).resolve()),
                            "eval_dataset_file": str(Path(args.dev).resolve())})
        cfg["train"]["num_epochs"] = args.epochs
        if args.max_steps:
            cfg["train"]["max_steps"] = args.max_steps
        cfg["eval"]["max_examples"] = args.eval_records
        for key, value in varied.items():
            section, name = key.split(".")
            cfg[section][name] = value
        rd = folder / f"run{i}"
        rd.mkdir(parents=True)
        (rd / "config.yaml").write_text(yaml.safe_dump(cfg))
        out.append(rd)
    return out


class GpuSampler:
    def __init__(self, every_s: float = 2.0) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.every_s = every_s
        self._stop = threading.Event()
        self._t0 = time.time()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True,
                                     text=True, timeout=10).stdout.split("\n")[0]
                util, mem = (float(x) for x in out.split(","))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                continue
            self.samples.append((round(time.time() - self._t0, 1), util, mem))

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def run_mode(mode: str, runs: list[Path], pack: int, deadline: float) -> dict[str, Any]:
    """Every run of the mode, or (past the deadline) the ones started before it: a run or pack
    not started is left out of the wall time and its row says so."""
    from core.rundir import RunDir

    t0 = time.time()
    with GpuSampler() as gpu:
        if mode == "serial":
            for rd in runs:
                if time.time() > deadline:
                    break
                run_log = RunDir(rd).run_log
                run_log.parent.mkdir(parents=True, exist_ok=True)
                with open(run_log, "wb") as fh:
                    subprocess.run([sys.executable, "-m", "jobs.pack", str(rd)], cwd=ROOT,
                                   stdout=fh, stderr=subprocess.STDOUT)
        else:
            code = ("import sys; from jobs.pack import PackJob; "
                    "PackJob(sys.argv[2:], mps=sys.argv[1] == 'mps')()")
            mps = "mps" if mode == "packed" else "timesliced"
            for i in range(0, len(runs), pack):
                if time.time() > deadline:
                    break
                with open(runs[i] / "pack.log", "wb") as pack_log:
                    subprocess.run([sys.executable, "-c", code, mps, *map(str, runs[i:i + pack])],
                                   cwd=ROOT, stdout=pack_log, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    util = [u for _t, u, _m in gpu.samples]
    rows = [run_row(rd) for rd in runs]
    ran = sum(1 for r in rows if r.get("error") != NOT_STARTED) or 1
    return {"mode": mode, "wall_s": round(wall, 1), "runs_started": ran,
            "gpu_s_per_run": round(wall / ran, 1),
            "gpu_util_mean": round(sum(util) / len(util), 1) if util else None,
            "gpu_mem_max_mib": max((m for _t, _u, m in gpu.samples), default=None),
            "gpu_samples": gpu.samples, "runs": rows}


def run_row(rd: Path) -> dict[str, Any]:
    from core.rundir import RunDir

    r = RunDir(rd)
    if not r.run_log.is_file():
        return {"run": rd.name, "error": NOT_STARTED}
    if not r.performance.is_file():
        err = json.loads(r.error.read_text())["error"] if r.error.is_file() else "no results"
        return {"run": rd.name, "error": err[:300]}
    perf = json.loads(r.performance.read_text())
    tr = perf.get("training") or {}
    return {"run": rd.name, "exact_f1": perf["metrics"]["total"]["exact"]["f1"],
            "final_loss": tr.get("final_loss"), "train_s": (perf.get("timings") or {}).get(
                "train_s"), "eval_s": (perf.get("timings") or {}).get("eval_s"),
            "startup": tr.get("startup"), "pack_mps": tr.get("pack_mps")}


def summarize(result: dict[str, Any]) -> None:
    """Each packed mode against serial: the wall-time and GPU-seconds-per-run ratios and the
    largest per-run difference in exact F1 and final loss (the same runs, the same seeds)."""
    by_mode = {m["mode"]: {r["run"]: r for r in m["runs"]} for m in result["modes"]}
    walls = {m["mode"]: m["wall_s"] for m in result["modes"]}
    per_run = {m["mode"]: m["gpu_s_per_run"] for m in result["modes"]}
    if "serial" not in by_mode:
        return
    base = by_mode["serial"]
    result["against_serial"] = {}
    for mode, rows in by_mode.items():
        if mode == "serial":
            continue
        same = [k for k in rows if k in base and "error" not in rows[k]
                and "error" not in base[k]]
        result["against_serial"][mode] = {
            "wall_ratio": round(walls[mode] / walls["serial"], 3),
            # The measure where the modes ran different numbers of runs (a deadline).
            "gpu_s_per_run_ratio": round(per_run[mode] / per_run["serial"], 3),
            "runs_compared": len(same),
            "equal_within": {key: max((abs((rows[k][key] or 0) - (base[k][key] or 0))
                                       for k in same), default=None)
                             for key in ("exact_f1", "final_loss")}}


def main(argv: list[str] | None = None) -> int:
    from core.fileio import atomic_write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--model", default="pypi:smollm2-135m-instruct")
    p.add_argument("--runs", type=int, default=8, help=f"At most {len(GRID)}.")
    p.add_argument("--pack", type=int, default=4, help="Runs side by side in packed mode.")
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--eval-records", type=int, default=500)
    p.add_argument("--modes", default="packed,serial",
                   help="Comma-separated: serial, packed, packed-timesliced.")
    p.add_argument("--out", required=True)
    p.add_argument("--deadline-s", type=float, default=0,
                   help="Start no run (serial) or pack after this many seconds; 0: no limit.")
    args = p.parse_args(argv)
    deadline = time.time() + args.deadline_s if args.deadline_s > 0 else float("inf")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep_throughput.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {"modes": []}
    wanted = args.modes.split(",")
    result: dict[str, Any] = {"args": vars(args), "modes": [
        m for m in earlier["modes"] if m["mode"] not in wanted]}
    for mode in wanted:
        folder = out / mode
        shutil.rmtree(folder, ignore_errors=True)
        runs = make_runs(folder, args)
        result["modes"].append(run_mode(mode, runs, args.pack, deadline))
        summarize(result)
        atomic_write_json(path, result)
        m = result["modes"][-1]
        print(f"{mode}: {m['wall_s']} s for {m['runs_started']} runs ({m['gpu_s_per_run']} "
              f"GPU-s per run), GPU util mean {m['gpu_util_mean']}%, max {m['gpu_mem_max_mib']} MiB; "
              + ", ".join(f"{r['run']} F1 {r.get('exact_f1', r.get('error'))}"
                          for r in m["runs"]), flush=True)
    for key, cmp in (result.get("against_serial") or {}).items():
        print(f"{key} / serial wall: {cmp['wall_ratio']}, GPU-s per run: "
              f"{cmp['gpu_s_per_run_ratio']}; largest per-run difference: "
              f"{cmp['equal_within']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
