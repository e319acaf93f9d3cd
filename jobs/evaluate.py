"""Generate, parse and score: ``python -m jobs.evaluate`` (every seed flag).

Batched generation with left padding over examples sorted by prompt length, greedy by default
(reproducible); ``--eval-generation model-presets`` uses the seed's per-family sampling with a
fixed seed. Writes ``true_pred_entities.json`` and ``performance.json`` atomically.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from core.cliargs import add_config_flags, config_from_args
from core.config import ConfigError, RunConfig, config_from_dict, parse_metrics
from core.data import Entity, load_dataset
from core.errors import UserError
from core.families import detect_family
from core.fileio import atomic_write_json, file_sha256, folder_problem, read_json
from core.grounding import ground_all
from core.metrics import BOOTSTRAP_REPS, hallucination_rate, score
from core.parsing import AnswerEnd, parse_output, parse_stats
from core.prompts import prompt_messages, target_entities, target_json
from core.results import (
    environment_info,
    performance_doc,
    true_pred_doc,
)
from core.rundir import PERFORMANCE, TRAIN_SUMMARY, TRUE_PRED

EVAL_KEYS = ["data.eval_dataset_file", "model.max_seq_length", "model.load_in_4bit",
             "model.load_in_8bit", "model.system_prompt", "model.family", "model.hf_token",
             "eval.batch_size", "eval.unique_entities", "eval.metrics", "eval.generation",
             "eval.max_new_tokens", "eval.seed", "eval.max_examples", "eval.grounding",
             "eval.constrained"]


class EvalError(UserError):
    """An evaluation that cannot proceed; the message says what to change."""


def saved_config(model_dir: Path) -> RunConfig | None:
    """The config a model was trained with (so eval reuses its prompt and family)."""
    summary = model_dir / TRAIN_SUMMARY
    if not summary.is_file():
        return None
    try:
        doc = read_json(summary)
    except ValueError as exc:
        raise EvalError(f"{exc}; the model folder is damaged: train it again") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("identity", {}), dict):
        raise EvalError(f"{summary}: not a medsweep training record; train the model again")
    ident = dict(doc.get("identity", {}))
    ident.get("data", {}).pop("train_sha256", None)
    try:
        return config_from_dict(ident, str(summary))
    except ConfigError:
        return None


def generate_all(model: Any, tokenizer: Any, prompts: list[list[int]], cfg: RunConfig,
                 max_new_tokens: int, gen_kwargs: dict[str, Any], progress: Any = None,
                 oom_log: list[dict[str, Any]] | None = None,
                 constraint: Callable[[list[int], int, Any], Any] | None = None,
                 decode: dict[str, int] | None = None) -> tuple[list[str], int]:
    """Outputs in input order, generated in length-sorted left-padded batches, and the tokens
    the rows generated (up to each row's stop token or end of answer, not the padding a batch
    adds after a row has finished).

    A batch that runs out of GPU memory is retried at half the size (and so are the batches
    after it), down to 1. constraint(indices, prompt_width, pieces), when given, makes the
    logits processor of a batch (constrained decoding). decode, when given, gets the decoding
    steps run (``steps``: a batch runs until its last row finishes), the ``batches``, and those
    of them that ran to max_new_tokens (``at_budget``): one row that never ends its answer
    holds its whole batch there.
    """
    import torch

    from jobs.faults import check_eval_batch

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    generated_tokens = 0
    bs = cfg.eval.batch_size
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        tokenizer.eos_token_id
    device = next(model.parameters()).device
    stops = set(gen_kwargs.get("eos_token_id", []))
    ends = stops | {pad_id}  # a finished row is padded to the batch's length
    if decode is not None:
        decode.update(steps=0, batches=0, at_budget=0)
    from jobs.constrained import TokenPieces

    pieces = TokenPieces(tokenizer)
    b = 0
    while b < len(order):
        idx = order[b:b + bs]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = prompts[i]
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
        try:
            check_eval_batch(len(idx))
            extra: dict[str, Any] = {"stopping_criteria": answer_end_criteria(
                pieces, len(idx), width)}
            if constraint is not None:
                extra["logits_processor"] = constraint(idx, width, pieces)
            with torch.inference_mode():
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                                     **gen_kwargs, **extra)
        except torch.OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if bs == 1:
                raise EvalError("out of GPU memory generating one example: lower "
                                "--eval-max-new-tokens or --model-max-seq-length, or load in "
                                "4-bit") from exc
            if oom_log is not None:
                oom_log.append({"at_example": b, "from": bs, "to": bs // 2})
            from jobs import modeling

            modeling.log(f"out of memory at eval batch {bs}; retrying with {bs // 2}")
            bs //= 2
            continue
        new = out[:, width:]
        if decode is not None:
            decode["steps"] += int(new.shape[1])
            decode["batches"] += 1
            decode["at_budget"] += int(new.shape[1] >= max_new_tokens)
        for row, i in enumerate(idx):
            toks = new[row].tolist()
            cut = next((k for k, t in enumerate(toks) if t in stops), len(toks))
            generated_tokens += next((k for k, t in enumerate(toks) if t in ends), len(toks))
            outputs[i] = tokenizer.decode(toks[:cut], skip_special_tokens=True)
        b += len(idx)
        if progress is not None:
            progress.update(min(b, len(order)), len(order))
    return outputs, generated_tokens


def answer_end_criteria(pieces: Any, rows: int, width: int) -> Any:
    """Stop each row of a batch once its JSON answer is complete (core.parsing.AnswerEnd)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class AnswerStop(StoppingCriteria):  # type: ignore[misc]
        def __init__(self) -> None:
            self.ends = [AnswerEnd() for _ in range(rows)]
            self.seen = width

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            # Only the tokens added since the last call leave the GPU: copying every row's whole
            # answer at each step made a long batch quadratic in its length.
            new = input_ids[:, self.seen:].tolist()
            self.seen = input_ids.shape[1]
            for end, toks in zip(self.ends, new, strict=True):
                for t in toks:
                    end.feed(pieces(t))
            return torch.tensor([e.done for e in self.ends], dtype=torch.bool,
                                device=input_ids.device)

    return StoppingCriteriaList([AnswerStop()])


def constraint_labels(train_summary: dict[str, Any] | None, eval_labels: list[str]
                      ) -> list[str]:
    """Labels constrained decoding allows: those seen in training (recorded by jobs.train),
    else, for a model trained elsewhere, the eval file's."""
    labels = (train_summary or {}).get("labels")
    if isinstance(labels, list) and labels:
        return [str(x) for x in labels]
    from jobs import modeling

    modeling.log("constrained decoding: the model folder records no training labels; using "
                 f"the eval file's ({', '.join(eval_labels)})")
    return eval_labels


def span_constraints(tokenizer: Any, texts: list[str], labels: list[str], *, greedy: bool
                     ) -> tuple[Callable[[list[int], int, Any], Any], list[Any]]:
    """A factory of per-batch constrained-decoding processors, and the list of those made."""
    from jobs.constrained import SpanConstraint, logits_processors

    made: list[Any] = []

    def make(idx: list[int], width: int, pieces: Any) -> Any:
        c = SpanConstraint(tokenizer, [texts[i] for i in idx], labels, width, greedy=greedy,
                           pieces=pieces)
        made.append(c)
        return logits_processors(c)

    return make, made


@dataclass
class _Prompts:
    """The eval records as prompt token ids, the answer budget, and the records left out."""
    ids: list[list[int]]
    budget: int
    too_long: set[int]
    keep: list[int]


def _encode_prompts(tokenizer: Any, records: list[Any], cfg: RunConfig) -> _Prompts:
    from jobs import modeling

    prompts, too_long_idx = [], set()
    answer_lens = [len(tokenizer(target_json(r, cfg.eval.unique_entities),
                                 add_special_tokens=False)["input_ids"]) for r in records]
    budget = cfg.eval.max_new_tokens or max(64, int(1.5 * max(answer_lens)) + 8)
    specials = modeling.special_strings(tokenizer)
    for i, r in enumerate(records):
        text = tokenizer.apply_chat_template(prompt_messages(r.text, cfg.model.system_prompt),
                                             tokenize=False, add_generation_prompt=True)
        ids = modeling.tokenize_with_literal(tokenizer, text, r.text, specials)
        if len(ids) + budget > cfg.model.max_seq_length:
            too_long_idx.add(i)
        prompts.append(ids)
    if too_long_idx:
        modeling.log(f"warning: {len(too_long_idx)} prompts leave no room for a "
                     f"{budget}-token answer within --model-max-seq-length "
                     f"{cfg.model.max_seq_length}; they are scored as empty predictions")
    keep = [i for i in range(len(records)) if i not in too_long_idx]
    return _Prompts(prompts, budget, too_long_idx, keep)


def _generation_kwargs(cfg: RunConfig, family: Any, tokenizer: Any) -> dict[str, Any]:
    from jobs import modeling

    gen_kwargs: dict[str, Any] = {"eos_token_id": modeling.stop_token_ids(tokenizer)}
    if cfg.eval.generation == "model-presets" and family.generation_preset:
        gen_kwargs.update(family.generation_preset)
    else:
        gen_kwargs["do_sample"] = False
    return gen_kwargs


def _load_for_eval(cfg: RunConfig, model_dir: Path) -> tuple[Any, Any, float]:
    """The model in inference mode, its tokenizer (left padding) and the seconds it took."""
    from jobs import modeling

    if not model_dir.is_dir():
        raise EvalError(f"--model-dir {model_dir}: not a folder; give the --output-dir of "
                        "jobs.train")
    t0 = time.time()
    model, tokenizer = modeling.load_model(str(model_dir), cfg, for_training=False)
    from unsloth import FastLanguageModel

    FastLanguageModel.for_inference(model)
    tokenizer.padding_side = "left"
    return model, tokenizer, time.time() - t0


@dataclass
class _Generated:
    raw: list[str]
    gen_tokens: int
    eval_s: float
    oom_log: list[dict[str, Any]]
    decode: dict[str, int]
    constraints: list[Any]


def _generate(model: Any, tokenizer: Any, records: list[Any], pr: _Prompts, cfg: RunConfig,
              gen_kwargs: dict[str, Any], labels: list[str], writer: Any) -> _Generated:
    """Raw answers for every record ("" for those left out), greedy or sampled, constrained
    where asked."""
    texts = [r.text for r in records]
    constraint: Callable[[list[int], int, Any], Any] | None = None
    constraints: list[Any] = []
    if cfg.eval.constrained:
        constraint, constraints = span_constraints(tokenizer, [texts[i] for i in pr.keep],
                                                   labels,
                                                   greedy=not gen_kwargs.get("do_sample"))
    t1 = time.time()
    oom_log: list[dict[str, Any]] = []
    decode: dict[str, int] = {}
    outs, gen_tokens = generate_all(model, tokenizer, [pr.ids[i] for i in pr.keep], cfg,
                                    pr.budget, gen_kwargs, writer, oom_log, constraint, decode)
    eval_s = time.time() - t1
    raw = [""] * len(records)
    for i, o in zip(pr.keep, outs, strict=False):
        raw[i] = o
    return _Generated(raw, gen_tokens, eval_s, oom_log, decode, constraints)


def evaluate(cfg: RunConfig, model_dir: Path, results_dir: Path, *,
             progress_path: Path | None = None,
             budget: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the model in model_dir on the eval split into results_dir; budget: the rung
    of an adaptive sweep this model was trained to (recorded in performance.json)."""
    from jobs import modeling
    from jobs.progress import ProgressWriter

    metrics = parse_metrics(cfg.eval.metrics)
    ds = load_dataset(cfg.data.eval_dataset_file)
    for w in ds.warnings:
        modeling.log(f"warning: {w}")
    records = ds.records[:cfg.eval.max_examples] if cfg.eval.max_examples else ds.records
    model_dir = Path(model_dir)
    model, tokenizer, load_s = _load_for_eval(cfg, model_dir)
    pr = _encode_prompts(tokenizer, records, cfg)
    family = detect_family(str(model_dir), cfg.model.family)
    gen_kwargs = _generation_kwargs(cfg, family, tokenizer)
    import torch

    torch.manual_seed(cfg.eval.seed)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    writer = ProgressWriter(progress_path, "evaluate", keep_history=True)
    train_summary = read_json(model_dir / TRAIN_SUMMARY) if (
        model_dir / TRAIN_SUMMARY).is_file() else None
    trained = train_summary if isinstance(train_summary, dict) else {}
    gen = _generate(model, tokenizer, records, pr, cfg, gen_kwargs,
                    constraint_labels(train_summary, ds.labels) if cfg.eval.constrained
                    else [], writer)

    texts = [r.text for r in records]
    parsed = [parse_output(gen.raw[i]) for i in pr.keep]
    pred_raw: list[list[Entity]] = [[] for _ in records]
    for i, p in zip(pr.keep, parsed, strict=False):
        pred_raw[i] = p.entities
    gold = [target_entities(r, cfg.eval.unique_entities) if cfg.eval.unique_entities
            else list(r.entities) for r in records]
    pred, scores, grounding = score_grounded(gold, pred_raw, texts, metrics, cfg)
    mentions = mention_level(records, pred, texts, metrics, scores, cfg.eval.unique_entities)
    grounding["constrained"] = cfg.eval.constrained
    grounding["constrained_masked_steps"] = sum(c.masked_steps for c in gen.constraints) \
        if cfg.eval.constrained else None

    facts = modeling.device_facts(model)
    n = len(records)
    eval_s = gen.eval_s
    doc = performance_doc(
        scores, num_examples=n, avg_inference_time=eval_s / n if n else 0.0,
        parse=parse_stats(parsed, len(pr.too_long)),
        hallucination_rate=hallucination_rate(pred, texts),
        config=cfg.to_dict(),
        extra={
            "model_dir": str(model_dir),
            "budget": budget,
            "mention_level": mentions,
            "grounding": grounding,
            "family": family.name,
            "data": {"eval_file": str(cfg.data.eval_dataset_file),
                     "eval_sha256": file_sha256(cfg.data.eval_dataset_file),
                     "eval_records": n,
                     "train_file": cfg.data.train_dataset_file or None,
                     "train_sha256": trained.get("identity", {}).get(
                         "data", {}).get("train_sha256")},
            "generation": {"mode": cfg.eval.generation, "max_new_tokens": pr.budget,
                           "oom_retries": gen.oom_log,
                           # Decoding steps run; batches held to max_new_tokens by one row.
                           "decode": gen.decode,
                           **{k: v for k, v in gen_kwargs.items() if k != "eos_token_id"}},
            "timings": {"load_s": round(load_s, 2), "eval_s": round(eval_s, 3),
                        "s_per_example": eval_s / n if n else 0.0,
                        "records_per_s": n / eval_s if eval_s else None,
                        "generated_tokens": gen.gen_tokens,
                        "generated_tokens_per_s": gen.gen_tokens / eval_s if eval_s else None,
                        "train_s": trained.get("train_s")},
            "training": {k: v for k, v in trained.items()
                         if k not in ("identity", "environment", "device")} or None,
            "peak_vram_gb": max(facts["peak_vram_gb"],
                                float(trained.get("peak_vram_gb") or 0.0)),
            "hardware": facts,
            "environment": environment_info(),
        })
    results_dir = Path(results_dir)
    atomic_write_json(results_dir / TRUE_PRED, true_pred_doc(gold, pred, texts, gen.raw,
                                                             sorted(pr.too_long)))
    atomic_write_json(results_dir / PERFORMANCE, doc)
    return doc


def mention_level(records: Sequence[Any], pred: list[list[Entity]], texts: list[str],
                  metrics: Sequence[str], scores: dict[str, Any],
                  unique: bool) -> dict[str, Any]:
    """The answers scored counting every gold mention (as published BC5CDR / NCBI-disease
    scores are), beside the seed's unique (label, text) pairs: the totals scored already
    where the run counted mentions itself.

    >>> from core.data import Entity, Record
    >>> recs = [Record("Aspirin then aspirin.", [Entity("Chemical", "Aspirin"),
    ...                                          Entity("Chemical", "aspirin")])]
    >>> m = mention_level(recs, [[Entity("Chemical", "aspirin")]], [recs[0].text], ["exact"],
    ...                   {}, True)
    >>> m["exact"]["r"]
    0.5
    """
    if not unique:
        return dict(scores["total"])
    return dict(score([list(r.entities) for r in records], pred, texts, metrics,
                      unique=False)["total"])


def score_grounded(gold: list[list[Entity]], pred_raw: list[list[Entity]], texts: list[str],
                   metrics: Sequence[str], cfg: RunConfig
                   ) -> tuple[list[list[Entity]], dict[str, Any], dict[str, Any]]:
    """The predictions scored (grounded unless --eval-grounding false), their scores with a
    bootstrap interval, and the grounding block: what grounding dropped and the totals counted
    the other way, so a reader sees what it changed."""
    grounded, dropped = ground_all(pred_raw, texts)
    pred = grounded if cfg.eval.grounding else pred_raw
    scores = score(gold, pred, texts, metrics, unique=cfg.eval.unique_entities,
                   ci_reps=BOOTSTRAP_REPS)
    other = score(gold, pred_raw if cfg.eval.grounding else grounded, texts, metrics,
                  unique=cfg.eval.unique_entities)["total"]
    n_pred_raw = sum(len(p) for p in pred_raw)
    rate = dropped / n_pred_raw if n_pred_raw else 0.0
    return pred, scores, {
        "enabled": cfg.eval.grounding,
        "dropped": dropped,
        "dropped_rate": rate,
        "ungrounded_total" if cfg.eval.grounding else "grounded_total": other,
        # Grounding drops exactly the texts the hallucination rate counts (same locating).
        "hallucination_rate_ungrounded": rate,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.evaluate",
        description="Evaluate a fine-tuned model on a dataset: generate, parse and score. "
                    "Flags not given default to the values the model was trained with, else "
                    "to the seed's defaults.")
    p.add_argument("--results-dir", required=True, help="Where the result files go.")
    p.add_argument("--model-dir", required=True, help="The --output-dir of jobs.train.")
    add_config_flags(p, EVAL_KEYS, required=("data.eval_dataset_file",))
    return p


def summary_lines(doc: dict[str, Any]) -> list[str]:
    lines = []
    for m, prf in doc["metrics"]["total"].items():
        lines.append(f"{m:8s} P={prf['p']:.3f} R={prf['r']:.3f} F1={prf['f1']:.3f}")
    lines.append(f"parse failures {doc['parse']['failure_rate']:.1%}, hallucinated "
                 f"{(doc.get('hallucination_rate') or 0):.1%}, "
                 f"{doc['avg_inference_time']:.3f} s/example")
    g = doc.get("grounding")
    if isinstance(g, dict) and g.get("enabled"):
        other = (g.get("ungrounded_total") or {}).get("exact", {})
        lines.append(f"grounding dropped {g['dropped']} predicted entities not in the input "
                     f"({g['dropped_rate']:.1%}); ungrounded exact F1 "
                     f"{float(other.get('f1', 0.0)):.3f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        bad = folder_problem(args.results_dir, "--results-dir")
        if bad:
            raise UserError(bad)
        base = saved_config(Path(args.model_dir))
        cfg = config_from_args(args, base)
        doc = evaluate(cfg, Path(args.model_dir), Path(args.results_dir))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(doc):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
