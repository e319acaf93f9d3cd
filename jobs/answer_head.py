"""The LM head applied at the answer's tokens only, and the trainer class that uses it.

Unsloth's eager trainer computes the logits at every position of every record (a 262k-word
vocabulary for Gemma 3: most of a small model's memory), although the loss only reads the
answer's. With ``train.answer_only_logits`` the loss runs the head on the answer positions
alone: the same loss and gradient, and the memory it frees lets the micro-batch grow.
"""

from __future__ import annotations

from typing import Any

from jobs.errors import TrainError


class _NoTokenizerSave:
    """Stands in for the tokenizer while a checkpoint is written."""

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        return None


HEAD_SCALES = ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
"""Config keys of families whose head scales its logits: the answer-only head does not."""


def head_scale(model: Any) -> str | None:
    """The config key by which this model's head scales its logits (HEAD_SCALES), or None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = base.config.get_text_config()
    return next((k for k in HEAD_SCALES if getattr(text, k, None) not in (None, 1, 1.0)), None)


def resolved_answer_only(setting: str, cuda: bool, compiled: bool,
                         scaled_by: str | None) -> bool:
    """train.answer_only_logits for this run. auto: on where Unsloth's trainer would compute
    the full logits (eager on a GPU; compiled, its loss is chunked, and the CPU backend has its
    own) and the head does not scale them; true: on (a scaling head is refused in training).

    >>> [resolved_answer_only("auto", True, False, None), resolved_answer_only("auto", True, True,
    ...  None), resolved_answer_only("auto", False, False, None),
    ...  resolved_answer_only("auto", True, False, "logit_scale"),
    ...  resolved_answer_only("true", False, True, None), resolved_answer_only("false", True,
    ...  False, None)]
    [True, False, False, False, True, False]
    """
    if setting == "auto":
        return cuda and not compiled and scaled_by is None
    return setting == "true"


def answer_head_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any) -> Any:
    """The training loss with the LM head applied only where it is needed: the backbone's
    hidden states at the positions whose next token is a label (the answer) go through the
    head, so the (rows, length, vocabulary) logits of the prompt never exist. The negative
    log-likelihood summed over the answer tokens, divided by num_items_in_batch (the answer
    tokens of the whole optimizer step) or, without it, by this batch's own count: the model's
    own loss from the full logits, in value and gradient. Final-logit soft-capping (Gemma 2)
    is applied as the model does."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = base.config.get_text_config()
    scaled = head_scale(model)
    if scaled:
        raise TrainError(f"train.answer_only_logits true: {type(base).__name__} scales its "
                         f"logits ({scaled}), which the answer-only head does not do; set "
                         "--train-answer-only-logits false")
    labels = inputs["labels"]
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = base.base_model(**rest, use_cache=False).last_hidden_state[:, :-1]
    head = base.get_output_embeddings()
    target = labels[:, 1:].to(head.weight.device)
    mask = target != -100
    logits = head(hidden.to(head.weight.device)[mask]).float()
    cap = getattr(text, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    loss = torch.nn.functional.cross_entropy(logits, target[mask], reduction="sum")
    count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return loss / count


def _trainer_class(base: Any, answer_only: bool = False) -> Any:
    """The (Unsloth-patched) SFTTrainer with a resume-deterministic length-grouped sampler,
    and with answer_only the loss of answer_head_loss in place of the model's own (Unsloth's
    trainer computes that from the full logits when the model is eager)."""
    from jobs.sampling import EpochLengthGroupedSampler

    class MedsweepTrainer(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if not answer_only or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            if not getattr(self, "model_accepts_loss_kwargs", True):
                num_items_in_batch = None  # the Trainer divides by the accumulation itself
            loss = answer_head_loss(model, inputs, num_items_in_batch)
            return (loss, {"loss": loss}) if return_outputs else loss

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            # Resuming never reads the tokenizer; the final folder gets it once (a 262k
            # vocabulary took 17% of a Gemma 3 270M run when written with every checkpoint).
            tokenizer: Any = getattr(self, "processing_class")  # noqa: B009
            self.processing_class = _NoTokenizerSave()
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.processing_class = tokenizer

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            ds = train_dataset if train_dataset is not None else self.train_dataset
            return EpochLengthGroupedSampler(
                [len(x) for x in ds["input_ids"]],
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                self.args.data_seed if self.args.data_seed is not None else self.args.seed)

    return MedsweepTrainer
