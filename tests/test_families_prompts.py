import json
from pathlib import Path

import pytest

from core.data import Entity, Record
from core.families import FAMILIES, detect_family
from core.prompts import INSTRUCTION, prompt_messages, target_entities, target_json


@pytest.mark.parametrize("name,family", [
    ("unsloth/llama-3-8b-Instruct", "llama3"),     # lower case: the seed's test missed it
    ("unsloth/Llama-3.1-8B-Instruct", "llama3"),
    ("unsloth/Llama-3.2-1B-Instruct", "llama3"),
    ("unsloth/gemma-3-4b-it", "gemma3"),
    ("unsloth/gemma-3-270m-it", "gemma3"),
    ("unsloth/gemma-3n-E2B-it", "gemma3n"),
    ("unsloth/gemma-3n-E4B-it", "gemma3n"),
    ("unsloth/medgemma-4b-it", "gemma3"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5"),
    ("Qwen/Qwen3-8B", "qwen3"),
    ("scratch:llama-tiny", "llama3"),
    ("scratch:gemma-tiny", "gemma3"),
    ("some/unknown-model", "chatml"),
])
def test_family_from_name(name, family):
    assert detect_family(name).name == family


def test_family_from_local_config(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    assert detect_family(str(tmp_path)).name == "gemma3"


def test_family_override_and_unknown_override():
    assert detect_family("whatever", "mistral").name == "mistral"
    with pytest.raises(ValueError, match="unknown model family"):
        detect_family("whatever", "gpt")


def test_vision_flags():
    assert detect_family("unsloth/gemma-3-4b-it").vision
    assert not detect_family("unsloth/gemma-3-270m-it").vision
    assert not detect_family("scratch:gemma-tiny").vision
    assert not detect_family("unsloth/Llama-3.2-3B-Instruct").vision


def test_presets_are_the_seeds():
    assert FAMILIES["llama3"].generation_preset == {"do_sample": True, "temperature": 1.5,
                                                    "min_p": 0.1}
    assert FAMILIES["gemma3"].generation_preset["top_k"] == 64
    assert FAMILIES["mistral"].generation_preset["temperature"] == 0.8


REC = Record("Aspirin for fever; fever again and aspirin.", (
    Entity("Symptom", "fever"), Entity("Drug", "Aspirin"), Entity("Symptom", "fever"),
    Entity("Drug", "aspirin")))


def test_targets_in_order_of_first_appearance_deduplicated():
    ents = target_entities(REC, unique=True)
    assert [(e.label, e.text) for e in ents] == [("Drug", "Aspirin"), ("Symptom", "fever")]


def test_targets_without_dedup_keep_all():
    assert len(target_entities(REC, unique=False)) == 4


def test_target_json_is_deterministic_and_parseable():
    a = target_json(REC)
    assert a == target_json(REC)
    assert json.loads(a) == [{"label": "Drug", "text": "Aspirin"},
                             {"label": "Symptom", "text": "fever"}]


def test_prompt_messages_quote_the_system_prompt_whole():
    msgs = prompt_messages(Record("x y", ()), "You are a   careful extractor.")
    assert msgs[0] == {"role": "system", "content": "You are a   careful extractor."}
    assert msgs[1]["content"] == INSTRUCTION.format(text="x y")


def test_model_facts_are_worked_out_once_from_the_model_keys(monkeypatch):
    from core import families
    from core.config import build_config
    from jobs import modeling

    calls = []
    real = modeling.detect_family
    monkeypatch.setattr(modeling, "detect_family", lambda *a: calls.append(a) or real(*a))
    cfg = build_config({"model.name_or_path": "scratch:gemma-tiny",
                        "model.load_in_4bit": False})
    facts = modeling.model_facts(cfg)
    assert len(calls) == 1 and facts.family.name == real("scratch:gemma-tiny", "auto").name
    assert facts.checkpointing in ("unsloth", "true", "false")
    assert facts.switches == modeling.resolve_switches(cfg)
    assert isinstance(facts.family, families.Family)
