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
from core.parsing import AnswerEnd, close_loop, parse_output, parse_stats
from core.prompts import prompt_literal, prompt_messages, target_entities, target_json
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
             "eval.constrained", "eval.decoder", "eval.max_item_repeats",
             "data.context_sentences",
             "data.context_after"]


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
    ident = {k: dict(v) if isinstance(v, dict) else v
             for k, v in doc.get("identity", {}).items()}
    data = ident.get("data", {})
    for key in [k for k in data if k.endswith("_sha256")]:  # file hashes, not config keys
        data.pop(key)
    try:
        return config_from_dict(ident, str(summary))
    except ConfigError:
        return None


def generate_all(model: Any, tokenizer: Any, prompts: list[list[int]], cfg: RunConfig,
                 max_new_tokens: int, gen_kwargs: dict[str, Any], progress: Any = None,
                 oom_log: list[dict[str, Any]] | None = None,
                 constraint: Callable[[list[int], int, Any], Any] | None = None,
                 decode: dict[str, Any] | None = None,
                 release: Callable[[int], int] | None = None) -> tuple[list[str], int]:
    """Outputs in input order, generated in length-sorted left-padded batches, and the tokens
    the rows generated (up to each row's stop token or end of answer, not the padding a batch
    adds after a row has finished).

    A batch that runs out of GPU memory is retried at half the size (and so are the batches
    after it), down to 1. constraint(indices, prompt_width, pieces), when given, makes the
    logits processor of a batch (constrained decoding). decode, when given, gets the decoding
    steps run (``steps``: a batch runs until its last row finishes), the ``batches``, those of
    them that ran to max_new_tokens (``at_budget``), the rows ``continued``, and the rows
    whose answer looped (``loops_cut``: cfg.eval.max_item_repeats, see core.parsing.AnswerEnd).

    Stragglers: one row that never ends its answer would hold its whole batch of a thousand
    rows to max_new_tokens. So a batch stops once at most release(rows) of its rows are
    unfinished (default: one in 32, see straggler_release); those rows are continued
    afterwards, all batches' together, from their prompt plus what they generated so far, with
    the budget they have left. Greedy answers come out the same token for token, up to the
    rounding that any change of batch makes. Not with a constraint (its state lives in the
    batch that started it).

    The decoder is cfg.eval.decoder's (jobs.fastdecode.choose): greedy batches on a CUDA card
    go through the static cache and a captured decoding step, others through generate();
    decode["engine"] says which ran (and decode["engine_reason"] why generate, where it did).
    """
    from jobs import fastdecode
    from jobs.constrained import TokenPieces

    engine = fastdecode.choose(model, cfg.eval.decoder, gen_kwargs, constraint is not None)
    gen = _BatchGenerator(model, tokenizer, gen_kwargs, TokenPieces(tokenizer), constraint,
                          oom_log, cfg.eval.max_item_repeats, engine)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    rel = (release or straggler_release) if constraint is None else (lambda rows: 0)
    done: dict[int, list[int]] = {}
    if decode is not None:
        decode.update(steps=0, batches=0, at_budget=0, continued=0, loops_cut=0)
    partial = gen.run(order, prompts, {}, cfg.eval.batch_size, max_new_tokens, rel, done,
                      decode, progress)
    if partial:  # the stragglers, continued together to their own budgets
        if decode is not None:
            decode["continued"] = len(partial)
        left = sorted(partial, key=lambda i: -(len(prompts[i]) + len(partial[i])))
        gen.run(left, prompts, partial, gen.bs, max_new_tokens, lambda rows: 0, done, decode,
                None)
    if decode is not None:
        decode["engine"] = gen.engine.name
        if gen.engine.reason:
            decode["engine_reason"] = gen.engine.reason
    outputs: list[str] = [""] * len(prompts)
    generated_tokens = 0
    for i, toks in done.items():
        cut = next((k for k, t in enumerate(toks) if t in gen.stops), len(toks))
        generated_tokens += next((k for k, t in enumerate(toks) if t in gen.ends), len(toks))
        outputs[i] = tokenizer.decode(toks[:cut], skip_special_tokens=True)
    if cfg.eval.max_item_repeats > 0:
        cut_loops(outputs, cfg.eval.max_item_repeats, decode)
    return outputs, generated_tokens


def cut_loops(outputs: list[str], max_repeats: int, decode: dict[str, Any] | None) -> None:
    """Each answer that looped, ended before its first over-repeated item and closed
    (core.parsing.close_loop), in place; counted in decode["loops_cut"]."""
    for i, text in enumerate(outputs):
        closed = close_loop(text, max_repeats)
        if closed is not None:
            outputs[i] = closed
            if decode is not None:
                decode["loops_cut"] = decode.get("loops_cut", 0) + 1


def straggler_release(rows: int) -> int:
    """Unfinished rows at which a batch of this many stops, to be continued with the others'
    stragglers: one in 32 (none in a batch under 32 rows).

    >>> [straggler_release(n) for n in (1, 31, 32, 1000)]
    [0, 0, 1, 31]
    """
    return rows // 32


class _BatchGenerator:
    """model.generate over batches of left-padded rows, each row resumed from the tokens it
    already has, with the OOM fallback: a batch out of GPU memory is retried at half the size,
    and so are the ones after it."""

    def __init__(self, model: Any, tokenizer: Any, gen_kwargs: dict[str, Any], pieces: Any,
                 constraint: Callable[[list[int], int, Any], Any] | None,
                 oom_log: list[dict[str, Any]] | None, max_repeats: int = 0,
                 engine: Any = None):
        from jobs import fastdecode

        self.model, self.gen_kwargs, self.pieces = model, gen_kwargs, pieces
        self.engine = engine or fastdecode.Engine("generate")
        self.max_repeats = max_repeats
        self.constraint, self.oom_log = constraint, oom_log
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
            tokenizer.eos_token_id
        self.device = next(model.parameters()).device
        self.stops = set(gen_kwargs.get("eos_token_id", []))
        self.ends = self.stops | {self.pad_id}  # a finished row is padded to the batch's length
        self.bs = 0
        self.static = None if self.engine.name == "generate" else fastdecode.StaticDecoder(
            model, self.pad_id, graphs=self.engine.name == "static-graphs")

    def run(self, order: list[int], prompts: list[list[int]], partial: dict[int, list[int]],
            bs: int, max_new_tokens: int, release: Callable[[int], int],
            done: dict[int, list[int]], decode: dict[str, Any] | None,
            progress: Any) -> dict[int, list[int]]:
        """Generate the rows of order (prompt + partial[i] so far) in batches of up to bs; put
        finished rows' answers in done and return the rows a batch left unfinished."""
        import torch

        from jobs.faults import check_eval_batch

        left: dict[int, list[int]] = {}
        self.bs, b = bs, 0
        while b < len(order):
            idx = order[b:b + self.bs]
            have = [partial.get(i, []) for i in idx]
            budget = max_new_tokens - min(len(h) for h in have)
            try:
                check_eval_batch(len(idx))
                new, stop = self._batch([prompts[i] + h for i, h in zip(idx, have,
                                                                        strict=True)],
                                        idx, have, budget, release(len(idx)))
            except torch.OutOfMemoryError as exc:
                self._halve(exc, b)
                continue
            if decode is not None:
                decode["steps"] += len(new[0]) if new else 0
                decode["batches"] += 1
                decode["at_budget"] += int(bool(new) and len(new[0]) >= budget)
            for row, i in enumerate(idx):
                toks = (have[row] + new[row])[:max_new_tokens]
                if stop.finished(row) or len(toks) >= max_new_tokens:
                    done[i] = toks
                else:
                    left[i] = toks
            b += len(idx)
            if progress is not None:
                progress.update(min(b, len(order)), len(order))
        return left

    def _batch(self, seqs: list[list[int]], idx: list[int], have: list[list[int]],
               budget: int, release: int) -> tuple[list[list[int]], AnswerStop]:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
        if self.static is not None:
            new = self._static_batch(ids, mask, have, budget, release)
            if new is not None:
                return new
        stop = AnswerStop(self.pieces, width, self.stops, have, release, self.max_repeats)
        extra: dict[str, Any] = {"stopping_criteria": _criteria(stop)}
        if self.constraint is not None:
            extra["logits_processor"] = self.constraint(idx, width, self.pieces)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device),
                                      attention_mask=mask.to(self.device),
                                      max_new_tokens=budget, pad_token_id=self.pad_id,
                                      **self.gen_kwargs, **extra)
        return out[:, width:].tolist(), stop

    def _static_batch(self, ids: Any, mask: Any, have: list[list[int]], budget: int,
                      release: int) -> tuple[list[list[int]], AnswerStop] | None:
        """The batch through the static decoder; None, and generate() from then on, where it
        fails for another reason than memory (said once, recorded as the engine's reason)."""
        import torch

        from jobs import fastdecode, modeling

        stop = AnswerStop(self.pieces, ids.shape[1], self.stops, have, release,
                          self.max_repeats)
        try:
            with torch.inference_mode():
                return self.static.generate(ids, mask, budget, stop), stop  # type: ignore
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the fast path: generate()
            why = f"static decoder failed: {type(exc).__name__}: {str(exc)[:200]}"
            modeling.log(f"{why}; decoding with transformers generate() instead")
            self.static, self.engine = None, fastdecode.Engine("generate", why)
            if torch.cuda.is_available():
                try:  # a capture that failed may have left an error on the stream
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                except RuntimeError as late:
                    modeling.log(f"after the static decoder's failure: {late}")
            return None

    def _halve(self, exc: BaseException, at: int) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self.bs == 1:
            raise EvalError("out of GPU memory generating one example: lower "
                            "--eval-max-new-tokens or --model-max-seq-length, or load in "
                            "4-bit") from exc
        if self.oom_log is not None:
            self.oom_log.append({"at_example": at, "from": self.bs, "to": self.bs // 2})
        from jobs import modeling

        modeling.log(f"out of memory at eval batch {self.bs}; retrying with {self.bs // 2}")
        self.bs //= 2


class AnswerStop:
    """Per-row end of answer for one batch of rows left-padded to width: a stop token, or the
    JSON answer closed or caught in a loop (core.parsing.AnswerEnd, max_repeats), counting the
    tokens each row had before (have). The batch stops once at most release rows are
    unfinished.

    Called by generate() at each step (__call__), or fed rows of new tokens by the static
    decoder (feed_rows), which then asks where the batch ended (end_step): both give the same
    rows finished at the same step."""

    def __init__(self, pieces: Any, width: int, stops: set[int], have: list[list[int]],
                 release: int = 0, max_repeats: int = 0):
        self.pieces, self.seen, self.stops, self.release = pieces, width, stops, release
        self.ends = [AnswerEnd(max_repeats) for _ in have]
        self.stopped = [False] * len(have)
        self.fed = [0] * len(have)  # new tokens fed per row
        self.ended: list[int | None] = [None] * len(have)  # new tokens up to a row's end
        self.cut: int | None = None  # the step the batch stopped at, once known
        for row, toks in enumerate(have):
            self._feed(row, toks, new=False)

    def _feed(self, row: int, toks: list[int], new: bool = True) -> None:
        for t in toks:
            if self.stopped[row] or self.ends[row].done:
                return
            if new:
                self.fed[row] += 1
            if t in self.stops:
                self.stopped[row] = True
            else:
                self.ends[row].feed(self.pieces(t))
            if (self.stopped[row] or self.ends[row].done) and new:
                self.ended[row] = self.fed[row]

    def finished(self, row: int) -> bool:
        end = self.ended[row]
        if self.cut is not None:
            return end is not None and end <= self.cut
        return self.stopped[row] or self.ends[row].done

    def ended_at(self, row: int) -> int | None:
        """The new tokens up to and including the one that ended this row (None: unfinished),
        within the step the batch stopped at."""
        return self.ended[row] if self.finished(row) else None

    def feed_rows(self, new: list[list[int]]) -> None:
        """The next tokens of every row (the same number for each)."""
        for row, toks in enumerate(new):
            self._feed(row, toks)

    def end_step(self) -> int | None:
        """The step at which generate() would have stopped this batch, once the tokens fed
        reach it: the first at which at most release rows are unfinished (then kept as
        self.cut); None while it is not reached."""
        ends = sorted(e for e in self.ended if e is not None)
        need = len(self.ended) - self.release
        if need <= 0:
            self.cut = 1
        elif len(ends) >= need:
            self.cut = ends[need - 1]
        return self.cut

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        # Only the tokens added since the last call leave the GPU: copying every row's whole
        # answer at each step made a long batch quadratic in its length.
        new = input_ids[:, self.seen:].tolist()
        self.seen = input_ids.shape[1]
        for row, toks in enumerate(new):
            self._feed(row, toks)
        done = [self.finished(r) for r in range(len(self.ends))]
        if 0 < done.count(False) <= self.release:
            done = [True] * len(done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _criteria(stop: AnswerStop) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return stop(input_ids, scores, **kwargs)

    return StoppingCriteriaList([_Stop()])


def answer_end_criteria(pieces: Any, rows: int, width: int) -> Any:
    """Stop each row of a batch once its JSON answer is complete (core.parsing.AnswerEnd)."""
    return _criteria(AnswerStop(pieces, width, set(), [[] for _ in range(rows)]))


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
        text = tokenizer.apply_chat_template(prompt_messages(r, cfg.model.system_prompt),
                                             tokenize=False, add_generation_prompt=True)
        ids = modeling.tokenize_with_literal(tokenizer, text, prompt_literal(r), specials)
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


def _load_for_eval(cfg: RunConfig, model_dir: Path, family: Any) -> tuple[Any, Any, float]:
    """The model in inference mode, its tokenizer (left padding) and the seconds it took."""
    from jobs import modeling

    if not model_dir.is_dir():
        raise EvalError(f"--model-dir {model_dir}: not a folder; give the --output-dir of "
                        "jobs.train")
    t0 = time.time()
    switches = modeling.resolve_switches(cfg)
    facts = modeling.ModelFacts(family, 0.0, switches, "unsloth")  # the trained folder's family
    model, tokenizer = modeling.load_model(str(model_dir), cfg, for_training=False, facts=facts)
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
    decode: dict[str, Any]
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
    decode: dict[str, Any] = {}
    outs, gen_tokens = _profiled(lambda: generate_all(
        model, tokenizer, [pr.ids[i] for i in pr.keep], cfg, pr.budget, gen_kwargs, writer,
        oom_log, constraint, decode))
    eval_s = time.time() - t1
    raw = [""] * len(records)
    for i, o in zip(pr.keep, outs, strict=False):
        raw[i] = o
    return _Generated(raw, gen_tokens, eval_s, oom_log, decode, constraints)


PROFILE_ENV = "MEDSWEEP_TORCH_PROFILE"
"""A file to write a torch.profiler table of the generation to (benchmarks, issue 46)."""


def _profiled(generate: Callable[[], Any]) -> Any:
    """generate(), under torch.profiler when PROFILE_ENV names a file: the operators and
    kernels by their own time, written there."""
    import os

    path = os.environ.get(PROFILE_ENV)
    if not path:
        return generate()
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        out = generate()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    Path(path).write_text(prof.key_averages().table(sort_by=key, row_limit=40))
    return out


def evaluate(cfg: RunConfig, model_dir: Path, results_dir: Path, *,
             progress_path: Path | None = None,
             budget: dict[str, Any] | None = None,
             trained_in: str | None = None) -> dict[str, Any]:
    """Evaluate the model in model_dir on the eval split into results_dir; budget: the rung
    of an adaptive sweep this model was trained to; trained_in: the run of the sweep whose
    model this is, where it is another run's (launcher.sharing); both recorded in
    performance.json."""
    from jobs import modeling
    from jobs.progress import ProgressWriter

    metrics = parse_metrics(cfg.eval.metrics)
    ds = load_dataset(cfg.data.eval_dataset_file, cfg.data.context_sentences,
                      cfg.data.context_after)
    for w in ds.warnings:
        modeling.log(f"warning: {w}")
    records = ds.records[:cfg.eval.max_examples] if cfg.eval.max_examples else ds.records
    model_dir = Path(model_dir)
    family = detect_family(str(model_dir), cfg.model.family)  # once, for the load and decoding
    model, tokenizer, load_s = _load_for_eval(cfg, model_dir, family)
    pr = _encode_prompts(tokenizer, records, cfg)
    gen_kwargs = _generation_kwargs(cfg, family, tokenizer)
    import torch

    torch.manual_seed(cfg.eval.seed)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    writer = ProgressWriter(progress_path, "evaluate", keep_history=True)
    train_summary = read_json(model_dir / TRAIN_SUMMARY) if (
        model_dir / TRAIN_SUMMARY).is_file() else None
    gen = _generate(model, tokenizer, records, pr, cfg, gen_kwargs,
                    constraint_labels(train_summary, ds.labels) if cfg.eval.constrained
                    else [], writer)
    scored = _score(records, gen, pr, cfg, metrics)
    trained = train_summary if isinstance(train_summary, dict) else {}
    doc = _performance(cfg, records, pr, gen, scored, model_dir=model_dir, budget=budget,
                       trained_in=trained_in,
                       family=family.name, load_s=load_s, gen_kwargs=gen_kwargs,
                       trained=trained, facts=modeling.device_facts(model))
    results_dir = Path(results_dir)
    atomic_write_json(results_dir / TRUE_PRED, true_pred_doc(
        scored.gold, scored.pred, scored.texts, gen.raw, sorted(pr.too_long)))
    atomic_write_json(results_dir / PERFORMANCE, doc)
    return doc


@dataclass
class _Scored:
    """The answers of one evaluation parsed, grounded and scored."""

    texts: list[str]
    parsed: list[Any]
    gold: list[list[Entity]]
    pred: list[list[Entity]]
    scores: dict[str, Any]
    grounding: dict[str, Any]
    mentions: dict[str, Any] | None


def _score(records: Sequence[Any], gen: _Generated, pr: _Prompts, cfg: RunConfig,
           metrics: Any) -> _Scored:
    """Parse each kept record's answer (a prompt too long to ask answers nothing), ground the
    entities in their text and score them against the gold ones, both ways of counting."""
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
    return _Scored(texts, parsed, gold, pred, scores, grounding, mentions)


def _performance(cfg: RunConfig, records: Sequence[Any], pr: _Prompts, gen: _Generated,
                 scored: _Scored, *, model_dir: Path, budget: dict[str, Any] | None,
                 trained_in: str | None, family: str, load_s: float, gen_kwargs: dict[str, Any],
                 trained: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """performance.json: the scores, and what produced them (model, data by hash, decoding,
    timings, the training summary, the hardware)."""
    n = len(records)
    eval_s = gen.eval_s
    return performance_doc(
        scored.scores, num_examples=n, avg_inference_time=eval_s / n if n else 0.0,
        parse=parse_stats(scored.parsed, len(pr.too_long)),
        hallucination_rate=hallucination_rate(scored.pred, scored.texts),
        config=cfg.to_dict(),
        extra={
            "model_dir": str(model_dir),
            "budget": budget,
            "trained_in": trained_in,
            "mention_level": scored.mentions,
            "grounding": scored.grounding,
            "family": family,
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
    p.add_argument("--model-dir", required=True, action="append",
                   help="The --output-dir of jobs.train. Give it several times for an "
                   "ensemble: each model generates once (grounded on its own), then per record "
                   "an entity is kept when --min-votes of them answered it; each model's "
                   "results go to RESULTS_DIR/members/.")
    p.add_argument("--min-votes", type=int, default=None, metavar="N",
                   help="With several --model-dir: the votes an entity needs (default: a "
                   "majority of the models).")
    add_config_flags(p, EVAL_KEYS, required=("data.eval_dataset_file",))
    return p


def summary_lines(doc: dict[str, Any]) -> list[str]:
    lines = []
    for m, prf in doc["metrics"]["total"].items():
        lines.append(f"{m:8s} P={prf['p']:.3f} R={prf['r']:.3f} F1={prf['f1']:.3f}")
    lines.append(f"parse failures {doc['parse']['failure_rate']:.1%}, hallucinated "
                 f"{(doc.get('hallucination_rate') or 0):.1%}, "
                 f"{doc['avg_inference_time']:.3f} s/example")
    loops = ((doc.get("generation") or {}).get("decode") or {}).get("loops_cut")
    if loops:
        lines.append(f"{loops} answers looped and were ended at their first repeated item "
                     "(--eval-max-item-repeats)")
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
        dirs = [Path(d) for d in args.model_dir]
        if len(dirs) > 1:
            doc = evaluate_ensemble(args, dirs, Path(args.results_dir))
            print("\n".join(ensemble_lines(doc)))
            return 0
        if args.min_votes is not None:
            raise UserError("--min-votes: give several --model-dir to let models vote")
        cfg = config_from_args(args, saved_config(dirs[0]))
        doc = evaluate(cfg, dirs[0], Path(args.results_dir))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(doc):
        print(line)
    return 0


def evaluate_ensemble(args: argparse.Namespace, dirs: list[Path],
                      results_dir: Path) -> dict[str, Any]:
    """Evaluate each model once (its own saved config under the flags given) into
    results_dir/members/<k>-<name>, then vote their grounded answers into results_dir."""
    from core.ensemble import majority, read_member, write_vote

    k = len(dirs)
    votes = majority(k) if args.min_votes is None else args.min_votes
    if not 1 <= votes <= k:
        raise UserError(f"--min-votes {votes}: give a number from 1 to the {k} models")
    if len({d.resolve() for d in dirs}) != k:
        raise UserError("--model-dir: the same model is given twice; each model votes once")
    members = []
    for i, d in enumerate(dirs, 1):
        cfg = config_from_args(args, saved_config(d))
        member_dir = results_dir / "members" / f"{i}-{d.name}"
        evaluate(cfg, d, member_dir)
        members.append(read_member(f"{i}-{d.name}", member_dir / TRUE_PRED))
    return write_vote(results_dir, members, votes,
                      {"chosen_by": "model-dirs", "model_dirs": [str(d) for d in dirs]})


def ensemble_lines(doc: dict[str, Any]) -> list[str]:
    info = doc["ensemble"]
    lines = [f"ensemble of {len(info['members'])} models, at least {info['min_votes']} "
             "vote(s) each entity:"]
    for m, prf in doc["metrics"]["total"].items():
        lines.append(f"{m:8s} P={prf['p']:.3f} R={prf['r']:.3f} F1={prf['f1']:.3f}")
    lines.append(f"each model's own results: {', '.join(info['member_files'])}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
