"""Execution-environment profiles (envs/*.yaml): where and how a sweep's jobs run."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import unknown_key
from launcher.yamlio import YamlError, load_yaml_mapping

ENVS_DIR = Path(__file__).resolve().parent.parent / "envs"


@dataclass(frozen=True)
class Partition:
    name: str = field(metadata={"help": "Slurm partition name."})
    gpu_type: str = field(metadata={"help": "GRES type of its GPUs (h100, a100, ...)."})
    vram_gb: float = field(metadata={"help": "Memory per GPU in GB."})
    gpus_per_node: int = field(default=1, metadata={"help": "GPUs on one node."})
    constraint: str = field(default="", metadata={"help": "--constraint to add (e.g. a "
                                                          "node feature such as vram80g)."})
    max_time_min: int = field(default=0, metadata={"help": "The partition's time limit "
                                                           "(0: none)."})


@dataclass(frozen=True)
class EnvProfile:
    name: str = field(default="local", metadata={"help": "Profile name."})
    executor: str = field(default="local", metadata={
        "help": "local (this machine, no cluster) or slurm."})
    max_parallel: int = field(default=1, metadata={
        "help": "local without GPUs: runs at a time (with GPUs: one run or pack per free "
                "card); slurm: array parallelism per job array."})
    gpus: str = field(default="auto", metadata={
        "help": "local: the GPUs runs are placed on: auto (every card nvidia-smi lists, within "
                "a CUDA_VISIBLE_DEVICES already set), none (CPU only), or indices such as 0,1."})
    runs_dir: str = field(default="runs", metadata={
        "help": "Where run folders go (relative to the current directory)."})
    partitions: tuple[Partition, ...] = field(default=(), metadata={
        "help": "GPU partitions (slurm): name, gpu_type, vram_gb, gpus_per_node, constraint."})
    account: str = field(default="", metadata={"help": "Slurm --account."})
    qos: str = field(default="", metadata={"help": "Slurm --qos."})
    time_limit_min: int = field(default=240, metadata={"help": "Job time limit in minutes."})
    cpus_per_gpu: int = field(default=4, metadata={"help": "CPUs per GPU requested."})
    mem_gb_per_gpu: int = field(default=32, metadata={"help": "Host memory per GPU (GB)."})
    gres_style: str = field(default="gres", metadata={
        "help": "gres: --gres=gpu:<type>:<n>; gpus: --gpus-per-node=<n> plus constraint."})
    vram_margin: float = field(default=0.9, metadata={
        "help": "Share of a card's memory a run may plan to use."})
    setup: tuple[str, ...] = field(default=(), metadata={
        "help": "Shell lines run before each job (module load, venv activation)."})
    env_vars: dict[str, str] = field(default_factory=dict, metadata={
        "help": "Environment for the jobs (HF_HOME, HF_HUB_OFFLINE, compile caches)."})
    signal_delay_s: int = field(default=120, metadata={
        "help": "Seconds before the time limit at which the job checkpoints and requeues."})
    max_requeues: int = field(default=3, metadata={
        "help": "Requeues after time limits / preemption before a run fails."})
    runs_per_gpu: str = field(default="auto", metadata={
        "help": "slurm, and local with GPUs: runs packed side by side on one GPU, each in its own process: auto "
                "(as many as the memory estimates fit, at most 4) or N (1: one job per run)."})
    decider_partition: str = field(default="", metadata={
        "help": "slurm: the partition of an adaptive sweep's one-CPU decider jobs (empty: the "
                "first of partitions; name a CPU partition where GPU ones refuse jobs without "
                "a GPU)."})
    cuda_mps: bool = field(default=True, metadata={
        "help": "slurm and local: a pack of runs shares its GPU through a CUDA MPS daemon it starts "
                "(kernels of its runs run at once, not time-sliced); false: time-sliced."})
    warm_workers: bool = field(default=True, metadata={
        "help": "Run the sweep's one-card runs in warm workers that import torch and Unsloth "
                "once and take run after run from a queue: local, one per card slot (or "
                "max_parallel on the CPU); slurm, a pool of at most max_parallel array tasks, "
                "each a card with its workers. false: a process (local) or job (slurm) of its "
                "own per run or pack."})

    @property
    def runs_here(self) -> bool:
        """Whether runs execute on this machine (its GPUs are looked for and placed on)."""
        return self.executor == "local"


ENV_KEYS = {f.name for f in dataclasses.fields(EnvProfile)}
PARTITION_KEYS = {f.name for f in dataclasses.fields(Partition)}


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
# Slurm constraints combine features with & | , [ ] ( ) * and counts.
_CONSTRAINT = re.compile(r"[A-Za-z0-9._&|,\[\]()*:-]+")
_SLURM_NAMES = {"account": _NAME, "qos": _NAME, "decider_partition": _NAME}
_SECRET = re.compile(r"\bhf_[A-Za-z0-9]{30,}|(HF_TOKEN|HUGGING_FACE_HUB_TOKEN)\s*=")


def _short(value: Any) -> str:
    """A value for an error message, never the whole of an unbounded one."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_scalar(errors: list[str], where: str, key: str, value: Any, typ: type) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
        errors.append(f"{where}: {key}: expected {typ.__name__}, got {value!r}")
        return None
    return value


def _parse_setup(value: Any, where: str, errors: list[str]) -> tuple[str, ...] | None:
    """`setup`: shell lines run before each job, with no token and one line per item."""
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        errors.append(f"{where}: setup: expected a list of shell lines")
        return None
    for i, line in enumerate(value):
        if _SECRET.search(line):
            errors.append(f"{where}: setup[{i}]: a Hugging Face token must not be written in a "
                          "profile; export HF_TOKEN in your shell (the job reads it from the "
                          "environment)")
        if "\0" in line or "\n" in line:
            errors.append(f"{where}: setup[{i}]: one shell line per list item, without NUL or "
                          "newline characters")
    return tuple(value)


def _parse_env_vars(value: Any, where: str, errors: list[str]) -> dict[str, str] | None:
    """`env_vars`: variables exported for each job; a token is refused."""
    if not isinstance(value, dict):
        errors.append(f"{where}: env_vars: expected a mapping NAME: value")
        return None
    bad = [k for k in value if str(k).upper() in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")]
    if bad:
        errors.append(f"{where}: env_vars: {bad[0]} must not be written in a profile; export "
                      "it in your shell (the job reads it from the environment)")
    for k, v in value.items():
        if not isinstance(k, str) or not _ENV_NAME.fullmatch(k):
            errors.append(f"{where}: env_vars: {_short(k)} is not a variable name (letters, "
                          "digits and _, not starting with a digit)")
        elif "\0" in str(v):
            errors.append(f"{where}: env_vars: {k}: the value contains a NUL character, which "
                          "no environment can hold")
        elif _SECRET.search(str(v)):
            errors.append(f"{where}: env_vars: {k}: a Hugging Face token must not be written "
                          "in a profile; export HF_TOKEN in your shell")
    # A leading ~ is the submitting user's home (a job's shell would not expand it inside the
    # quotes the value is exported with).
    return {str(k): os.path.expanduser(str(v)) for k, v in value.items()}


def _parse_key(key: str, value: Any, where: str, errors: list[str]) -> Any:
    """One profile key's value, typed, or None (its problem appended to errors)."""
    if key == "partitions":
        return tuple(_parse_partitions(value, where, errors))
    if key == "setup":
        return _parse_setup(value, where, errors)
    if key == "env_vars":
        return _parse_env_vars(value, where, errors)
    if key == "runs_per_gpu":
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                               and value >= 1):
            return str(value)
        errors.append(f"{where}: runs_per_gpu: expected auto or a whole number >= 1, "
                      f"got {_short(value)}")
        return None
    if key == "gpus":
        gpus = _parse_gpus(value)
        if gpus is None:
            errors.append(f"{where}: gpus: expected auto, none or GPU indices such as [0, 1], "
                          f"got {_short(value)}")
        return gpus
    if key in _SLURM_NAMES:
        v = _check_scalar(errors, where, key, value, str)
        if v is not None and v != "" and not _SLURM_NAMES[key].fullmatch(v):
            errors.append(f"{where}: {key}: {_short(v)} is not a valid Slurm {key} (letters, "
                          "digits and . _ - only)")
            return None
        return v
    return _check_scalar(errors, where, key, value, type(getattr(EnvProfile(), key)))


def _check_profile(env: EnvProfile, data: dict[str, Any], where: str,
                   errors: list[str]) -> None:
    """What only the whole profile shows: the executor, its partitions, the ranges."""
    if env.executor not in ("local", "slurm"):
        errors.append(f"{where}: executor: {env.executor!r} is not one of local, slurm")
    if env.executor == "slurm" and not data.get("partitions"):
        errors.append(f"{where}: partitions: a slurm profile needs at least one partition")
    if env.gres_style not in ("gres", "gpus"):
        errors.append(f"{where}: gres_style: {env.gres_style!r} is not one of gres, gpus")
    if env.max_parallel < 1:
        errors.append(f"{where}: max_parallel must be >= 1")
    if env.time_limit_min < 1:
        errors.append(f"{where}: time_limit_min must be >= 1")
    elif not 0 <= env.signal_delay_s < env.time_limit_min * 60:
        # The checkpoint warning must come after the start and before the end of the job.
        errors.append(f"{where}: signal_delay_s must be from 0 to less than time_limit_min's "
                      f"{env.time_limit_min * 60} s, got {env.signal_delay_s}")
    if not 0.1 <= env.vram_margin <= 1.0:
        errors.append(f"{where}: vram_margin must be between 0.1 and 1.0")


def parse_env(data: dict[str, Any], where: str) -> EnvProfile:
    """An env profile from its YAML mapping, every problem reported at once (YamlError)."""
    errors: list[str] = []
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in ENV_KEYS:
            errors.append(f"{where}: {unknown_key(key, sorted(ENV_KEYS), 'docs/reference.md')}")
            continue
        kwargs[key] = _parse_key(key, value, where, errors)
    if isinstance(kwargs.get("runs_dir"), str):
        kwargs["runs_dir"] = os.path.expanduser(kwargs["runs_dir"])  # "~/runs": your home
    env = EnvProfile(**{k: v for k, v in kwargs.items() if v is not None})
    _check_profile(env, data, where, errors)
    if errors:
        raise YamlError("\n".join(errors))
    return env


def _parse_gpus(value: Any) -> str | None:
    """The gpus key as a string (auto, none or "0,1"); None when it is none of these.

    >>> _parse_gpus([0, 2]), _parse_gpus(1), _parse_gpus("0, 1"), _parse_gpus("x")
    ('0,2', '1', '0,1', None)
    """
    if value in ("auto", "none"):
        return str(value)
    items = value if isinstance(value, list) else (
        str(value).split(",") if isinstance(value, (str, int)) and not isinstance(value, bool)
        else None)
    if not items:
        return None
    tokens = [str(i).strip() for i in items if not isinstance(i, bool)]
    if len(tokens) != len(items) or not all(t.isdigit() for t in tokens):
        return None
    return ",".join(tokens)


def _parse_partitions(value: Any, where: str, errors: list[str]) -> list[Partition]:
    if not isinstance(value, list):
        errors.append(f"{where}: partitions: expected a list of partitions")
        return []
    out = []
    for i, item in enumerate(value):
        at = f"{where}: partitions[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{at}: expected a mapping with name, gpu_type, vram_gb")
            continue
        unknown = set(item) - PARTITION_KEYS
        if unknown:
            errors.append(f"{at}: unknown key {sorted(unknown)[0]!r}; valid keys: "
                          f"{', '.join(sorted(PARTITION_KEYS))}")
            continue
        missing = {"name", "gpu_type", "vram_gb"} - set(item)
        if missing:
            errors.append(f"{at}: missing {', '.join(sorted(missing))}")
            continue
        kw = {}
        for f in dataclasses.fields(Partition):
            if f.name in item:
                typ = {"name": str, "gpu_type": str, "vram_gb": float, "gpus_per_node": int,
                       "constraint": str, "max_time_min": int}[f.name]
                v = _check_scalar(errors, at, f.name, item[f.name], typ)
                if v is not None:
                    kw[f.name] = v
        if len(kw) == len([k for k in item]):
            p = Partition(**kw)
            if p.vram_gb <= 0 or p.gpus_per_node < 1:
                errors.append(f"{at}: vram_gb and gpus_per_node must be positive")
            for fld, rx in (("name", _NAME), ("gpu_type", _NAME), ("constraint", _CONSTRAINT)):
                v = item.get(fld)
                if isinstance(v, str) and v and not rx.fullmatch(v):
                    errors.append(f"{at}: {fld}: {_short(v)} is not a valid Slurm {fld} "
                                  "(no spaces, quotes or line breaks)")
            out.append(p)
    return out


AUTO_RUNS_PER_GPU = 4
"""The cap of runs_per_gpu: auto. Each run is a process with its own CUDA context, compile
and data loading, and small runs on one card slow each other down (RESULTS.md, quality
calls: a Gemma 3 270M step took 1 s beside two evaluations, 5 s beside two trainings)."""


def pack_cap(env: EnvProfile) -> int:
    """The most runs one GPU may hold at once under this profile."""
    return AUTO_RUNS_PER_GPU if env.runs_per_gpu == "auto" else int(env.runs_per_gpu)


def resolve_env_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return p
    return ENVS_DIR / f"{name_or_path}.yaml"


def load_env(name_or_path: str) -> EnvProfile:
    path = resolve_env_path(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in ENVS_DIR.glob("*.yaml"))
        raise YamlError(f"env {name_or_path!r}: no such profile ({path}); known profiles: "
                        f"{', '.join(known)}, or give a path to a .yaml file")
    return parse_env(load_yaml_mapping(path), str(path))
