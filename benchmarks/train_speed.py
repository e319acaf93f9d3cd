"""Training throughput on short records: medsweep vs the seed tool's way vs plain HF.

Three stacks, same model shape, same data (BC5CDR train sentences through the chat template),
same tokens (every stack trains on medsweep's pre-tokenised examples: prompt masked, answer
trained), same examples per optimizer step (64) and the same number of examples:

  a   medsweep ``jobs.train`` (``train_model``): its defaults (padded batches grouped by length
      on CUDA, adamw_8bit, the micro-batch grown into free memory: core.batching), batch 16 x
      GA 4 as in the seed's table; LoRA dropout 0.0 for every stack (the seed's script value;
      0.1 turns off Unsloth's fast LoRA path)
  a16, a32, a64  the same with the micro-batch pinned (grow_micro_batch false) at 16 x GA 4,
      32 x GA 2 and 64 x GA 1 (same examples per step)
  b   the seed tool's way: Unsloth with its automatic choices (padding_free left to Unsloth),
      batch 16 x GA 4, random order
  c   transformers + bitsandbytes 4-bit + PEFT + TRL, no Unsloth, batch 16 x GA 4,
      gradient checkpointing
  m1, m2  medsweep ``jobs.train`` in 16-bit LoRA, micro-batch pinned at 16 x GA 4, on one GPU
      (m1) and split over two with device_map='balanced' (m2): what the split costs

Every (stack, rank) runs in a fresh worker process: Unsloth patches transformers on import, and
a model left over from an earlier stack in the same process would inflate the next one's peak
memory and hand it a warm allocator. Timing: CUDA-synchronised timestamps at every optimizer step;
the first WARMUP steps are excluded (and the profiled last steps, with --profile); examples/s over the timed steps; real tokens/s = examples/s
x the mean real tokens per example of the data (grouped sampling puts different records in the
timed window, so this normalises); MFU = 6 x params x real tok/s / measured bf16 matmul peak.

    python benchmarks/train_speed.py --data BC5CDR_TRAIN --shape 1b --records 1536 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WARMUP = 3
PER_STEP = 64
START = time.time()


def matmul_peak_tflops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    iters = 50
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return round(2 * n**3 * iters / (time.perf_counter() - t) / 1e12, 1)


def make_data(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """The first N records, and the scratch base model built once for every stack."""
    from core.config import build_config
    from core.data import load_dataset
    from core.fileio import atomic_write_json
    from core.prompts import target_json
    from jobs.modeling import resolve_scratch

    records = json.loads(Path(args.data).read_text())[:args.records]
    data = work / "train.json"
    atomic_write_json(data, records)
    cfg = build_config({"model.name_or_path": f"scratch:llama-{args.shape}",
                        "data.train_dataset_file": str(data)})
    ds = load_dataset(data)
    corpus = [r.text for r in ds.records] + [target_json(r) for r in ds.records] + [
        cfg.model.system_prompt]
    base = resolve_scratch(cfg, corpus, work / "scratch")
    return data, base


def emit(args: argparse.Namespace, row: dict[str, Any]) -> None:
    """One JSON line per finished stack, appended at once (survives a killed call)."""
    print(json.dumps(row), flush=True)
    with open(args.rows, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def model_params(shape: str) -> float:
    """Parameters of the scratch shape (4-bit tensors pack two weights per element)."""
    from core.vram import shape_of

    found, _ = shape_of(f"scratch:llama-{shape}")
    return found.params_b * 1e9 if found else 0.0


class StepTimer:
    def __init__(self) -> None:
        self.ends: list[float] = []

    def callback(self) -> Any:
        import torch
        from transformers import TrainerCallback

        timer = self

        class _T(TrainerCallback):  # type: ignore[misc]
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                # Peak memory of training itself, the same for every stack (model loading
                # transients differ between loaders and are not what a run sizes GPUs by).
                for i in range(torch.cuda.device_count()):
                    torch.cuda.synchronize(i)
                    torch.cuda.reset_peak_memory_stats(i)

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer.ends.append(time.perf_counter())

        return _T()


def summarise(name: str, timer: StepTimer, n_examples: int, mean_tokens: float,
              params: float, peak: float | None, losses: list[float], extra: dict[str, Any],
              skip_last: int = 0) -> dict[str, Any]:
    iv = [timer.ends[i] - timer.ends[i - 1]
          for i in range(WARMUP, len(timer.ends) - skip_last)]
    wall = sum(iv)
    ex = PER_STEP * len(iv)
    ex_s = ex / wall if wall else None
    tok_s = ex_s * mean_tokens if ex_s else None
    return {"stack": name, "steps": len(timer.ends), "timed_steps": len(iv),
            "timed_wall_s": round(wall, 3), "ex_per_s": round(ex_s, 2) if ex_s else None,
            "real_tok_per_s": round(tok_s, 1) if tok_s else None,
            "step_s_median": round(statistics.median(iv), 4) if iv else None,
            "peak_alloc_gib": peak, "loss_first": losses[0] if losses else None,
            "loss_final": losses[-1] if losses else None, "examples": n_examples,
            "params_b": round(params / 1e9, 3), **extra}


def encoded(base: str, data: Path, max_len: int) -> tuple[list[Any], float]:
    from transformers import AutoTokenizer

    from core.config import build_config
    from core.data import load_dataset
    from jobs.train import encode_dataset

    tok = AutoTokenizer.from_pretrained(base)
    cfg = build_config({"model.name_or_path": base, "model.max_seq_length": max_len,
                        "data.train_dataset_file": str(data)})
    ex, _ = encode_dataset(tok, load_dataset(data), cfg)
    return ex, statistics.mean(len(e.input_ids) for e in ex)


class Profiler:
    """torch.profiler over the last N optimizer steps: where the step time goes.

    Writes the op tables and a summary with the GPU-busy fraction (union of CUDA kernel
    intervals over the profiled wall time): a low fraction means the host (Python, kernel
    launches, synchronisations) sets the pace, not the GPU's arithmetic.
    """

    def __init__(self, steps: int, total: int, out: Path) -> None:
        self.steps, self.total, self.out = steps, total, out
        self.prof: Any = None
        self.t0 = 0.0
        self.summary: dict[str, Any] = {}

    def callback(self) -> Any:
        import torch
        from transformers import TrainerCallback

        me = self

        class _P(TrainerCallback):  # type: ignore[misc]
            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if me.prof is None and state.global_step == me.total - me.steps:
                    acts = [torch.profiler.ProfilerActivity.CPU]
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                        acts.append(torch.profiler.ProfilerActivity.CUDA)
                    me.prof = torch.profiler.profile(activities=acts)
                    me.prof.__enter__()
                    me.t0 = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if me.prof is not None and state.global_step == me.total:
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    wall = time.perf_counter() - me.t0
                    me.prof.__exit__(None, None, None)
                    me.finish(wall)

        return _P()

    def finish(self, wall: float) -> None:
        try:
            from torch.autograd import DeviceType

            events = self.prof.events()
            spans = sorted((e.time_range.start, e.time_range.end) for e in events
                           if e.device_type == DeviceType.CUDA)
            busy, cur_s, cur_e = 0.0, None, None
            for s0, e0 in spans:
                if cur_e is None or s0 > cur_e:
                    if cur_e is not None:
                        busy += cur_e - cur_s
                    cur_s, cur_e = s0, e0
                else:
                    cur_e = max(cur_e, e0)
            if cur_e is not None:
                busy += cur_e - cur_s
            ka = self.prof.key_averages()
            launches = sum(e.count for e in ka if e.key in ("cudaLaunchKernel",
                                                            "cuLaunchKernel",
                                                            "cudaLaunchKernelExC"))
            syncs = {e.key: round(e.cpu_time_total / 1e3, 1) for e in ka
                     if "Synchronize" in e.key or "Memcpy" in e.key}
            self.summary = {"profiled_steps": self.steps, "profiled_wall_s": round(wall, 3),
                            "gpu_busy_s": round(busy / 1e6, 3),
                            "gpu_busy_frac": round(busy / 1e6 / wall, 3) if wall else None,
                            "kernels": len(spans), "kernel_launches": launches,
                            "sync_and_copy_cpu_ms": syncs}
            key = "self_device_time_total" if hasattr(ka[0], "self_device_time_total") \
                else "self_cuda_time_total"
            self.out.write_text(
                json.dumps(self.summary, indent=1) + "\n\n"
                + ka.table(sort_by=key, row_limit=30, max_name_column_width=70) + "\n\n"
                + ka.table(sort_by="self_cpu_time_total", row_limit=25,
                           max_name_column_width=70))
        except Exception as exc:  # a failed profile must not lose the timing row
            self.summary = {"profile_error": repr(exc)[:300]}


STACK_BATCH = {"a": (16, 4), "a16": (16, 4), "a32": (32, 2), "a64": (64, 1), "b": (16, 4),
               "c": (16, 4), "m1": (16, 4), "m2": (16, 4)}
# GPUs each stack's worker sees (the first N the benchmark sees): every stack but m2 runs on
# one card, also on a machine with several (medsweep would split a model over them all).
STACK_GPUS = {"m2": 2}


def run_one(args: argparse.Namespace, data: Path, base: str, name: str, rank: int
            ) -> dict[str, Any]:
    """One stack at one rank, in this (fresh) process."""
    import torch

    cuda = torch.cuda.is_available()
    examples, mean_tok = encoded(base, data, args.max_len)
    bs, ga = STACK_BATCH[name]
    total = -(-len(examples) // PER_STEP)
    timer = StepTimer()
    prof = (Profiler(args.profile_steps, total, args.out / f"profile_{args.shape}_{name}_r{rank}.txt")
            if name in args.profile else None)
    callbacks = [timer.callback()] + ([prof.callback()] if prof else [])
    t0 = time.time()
    if name.startswith(("a", "m")):
        from core.config import build_config
        from jobs.train import train_model

        # m1 / m2: 16-bit LoRA with the micro-batch pinned, on one GPU or split over two with
        # device_map='balanced' (what the split costs, same steps both ways).
        multi = name.startswith("m")
        cfg = build_config({
            "model.name_or_path": base, "model.max_seq_length": args.max_len,
            "data.train_dataset_file": str(data), "peft.rank": rank,
            "peft.lora_alpha": 2 * rank, "peft.lora_dropout": 0.0,
            "train.per_device_batch_size": bs, "train.gradient_accumulation_steps": ga,
            "train.num_epochs": 1, "train.save_steps": 100000, "train.seed": 3407,
            "train.grow_micro_batch": name == "a", "model.load_in_4bit": cuda and not multi})
        res = train_model(cfg, args.out / f"run-{name}-r{rank}", callbacks=callbacks)
        s = res.summary
        losses = [s["first_loss"], s["final_loss"]]
        padding_free = s["padding_free"]
        bs, ga = s["per_device_batch_size"], s["gradient_accumulation_steps"]
    else:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_dict({"input_ids": [e.input_ids for e in examples],
                                "labels": [e.labels for e in examples]})
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        common = dict(per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
                      num_train_epochs=1, learning_rate=2e-4, warmup_steps=5,
                      weight_decay=0.01, lr_scheduler_type="linear", seed=3407,
                      optim="adamw_8bit" if cuda else "adamw_torch", bf16=cuda,
                      logging_steps=1, report_to="none", save_strategy="no",
                      max_length=args.max_len, disable_tqdm=True,
                      output_dir=str(args.out / f"run-{name}-r{rank}"))
        if name == "b":
            from unsloth import FastLanguageModel

            model, tok = FastLanguageModel.from_pretrained(
                base, max_seq_length=args.max_len, load_in_4bit=cuda)
            model = FastLanguageModel.get_peft_model(
                model, r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                target_modules=targets, use_gradient_checkpointing="unsloth",
                random_state=3407)
            trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=ds,
                                 processing_class=tok, callbacks=callbacks)
        else:
            from peft import LoraConfig
            from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

            tok = AutoTokenizer.from_pretrained(base)
            qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                    bnb_4bit_compute_dtype=torch.bfloat16,
                                    bnb_4bit_use_double_quant=True) if cuda else None
            model = AutoModelForCausalLM.from_pretrained(
                base, quantization_config=qc, dtype=torch.bfloat16, attn_implementation="sdpa",
                device_map={"": 0 if cuda else "cpu"})
            peft_cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                                  task_type="CAUSAL_LM", target_modules=targets)
            sft = SFTConfig(**common, use_cpu=not cuda, gradient_checkpointing=True,
                            gradient_checkpointing_kwargs={"use_reentrant": False})
            trainer = SFTTrainer(model=model, args=sft, train_dataset=ds, processing_class=tok,
                                 peft_config=peft_cfg, callbacks=callbacks)
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        padding_free = bool(getattr(trainer.args, "padding_free", False))
    gpus = range(torch.cuda.device_count())
    per_gpu = [round(torch.cuda.max_memory_allocated(i) / 2**30, 2) for i in gpus]
    peak = round(sum(per_gpu), 2) if cuda else None
    reserved = round(sum(torch.cuda.max_memory_reserved(i) for i in gpus) / 2**30, 2) \
        if cuda else None
    row = summarise(name, timer, len(examples), mean_tok, model_params(args.shape), peak,
                    losses, {"padding_free": padding_free, "bs_x_ga": f"{bs}x{ga}",
                             "rank": rank, "peak_reserved_gib": reserved,
                             "peak_alloc_gib_per_gpu": per_gpu, "gpus": len(per_gpu),
                             "wall_s": round(time.time() - t0, 1)},
                    skip_last=args.profile_steps if prof else 0)
    if prof:
        row["profile"] = prof.summary
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("role", nargs="?", default="run", choices=("run", "one"))
    p.add_argument("--data", required=True, help="BC5CDR train.json (the seed's format).")
    p.add_argument("--shape", default="1b", help="scratch size: tiny, small, 1b, 8b.")
    p.add_argument("--records", type=int, default=1536)
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--ranks", type=lambda s: [int(x) for x in s.split(",")], default=[8])
    p.add_argument("--stacks", type=lambda s: s.split(","), default=["a", "a64", "b", "c"])
    p.add_argument("--profile", type=lambda s: [x for x in s.split(",") if x], default=[],
                   help="Stacks whose last --profile-steps steps run under torch.profiler "
                        "(excluded from their timing).")
    p.add_argument("--profile-steps", type=int, default=2)
    p.add_argument("--deadline-s", type=float, default=0,
                   help="Stop starting stacks, and kill a running one, this many seconds after "
                        "the start (0: no limit); the result still lists what finished.")
    p.add_argument("--out", type=Path, required=True, help="Work folder (models, runs).")
    p.add_argument("--rows", type=Path, help="JSONL of result rows (default OUT/rows.jsonl).")
    p.add_argument("--result", type=Path, help="Final JSON (default OUT/train_speed_SHAPE.json)")
    p.add_argument("--stack", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    bad = [s for s in args.stacks if s not in STACK_BATCH]
    if bad:
        p.error(f"unknown stack(s) {bad}; choose from {sorted(STACK_BATCH)}")
    args.out.mkdir(parents=True, exist_ok=True)
    args.rows = args.rows or args.out / "rows.jsonl"
    os.environ.setdefault("MEDSWEEP_SCRATCH_DIR", str(args.out / "scratch"))
    if args.role == "one":
        if args.stack != "c":
            import unsloth  # noqa: F401  (first, as the seed tool does: it patches transformers)
        data, base = make_data(args, args.out)
        emit(args, run_one(args, data, base, args.stack, args.rank))
        return 0
    # The card's bf16 matmul peak first, so a call cut short still has it for MFU.
    peak = matmul_peak_tflops()
    print(json.dumps({"matmul_peak_tflops": peak, "gpu": _gpu_name()}), flush=True)
    data, base = make_data(args, args.out)
    _free_cuda()
    passthrough = [a for a in sys.argv[1:] if a != "run"]
    end = START + args.deadline_s if args.deadline_s else None
    for rank in args.ranks:
        for name in args.stacks:
            left = end - time.time() if end else None
            if left is not None and left < 30:
                print(f"{name} r{rank}: not started (deadline)", flush=True)
                continue
            log = args.out / f"{args.shape}_{name}_r{rank}.log"
            cmd = [sys.executable, __file__, "one", *passthrough, "--stack", name,
                   "--rank", str(rank)]
            env = dict(os.environ)
            visible = _visible_gpus()
            need = STACK_GPUS.get(name, 1)
            if need > 1 and len(visible) < need:
                print(f"{name} r{rank}: not started (needs {need} GPUs, {len(visible)} "
                      "visible)", flush=True)
                continue
            if visible:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[:need])
            t = time.time()
            with open(log, "w") as fh:
                try:
                    rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                        env=env, timeout=left).returncode
                except subprocess.TimeoutExpired:
                    rc = -1  # killed at the deadline
            print(f"{name} r{rank}: rc={rc} in {time.time() - t:.0f}s (log {log})", flush=True)
    rows = [json.loads(line) for line in args.rows.read_text().splitlines()
            if line.strip()] if args.rows.is_file() else []
    for r in rows:
        if peak and r.get("real_tok_per_s"):
            r["mfu"] = round(6 * r["params_b"] * 1e9 * r["real_tok_per_s"] / (peak * 1e12), 4)
    result = {"shape": args.shape, "records": args.records, "matmul_peak_tflops": peak,
              "gpu": _gpu_name(), "rows": rows}
    (args.result or args.out / f"train_speed_{args.shape}.json").write_text(
        json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if rows else 1


def _free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _visible_gpus() -> list[str]:
    """The GPU ids this process sees, as CUDA_VISIBLE_DEVICES names them."""
    import torch

    n = torch.cuda.device_count()
    given = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return given[:n] if given else [str(i) for i in range(n)]


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
