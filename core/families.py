"""Model families: detection from a name or a local config.json, chat templates, presets.

Detection is case-insensitive (the seed's tool tested ``"Llama" in name`` and so sent
``unsloth/llama-3-8b-Instruct`` down the wrong template).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.gguf import GGUFError, is_gguf_name, read_header


@dataclass(frozen=True)
class Family:
    name: str
    unsloth_template: str
    """Name passed to unsloth.chat_templates.get_chat_template."""
    instruction_part: str
    response_part: str
    generation_preset: dict[str, Any] = field(default_factory=dict)
    """The seed's sampling settings for --eval-generation model-presets."""
    vision: bool = False
    """Whether the family's models may have vision layers."""
    system_role: bool = True
    """False where the template has no system turn (it is folded into the first user turn)."""
    hf_model_type: str = "llama"
    """transformers model_type used to build scratch models of this family."""
    recompiles_per_shape: bool = False
    """Unsloth's compiled training path compiles a graph per batch shape for this family (Gemma
    3 270M on one H200: 19-26 graphs, 70-90% of the training loop), so model.compile auto trains
    its small models eager (core.vram.compile_mode)."""


_LLAMA3 = Family(
    "llama3", "llama-3.1",
    "<|start_header_id|>user<|end_header_id|>\n\n",
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    {"do_sample": True, "temperature": 1.5, "min_p": 0.1},
    hf_model_type="llama",
)
_GEMMA3 = Family(
    "gemma3", "gemma-3", "<start_of_turn>user\n", "<start_of_turn>model\n",
    {"do_sample": True, "temperature": 1.0, "top_p": 0.95, "top_k": 64},
    vision=True, system_role=False, hf_model_type="gemma3_text", recompiles_per_shape=True,
)
_GEMMA3N = Family(
    "gemma3n", "gemma-3n", "<start_of_turn>user\n", "<start_of_turn>model\n",
    {"do_sample": True, "temperature": 1.0, "top_p": 0.95, "top_k": 64},
    vision=True, system_role=False, hf_model_type="gemma3_text",
)
_MISTRAL = Family(
    "mistral", "mistral", "[INST]", "[/INST]",
    {"do_sample": True, "temperature": 0.8, "top_p": 0.95},
    system_role=False, hf_model_type="mistral",
)
# Qwen is not in the seed's preset list; these are Qwen's own recommended non-thinking settings.
_QWEN25 = Family(
    "qwen2.5", "qwen-2.5", "<|im_start|>user\n", "<|im_start|>assistant\n",
    {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20},
    hf_model_type="qwen2",
)
_QWEN3 = Family(
    "qwen3", "qwen3", "<|im_start|>user\n", "<|im_start|>assistant\n",
    {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20},
    hf_model_type="qwen3",
)
# Documented fallback for unknown models: ChatML, greedy presets.
_CHATML = Family(
    "chatml", "chatml", "<|im_start|>user\n", "<|im_start|>assistant\n", {},
    hf_model_type="llama",
)

FAMILIES: dict[str, Family] = {f.name: f for f in
                               (_LLAMA3, _GEMMA3, _GEMMA3N, _MISTRAL, _QWEN25, _QWEN3, _CHATML)}

# Ordered: the first pattern that matches the lower-cased name wins (gemma-3n before gemma-3).
_NAME_PATTERNS: list[tuple[str, str]] = [
    (r"gemma-?3n", "gemma3n"),
    (r"medgemma", "gemma3"),
    (r"gemma-?3", "gemma3"),
    (r"llama-?3", "llama3"),
    (r"mi[sx]tral", "mistral"),
    (r"qwen-?3", "qwen3"),
    (r"qwen-?2\.?5", "qwen2.5"),
]
_MODEL_TYPES = {
    "llama": "llama3", "gemma3": "gemma3", "gemma3_text": "gemma3", "gemma3n": "gemma3n",
    "gemma3n_text": "gemma3n", "mistral": "mistral", "qwen2": "qwen2.5", "qwen3": "qwen3",
}
# Text-only models of otherwise multimodal families.
_TEXT_ONLY = re.compile(r"gemma-?3-(270m|1b)", re.I)


def family_from_name(name: str) -> Family | None:
    low = name.lower()
    if low.startswith("scratch:"):
        fam = low.split(":", 1)[1].split("-", 1)[0]
        fam = {"llama": "llama3", "gemma": "gemma3", "qwen": "qwen3"}.get(fam, fam)
        return FAMILIES.get(fam)
    for pattern, fam in _NAME_PATTERNS:
        if re.search(pattern, low):
            return FAMILIES[fam]
    return None


def family_from_config(path: Path) -> Family | None:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    mt = str(cfg.get("model_type", "")).lower()
    fam = _MODEL_TYPES.get(mt)
    return FAMILIES[fam] if fam else None


# A chat template's turn markers name its family; the first marker found wins.
_TEMPLATE_MARKERS: list[tuple[str, str]] = [
    ("<|start_header_id|>", "llama3"),
    ("<start_of_turn>", "gemma3"),
    ("<|im_start|>", "chatml"),
    ("[INST]", "mistral"),
]


def family_from_template(template: str | None) -> Family | None:
    """The family whose turn markers a chat template uses.

    >>> family_from_template("{{'<|im_start|>' + message['role']}}").name
    'chatml'
    >>> family_from_template(None) is None
    True
    """
    if not template:
        return None
    for marker, fam in _TEMPLATE_MARKERS:
        if marker in template:
            return FAMILIES[fam]
    return None


def same_turns(a: Family, b: Family) -> bool:
    """Whether two families format conversations alike (Qwen and plain ChatML do)."""
    return (a.instruction_part, a.response_part) == (b.instruction_part, b.response_part)


def reconcile(fam: Family, template: str | None) -> Family:
    """The tokenizer's own chat template is the truth: a family guessed from a name or a
    model_type that formats turns differently from the template gives way to the template's.

    >>> reconcile(FAMILIES["llama3"], "<|im_start|>{{ m }}<|im_end|>").name
    'chatml'
    >>> reconcile(FAMILIES["qwen3"], "<|im_start|>{{ m }}<|im_end|>").name
    'qwen3'
    """
    from_template = family_from_template(template)
    if from_template is None or same_turns(fam, from_template):
        return fam
    if from_template.name == "gemma3" and fam.name == "gemma3n":
        return fam
    return replace(from_template, vision=fam.vision and from_template.vision)


def local_chat_template(path: Path) -> str | None:
    """The chat template saved in a local model or adapter folder, if any."""
    jinja = path / "chat_template.jinja"
    try:
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        cfg = path / "tokenizer_config.json"
        if cfg.is_file():
            t = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
            if isinstance(t, str):
                return t
            if isinstance(t, list) and t and isinstance(t[0], dict):
                return str(t[0].get("template", ""))
    except (OSError, ValueError):
        return None
    return None


def _gguf_family(name: str) -> Family | None:
    try:
        h = read_header(name)
    except (GGUFError, OSError):
        return None
    fam = family_from_template(h.chat_template)
    if fam is None:
        mt = _MODEL_TYPES.get(h.architecture)
        fam = FAMILIES[mt] if mt else None
    return fam


def detect_family(name_or_path: str, override: str = "auto") -> Family:
    """Family from an explicit override, else from the model's own chat template (a local
    folder's or a GGUF file's), else from the name or the local config.json.

    Unknown models get the ChatML fallback; an unknown override is an error.
    """
    if override and override != "auto":
        if override not in FAMILIES:
            raise ValueError(f"unknown model family {override!r}; choose from "
                             f"auto, {', '.join(FAMILIES)}")
        return FAMILIES[override]
    if name_or_path.lower().startswith("scratch:"):
        fam = family_from_name(name_or_path)
        if fam is None:
            raise ValueError(f"unknown scratch family in {name_or_path!r}; use "
                             "scratch:llama-tiny, scratch:gemma-tiny, scratch:qwen-tiny or "
                             "scratch:mistral-tiny")
        return replace(fam, vision=False)  # scratch models are text-only
    if is_gguf_name(name_or_path):
        gguf_fam = _gguf_family(name_or_path)
        name_fam = family_from_name(name_or_path)
        if gguf_fam is None:
            fam = name_fam
        elif name_fam is not None and same_turns(gguf_fam, name_fam):
            fam = name_fam
        else:
            fam = gguf_fam
        if fam is not None and fam.vision and _TEXT_ONLY.search(name_or_path):
            fam = replace(fam, vision=False)
        return fam or _CHATML
    fam = family_from_name(name_or_path)
    if fam is None:
        fam = family_from_config(Path(name_or_path))
    if fam is None:
        # A saved adapter folder names its base model; follow it once.
        adapter = Path(name_or_path) / "adapter_config.json"
        if adapter.is_file():
            try:
                base = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
                fam = family_from_name(str(base)) or family_from_config(Path(str(base)))
            except (OSError, ValueError, KeyError):
                fam = None
    if fam is not None and fam.vision and _TEXT_ONLY.search(name_or_path):
        fam = replace(fam, vision=False)
    fam = fam or _CHATML
    return reconcile(fam, local_chat_template(Path(name_or_path)))
