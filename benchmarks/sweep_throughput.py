"""Whole-sweep throughput on one GPU: one run after another (what one job per run gives on one
card) against packs of runs side by side (jobs.pack.PackJob, what `runs_per_gpu` submits).

Both modes run the same run folders' configs through the same code (``python -m jobs.pack
RUN_DIR`` is run_pipeline in a process of its own), with no Slurm: the GPU machine has none. The
Slurm side of packing is tested on the local cluster (tests/test_slurm_packs.py).

    python benchmarks/sweep_throughput.py --train ../shared/data/bc5cdr/train.json \\
        --dev ../shared/data/bc5cdr/dev.json --model pypi:smollm2-135m-instruct --runs 8 \\
        --pack 4 --out /tmp/st

Writes OUT/sweep_throughput.json (per mode: wall s, GPU-seconds per run, GPU utilisation and
memory samples; per run: final loss, exact F1, train and eval s) and prints a summary.
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


def run_mode(mode: str, runs: list[Path], pack: int) -> dict[str, Any]:
    t0 = time.time()
    with GpuSampler() as gpu:
        if mode == "serial":
            for rd in runs:
                subprocess.run([sys.executable, "-m", "jobs.pack", str(rd)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            code = "import sys; from jobs.pack import PackJob; PackJob(sys.argv[1:])()"
            for i in range(0, len(runs), pack):
                subprocess.run([sys.executable, "-c", code, *map(str, runs[i:i + pack])],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - t0
    util = [u for _t, u, _m in gpu.samples]
    return {"mode": mode, "wall_s": round(wall, 1), "gpu_s_per_run": round(wall / len(runs), 1),
            "gpu_util_mean": round(sum(util) / len(util), 1) if util else None,
            "gpu_mem_max_mib": max((m for _t, _u, m in gpu.samples), default=None),
            "gpu_samples": gpu.samples, "runs": [run_row(rd) for rd in runs]}


def run_row(rd: Path) -> dict[str, Any]:
    from core.rundir import RunDir

    r = RunDir(rd)
    if not r.performance.is_file():
        err = json.loads(r.error.read_text())["error"] if r.error.is_file() else "no results"
        return {"run": rd.name, "error": err[:300]}
    perf = json.loads(r.performance.read_text())
    tr = perf.get("training") or {}
    return {"run": rd.name, "exact_f1": perf["metrics"]["total"]["exact"]["f1"],
            "final_loss": tr.get("final_loss"), "train_s": (perf.get("timings") or {}).get(
                "train_s"), "eval_s": (perf.get("timings") or {}).get("eval_s"),
            "startup": tr.get("startup")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--model", default="pypi:smollm2-135m-instruct")
    p.add_argument("--runs", type=int, default=8, help=f"At most {len(GRID)}.")
    p.add_argument("--pack", type=int, default=4, help="Runs side by side in packed mode.")
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--eval-records", type=int, default=500)
    p.add_argument("--modes", default="packed,serial")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out)
    result: dict[str, Any] = {"args": vars(args), "modes": []}
    for mode in args.modes.split(","):
        folder = out / mode
        shutil.rmtree(folder, ignore_errors=True)
        runs = make_runs(folder, args)
        result["modes"].append(run_mode(mode, runs, args.pack))
        (out / "sweep_throughput.json").write_text(json.dumps(result, indent=1))
        m = result["modes"][-1]
        print(f"{mode}: {m['wall_s']} s for {len(runs)} runs ({m['gpu_s_per_run']} GPU-s per "
              f"run), GPU util mean {m['gpu_util_mean']}%, max {m['gpu_mem_max_mib']} MiB; "
              + ", ".join(f"{r['run']} F1 {r.get('exact_f1', r.get('error'))}"
                          for r in m["runs"]), flush=True)
    if len(result["modes"]) == 2:
        a, b = ({r["run"]: r for r in m["runs"]} for m in result["modes"])
        same = [k for k in a if k in b and "error" not in a[k] and "error" not in b[k]]
        result["equal_within"] = {
            key: max((abs((a[k][key] or 0) - (b[k][key] or 0)) for k in same), default=None)
            for key in ("exact_f1", "final_loss")}
        result["wall_ratio"] = round(result["modes"][0]["wall_s"] / result["modes"][1]["wall_s"],
                                     3)
        (out / "sweep_throughput.json").write_text(json.dumps(result, indent=1))
        print(f"{result['modes'][0]['mode']} / {result['modes'][1]['mode']} wall: "
              f"{result['wall_ratio']}; largest per-run difference: {result['equal_within']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
