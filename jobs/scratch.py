"""scratch:<family>-<size> models: random-initialised models with a locally trained tokenizer.

No hub access: the architecture comes from a transformers config class, the tokenizer is a
byte-level BPE trained on the run's own training texts and targets, with the family's special
tokens and chat template. For tests, CI and the CPU demo; the GPU benchmarks use the real
architectures' shapes (``llama-1b``, ``llama-8b``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from core.families import Family, detect_family

SIZES: dict[str, dict[str, Any]] = {
    # ~0.2M non-embedding params: trains on a CPU in seconds.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=32),
    # The real shapes (random weights), for GPU tests and benchmarks.
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, head_dim=128),
}

_SPECIALS: dict[str, dict[str, str]] = {
    "llama3": {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>",
               "pad": "<|finetune_right_pad_id|>",
               "extra": "<|start_header_id|> <|end_header_id|> <|end_of_text|>"},
    "gemma3": {"bos": "<bos>", "eos": "<end_of_turn>", "pad": "<pad>",
               "extra": "<start_of_turn> <eos>"},
    "qwen3": {"bos": "", "eos": "<|im_end|>", "pad": "<|endoftext|>", "extra": "<|im_start|>"},
    "mistral": {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "extra": "[INST] [/INST]"},
}
_SPECIALS["gemma3n"] = _SPECIALS["gemma3"]
_SPECIALS["qwen2.5"] = _SPECIALS["chatml"] = _SPECIALS["qwen3"]

CHAT_TEMPLATES: dict[str, str] = {
    "llama3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"
    ),
    "gemma3": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
        "{% set sys = messages[0]['content'] + '\n\n' %}{% set msgs = messages[1:] %}"
        "{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
        "{% for m in msgs %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "<start_of_turn>{{ role }}\n{% if loop.first %}{{ sys }}{% endif %}{{ m['content'] }}"
        "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
        "{% endif %}"
    ),
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
        "{% set sys = messages[0]['content'] + '\n\n' %}{% set msgs = messages[1:] %}"
        "{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
        "{% for m in msgs %}{% if m['role'] == 'user' %}[INST] {% if loop.first %}{{ sys }}"
        "{% endif %}{{ m['content'] }}[/INST]{% else %}{{ m['content'] }}{{ eos_token }}"
        "{% endif %}{% endfor %}"
    ),
}
CHAT_TEMPLATES["gemma3n"] = CHAT_TEMPLATES["gemma3"]
CHAT_TEMPLATES["qwen2.5"] = CHAT_TEMPLATES["qwen3"] = CHAT_TEMPLATES["chatml"]


def parse_scratch(name: str) -> tuple[Family, str]:
    """'scratch:llama-tiny' -> (llama3 family, 'tiny'); ValueError names the valid choices."""
    body = name.split(":", 1)[1]
    fam = detect_family(name)
    size = body.split("-", 1)[1] if "-" in body else "tiny"
    if size not in SIZES:
        raise ValueError(f"unknown scratch size {size!r} in {name!r}; choose from "
                         f"{', '.join(SIZES)}")
    return fam, size


def _model_config(family: Family, size: str, vocab_size: int, specials: dict[str, int]) -> Any:
    import transformers

    dims: dict[str, Any] = dict(SIZES[size])
    common: dict[str, Any] = dict(vocab_size=vocab_size, max_position_embeddings=8192,
                  pad_token_id=specials["pad"], eos_token_id=specials["eos"],
                  bos_token_id=specials.get("bos"), torch_dtype="float32")
    if family.hf_model_type == "gemma3_text":
        return transformers.Gemma3TextConfig(**dims, **common, sliding_window=512,
                                             tie_word_embeddings=True)
    if family.hf_model_type == "qwen3":
        return transformers.Qwen3Config(**dims, **common, tie_word_embeddings=True)
    if family.hf_model_type == "qwen2":
        dims.pop("head_dim")
        return transformers.Qwen2Config(**dims, **common, tie_word_embeddings=True)
    if family.hf_model_type == "mistral":
        return transformers.MistralConfig(**dims, **common, tie_word_embeddings=True)
    return transformers.LlamaConfig(**dims, **common, tie_word_embeddings=size != "8b")


def train_tokenizer(family: Family, corpus: Iterable[str], vocab_size: int = 2048) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    sp = _SPECIALS[family.name]
    specials = [t for t in (sp["pad"], sp["bos"], sp["eos"], *sp["extra"].split()) if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=sp["bos"] or None, eos_token=sp["eos"],
        pad_token=sp["pad"], additional_special_tokens=sp["extra"].split(),
        model_max_length=8192, padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATES[family.name]
    return fast


def build_scratch(name: str, corpus: list[str], out_dir: Path, seed: int = 0) -> Path:
    """Write a random model + tokenizer for `name` into out_dir (reused when already there).

    The folder is keyed by the corpus hash, so the same data always gives the same tokenizer.
    """
    import torch
    from transformers import AutoModelForCausalLM

    family, size = parse_scratch(name)
    digest = hashlib.sha256("\n".join(corpus).encode()).hexdigest()[:12]
    target = out_dir / f"{family.name}-{size}-{digest}"
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    tokenizer = train_tokenizer(family, corpus, vocab_size=2048 if size in ("tiny", "small")
                                else 8192)
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in _SPECIALS[family.name].items()
           if k in ("pad", "bos", "eos") and v}
    real_shape = size in ("1b", "8b")
    # Real shapes keep the real models' 128k-row embedding and LM head (unused rows beyond the
    # local tokenizer), so compute and memory match the real checkpoints.
    vocab = max(len(tokenizer), 128256) if real_shape else len(tokenizer)
    cfg = _model_config(family, size, vocab, ids)
    torch.manual_seed(seed)
    if real_shape:
        # Built in bf16, on the GPU when there is one: an 8B fp32 init on a CPU takes minutes.
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    else:
        model = AutoModelForCausalLM.from_config(cfg)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "medsweep_scratch.json").write_text(json.dumps({"name": name, "family": family.name,
                                                           "size": size}))
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race; its copy is identical
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return target
