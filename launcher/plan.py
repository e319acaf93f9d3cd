"""Resources per run: the smallest GPU type that fits, else several GPUs of one node.

A run that fits one card always gets one card (runs spread across the cluster in parallel);
only when no single card fits does it get N GPUs of one node, and the job then loads the
model with device_map="balanced".
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from core.config import RunConfig, lora_target_modules
from core.data import DataError, read_once
from core.errors import UserError
from core.gguf import GGUFError
from core.vram import Estimate, checkpointing_mode, estimate, shape_of
from launcher.envs import EnvProfile, Partition

PROMPT_OVERHEAD_TOKENS = 64
"""Chat-template markup, the instruction and a short system prompt, in tokens."""


class PlanError(UserError):
    """A run that no partition of the profile can hold."""


@dataclass(frozen=True)
class Resources:
    partition: str
    gpu_type: str
    gpus: int
    vram_per_gpu_gb: float
    need_gb: float
    cpus: int
    mem_gb: int
    time_min: int
    constraint: str = ""

    def key(self) -> tuple[Any, ...]:
        return (self.partition, self.gpu_type, self.gpus, self.cpus, self.mem_gb,
                self.time_min, self.constraint)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=64)
def _longest_record_chars(path: str, context_sentences: int = 0, context_after: int = 0
                          ) -> int:
    """Characters of the longest training example's context, text and answer (read once per
    file and context window)."""
    try:
        recs = read_once(path, context_sentences, context_after).records
        return max(len(r.context) + len(r.context_after) + len(r.text)
                   + len(json.dumps([e.to_dict() for e in r.entities])) for r in recs)
    except (OSError, ValueError, KeyError, TypeError, DataError):
        return 2048 * 3


def longest_record_tokens(path: str, system_prompt_chars: int, context_sentences: int = 0,
                          context_after: int = 0) -> int:
    """Rough token count of the longest training example (chars / 3.5 + markup)."""
    chars = _longest_record_chars(path, context_sentences, context_after) + system_prompt_chars
    return int(chars / 3.5) + PROMPT_OVERHEAD_TOKENS


def estimate_run(cfg: RunConfig) -> Estimate:
    try:
        shape, source = shape_of(cfg.model.name_or_path)
    except GGUFError as exc:
        raise PlanError(str(exc)) from exc
    if shape is None:
        raise PlanError(f"cannot size {cfg.model.name_or_path!r}: not in the known-model table, "
                        "no local config.json and no size in the name; use a local folder or "
                        "a name with the size (e.g. -7B)")
    m = cfg.model
    bits = 4 if m.load_in_4bit else 8 if m.load_in_8bit else 16
    seq = min(m.max_seq_length,
              longest_record_tokens(cfg.data.train_dataset_file, len(m.system_prompt),
                                    cfg.data.context_sentences, cfg.data.context_after))
    modules = len(lora_target_modules(cfg.peft))
    gc = checkpointing_mode(cfg.train.gradient_checkpointing, shape.params_b)
    return estimate(shape, bits=bits, lora_rank=cfg.peft.rank, full=m.full_finetuning,
                    batch=cfg.train.per_device_batch_size, seq_tokens=seq,
                    lora_modules=modules or 7, source=source, checkpointing=gc != "false")


def plan_run(cfg: RunConfig, env: EnvProfile) -> tuple[Resources, Estimate]:
    est = estimate_run(cfg)
    if env.runs_here and not env.partitions:
        return Resources("local", "", 0, 0.0, est.total_gb, 1, 0, env.time_limit_min), est
    parts = sorted(env.partitions, key=lambda p: (p.vram_gb, p.name))
    fits = [p for p in parts if p.vram_gb * env.vram_margin >= est.total_gb]
    if fits:
        return _resources(fits[0], 1, est, env), est
    # Several GPUs of one node: the fewest GPUs, then the smallest card, that hold it.
    # Splitting costs a little per GPU (each holds its share of layers plus its own buffers).
    best: tuple[int, float, Partition] | None = None
    for p in parts:
        n = math.ceil(est.total_gb / (p.vram_gb * env.vram_margin * 0.95))
        if n <= p.gpus_per_node and (best is None or (n, p.vram_gb) < best[:2]):
            best = (n, p.vram_gb, p)
    if best is None:
        largest = max(parts, key=lambda p: p.vram_gb * p.gpus_per_node)
        raise PlanError(
            f"{cfg.model.name_or_path}: needs about {est.total_gb:.0f} GB of GPU memory, more "
            f"than the largest node of the profile ({largest.gpus_per_node} x "
            f"{largest.vram_gb:g} GB in {largest.name}); use 4-bit loading, a smaller batch or "
            "a profile with bigger nodes")
    return _resources(best[2], best[0], est, env), est


def _resources(p: Partition, n: int, est: Estimate, env: EnvProfile) -> Resources:
    time_min = env.time_limit_min
    if p.max_time_min:
        time_min = min(time_min, p.max_time_min)
    return Resources(p.name, p.gpu_type, n, p.vram_gb, est.total_gb, env.cpus_per_gpu * n,
                     env.mem_gb_per_gpu * n, time_min, p.constraint)


def pack_runs(need_gb: list[float], card_gb: float, cap: int) -> list[list[int]]:
    """Runs (by index, in sweep order) grouped into packs that share one GPU: each run goes
    into the first pack that still has room for its memory estimate and has fewer than cap
    runs. A run that needs more than half the card is never packed with another.

    >>> pack_runs([3.0, 3.0, 3.0, 3.0, 3.0], card_gb=10, cap=4)
    [[0, 1, 2], [3, 4]]
    >>> pack_runs([2.0, 9.0, 2.0, 2.0, 2.0, 2.0], card_gb=10, cap=4)
    [[0, 2, 3, 4], [1], [5]]
    >>> pack_runs([1.0, 1.0], card_gb=10, cap=1)
    [[0], [1]]
    """
    packs: list[list[int]] = []
    used: list[float] = []
    for i, need in enumerate(need_gb):
        if need <= card_gb / 2:
            for k, pack in enumerate(packs):
                if len(pack) < cap and used[k] + need <= card_gb:
                    pack.append(i)
                    used[k] += need
                    break
            else:
                packs.append([i])
                used.append(need)
        else:
            packs.append([i])
            used.append(card_gb + 1)  # nothing joins it
    return packs


def sbatch_parameters(res: Resources, env: EnvProfile) -> dict[str, Any]:
    """submitit AutoExecutor parameters for one resource group (also shown by --dry-run)."""
    params: dict[str, Any] = {
        "timeout_min": res.time_min,
        "slurm_partition": res.partition,
        "cpus_per_task": res.cpus,
        "mem_gb": res.mem_gb,
        "nodes": 1,
        "tasks_per_node": 1,
        "slurm_signal_delay_s": env.signal_delay_s,
        "slurm_array_parallelism": env.max_parallel,
    }
    extra: dict[str, Any] = {}
    if env.gres_style == "gres":
        params["slurm_gres"] = f"gpu:{res.gpu_type}:{res.gpus}"
    else:
        params["gpus_per_node"] = res.gpus
    if res.constraint:
        extra["constraint"] = res.constraint
    if env.account:
        params["slurm_account"] = env.account
    if env.qos:
        params["slurm_qos"] = env.qos
    if env.setup:
        params["slurm_setup"] = list(env.setup)
    if extra:
        params["slurm_additional_parameters"] = extra
    return params
