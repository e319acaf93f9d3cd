"""Issue 26's GPU acceptance report: what a sweep submitted with `python -m launcher submit`
on a GPU machine did, read from its run folders (the files status and leaderboard read) and
an nvidia-smi sample log taken beside it.

    python benchmarks/acceptance.py --sweep-dir RUNS/NAME --util util.csv --wall-s 812 \
        --out report   # -> report.json, report.md; exit 1 unless every run trained on CUDA

Per run: where it ran (cuda, CUDA_VISIBLE_DEVICES), examples/s of training, the GPU's busy
share over its training loop (nvidia-smi utilization.gpu samples inside that interval: on a
shared card it is the card's, not the run's), the step-time breakdown and compile count from
medsweep_train.json, start-up to the first step, peak memory, evaluation records/s and exact F1.
The util CSV is `nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used
--format=csv,noheader,nounits -l 1`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def read_util(path: Path | None) -> list[tuple[float, int, float]]:
    """(unix time, gpu index, utilization %) samples."""
    out: list[tuple[float, int, float]] = []
    if path is None or not path.is_file():
        return out
    for line in path.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3:
            continue
        try:
            t = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").replace(
                tzinfo=timezone.utc).timestamp()
            out.append((t, int(parts[1]), float(parts[2])))
        except ValueError:
            continue
    return out


def busy_share(samples: list[tuple[float, int, float]], start: float, end: float,
               gpus: set[int] | None) -> float | None:
    inside = [u for t, i, u in samples if start <= t <= end and (gpus is None or i in gpus)]
    return round(sum(1 for u in inside if u > 0) / len(inside), 3) if inside else None


def mean_util(samples: list[tuple[float, int, float]], start: float, end: float,
              gpus: set[int] | None) -> float | None:
    inside = [u for t, i, u in samples if start <= t <= end and (gpus is None or i in gpus)]
    return round(sum(inside) / len(inside), 1) if inside else None


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def run_row(run_dir: Path, samples: list[tuple[float, int, float]],
            clock_offset_s: float) -> dict[str, Any]:
    cfg_varied = json.loads((run_dir / "job.json").read_text()).get("varied", {}) if (
        run_dir / "job.json").is_file() else {}
    row: dict[str, Any] = {"run_id": run_dir.name, "varied": cfg_varied}
    tr_path = run_dir / "adapter" / "medsweep_train.json"
    if not tr_path.is_file():
        row["error"] = (json.loads((run_dir / "error.json").read_text())["error"]
                        if (run_dir / "error.json").is_file() else "no medsweep_train.json")
        return row
    tr = json.loads(tr_path.read_text())
    dev = tr.get("device", {})
    st = tr.get("step_time") or {}
    end = _ts(tr["finished_at"]) + clock_offset_s
    loop = float(st.get("loop_s") or tr["train_s"])
    gpus = dev.get("cuda_visible_devices")
    cards = {int(x) for x in gpus.split(",")} if gpus and gpus.replace(",", "").isdigit() else None
    row.update({
        "cuda": dev.get("cuda"), "gpus": dev.get("gpus"), "cuda_visible_devices": gpus,
        "examples": tr["examples"], "global_step": tr["global_step"],
        "train_s": tr["train_s"], "examples_per_s": tr.get("examples_per_s"),
        "s_per_step": st.get("s_per_step"),
        "gpu_busy_share": busy_share(samples, end - loop, end, cards),
        "gpu_util_mean": mean_util(samples, end - loop, end, cards),
        "step_share": st.get("share"), "compiles": st.get("compiles"),
        "checkpoints": tr.get("checkpoints"), "startup": tr.get("startup"),
        "gradient_checkpointing": tr.get("gradient_checkpointing"),
        "micro_batch": f"{tr.get('per_device_batch_size')}x{tr.get('gradient_accumulation_steps')}",
        "peak_vram_gb": tr.get("peak_vram_gb"), "final_loss": tr.get("final_loss"),
        "pack_mps": tr.get("pack_mps"),
        # model.compile as resolved (None from runs made before it was recorded).
        "compiled": tr.get("compiled"), "flex_attention": tr.get("flex_attention"),
    })
    perf_path = run_dir / "results" / "performance.json"
    if perf_path.is_file():
        perf = json.loads(perf_path.read_text())
        t = perf.get("timings", {})
        row.update({"eval_records": perf.get("num_examples"),
                    "eval_s": t.get("eval_s"), "eval_load_s": t.get("load_s"),
                    "eval_records_per_s": t.get("records_per_s"),
                    "exact_f1": perf["metrics"]["total"]["exact"]["f1"],
                    "parse_failures": perf.get("parse", {}).get("failure_rate"),
                    "decode": perf.get("generation", {}).get("decode")})
    return row


def render_md(rows: list[dict[str, Any]], wall_s: float | None) -> str:
    head = ("| run | cuda | card | mode | ex/s | s/step | GPU busy | util % | compute / compile "
            "/ data / log / ckpt | compiles | to 1st step s | peak GB | eval rec/s | exact F1 |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['run_id']} | failed: {r['error'][:80]} |" + " |" * 12)
            continue
        sh = r.get("step_share") or {}
        parts = " / ".join(f"{sh.get(k, 0):.0%}" for k in
                           ("compute", "compile", "data", "logging", "checkpoint"))
        st = r.get("startup") or {}
        mode = {None: "?", True: "compiled", False: "eager"}[r.get("compiled")]
        if r.get("flex_attention"):
            mode += "+flex"
        lines.append(
            f"| {r['run_id']} | {r['cuda']} | {r['cuda_visible_devices']} | {mode} | "
            f"{r.get('examples_per_s')} | {r.get('s_per_step')} | {r.get('gpu_busy_share')} | "
            f"{r.get('gpu_util_mean')} | {parts} | {r.get('compiles')} | "
            f"{st.get('process_to_first_step_s')} | {r.get('peak_vram_gb')} | "
            f"{r.get('eval_records_per_s') and round(r['eval_records_per_s'], 1)} | "
            f"{r.get('exact_f1') and round(r['exact_f1'], 3)} |")
    if wall_s is not None:
        lines.append(f"\nsweep wall time (launcher submit, start to leaderboard): {wall_s:.0f} s")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep-dir", type=Path, required=True)
    ap.add_argument("--util", type=Path)
    ap.add_argument("--wall-s", type=float)
    ap.add_argument("--clock-offset-s", type=float, default=0.0,
                    help="Seconds to add to the runs' timestamps to reach the util log's clock.")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    samples = read_util(args.util)
    rows = [run_row(d, samples, args.clock_offset_s) for d in sorted(args.sweep_dir.iterdir())
            if (d / "config.yaml").is_file() or (d / "job.json").is_file()]
    doc = {"sweep": str(args.sweep_dir), "wall_s": args.wall_s, "runs": rows}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    args.out.with_suffix(".md").write_text(render_md(rows, args.wall_s))
    print(render_md(rows, args.wall_s))
    bad = [r["run_id"] for r in rows if r.get("cuda") is not True]
    if bad or not rows:
        print(f"FAIL: {len(bad)} run(s) did not train on CUDA: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
