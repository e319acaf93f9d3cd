"""Which Hub models a sweep needs, and whether the Hugging Face cache already holds them.

Compute nodes often have no internet: a sweep whose env sets ``HF_HUB_OFFLINE=1`` is checked
before submission, and ``launcher prefetch`` fills the cache from a login node.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.gguf import is_gguf_name
from launcher.envs import EnvProfile
from launcher.sweep import Sweep


def hub_models(sweep: Sweep) -> list[str]:
    """Model ids that come from the Hub (not scratch: models, local folders, GGUF files or
    PyPI models; the last two are checked where the sweep is validated)."""
    names: dict[str, None] = {}
    for run in sweep.runs:
        name = run.config.model.name_or_path
        if (name.lower().startswith("scratch:") or is_gguf_name(name)
                or Path(name).expanduser().exists()):
            continue
        names.setdefault(name, None)
    return list(names)


def gguf_models(sweep: Sweep) -> list[str]:
    """GGUF files and PyPI models of a sweep: nothing to download, dequantized by the job."""
    return list(dict.fromkeys(r.config.model.name_or_path for r in sweep.runs
                              if is_gguf_name(r.config.model.name_or_path)))


def cache_dir(env: EnvProfile) -> Path:
    """The hub cache the jobs will use: the profile's variables first, then this shell's."""
    vars_ = {**os.environ, **env.env_vars}
    if vars_.get("HF_HUB_CACHE"):
        return Path(vars_["HF_HUB_CACHE"]).expanduser()
    home = vars_.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home).expanduser() / "hub"


def is_cached(model: str, cache: Path) -> bool:
    folder = cache / ("models--" + model.replace("/", "--"))
    return any((snap / "config.json").is_file() for snap in (folder / "snapshots").glob("*"))


def missing_models(sweep: Sweep, env: EnvProfile) -> list[str]:
    cache = cache_dir(env)
    return [m for m in hub_models(sweep) if not is_cached(m, cache)]


def offline(env: EnvProfile) -> bool:
    return str(env.env_vars.get("HF_HUB_OFFLINE", "")).lower() in ("1", "true", "yes")
