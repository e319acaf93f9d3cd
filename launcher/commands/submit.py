"""``submit SWEEP [--env ENV] [--dry-run]``: validate, plan and submit a sweep."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from core.fileio import folder_problem
from launcher.backends import backend_for
from launcher.envs import load_env
from launcher.gpus import LocalGpu, detect_gpus, with_local_gpus
from launcher.hubcache import cache_dir, missing_models, offline
from launcher.submit import plan_sweep, share_planned, submit_sweep, sweep_dir
from launcher.sweep import load_sweep
from launcher.tasks import tasks_of
from launcher.yamlio import YamlError

DEFAULT_SWEEP = Path(__file__).resolve().parents[2] / "sweeps" / "demo.yaml"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("submit", help="submit every run of a sweep (skips finished ones)",
                       description="Validate and expand a sweep, plan each run's resources and "
                       "submit one job per run (one array per resource group). With the local "
                       "env the runs execute here and a leaderboard is printed at the end.")
    p.add_argument("sweep", nargs="?", default=str(DEFAULT_SWEEP),
                   help="Sweep YAML (default: the bundled demo sweep, sweeps/demo.yaml).")
    p.add_argument("--env", help="Env profile name (envs/<name>.yaml) or path; overrides the "
                   "sweep's env.")
    p.add_argument("--dry-run", action="store_true",
                   help="Print every run with its resources and sbatch parameters; submit "
                   "nothing.")
    p.add_argument("--runs-dir", help="Override the env's runs folder.")


def run(args: argparse.Namespace) -> int:
    try:
        sweep = load_sweep(args.sweep)
        try:
            env = load_env(args.env or sweep.env)
        except YamlError as exc:
            if args.env:
                raise
            raise YamlError(f"{sweep.path}: {exc}") from None
        bad = folder_problem(args.runs_dir or env.runs_dir,
                             "--runs-dir" if args.runs_dir else f"{env.name}: runs_dir")
        if bad:
            raise YamlError(bad)
        if args.dry_run:
            gpus = detect_gpus(env)
            env = with_local_gpus(env, gpus)
            planned = plan_sweep(sweep, env)
            share_planned(planned, planned, sweep, sweep_dir(sweep, env, args.runs_dir))
            return _print_dry_run(sweep, env, planned, gpus)
        if backend_for(env).waits_for_runs:
            # The runs stop on SIGINT (Ctrl-C, or `kill -INT` of a submit started in the
            # background, where the shell hands it SIGINT ignored).
            signal.signal(signal.SIGINT, signal.default_int_handler)
        t0 = time.time()
        planned = submit_sweep(sweep, env, runs_dir=args.runs_dir,
                               on_event=lambda m: print(f"  {m}", flush=True))
    except KeyboardInterrupt:
        # Ctrl-C reaches the local runs too (same terminal); they stop where they are.
        print("\ninterrupted: the running local runs were stopped; `python -m launcher "
              "resubmit` continues them from their last checkpoints", file=sys.stderr)
        return 130
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.action] = counts.get(p.action, 0) + 1
    folder = sweep_dir(sweep, env, args.runs_dir)
    print(f"sweep {sweep.name}: {len(planned)} runs; "
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"; folder {folder}")
    if backend_for(env).waits_for_runs:
        from launcher.commands import leaderboard

        print(f"finished in {time.time() - t0:.0f} s")
        if sweep.ensemble is not None:
            _make_ensemble(folder, sweep.ensemble)
        rc = leaderboard.print_board([folder], sort="exact.f1", fmt="github", with_pr=False,
                                     write=True)
        _write_report(folder)
        return rc
    print(f"follow with: python -m launcher status {sweep.name}")
    return 0


def _make_ensemble(folder: Path, spec: Any) -> None:
    """The sweep's `ensemble:` vote, once its runs have ended here."""
    from core.data import DataError
    from launcher.commands.ensemble import show
    from launcher.ensemble import make_ensemble

    try:
        print("\n".join(show(make_ensemble(folder, top=spec.top, runs=None,
                                           min_votes=spec.min_votes))))
    except DataError as exc:
        # Too few runs finished (failures): the runs and their leaderboard stand.
        print(f"note: no ensemble built: {exc}", file=sys.stderr)


def _write_report(folder: Path) -> None:
    """The sweep's HTML report, at the end of a sweep that ran here."""
    from launcher.report import write_report

    try:
        print(f"report: {write_report(folder)}")
    except OSError as exc:
        # A lab-mate's (read-only) runs folder, or a full disk: the leaderboard above stands.
        print(f"note: no report written into {folder} ({exc.strerror}); write one elsewhere "
              f"with: python -m launcher report {folder} --output FILE", file=sys.stderr)


FEW_STEPS = 50
"""Fewer optimizer steps than this at the first rung rank runs on noise (RESULTS.md, "Adaptive
sweeps": at 19 steps the full grid's winner scored 0 and was stopped)."""


def _steps_per_epoch(cfg: Any) -> int | None:
    from core.data import DataError, load_dataset

    try:
        n = len(load_dataset(cfg.data.train_dataset_file).records)
    except (DataError, OSError, ValueError):
        return None
    per_step = cfg.train.per_device_batch_size * cfg.train.gradient_accumulation_steps
    return max(1, -(-n // per_step))


def search_plan(spec: Any, n: int, steps_per_epoch: int | None = None) -> str:
    """The rungs of an adaptive sweep and the most it can train against the full grid, with a
    warning where the first rung is too short to rank runs.

    >>> from core.search import SearchSpec
    >>> print(search_plan(SearchSpec((1, 3, 9)), 12, 19))
    search: successive-halving by dev_exact_f1, keep 1/3 at each rung:
      rung 0: 12 run(s) to 1 epoch(s)
      rung 1: 4 run(s) to 3 epoch(s)
      rung 2: 1 run(s) to 9 epoch(s)
      at most 26 run-epochs of training, against 108 for the full grid (24%)
    warning: rung 0 trains about 19 optimizer steps per run; rankings after fewer than 50 can stop the eventual winner (raise the first rung, or train on more records)
    """
    lines = [f"search: {spec.strategy} by {spec.metric}, keep {spec.keep_text} at each rung:"]
    alive = n
    for i, b in enumerate(spec.rungs):
        lines.append(f"  rung {i}: {alive} run(s) to {b:g} epoch(s)")
        alive = spec.survivors(alive)
    most, grid = spec.run_epochs(n), n * spec.rungs[-1]
    lines.append(f"  at most {most:g} run-epochs of training, against {grid:g} for the full "
                 f"grid ({most / grid:.0%})" if grid else "")
    first = steps_per_epoch * spec.rungs[0] if steps_per_epoch else None
    if first is not None and first < FEW_STEPS:
        lines.append(f"warning: rung 0 trains about {first:.0f} optimizer steps per run; "
                     f"rankings after fewer than {FEW_STEPS} can stop the eventual winner "
                     "(raise the first rung, or train on more records)")
    return "\n".join(lines)


def _print_dry_run(sweep: Any, env: Any, planned: list[Any],
                   gpus: tuple[LocalGpu, ...] = ()) -> int:
    from tabulate import tabulate

    rows = []
    for p in planned:
        r = p.resources
        cards = f"{r.gpus} x {r.gpu_type} ({r.vram_per_gpu_gb:g} GB)" if r.gpus else "cpu/local"
        rows.append([p.run.run_id, p.run.config.model.name_or_path,
                     f"{p.need_gb:.1f}", r.partition, cards, r.time_min])
    print(f"sweep {sweep.name} on env {env.name} ({env.executor}): {len(planned)} runs "
          "(dry run: nothing submitted)")
    if offline(env):
        missing = missing_models(sweep, env)
        if missing:
            print(f"warning: env {env.name} sets HF_HUB_OFFLINE=1 and {len(missing)} model(s) "
                  f"are not in {cache_dir(env)} yet: {', '.join(missing)}; `submit` will refuse "
                  "until `python -m launcher prefetch` has fetched them")
    print(tabulate(rows, headers=["run_id", "model", "est. GB", "partition", "gpus",
                                  "time min"], tablefmt="github"))
    if sweep.search is not None:
        print(search_plan(sweep.search, len(planned), _steps_per_epoch(planned[0].run.config)))
    shared = [p for p in planned if p.trained_in]
    if shared:
        print(f"\n{len(shared)} run(s) differ from another only in what evaluation reads and "
              "train no model of their own:")
        for p in shared:
            how = "in its job, once it is trained" if p.attached else "(trained already)"
            print(f"  {p.run.run_id}: evaluated with {p.trained_in}'s model {how}")
        planned = [p for p in planned if not p.attached]
    for line in backend_for(env).plan_lines(env, tasks_of(planned, env), gpus):
        print(line)
    return 0
