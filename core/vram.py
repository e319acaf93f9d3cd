"""GPU memory estimate for one training run, from the parameter count and the settings.

Deliberately simple and conservative. The figures it rests on were measured on an H100: a
Llama-3.2-1B 4-bit QLoRA r8 run peaked at 2.1 GiB and a Llama-3.1-8B one at 7.9 GiB with batch
16 of ~126-token records; at the grown default batch of 64 the 8B run peaked at 9.7 GiB
(benchmarks/RESULTS.md, "Training throughput on short records").

>>> round(estimate(ModelShape(8.03, 4096, 32, 14336, 128256), bits=4, lora_rank=8,
...               full=False, batch=16, seq_tokens=256).total_gb, 1)
9.2
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from core.gguf import is_gguf_name, read_header, shape_numbers


# Parameter counts (billions) and shapes of the seed's models and common neighbours.
@dataclass(frozen=True)
class ModelShape:
    params_b: float
    hidden: int
    layers: int
    intermediate: int
    vocab: int


KNOWN: dict[str, ModelShape] = {
    "llama-3-8b": ModelShape(8.03, 4096, 32, 14336, 128256),
    "llama-3.1-8b": ModelShape(8.03, 4096, 32, 14336, 128256),
    "llama-3.1-70b": ModelShape(70.6, 8192, 80, 28672, 128256),
    "llama-3.2-1b": ModelShape(1.24, 2048, 16, 8192, 128256),
    "llama-3.2-3b": ModelShape(3.21, 3072, 28, 8192, 128256),
    "gemma-3-270m": ModelShape(0.27, 640, 18, 2048, 262144),
    "gemma-3-1b": ModelShape(1.0, 1152, 26, 6912, 262144),
    "gemma-3-4b": ModelShape(4.3, 2560, 34, 10240, 262208),
    "medgemma-4b": ModelShape(4.3, 2560, 34, 10240, 262208),
    "gemma-3-12b": ModelShape(12.2, 3840, 48, 15360, 262208),
    "gemma-3-27b": ModelShape(27.4, 5376, 62, 21504, 262208),
    "medgemma-27b": ModelShape(27.4, 5376, 62, 21504, 262208),
    "gemma-3n-e2b": ModelShape(5.4, 2048, 30, 8192, 262400),
    "gemma-3n-e4b": ModelShape(7.8, 2048, 35, 16384, 262400),
    "mistral-7b": ModelShape(7.25, 4096, 32, 14336, 32768),
    "qwen2.5-7b": ModelShape(7.6, 3584, 28, 18944, 152064),
    "qwen3-8b": ModelShape(8.2, 4096, 36, 12288, 151936),
}
SCRATCH: dict[str, ModelShape] = {
    "tiny": ModelShape(0.0003, 64, 2, 128, 2048),
    "small": ModelShape(0.004, 256, 4, 688, 2048),
    "1b": KNOWN["llama-3.2-1b"],
    "8b": KNOWN["llama-3.1-8b"],
}

CONTEXT_GB = 1.0
"""CUDA context, cuBLAS workspaces and the allocator's slack not tied to the model."""


@dataclass(frozen=True)
class Estimate:
    weights_gb: float
    trainable_gb: float
    activations_gb: float
    total_gb: float
    params_b: float
    source: str


def _key(name: str) -> str:
    low = name.lower().rsplit("/", 1)[-1]
    low = re.sub(r"[-_](instruct|it|bnb.*|unsloth.*|pt)$", "", low)
    return low


def shape_of(name: str) -> tuple[ModelShape | None, str]:
    """Shape from the known table, a local config.json, or the size in the name."""
    low = name.lower()
    if is_gguf_name(name):
        # A missing or broken file raises GGUFError, whose message says what to do.
        return ModelShape(*shape_numbers(read_header(name))), "gguf header"
    if low.startswith("scratch:"):
        size = low.split("-", 1)[1] if "-" in low else "tiny"
        return SCRATCH.get(size), "scratch"
    key = _key(name)
    for k, shape in KNOWN.items():
        if key.startswith(k):
            return shape, "table"
    cfg = Path(name) / "config.json"
    if cfg.is_file():
        try:
            c = json.loads(cfg.read_text(encoding="utf-8"))
            c = c.get("text_config", c)
            h, n, i, v = (int(c["hidden_size"]), int(c["num_hidden_layers"]),
                          int(c["intermediate_size"]), int(c["vocab_size"]))
            params = (n * (4 * h * h + 3 * h * i) + v * h * (1 if c.get("tie_word_embeddings",
                                                                          True) else 2))
            return ModelShape(params / 1e9, h, n, i, v), "config.json"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    m = re.search(r"(\d+(?:\.\d+)?)\s*([bm])\b", low.replace("-", " ").replace("_", " "))
    if m:
        b = float(m.group(1)) / (1000 if m.group(2) == "m" else 1)
        # Shape guess from the size: hidden grows ~ sqrt(params), as in Llama-type models.
        hidden = int(max(512, min(8192, 1.5 * math.sqrt(b * 1e9 / 60))) // 128 * 128)
        layers = max(8, int(b * 1e9 / (12 * hidden * hidden)))
        return ModelShape(b, hidden, layers, 4 * hidden, 128000), "name"
    return None, "unknown"


SMALL_MODEL_B = 1.0
"""Below this many billion parameters gradient checkpointing is off by default: a small
model's activations fit easily, and recomputing (or offloading) them only slows the step."""


def checkpointing_mode(setting: str, params_b: float) -> str:
    """The gradient checkpointing a run trains with: unsloth, true or false.

    >>> checkpointing_mode("auto", 0.27), checkpointing_mode("auto", 8.0)
    ('false', 'unsloth')
    >>> checkpointing_mode("true", 0.27)
    'true'
    """
    if setting != "auto":
        return setting
    return "false" if 0 < params_b < SMALL_MODEL_B else "unsloth"


def compile_mode(setting: str, recompiles_per_shape: bool, params_b: float) -> bool:
    """Whether a run trains and generates torch.compiled (model.compile): auto is eager only
    for a small model (under SMALL_MODEL_B) of a family whose compiled path recompiles per
    batch shape; there compiling cost more than it saved (benchmarks/RESULTS.md, issue 26).

    >>> compile_mode("auto", True, 0.27), compile_mode("auto", True, 4.0)
    (False, True)
    >>> compile_mode("auto", False, 0.27), compile_mode("auto", True, 0.0)
    (True, True)
    >>> compile_mode("true", True, 0.27), compile_mode("false", False, 8.0)
    (True, False)
    """
    if setting != "auto":
        return setting == "true"
    return not (recompiles_per_shape and 0 < params_b < SMALL_MODEL_B)


def run_compiles(name_or_path: str, family_override: str, setting: str,
                 params_b: float) -> bool:
    """model.compile resolved for a run's model, from its family and size (the job's Unsloth
    switches). The planner keeps sizing runs as compiled: eager's full logits are taken into
    account where the job grows its micro-batch, and a micro-batch that does not fit is halved
    (jobs.train), so a small Gemma is never planned onto several cards for them."""
    from core.families import detect_family

    family = detect_family(name_or_path, family_override)
    return compile_mode(setting, family.recompiles_per_shape, params_b)


def activation_bytes(shape: ModelShape, tokens: int, checkpointing: bool = True,
                     chunked_head: bool = True, head_tokens: int | None = None) -> float:
    """Training activations for a micro-batch of this many (padded) tokens. chunked_head: the
    LM head's loss is Unsloth's compiled, chunked one; eager, the full logits are materialised,
    about 8 bytes per logit (Gemma 3 270M on one H200, 64 rows of at most 384 padded tokens:
    73 GB at the peak, model and optimizer included). head_tokens: the positions whose logits
    exist when fewer than all (train.answer_only_logits: the answers' tokens).

    >>> s = ModelShape(0.27, 640, 18, 2048, 262144)
    >>> activation_bytes(s, 1000, False, False, head_tokens=100) < activation_bytes(s, 1000, False, False)
    True
    """
    head = (tokens if head_tokens is None else head_tokens) * (
        min(shape.vocab, 32768) * 4 if chunked_head else shape.vocab * 8)
    if checkpointing:
        # One hidden state per layer per token, plus one layer's working set.
        return tokens * shape.hidden * 2 * (shape.layers + 12) + head
    # Every layer keeps its working set: about a dozen hidden-sized and three
    # intermediate-sized bf16 tensors per token.
    per_layer = shape.hidden * 2 * 12 + shape.intermediate * 2 * 3
    return tokens * per_layer * shape.layers + head


def estimate(shape: ModelShape, *, bits: int, lora_rank: int, full: bool, batch: int,
             seq_tokens: int, lora_modules: int = 7, source: str = "table",
             checkpointing: bool = True) -> Estimate:
    p = shape.params_b * 1e9
    bytes_per_w = {4: 0.56, 8: 1.06, 16: 2.0}[bits]
    # Embeddings and LM head stay in 16-bit when quantising.
    emb = shape.vocab * shape.hidden * 2.0
    weights = (p - shape.vocab * shape.hidden) * bytes_per_w + emb
    if full:
        trainable = p * (2 + 2 + 2)   # bf16 grads + 8-bit Adam states (2 x 1 byte)
    else:
        lora = lora_rank * shape.layers * lora_modules * (shape.hidden + shape.intermediate) * 0.8
        trainable = lora * (4 + 4 + 8)  # fp32 weights, grads, Adam m and v
    acts = activation_bytes(shape, batch * seq_tokens, checkpointing)
    total = (weights + trainable + acts) / 2**30 * 1.15 + CONTEXT_GB
    return Estimate(round(weights / 2**30, 2), round(trainable / 2**30, 2),
                    round(acts / 2**30, 2), round(total, 2), shape.params_b, source)
