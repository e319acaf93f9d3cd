"""Which GPU type and how many each run gets, against a profile with 24, 40 and 80 GB cards
(issue: several GPUs only where one card is not enough; then device_map="balanced")."""

import pytest

from core.config import build_config
from launcher.envs import parse_env
from launcher.plan import plan_run

ENV = parse_env({"executor": "slurm", "partitions": [
    {"name": "a10", "gpu_type": "a10", "vram_gb": 24, "gpus_per_node": 4},
    {"name": "a100", "gpu_type": "a100", "vram_gb": 40, "gpus_per_node": 8},
    {"name": "h100", "gpu_type": "h100", "vram_gb": 80, "gpus_per_node": 8}]}, "mixed.yaml")

MODES = {"4bit": {}, "16bit-lora": {"model.load_in_4bit": False},
         "16bit-full": {"model.load_in_4bit": False, "model.full_finetuning": True}}

# model -> expected (gpu type, count) for 4-bit QLoRA, 16-bit LoRA, 16-bit full fine-tuning
EXPECTED = {
    "unsloth/llama-3-8b-Instruct": [("a10", 1), ("a10", 1), ("h100", 1)],
    "unsloth/Llama-3.1-8B-Instruct": [("a10", 1), ("a10", 1), ("h100", 1)],
    "unsloth/Llama-3.2-1B-Instruct": [("a10", 1), ("a10", 1), ("a10", 1)],
    "unsloth/Llama-3.2-3B-Instruct": [("a10", 1), ("a10", 1), ("a100", 1)],
    "unsloth/gemma-3-4b-it": [("a10", 1), ("a10", 1), ("h100", 1)],
    "unsloth/gemma-3-270m-it": [("a10", 1), ("a10", 1), ("a10", 1)],
    "unsloth/gemma-3n-E2B-it": [("a10", 1), ("a10", 1), ("h100", 1)],
    "unsloth/gemma-3n-E4B-it": [("a10", 1), ("a10", 1), ("h100", 1)],
    "unsloth/medgemma-4b-it": [("a10", 1), ("a10", 1), ("h100", 1)],
    "unsloth/gemma-3-27b-it": [("a100", 1), ("h100", 1), ("h100", 4)],
}


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    from core.demo_data import write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("d"), n_train=10, n_dev=2)[0]


@pytest.mark.parametrize("model", list(EXPECTED))
def test_gpu_type_and_count_per_model_and_mode(model, train_file):
    got = []
    for extra in MODES.values():
        cfg = build_config({"model.name_or_path": model,
                            "data.train_dataset_file": str(train_file), **extra})
        res, est = plan_run(cfg, ENV)
        got.append((res.gpu_type, res.gpus))
        largest = max(p.vram_gb for p in ENV.partitions) * ENV.vram_margin
        if est.total_gb <= largest:
            assert res.gpus == 1, "a run that fits one card never gets split"
            smaller = [p for p in ENV.partitions if p.vram_gb < res.vram_per_gpu_gb]
            assert all(p.vram_gb * ENV.vram_margin < est.total_gb for p in smaller)
        else:
            assert res.gpus > 1
            assert res.gpus * res.vram_per_gpu_gb * ENV.vram_margin >= est.total_gb
    assert got == EXPECTED[model]


def test_without_big_cards_a_27b_lora_is_split_over_one_node(train_file):
    env = parse_env({"executor": "slurm", "partitions": [
        {"name": "a10", "gpu_type": "a10", "vram_gb": 24, "gpus_per_node": 4},
        {"name": "a100", "gpu_type": "a100", "vram_gb": 40, "gpus_per_node": 8}]}, "e.yaml")
    cfg = build_config({"model.name_or_path": "unsloth/gemma-3-27b-it",
                        "model.load_in_4bit": False, "data.train_dataset_file": str(train_file)})
    res, _ = plan_run(cfg, env)
    assert (res.gpu_type, res.gpus) == ("a100", 2)
    assert res.cpus == 2 * env.cpus_per_gpu and res.mem_gb == 2 * env.mem_gb_per_gpu


def test_layers_per_device_counts_each_cards_share():
    """What the job records (medsweep_train.json, performance.json) to show a split: here a
    tiny Llama with its last layer moved to another device stands in for a second GPU."""
    import torch
    import transformers

    from jobs.modeling import layers_per_device

    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=2, num_key_value_heads=2, vocab_size=64)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    assert layers_per_device(model) == {"cpu": 3}
    model.model.layers[2].to(torch.device("meta"))
    assert layers_per_device(model) == {"cpu": 2, "meta": 1}
