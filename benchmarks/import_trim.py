"""What Unsloth's import costs with and without jobs.unsloth_import's hook (issue 26, start-up).

Each side runs in a fresh interpreter, --repeat times, alternating. On a GPU the import itself
rewrites TRL's trainers, so the whole ``import unsloth`` is timed. On a CPU Unsloth skips that
rewrite (UNSLOTH_ALLOW_CPU), so the script times the import and then the call Unsloth's import
makes on a GPU (``unsloth.models.rl.patch_trl_rl_trainers``), on Unsloth's GPU import path
(UNSLOTH_ALLOW_CPU=1; a medsweep CPU job takes Unsloth's CPU backend, which skips it). A component figure: the job's own
start-up breakdown (``medsweep_train.json``, ``startup``) is the one through the user's path.

    python benchmarks/import_trim.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys, time
t0 = time.perf_counter()
if sys.argv[1] == "hook":
    from jobs.modeling import import_unsloth
    import_unsloth()
else:
    from jobs.modeling import setup_environment
    setup_environment()
    import unsloth
t1 = time.perf_counter()
import torch
rewrite = 0.0
if not torch.cuda.is_available():
    from unsloth.models import rl
    rl.patch_trl_rl_trainers()
    rewrite = time.perf_counter() - t1
print(json.dumps({"import_s": t1 - t0, "rewrite_s": rewrite, "cuda": torch.cuda.is_available()}))
"""


def one(side: str, cwd: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("HF_HUB_OFFLINE", "1")
    if shutil.which("nvidia-smi") is None:
        # Unsloth's GPU import path on a CPU (as tests/test_unsloth_import.py); without it the
        # CPU backend imports its GPU model stack later, outside the hook, or not at all.
        env["UNSLOTH_ALLOW_CPU"] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE, side], cwd=cwd, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    rows: dict[str, list[dict[str, float]]] = {"all": [], "hook": []}
    with tempfile.TemporaryDirectory() as cwd:  # Unsloth writes its compiled cache here
        one("all", cwd)  # warm the file cache and Unsloth's compiled cache first
        for _ in range(args.repeat):
            for side in rows:
                rows[side].append(one(side, cwd))
    print("| Unsloth rewrites | import s (median) | + rewrite call s (CPU only) | total s |")
    print("|---|---|---|---|")
    for side, rs in rows.items():
        imp = statistics.median(r["import_s"] for r in rs)
        rw = statistics.median(r["rewrite_s"] for r in rs)
        name = "every TRL trainer" if side == "all" else "SFT only (the hook)"
        print(f"| {name} | {imp:.1f} | {rw:.1f} | {imp + rw:.1f} |")
    print(f"cuda: {rows['all'][0]['cuda']}, {args.repeat} runs per side")
    return 0


if __name__ == "__main__":
    sys.exit(main())
