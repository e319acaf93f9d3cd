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
    vision=True, system_role=False, hf_model_type="gemma3_text",
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


def detect_family(name_or_path: str, override: str = "auto") -> Family:
    """Family from an explicit override, the name, or a local folder's config.json.

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
    return fam or _CHATML
