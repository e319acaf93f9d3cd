import dataclasses

import pytest

from core.config import (
    DEFAULT_SYSTEM_PROMPT,
    SECTIONS,
    SPECS,
    ConfigError,
    RunConfig,
    build_config,
    parse_bool,
    parse_metrics,
    validate,
)


def test_every_field_has_a_one_line_docstring():
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.metadata["help"].strip(), f"{section}.{f.name}"
            assert "\n" not in f.metadata["help"]


def test_configs_are_frozen():
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.peft.rank = 4  # type: ignore[misc]


def test_seed_defaults():
    c = RunConfig()
    assert c.model.max_seq_length == 4096 and c.model.load_in_4bit and not c.model.load_in_8bit
    assert c.peft.rank == 8 and c.peft.lora_alpha == 16 and c.peft.lora_dropout == 0.1
    assert c.train.per_device_batch_size == 16 and c.train.gradient_accumulation_steps == 4
    assert c.train.learning_rate == 2e-4 and c.train.seed == 42 and c.train.warmup_steps == 5
    assert c.eval.batch_size == 4 and c.eval.metrics == "exact,relaxed,overlap"
    assert c.model.system_prompt == DEFAULT_SYSTEM_PROMPT


@pytest.mark.parametrize("text,value", [("true", True), ("False", False), ("1", True),
                                        ("no", False), ("YES", True)])
def test_parse_bool(text, value):
    assert parse_bool(text) is value


def test_parse_bool_rejects_garbage():
    with pytest.raises(ValueError, match="expected true or false"):
        parse_bool("maybe")


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        build_config({"peft.rnk": 8})
    assert "unknown key 'peft.rnk'" in str(e.value) and "peft.rank" in str(e.value)


def test_every_problem_reported_at_once():
    with pytest.raises(ConfigError) as e:
        build_config({"peft.rank": "x", "train.learning_rate": "fast", "nope.x": 1})
    lines = str(e.value).splitlines()
    assert len(lines) == 3


@pytest.mark.parametrize("values,clash", [
    ({"model.load_in_4bit": True, "model.load_in_8bit": True},
     "--model-load-in-4bit and --model-load-in-8bit"),
    ({"model.full_finetuning": True}, "--model-full-finetuning true needs 16-bit"),
    ({"model.name_or_path": "unsloth/Llama-3.2-1B-Instruct", "peft.ft_vision_layers": True},
     "--peft-ft-vision-layers true, but unsloth/Llama-3.2-1B-Instruct is a text-only"),
    ({"peft.rank": 0}, "--peft-rank must be positive"),
    ({"train.per_device_batch_size": -1}, "--train-per-device-batch-size must be positive"),
    ({"peft.ft_attention_modules": False, "peft.ft_mlp_modules": False}, "LoRA would train"),
    ({"eval.metrics": "exact,fuzzy"}, "unknown metric(s) fuzzy"),
    ({"model.family": "gpt"}, "unknown model family 'gpt'"),
])
def test_contradictions_name_the_flags(values, clash):
    values.setdefault("model.name_or_path", "scratch:llama-tiny")
    with pytest.raises(ConfigError) as e:
        build_config(values)
    assert clash in str(e.value)


def test_vision_layers_allowed_on_multimodal_model():
    cfg = build_config({"model.name_or_path": "unsloth/gemma-3-4b-it",
                        "peft.ft_vision_layers": True})
    assert not validate(cfg)


def test_full_finetuning_in_16_bit_is_fine():
    cfg = build_config({"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
                        "model.full_finetuning": True})
    assert cfg.model.full_finetuning


def test_hf_token_never_serialised():
    cfg = build_config({"model.name_or_path": "x", "model.hf_token": "hf_secret123"})
    assert "hf_secret123" not in str(cfg.to_dict())
    assert "hf_secret123" not in repr(cfg)


def test_parse_metrics():
    assert parse_metrics(" exact , overlap") == ("exact", "overlap")
    with pytest.raises(ValueError):
        parse_metrics(",")


def test_table_and_script_disagreements_are_documented():
    assert "0.0" in SPECS["peft.lora_dropout"].help
    assert "4" in SPECS["train.per_device_batch_size"].help


def test_yaml_booleans_reach_keys_whose_choices_name_them():
    cfg = build_config({"model.compile": False, "train.gradient_checkpointing": True})
    assert (cfg.model.compile, cfg.train.gradient_checkpointing) == ("false", "true")
    assert build_config({}).model.compile == "auto"
    with pytest.raises(ConfigError, match="train.padding: expected a string"):
        build_config({"train.padding": False})  # its choices are no booleans
