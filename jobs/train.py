"""Fine-tune one model with Unsloth + TRL SFT: ``python -m jobs.train`` (every seed flag).

Loss is on the answer only: each record is tokenised as the chat prompt (with the generation
prompt) followed by the answer, and the prompt's labels are -100. Records longer than
``--model-max-seq-length`` are left out and counted, never truncated into broken JSON targets.
Checkpoints go to ``checkpoints/`` and a restart on the same folder resumes from the last one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.cliargs import add_config_flags, config_from_args, keys_of
from core.config import RunConfig
from core.data import Dataset, Record, ids_path, load_dataset
from core.errors import UserError
from core.fileio import atomic_write_json, file_sha256, folder_problem, read_json
from core.identity import training_part
from core.prompts import prompt_literal, prompt_messages, target_json
from core.results import environment_info, now_iso
from core.rundir import CHECKPOINTS, TRAIN_STARTED, TRAIN_SUMMARY
from jobs import warm_model
from jobs.answer_head import _trainer_class, head_scale, resolved_answer_only
from jobs.checkpointing import (
    RESUMABLE_EXIT,
    CheckpointPolicy,
    StoppedToResume,
    last_checkpoint,
    stop_on_signals,
)
from jobs.errors import TrainError
from jobs.microbatch import _Fit, _fit_with_oom_retry, _micro_batch
from jobs.mps import MPS_STATUS_ENV
from jobs.steptime import StepClock

TRAIN_KEYS = keys_of("model", "peft", "train") + ["data.train_dataset_file",
                                                   "data.validation_dataset_file",
                                                   "data.unique_entities",
                                                   "data.context_sentences",
                                                   "data.context_after"]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode_record(tokenizer: Any, record: Record, system_prompt: str, unique: bool,
                  specials: Any = None) -> Encoded:
    """Prompt tokens (masked) + answer tokens (trained), split where generation will start."""
    msgs = prompt_messages(record, system_prompt)
    answer = target_json(record, unique)
    prompt_text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        msgs + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise TrainError("the chat template does not render the prompt as a prefix of the "
                         "conversation; set --model-family to one of the known families")
    from jobs.modeling import tokenize_with_literal

    prompt_ids = tokenize_with_literal(tokenizer, prompt_text, prompt_literal(record), specials)
    answer_ids = tokenize_with_literal(tokenizer, full_text[len(prompt_text):], answer, specials)
    return Encoded(prompt_ids + answer_ids, [-100] * len(prompt_ids) + list(answer_ids))


def encode_dataset(tokenizer: Any, ds: Dataset, cfg: RunConfig) -> tuple[list[Encoded], int]:
    """Encoded examples that fit max_seq_length, and the count of those that did not (a warm
    worker's kept tokenizer encodes the same records once: jobs.warm_model.encoded)."""
    settings = (cfg.model.system_prompt, cfg.data.unique_entities, cfg.model.max_seq_length,
                str(ds.path))
    return warm_model.encoded(tokenizer, ds.records, settings,
                              lambda: _encode_all(tokenizer, ds, cfg))


def _encode_all(tokenizer: Any, ds: Dataset, cfg: RunConfig) -> tuple[list[Encoded], int]:
    from jobs.modeling import special_strings

    kept, too_long = [], 0
    specials = special_strings(tokenizer)
    for i, rec in enumerate(ds.records):
        enc = encode_record(tokenizer, rec, cfg.model.system_prompt, cfg.data.unique_entities,
                            specials)
        if len(enc.input_ids) > cfg.model.max_seq_length:
            too_long += 1
            continue
        if not any(label != -100 for label in enc.labels):
            raise TrainError(f"{ds.path}: record {i}: no answer tokens carry loss; check the "
                             "chat template (--model-family)")
        kept.append(enc)
    if not kept:
        raise TrainError(f"{ds.path}: every record is longer than --model-max-seq-length "
                         f"{cfg.model.max_seq_length}; raise it")
    return kept, too_long


def training_identity(cfg: RunConfig, data_sha: str,
                      validation_sha: str | None = None) -> dict[str, Any]:
    """What must match for a restart to resume (the eval section may differ): the config, the
    data files' hashes and, with document context, their document ids' hashes."""
    d = training_part(cfg)
    d["data"]["train_sha256"] = data_sha
    if validation_sha:
        d["data"]["validation_sha256"] = validation_sha
    if cfg.data.context_sentences > 0 or cfg.data.context_after > 0:
        d["data"]["train_ids_sha256"] = file_sha256(ids_path(cfg.data.train_dataset_file))
        if validation_sha:
            d["data"]["validation_ids_sha256"] = file_sha256(
                ids_path(cfg.data.validation_dataset_file))
    return d


def validation_summary(log_history: Sequence[dict[str, Any]], path: str) -> dict[str, Any]:
    """Each epoch's validation loss (from the trainer's log history) and the best epoch.

    >>> v = validation_summary([{"loss": 1.0, "epoch": 1.0}, {"eval_loss": 0.9, "epoch": 1.0,
    ...     "step": 4}, {"eval_loss": 0.7, "epoch": 2.0, "step": 8},
    ...     {"eval_loss": 0.8, "epoch": 3.0, "step": 12}], "dev.json")
    >>> v["best_epoch"], v["best_loss"], [e["loss"] for e in v["per_epoch"]]
    (2.0, 0.7, [0.9, 0.7, 0.8])
    """
    per_epoch = [{"epoch": round(float(h["epoch"]), 4), "step": int(h.get("step", 0)),
                  "loss": float(h["eval_loss"])} for h in log_history if "eval_loss" in h]
    best = min(per_epoch, key=lambda e: e["loss"]) if per_epoch else None
    return {"file": path, "per_epoch": per_epoch,
            "best_epoch": best["epoch"] if best else None,
            "best_loss": best["loss"] if best else None,
            # The saved model is the last epoch's; train again with best_epoch epochs for it.
            "saved": "last"}


def _read_own(path: Path) -> dict[str, Any]:
    """A file this job wrote earlier into its output folder; TrainError when it is damaged."""
    try:
        doc = read_json(path)
    except ValueError as exc:
        raise TrainError(f"{exc}; the output folder is damaged: delete that file to train "
                         "again, or use a new --output-dir") from None
    if not isinstance(doc, dict):
        raise TrainError(f"{path}: not a medsweep record (expected an object); delete it to "
                         "train again, or use a new --output-dir")
    return doc


def effective_warmup(warmup_steps: int, total_steps: int) -> int:
    """Warm-up capped at a tenth of the run: a short run otherwise spends most (or all) of its
    steps near learning rate 0.

    >>> effective_warmup(5, 213), effective_warmup(5, 4), effective_warmup(5, 30)
    (5, 0, 3)
    """
    return min(warmup_steps, total_steps // 10)


def _optim(cfg: RunConfig, cuda: bool) -> str:
    if cfg.train.optim != "auto":
        return cfg.train.optim
    return "adamw_8bit" if cuda else "adamw_torch"


_TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def setup_tracking(report_to: str, base: Path) -> None:
    """Offline, local defaults for the tracker (a variable already set wins).

    TensorBoard and MLflow write into the run folder; W&B runs in offline mode there.
    """
    import importlib.util

    if report_to == "none":
        return
    if importlib.util.find_spec(_TRACKERS[report_to]) is None:
        raise TrainError(f"--train-report-to {report_to}: the {_TRACKERS[report_to]} package "
                         f"is not installed; pip install {_TRACKERS[report_to]}")
    if report_to == "tensorboard":
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(base / "tensorboard"))
    elif report_to == "mlflow":
        # A plain folder store: no database server on a compute node (mlflow 3 wants an
        # explicit opt-in for it).
        if "MLFLOW_TRACKING_URI" not in os.environ:
            os.environ["MLFLOW_TRACKING_URI"] = (base / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    elif report_to == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(base))


def _padding_free(cfg: RunConfig) -> bool:
    if cfg.train.padding == "padding-free":
        return True
    if cfg.train.padding == "padded":
        return False
    # auto: padding-free only pays off with flash-attn varlen kernels: without FA2 or xformers
    # it was 2.1x slower than padded batches on short records (Llama-3.2-1B, H100).
    try:
        import flash_attn  # noqa: F401
        return True
    except ImportError:
        return False


def train(cfg: RunConfig, output_dir: Path, *, checkpoint_dir: Path | None = None,
          progress_path: Path | None = None,
          budget_epochs: float | None = None) -> dict[str, Any]:
    """Train (or resume, or recognise as done) and return the training summary.
    budget_epochs: stop after that many of the configured epochs (an adaptive sweep's rung),
    with a checkpoint to resume from and the model saved; a later call with a larger budget
    (or None: all epochs) continues from there."""
    return train_model(cfg, output_dir, checkpoint_dir=checkpoint_dir,
                       progress_path=progress_path, budget_epochs=budget_epochs).summary


@dataclass
class TrainResult:
    summary: dict[str, Any]
    model: Any = None
    """The trained model in memory (None when the folder was already trained)."""
    tokenizer: Any = None


def trained_far_enough(done: dict[str, Any], budget_epochs: float | None) -> bool:
    """Whether a finished summary covers the budget asked for (None: every epoch).

    >>> trained_far_enough({"budget_epochs": None}, 1.0), trained_far_enough({}, None)
    (True, True)
    >>> trained_far_enough({"budget_epochs": 1.0}, 3.0), trained_far_enough({"budget_epochs": 1.0}, None)
    (False, False)
    """
    trained_to = done.get("budget_epochs")
    if trained_to is None:
        return True
    return budget_epochs is not None and float(trained_to) >= budget_epochs


def identity_of(cfg: RunConfig) -> dict[str, Any]:
    """training_identity of cfg with its data files hashed."""
    val = cfg.data.validation_dataset_file
    return training_identity(cfg, file_sha256(cfg.data.train_dataset_file),
                             file_sha256(val) if val else None)


def model_mismatch(cfg: RunConfig, model_dir: Path) -> str | None:
    """Why model_dir does not hold the model cfg would train to its end (None: it does): a
    run evaluates another run's model only where that model's recorded training identity is
    its own."""
    summary = Path(model_dir) / TRAIN_SUMMARY
    if not summary.is_file():
        return "it holds no trained model"
    try:
        done = _read_own(summary)
    except TrainError as exc:
        return str(exc)
    if done.get("identity") != identity_of(cfg):
        return "it was trained with another configuration or other data"
    if not trained_far_enough(done, None):
        return "it was trained to part of its epochs only"
    return None


def train_model(cfg: RunConfig, output_dir: Path, *, checkpoint_dir: Path | None = None,
                progress_path: Path | None = None, callbacks: Sequence[Any] = (),
                budget_epochs: float | None = None) -> TrainResult:
    """train() that also hands back the model; callbacks go to the trainer (benchmarks)."""
    from jobs import modeling

    output_dir = Path(output_dir)
    checkpoint_dir = Path(checkpoint_dir or output_dir / CHECKPOINTS)
    ds = load_dataset(cfg.data.train_dataset_file, cfg.data.context_sentences,
                      cfg.data.context_after)
    for w in ds.warnings:
        modeling.log(f"warning: {w}")
    val_ds = None
    if cfg.data.validation_dataset_file:
        val_ds = load_dataset(cfg.data.validation_dataset_file, cfg.data.context_sentences,
                              cfg.data.context_after)
    identity = identity_of(cfg)

    summary_path = output_dir / TRAIN_SUMMARY
    if summary_path.is_file():
        done = _read_own(summary_path)
        if done.get("identity") != identity:
            raise TrainError(f"{output_dir} holds a model trained with a different "
                             "configuration; use a new --output-dir")
        if trained_far_enough(done, budget_epochs):
            modeling.log(f"{output_dir} already holds this trained model; nothing to do")
            return TrainResult(dict(done))
        modeling.log(f"{output_dir} holds this model trained to {done['budget_epochs']:g} "
                     "epochs: training on from its checkpoint")
    started = _read_own(output_dir / TRAIN_STARTED) if (
        output_dir / TRAIN_STARTED).is_file() else None
    if started is not None and started.get("identity") != identity:
        raise TrainError(f"{output_dir} holds checkpoints of a different configuration; use a "
                         "new --output-dir")
    setup_tracking(cfg.train.report_to, checkpoint_dir.parent)
    fresh = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / TRAIN_STARTED,
                      {"identity": identity, "started_at": now_iso()})
    try:
        return _run_training(cfg, ds, identity, output_dir, checkpoint_dir, progress_path,
                             callbacks, val_ds, budget_epochs)
    except BaseException:
        # Nothing half-done: a folder this call created and left without a checkpoint to
        # resume from goes away again.
        # (A stop signal in the last step ends here too, with the model saved: kept.)
        if (fresh and last_checkpoint(checkpoint_dir) is None
                and not (output_dir / TRAIN_SUMMARY).is_file()):
            import shutil

            shutil.rmtree(output_dir, ignore_errors=True)
        raise


def first_step_clock() -> Any:
    """A trainer callback that notes when the first optimizer step of this process ended."""
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):  # type: ignore[misc]
        at: float | None = None

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.at is None:
                self.at = time.time()

    return FirstStep()


def startup_breakdown(import_s: float, load_s: float, tokenize_s: float, trainer_t0: float,
                      first_step_at: float | None) -> dict[str, float | None]:
    """Where this process's time went before its first training step (issue 16's fixed cost):
    the first step includes what compiles on first use.

    >>> startup_breakdown(9.0, 30.0, 2.0, 100.0, 112.5)["trainer_to_first_step_s"]
    12.5
    """
    import jobs

    STARTED_AT = jobs.STARTED_AT  # a warm worker's item: when the item started
    return {"import_s": round(import_s, 2), "model_load_s": round(load_s - import_s, 2),
            "worker_item": jobs.WORKER_ITEM,
            "tokenize_s": round(tokenize_s, 2),
            "trainer_to_first_step_s": round(first_step_at - trainer_t0, 2)
            if first_step_at else None,
            "process_to_first_step_s": round(first_step_at - STARTED_AT, 2)
            if first_step_at else None}


def _sft_config(cfg: RunConfig, checkpoint_dir: Path, bs: int, ga: int, *, warmup: int,
                cuda: bool, bf16: bool, validate: bool) -> Any:
    """The trainer arguments of one attempt at micro-batch bs x GA ga. Checkpoints are the
    CheckpointPolicy's (jobs.checkpointing), so the trainer's own schedule is off."""
    from trl import SFTConfig

    padding_free = _padding_free(cfg)
    return SFTConfig(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=bs,
        gradient_accumulation_steps=ga,
        num_train_epochs=cfg.train.num_epochs,
        max_steps=cfg.train.max_steps,
        learning_rate=cfg.train.learning_rate,
        weight_decay=cfg.train.weight_decay,
        warmup_steps=warmup,
        lr_scheduler_type=cfg.train.lr_scheduler_type,
        seed=cfg.train.seed,
        data_seed=cfg.train.seed,
        optim=_optim(cfg, cuda),
        logging_steps=cfg.train.logging_steps,
        save_strategy="no",
        save_total_limit=cfg.train.save_total_limit,
        report_to=cfg.train.report_to,
        bf16=bf16,
        fp16=bool(cuda and not bf16),
        max_length=cfg.model.max_seq_length,
        padding_free=padding_free,
        pad_to_multiple_of=(cfg.train.pad_to_multiple_of or None) if not padding_free else None,
        train_sampling_strategy="group_by_length" if cfg.train.group_by_length else "random",
        disable_tqdm=not sys.stderr.isatty(),
        dataset_num_proc=1,
        eval_strategy="epoch" if validate else "no",
        per_device_eval_batch_size=bs,
        prediction_loss_only=True,  # the loss only: no vocabulary-wide logits gathered
    )


@dataclass
class _Loaded:
    """The model ready to train and what loading it cost."""
    model: Any
    tokenizer: Any
    model_name: str
    import_s: float
    load_s: float
    facts: Any
    """jobs.modeling.ModelFacts: family, size, switches, gradient checkpointing."""

    @property
    def checkpointing(self) -> str:
        return str(self.facts.checkpointing)

    @property
    def switches(self) -> Any:
        return self.facts.switches


def _load_for_training(cfg: RunConfig, ds: Dataset, output_dir: Path) -> _Loaded:
    from jobs import modeling

    facts = modeling.model_facts(cfg)  # once: every step below reads these
    t0 = time.time()
    modeling.import_unsloth(facts.switches)
    import_s = time.time() - t0
    model_name = cfg.model.name_or_path
    if modeling.is_scratch(model_name):
        corpus = [r.text for r in ds.records] + [target_json(r) for r in ds.records] + [
            cfg.model.system_prompt]
        model_name = modeling.resolve_scratch(cfg, corpus, output_dir / "scratch_base")
    model, tokenizer = modeling.load_model(model_name, cfg, for_training=True, facts=facts)
    return _Loaded(model, tokenizer, model_name, import_s, time.time() - t0, facts)


@dataclass
class _Encoded:
    """The tokenised training (and validation) sets."""
    examples: list[Encoded]
    too_long: int
    train_ds: Any
    eval_ds: Any
    tokenize_s: float


def _encode_sets(cfg: RunConfig, tokenizer: Any, ds: Dataset,
                 val_ds: Dataset | None) -> _Encoded:
    from datasets import Dataset as HFDataset

    from jobs import modeling

    t_tok = time.time()
    examples, too_long = encode_dataset(tokenizer, ds, cfg)
    tokenize_s = time.time() - t_tok
    if too_long:
        modeling.log(f"warning: {too_long} of {len(ds.records)} records are longer than "
                     f"--model-max-seq-length {cfg.model.max_seq_length} tokens and are left "
                     "out of training (not truncated)")
    train_ds = HFDataset.from_dict({"input_ids": [e.input_ids for e in examples],
                                    "labels": [e.labels for e in examples]})
    eval_ds = None
    if val_ds is not None:
        val_examples, val_too_long = encode_dataset(tokenizer, val_ds, cfg)
        if val_too_long:
            modeling.log(f"warning: {val_too_long} validation records are longer than "
                         f"--model-max-seq-length {cfg.model.max_seq_length}; left out")
        eval_ds = HFDataset.from_dict({"input_ids": [e.input_ids for e in val_examples],
                                       "labels": [e.labels for e in val_examples]})
    return _Encoded(examples, too_long, train_ds, eval_ds, tokenize_s)


def planned_steps(cfg: RunConfig, n_examples: int) -> int:
    """Optimizer steps of the whole run.

    >>> from core.config import config_from_dict
    >>> planned_steps(config_from_dict({"train": {"num_epochs": 2}}), 130)
    6
    """
    per_step = cfg.train.per_device_batch_size * cfg.train.gradient_accumulation_steps
    steps_per_epoch = max(1, -(-n_examples // per_step))
    if cfg.train.max_steps > 0:
        return cfg.train.max_steps
    return max(1, int(round(steps_per_epoch * cfg.train.num_epochs)))


def _warmup_for(cfg: RunConfig, total_steps: int) -> int:
    from jobs import modeling

    warmup = effective_warmup(cfg.train.warmup_steps, total_steps)
    if warmup != cfg.train.warmup_steps:
        modeling.log(f"warning: --train-warmup-steps {cfg.train.warmup_steps} is more than a "
                     f"tenth of this run's {total_steps} optimizer steps (its first steps would "
                     f"train at almost no learning rate); warming up over {warmup} instead")
    return warmup


def checkpoint_policy(cfg: RunConfig, budget_epochs: float | None = None) -> CheckpointPolicy:
    """This run's checkpoint policy (jobs.checkpointing); a budget below the configured
    epochs stops training at its epoch's end."""
    stop_at = budget_epochs if (budget_epochs is not None and cfg.train.max_steps < 0
                                and budget_epochs < cfg.train.num_epochs) else None
    return CheckpointPolicy(every_s=cfg.train.checkpoint_every_min * 60.0,
                            every_steps=cfg.train.save_steps, stop_at_epoch=stop_at)


def _run_training(cfg: RunConfig, ds: Dataset, identity: dict[str, Any], output_dir: Path,
                  checkpoint_dir: Path, progress_path: Path | None,
                  callbacks: Sequence[Any], val_ds: Dataset | None = None,
                  budget_epochs: float | None = None) -> TrainResult:
    from jobs.faults import train_callbacks
    from jobs.progress import ProgressWriter, trainer_callback

    loaded = _load_for_training(cfg, ds, output_dir)
    model, tokenizer = loaded.model, loaded.tokenizer

    import torch
    from trl import SFTTrainer

    cuda = torch.cuda.is_available()
    enc = _encode_sets(cfg, tokenizer, ds, val_ds)
    if not cfg.model.full_finetuning:
        from jobs import modeling

        model = modeling.apply_lora(model, cfg, loaded.facts)
    tokenizer.padding_side = "right"
    total_steps = planned_steps(cfg, len(enc.examples))
    warmup = _warmup_for(cfg, total_steps)
    bf16 = bool(cuda and torch.cuda.is_bf16_supported())

    writer = ProgressWriter(progress_path, "train")
    answer_only = resolved_answer_only(cfg.train.answer_only_logits, cuda,
                                       loaded.switches.compiled, head_scale(model))
    bs, ga = _micro_batch(cfg, model, enc.examples, checkpoint_dir, cuda,
                          checkpointing=loaded.checkpointing != "false",
                          chunked_head=loaded.switches.compiled, answer_only=answer_only)
    # Where this call started from (a requeued job resumes; the summary says from where).
    resumed_from = last_checkpoint(checkpoint_dir)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    policy = checkpoint_policy(cfg, budget_epochs)
    clock = StepClock(sync=torch.cuda.synchronize if cuda else lambda: None)
    first = first_step_clock()

    def make_trainer(bs: int, ga: int) -> Any:
        args = _sft_config(cfg, checkpoint_dir, bs, ga, warmup=warmup, cuda=cuda, bf16=bf16,
                           validate=enc.eval_ds is not None)
        trainer_class = _trainer_class(SFTTrainer, answer_only)
        trainer = trainer_class(model=model, args=args,
                                train_dataset=enc.train_ds, eval_dataset=enc.eval_ds,
                                processing_class=tokenizer,
                                callbacks=[trainer_callback(writer), first,
                                           policy.callback(), clock.callback(),
                                           *train_callbacks(), *callbacks])
        # Without a terminal the trainer prints each log as a dict: the job's own progress
        # line already says it, once.
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        return trainer

    t1 = time.time()
    with stop_on_signals(policy):
        fit = _fit_with_oom_retry(make_trainer, model, bs, ga, checkpoint_dir, writer,
                                  progress_path, cuda, policy)
    train_s = time.time() - t1
    step = int(fit.out.global_step)
    if policy.stop_reason is not None and step < fit.trainer.state.max_steps:
        raise StoppedToResume(step, policy.stop_reason, policy.stop_signal)

    model.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    summary = _train_summary(cfg, ds, identity, loaded, enc, fit, writer, clock, policy,
                             resumed_from=resumed_from, warmup=warmup, train_s=train_s,
                             answer_only=answer_only,
                             budget=policy.stop_at_epoch if policy.budget_reached else None,
                             startup={**startup_breakdown(loaded.import_s, loaded.load_s,
                                                         enc.tokenize_s, t1, first.at),
                                      "model_kept": warm_model.taken})
    atomic_write_json(output_dir / TRAIN_SUMMARY, summary)
    writer.update(step, step, loss=summary["final_loss"], done=True)
    if policy.stop_reason is not None:
        # Finished in the step the signal arrived in: the model is saved; the job still stops.
        raise StoppedToResume(step, policy.stop_reason, policy.stop_signal)
    return TrainResult(summary, model, tokenizer)


def _train_summary(cfg: RunConfig, ds: Dataset, identity: dict[str, Any], loaded: _Loaded,
                   enc: _Encoded, fit: _Fit, writer: Any, clock: StepClock,
                   policy: CheckpointPolicy, *, resumed_from: Path | None, warmup: int,
                   train_s: float, startup: dict[str, Any], answer_only: bool = False,
                   budget: float | None = None) -> dict[str, Any]:
    from jobs import modeling

    facts = modeling.device_facts(fit.trainer.model)
    losses = [h["loss"] for h in writer.history]
    args = fit.trainer.args
    return {
        "identity": identity,
        "finished_at": now_iso(),
        "resumed_from": resumed_from.name if resumed_from else None,
        # An adaptive sweep's rung stopped training at this many epochs (None: all of them).
        "budget_epochs": budget,
        "epoch": round(float(fit.trainer.state.epoch or 0.0), 4),
        "base_model": loaded.model_name,
        "examples": len(enc.examples),
        "labels": ds.labels,
        "warmup_steps": warmup,
        "skipped_too_long": enc.too_long,
        "global_step": int(fit.out.global_step),
        "train_loss": float(fit.out.training_loss),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_s": round(train_s, 2),
        "load_s": round(loaded.load_s, 2),
        "startup": startup,
        "step_time": clock.breakdown(),
        "checkpoints": {"every_min": cfg.train.checkpoint_every_min,
                        "every_steps": cfg.train.save_steps, "written": policy.saves},
        "examples_per_s": round(len(enc.examples) * (budget or cfg.train.num_epochs)
                                / train_s, 3)
        if cfg.train.max_steps < 0 and train_s > 0 and not resumed_from else None,
        "peak_vram_gb": facts["peak_vram_gb"],
        "device": facts,
        "layers_per_device": facts.get("layers_per_device"),
        "gradient_checkpointing": loaded.checkpointing,
        # model.compile / model.flex_attention as resolved for this model (jobs.modeling).
        "compiled": loaded.switches.compiled,
        "flex_attention": loaded.switches.flex_attention,
        "padding_free": args.padding_free,
        "pad_to_multiple_of": args.pad_to_multiple_of,
        "per_device_batch_size": fit.bs,
        "gradient_accumulation_steps": fit.ga,
        "batch_as_given": f"{cfg.train.per_device_batch_size}x"
                          f"{cfg.train.gradient_accumulation_steps}",
        "oom_retries": fit.oom_retries,
        # How a packed run shared its GPU (jobs.mps: started, cluster, unavailable, failed,
        # off); None when it ran alone.
        "pack_mps": os.environ.get(MPS_STATUS_ENV),
        "validation": validation_summary(fit.trainer.state.log_history,
                                         cfg.data.validation_dataset_file)
        if enc.eval_ds is not None else None,
        "optim": args.optim,
        # train.answer_only_logits as resolved for this run (its setting may be auto).
        "answer_only_logits": answer_only,
        "environment": environment_info(),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.train",
        description="Fine-tune an instruction LLM with Unsloth to extract medical entities as "
                    "JSON. Booleans take true/false. Defaults follow the seed's tables.")
    p.add_argument("--output-dir", required=True,
                   help="Where the adapter (or full model), tokenizer, config and checkpoints go.")
    add_config_flags(p, TRAIN_KEYS, required=("model.name_or_path", "data.train_dataset_file"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        bad = folder_problem(args.output_dir, "--output-dir")
        if bad:
            raise UserError(bad)
        cfg = config_from_args(args)
        summary = train(cfg, Path(args.output_dir))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoppedToResume as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return RESUMABLE_EXIT
    print(json.dumps({k: summary[k] for k in ("global_step", "train_loss", "final_loss",
                                              "train_s", "examples", "skipped_too_long")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
