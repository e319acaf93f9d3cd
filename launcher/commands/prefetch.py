"""``prefetch SWEEP``: download every model and tokenizer a sweep needs into the jobs' cache.

Run it where there is internet (a login node); the compute nodes then run with
HF_HUB_OFFLINE=1. The token, if a model is gated, comes from HF_TOKEN.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from core.errors import UserError
from core.gguf import gguf_cache_root
from launcher.envs import load_env
from launcher.hubcache import cache_dir, gguf_models, hub_models, is_cached
from launcher.sweep import load_sweep

PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("prefetch", help="download a sweep's models into the jobs' HF cache")
    p.add_argument("sweep", help="Sweep YAML.")
    p.add_argument("--env", help="Env profile override (its HF_HOME / HF_HUB_CACHE is used).")


def run(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep)
    env = load_env(args.env or sweep.env)
    jobs_env = {**os.environ, **env.env_vars}  # what the jobs will see
    for m in gguf_models(sweep):
        # Found at validation; the job dequantizes it once into MEDSWEEP_GGUF_CACHE.
        print(f"local GGUF  {m} (dequantized by the first job into "
              f"{gguf_cache_root(jobs_env)})")
    cache = cache_dir(env)
    todo = [m for m in hub_models(sweep) if not is_cached(m, cache)]
    for m in hub_models(sweep):
        if m not in todo:
            print(f"cached      {m}")
    if not todo:
        print(f"every model of {sweep.name} is in {cache}")
        return 0
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true"):
        raise UserError(f"HF_HUB_OFFLINE is set in this shell, so {len(todo)} model(s) cannot be "
                        f"downloaded ({', '.join(todo)}); unset it on a machine with internet")
    from huggingface_hub import snapshot_download

    for m in todo:
        print(f"downloading {m} -> {cache}", flush=True)
        snapshot_download(m, cache_dir=str(cache), allow_patterns=PATTERNS,
                          token=os.environ.get("HF_TOKEN"))
    return 0
