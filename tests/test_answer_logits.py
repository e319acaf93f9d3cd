"""train.answer_only_logits: the loss with the LM head applied only at the answer's positions
equals the model's own loss from the full logits, in value and gradient (soft-capped heads
included), and a training run with it follows the same losses as one without."""

import pytest

torch = pytest.importorskip("torch")


def _tiny(family: str = "llama"):
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    sizes = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    if family == "gemma2":  # final-logit soft-capping
        return Gemma2ForCausalLM(Gemma2Config(**sizes, head_dim=8,
                                              final_logit_softcapping=2.0)).float()
    return LlamaForCausalLM(LlamaConfig(**sizes)).float()


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 97, (3, 12), generator=g)
    labels = ids.clone()
    labels[:, :7] = -100          # the prompt
    labels[2, 10:] = -100         # right padding of the last row
    mask = torch.ones_like(ids)
    mask[2, 10:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_the_answer_only_loss_and_gradient_equal_the_full_logits_ones(family):
    from jobs.answer_head import answer_head_loss

    full, part = _tiny(family), _tiny(family)
    batch = _batch()
    want = full(**batch).loss
    want.backward()
    got = answer_head_loss(part, dict(batch), None)
    got.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    for (name, a), (_, b) in zip(full.named_parameters(), part.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), name


def test_the_answer_only_loss_divides_by_the_step_s_answer_tokens():
    from jobs.answer_head import answer_head_loss

    model, batch = _tiny(), _batch()
    answer_tokens = int((batch["labels"][:, 1:] != -100).sum())
    mean = answer_head_loss(model, dict(batch), None).item()
    # Another micro-batch of the same optimizer step holds as many answer tokens again.
    halved = answer_head_loss(model, dict(batch), 2 * answer_tokens).item()
    assert halved == pytest.approx(mean / 2, rel=1e-5)
    # The model's own loss, given the same count, agrees.
    own = model(**batch, num_items_in_batch=2 * answer_tokens).loss.item()
    assert halved == pytest.approx(own, rel=1e-5)


def test_a_lora_model_goes_through_its_adapters():
    from peft import LoraConfig, get_peft_model

    from jobs.answer_head import answer_head_loss

    model = get_peft_model(_tiny(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                               lora_dropout=0.0))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # adapters that change the output
    batch = _batch()
    want = model(**batch).loss
    got = answer_head_loss(model, dict(batch), None)
    got.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def test_a_head_that_scales_its_logits_is_refused_in_one_line():
    from jobs.answer_head import TrainError, answer_head_loss

    model = _tiny()
    model.config.logit_scale = 0.5
    with pytest.raises(TrainError) as err:
        answer_head_loss(model, _batch(), None)
    assert "logit_scale" in str(err.value) and "--train-answer-only-logits false" in str(err.value)
    assert "\n" not in str(err.value)


def test_auto_leaves_a_head_that_scales_its_logits_to_the_model():
    """auto (the default) turns the answer-only head on for an eager model on a GPU alone, and
    never for a head that scales its logits, which true refuses instead."""
    from core.config import RunConfig
    from jobs.answer_head import head_scale, resolved_answer_only

    model = _tiny()
    assert RunConfig().train.answer_only_logits == "auto" and head_scale(model) is None
    assert resolved_answer_only("auto", True, False, head_scale(model))
    model.config.logit_scale = 0.5
    assert head_scale(model) == "logit_scale"
    assert not resolved_answer_only("auto", True, False, head_scale(model))
    assert resolved_answer_only("true", True, False, head_scale(model))


@pytest.mark.slow
def test_a_run_with_answer_only_logits_follows_the_same_losses(demo_data, tmp_path, monkeypatch):
    """Through jobs.train on a scratch model: every micro-batch's loss comes from the
    answer-only head, and the losses match a run without it."""
    import jobs.answer_head as jt
    from core.config import config_from_dict

    train_file, dev_file = demo_data
    calls = []
    real = jt.answer_head_loss

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(jt, "answer_head_loss", counted)

    def run(answer_only: bool, name: str) -> dict:
        cfg = config_from_dict({
            "model": {"name_or_path": "scratch:llama-tiny", "load_in_4bit": False,
                      "max_seq_length": 512},
            "data": {"train_dataset_file": str(train_file),
                     "validation_dataset_file": str(dev_file)},
            "train": {"num_epochs": 1, "per_device_batch_size": 4,
                      "gradient_accumulation_steps": 2, "checkpoint_every_min": 0,
                      "answer_only_logits": answer_only}}, name)
        from jobs.train import train

        return train(cfg, tmp_path / name)

    plain = run(False, "plain")
    assert not calls
    answer_only = run(True, "answer")
    steps = answer_only["global_step"]
    # Every micro-batch of every step, and the validation batches at the epoch's end.
    assert steps == plain["global_step"] and len(calls) > steps * 2
    assert answer_only["answer_only_logits"] is True and plain["answer_only_logits"] is False
    assert answer_only["first_loss"] == pytest.approx(plain["first_loss"], rel=1e-4)
    assert answer_only["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-3)
    assert answer_only["validation"]["best_loss"] == pytest.approx(
        plain["validation"]["best_loss"], rel=1e-3)
