"""Model loading through Unsloth, shared by train and evaluate. Heavy imports stay inside.

``import unsloth`` must precede transformers / trl / peft so its patches apply; every entry
point here imports it first.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from core.config import RunConfig, lora_target_modules
from core.families import Family, detect_family
from jobs.joblog import log


def setup_environment() -> None:
    """Quiet, offline-friendly defaults; a cluster profile may set them differently first."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::SyntaxWarning")
    import torch

    if getattr(torch.version, "hip", None) is None:
        # Slurm exports ROCR_VISIBLE_DEVICES for every GRES GPU, whatever the vendor; on a
        # machine whose CUDA build sees no GPU, Unsloth reads it as a broken AMD install and
        # refuses to start. A CUDA / CPU torch build never uses these variables.
        for key in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
            os.environ.pop(key, None)


def hf_token(cfg: RunConfig) -> str | None:
    """The token from the flag, else HF_TOKEN; never stored, logged or returned in results."""
    return cfg.model.hf_token or os.environ.get("HF_TOKEN") or None


def device_map() -> Any:
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        log(f"{torch.cuda.device_count()} GPUs visible: device_map='balanced'")
        return "balanced"
    return None


def ensure_chat_template(tokenizer: Any, family: Family) -> Any:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer
    from unsloth.chat_templates import get_chat_template

    log(f"tokenizer has no chat template: using Unsloth's {family.unsloth_template!r}")
    return get_chat_template(tokenizer, chat_template=family.unsloth_template)


@dataclass(frozen=True)
class Switches:
    """How Unsloth runs this model, resolved once from the run's model keys."""
    compiled: bool
    """torch.compile through Unsloth (model.compile, core.vram.compile_mode)."""
    flex_attention: bool
    """PyTorch flex attention where Unsloth prefers it; never when eager (it compiles per
    shape)."""

    def env(self) -> dict[str, str]:
        """Environment variables Unsloth reads at import or load.

        >>> Switches(True, True).env(), sorted(Switches(False, False).env().items())
        ({}, [('UNSLOTH_COMPILE_DISABLE', '1'), ('UNSLOTH_ENABLE_FLEX_ATTENTION', '0')])
        """
        env: dict[str, str] = {}
        if not self.flex_attention:
            env["UNSLOTH_ENABLE_FLEX_ATTENTION"] = "0"
        if not self.compiled:
            env["UNSLOTH_COMPILE_DISABLE"] = "1"
        return env


@dataclass(frozen=True)
class ModelFacts:
    """What a job needs to know about its model, worked out once and passed down."""

    family: Family
    params_b: float
    """Parameters in billions (0.0 where the size cannot be read)."""
    switches: Switches
    checkpointing: str
    """Gradient checkpointing: unsloth, true or false (core.vram.checkpointing_mode)."""


def model_facts(cfg: RunConfig) -> ModelFacts:
    """The model's family, size, Unsloth switches and gradient checkpointing, each decided
    once from the run's model keys (one read of its header or config)."""
    from core.vram import checkpointing_mode, run_compiles, shape_of

    try:
        shape = shape_of(cfg.model.name_or_path)[0]
    except Exception:  # noqa: BLE001 - an unreadable header: size unknown, Unsloth's default
        shape = None
    m = cfg.model
    params = shape.params_b if shape is not None else 0.0
    compiled = run_compiles(m.name_or_path, m.family, m.compile, params)
    return ModelFacts(detect_family(m.name_or_path, m.family), params,
                      Switches(compiled, m.flex_attention and compiled),
                      checkpointing_mode(cfg.train.gradient_checkpointing, params))


def resolve_switches(cfg: RunConfig) -> Switches:
    """model.compile and model.flex_attention for this model (its family and size)."""
    return model_facts(cfg).switches


def import_unsloth(switches: Switches | None = None) -> None:
    """Import Unsloth before anything imports transformers / trl / peft (a scratch model's
    build does), so that its patches apply; the switches' variables are set first, since
    Unsloth reads some of them only at import."""
    if switches is not None:
        env = switches.env()
        late = [k for k, v in env.items() if os.environ.get(k) != v]
        if late and "unsloth" in sys.modules:
            log(f"Unsloth was imported before {', '.join(late)} could be set: "
                "they may not apply in this process")
        os.environ.update(env)
    setup_environment()
    import logging

    # Two notices every job printed that say nothing about this run: torch's deprecation of
    # Enum constants that torchao registers, and bitsandbytes' CPU backend naming an optional
    # kernels package (only the CPU 4-bit matmul speed depends on it). Errors still show.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import contextlib
    import io

    from jobs.unsloth_import import sft_trainer_only

    said = io.StringIO()
    with sft_trainer_only(), contextlib.redirect_stdout(said):
        # Unsloth rewrites TRL's SFT trainer, not all fifteen (start-up).
        import unsloth  # noqa: F401
    print(cpu_notice(said.getvalue()), end="")


def cpu_notice(text: str) -> str:
    r"""What Unsloth's import printed, its CPU notice ("no GPU found, training on CPU", printed
    by evaluation and export jobs too) said once in medsweep's words.

    >>> cpu_notice("Unsloth 1.0: no GPU found, training on CPU (x86_64). Slow.\nother\n")
    '[medsweep] no GPU: this job runs on the CPU (Unsloth 1.0, much slower than a GPU)\nother\n'
    """
    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith("Unsloth ") and "no GPU found" in line:
            version = line.split(":", 1)[0]
            line = (f"[medsweep] no GPU: this job runs on the CPU ({version}, much slower than "
                    "a GPU)\n")
        out.append(line)
    return "".join(out)


def resolve_model(name_or_path: str) -> str:
    """What a loader takes: a GGUF file or PyPI model name becomes its cached, dequantized
    folder (built on first use); anything else is returned as given."""
    from core.gguf import is_gguf_name

    if not is_gguf_name(name_or_path):
        return name_or_path
    from jobs.gguf_model import ensure_hf_folder

    return str(ensure_hf_folder(name_or_path))


def unsloth_checkpointing(mode: str) -> bool | str:
    """Unsloth's use_gradient_checkpointing for a resolved mode (core.vram.checkpointing_mode).

    >>> unsloth_checkpointing("unsloth"), unsloth_checkpointing("true"), unsloth_checkpointing("false")
    ('unsloth', True, False)
    """
    return {"true": True, "false": False}.get(mode, mode)


def load_model(name_or_path: str, cfg: RunConfig, *, for_training: bool,
               facts: ModelFacts | None = None) -> tuple[Any, Any]:
    """The model and tokenizer through Unsloth. facts: the run's (model_facts), where the
    caller has them; a model folder of its own (evaluation, export) is looked at here."""
    family = facts.family if facts else detect_family(name_or_path, cfg.model.family)
    checkpointing = facts.checkpointing if facts else "unsloth"
    import_unsloth(facts.switches if facts else resolve_switches(cfg))
    from unsloth import FastLanguageModel, FastModel

    name_or_path = resolve_model(name_or_path)
    kwargs: dict[str, Any] = dict(
        max_seq_length=cfg.model.max_seq_length,
        load_in_4bit=cfg.model.load_in_4bit,
        load_in_8bit=cfg.model.load_in_8bit,
        full_finetuning=cfg.model.full_finetuning and for_training,
        token=hf_token(cfg),
    )
    if for_training:
        kwargs["use_gradient_checkpointing"] = unsloth_checkpointing(checkpointing)
    dm = device_map()
    if dm is not None:
        kwargs["device_map"] = dm
    loader = FastModel if (cfg.peft.ft_vision_layers and family.vision) else FastLanguageModel
    from jobs import warm_model

    keep = for_training and warm_model.wanted(
        cfg.model.full_finetuning, cfg.model.load_in_4bit or cfg.model.load_in_8bit, dm)
    key = (name_or_path, loader.__name__, family.name,
           tuple(sorted((k, str(v)) for k, v in kwargs.items() if k != "token")))
    if keep:
        kept = warm_model.take(key)
        if kept is not None:
            log("the base model is this worker's, kept from its last run (no load)")
            return kept
    elif for_training:
        warm_model.drop()  # another model to train: the kept one's memory is not held beside it
    model, tokenizer = loader.from_pretrained(name_or_path, **kwargs)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # processors wrap the tokenizer
    tokenizer = ensure_chat_template(tokenizer, family)
    if keep:
        warm_model.keep(key, model, tokenizer)
    return model, tokenizer


def apply_lora(model: Any, cfg: RunConfig, facts: ModelFacts) -> Any:
    from unsloth import FastLanguageModel, FastModel

    p = cfg.peft
    common = dict(r=p.rank, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                  bias="lora_only" if p.lora_bias else "none",
                  use_gradient_checkpointing=unsloth_checkpointing(facts.checkpointing),
                  random_state=cfg.train.seed)
    if p.ft_vision_layers and facts.family.vision:
        return FastModel.get_peft_model(
            model, finetune_vision_layers=p.ft_vision_layers,
            finetune_language_layers=p.ft_language_layers,
            finetune_attention_modules=p.ft_attention_modules,
            finetune_mlp_modules=p.ft_mlp_modules, **common)
    return FastLanguageModel.get_peft_model(model, target_modules=lora_target_modules(cfg.peft),
                                            **common)


class SpecialStrings:
    """The strings a tokenizer turns into special tokens, grouped by their first two characters,
    so that asking whether a text holds one costs a check per group, not one per string (Gemma
    3 has over 6,000: 56 million substring checks, 6.5 s, for BC5CDR's train split).

    >>> sp = SpecialStrings(["<|eot_id|>", "<unused0>", "<unused1>", "[PAD]"])
    >>> sp.found_in("a <unused1> b"), sp.found_in("x < y, [P]"), len(sp)
    (True, False, 4)
    """

    def __init__(self, strings: Iterable[str]) -> None:
        self.strings = sorted({s for s in strings if s})
        self._groups: dict[str, list[str]] = {}
        for s in self.strings:
            self._groups.setdefault(s[:2], []).append(s)

    def __len__(self) -> int:
        return len(self.strings)

    def found_in(self, text: str) -> bool:
        return any(prefix in text and any(s in text for s in group)
                   for prefix, group in self._groups.items())


def special_strings(tokenizer: Any) -> SpecialStrings:
    """The strings the tokenizer turns into special tokens (<|eot_id|>, <end_of_turn>, ...)."""
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).values():
        if getattr(tok, "special", False):
            found.add(str(tok.content))
    return SpecialStrings(found)


def tokenize_with_literal(tokenizer: Any, rendered: str, literal: str,
                          specials: SpecialStrings | None = None) -> list[int]:
    """Token ids of a rendered chat text in which `literal` (a record's text, an answer: data
    from a file, not markup) appears: a special-token string inside it (a record quoting
    "<|eot_id|>") is tokenised as plain text, never as the special token. Where the literal
    holds none, exactly tokenizer(rendered)."""
    specials = special_strings(tokenizer) if specials is None else specials
    i = rendered.find(literal) if specials.found_in(literal) else -1
    if i < 0:
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    before, after = rendered[:i], rendered[i + len(literal):]
    return [*tokenizer(before, add_special_tokens=False)["input_ids"],
            *tokenizer(literal, add_special_tokens=False, split_special_tokens=True)["input_ids"],
            *tokenizer(after, add_special_tokens=False)["input_ids"]]


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS plus each family's end-of-turn token present in the vocabulary."""
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for tok in ("<|eot_id|>", "<end_of_turn>", "<|im_end|>", "</s>", "<|end_of_text|>"):
        if tok in vocab and vocab[tok] not in ids:
            ids.append(int(vocab[tok]))
    return ids


def device_facts(model: Any = None) -> dict[str, Any]:
    """Torch, the GPUs and their peak memory (summed, and per GPU); with a model, where its
    transformer layers sit (a split over GPUs shows as several keys)."""
    import torch

    from jobs.mps import CARDS_ENV

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                             "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if os.environ.get(CARDS_ENV):  # renumbered by the pack's MPS daemon: the machine's cards
        facts["cards"] = os.environ[CARDS_ENV]
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(n)]
        facts["gpu_count"] = n
        per_gpu = [torch.cuda.max_memory_allocated(i) / 2**30 for i in range(n)]
        facts["peak_vram_gb"] = round(sum(per_gpu), 3)
        facts["peak_vram_gb_per_gpu"] = [round(g, 3) for g in per_gpu]
        facts["peak_vram_reserved_gb"] = round(
            sum(torch.cuda.max_memory_reserved(i) for i in range(n)) / 2**30, 3)
    else:
        facts["gpus"] = []
        facts["gpu_count"] = 0
        facts["peak_vram_gb"] = 0.0
        facts["cpu_threads"] = torch.get_num_threads()
    if model is not None:
        facts["layers_per_device"] = layers_per_device(model)
    return facts


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)$")


def layers_per_device(model: Any) -> dict[str, int]:
    """How many transformer layers (any `layers.N` module) sit on each device, e.g.
    {"cuda:0": 16, "cuda:1": 16}."""
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if _LAYER.search(name):
            p = next(module.parameters(), None)
            if p is not None:
                counts[str(p.device)] = counts.get(str(p.device), 0) + 1
    return dict(sorted(counts.items()))


def free_gpu_bytes() -> int:
    """Free memory of the tightest visible GPU: a model split over several cards (device_map
    'balanced') runs its micro-batch through every one of them."""
    import torch

    return min(int(torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count()))


def is_scratch(name: str) -> bool:
    return name.lower().startswith("scratch:")


def resolve_scratch(cfg: RunConfig, corpus: list[str], default_dir: Path) -> str:
    """Build (or reuse) the scratch model of cfg; MEDSWEEP_SCRATCH_DIR shares them."""
    from jobs.scratch import build_scratch

    where = Path(os.environ.get("MEDSWEEP_SCRATCH_DIR") or default_dir)
    return str(build_scratch(cfg.model.name_or_path, corpus, where, seed=cfg.train.seed))
