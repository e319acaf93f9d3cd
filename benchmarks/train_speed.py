"""Training throughput on short records: medsweep vs the seed tool's way vs plain HF.

Three stacks, same model shape, same data (BC5CDR train sentences through the chat template),
same tokens (every stack trains on medsweep's pre-tokenised examples: prompt masked, answer
trained), same examples per optimizer step (64) and the same number of examples:

  a   medsweep ``jobs.train`` (``train_model``): its defaults (padded batches grouped by length
      on CUDA, adamw_8bit), batch 16 x GA 4 as in the seed's table; LoRA dropout 0.0 for every
      stack (the seed's script value; 0.1 turns off Unsloth's fast LoRA path)
  a64 the same with batch 64 x GA 1 (same examples per step)
  b   the seed tool's way: Unsloth with its automatic choices (padding_free left to Unsloth),
      batch 16 x GA 4, random order
  c   transformers + bitsandbytes 4-bit + PEFT + TRL, no Unsloth, batch 16 x GA 4,
      gradient checkpointing

Unsloth stacks run in one worker process (imported once), the HF stack in another (Unsloth
patches transformers on import). Timing: CUDA-synchronised timestamps at every optimizer step;
the first WARMUP steps are excluded; examples/s over the timed steps; real tokens/s = examples/s
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
            def on_step_end(self, a: Any, s: Any, c: Any, **k: Any) -> None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer.ends.append(time.perf_counter())

        return _T()


def summarise(name: str, timer: StepTimer, n_examples: int, mean_tokens: float,
              params: float, peak: float | None, losses: list[float], extra: dict[str, Any]
              ) -> dict[str, Any]:
    iv = [timer.ends[i] - timer.ends[i - 1] for i in range(WARMUP, len(timer.ends))]
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


def worker_unsloth(args: argparse.Namespace, data: Path, base: str) -> list[dict[str, Any]]:
    import torch
    import unsloth  # noqa: F401
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel

    from core.config import build_config
    from jobs.train import train_model

    examples, mean_tok = encoded(base, data, args.max_len)
    out = []
    for rank in args.ranks:
        for name in args.stacks:
            if name not in ("a", "a64", "b"):
                continue
            timer = StepTimer()
            torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
            t0 = time.time()
            if name in ("a", "a64"):
                bs, ga = (16, 4) if name == "a" else (64, 1)
                cfg = build_config({
                    "model.name_or_path": base, "model.max_seq_length": args.max_len,
                    "data.train_dataset_file": str(data), "peft.rank": rank,
                    "peft.lora_alpha": 2 * rank, "peft.lora_dropout": 0.0,
                    "train.per_device_batch_size": bs, "train.gradient_accumulation_steps": ga,
                    "train.num_epochs": 1, "train.save_steps": 100000, "train.seed": 3407,
                    "model.load_in_4bit": torch.cuda.is_available()})
                res = train_model(cfg, args.out / f"run-{name}-r{rank}", callbacks=[
                    timer.callback()])
                s = res.summary
                losses = [s["first_loss"], s["final_loss"]]
                params = model_params(args.shape)
                extra = {"padding_free": s["padding_free"], "bs_x_ga": f"{bs}x{ga}"}
                del res
            else:
                model, tok = FastLanguageModel.from_pretrained(
                    base, max_seq_length=args.max_len, load_in_4bit=torch.cuda.is_available())
                model = FastLanguageModel.get_peft_model(
                    model, r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                    "up_proj", "down_proj"],
                    use_gradient_checkpointing="unsloth", random_state=3407)
                ds = Dataset.from_dict({"input_ids": [e.input_ids for e in examples],
                                        "labels": [e.labels for e in examples]})
                cuda = torch.cuda.is_available()
                sft = SFTConfig(output_dir=str(args.out / f"run-b-r{rank}"),
                                per_device_train_batch_size=16, gradient_accumulation_steps=4,
                                num_train_epochs=1, learning_rate=2e-4, warmup_steps=5,
                                weight_decay=0.01, lr_scheduler_type="linear", seed=3407,
                                optim="adamw_8bit" if cuda else "adamw_torch", bf16=cuda,
                                logging_steps=1, report_to="none", save_strategy="no",
                                max_length=args.max_len, disable_tqdm=True)
                trainer = SFTTrainer(model=model, args=sft, train_dataset=ds,
                                     processing_class=tok, callbacks=[timer.callback()])
                trainer.train()
                losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
                params = model_params(args.shape)
                extra = {"padding_free": bool(getattr(trainer.args, "padding_free", False)),
                         "bs_x_ga": "16x4"}
                del trainer, model
            peak = (round(torch.cuda.max_memory_allocated() / 2**30, 2)
                    if torch.cuda.is_available() else None)
            row = summarise(name, timer, len(examples), mean_tok, params, peak, losses,
                            {**extra, "rank": rank, "wall_s": round(time.time() - t0, 1)})
            emit(args, row)
            out.append(row)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return out


def worker_hf(args: argparse.Namespace, data: Path, base: str) -> list[dict[str, Any]]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    examples, mean_tok = encoded(base, data, args.max_len)
    cuda = torch.cuda.is_available()
    out = []
    for rank in args.ranks:
        timer = StepTimer()
        t0 = time.time()
        tok = AutoTokenizer.from_pretrained(base)
        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_compute_dtype=torch.bfloat16,
                                bnb_4bit_use_double_quant=True) if cuda else None
        model = AutoModelForCausalLM.from_pretrained(base, quantization_config=qc,
                                                     dtype=torch.bfloat16,
                                                     attn_implementation="sdpa",
                                                     device_map={"": 0 if cuda else "cpu"})
        peft_cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                              task_type="CAUSAL_LM",
                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                              "gate_proj", "up_proj", "down_proj"])
        ds = Dataset.from_dict({"input_ids": [e.input_ids for e in examples],
                                "labels": [e.labels for e in examples]})
        sft = SFTConfig(output_dir=str(args.out / f"run-c-r{rank}"),
                        per_device_train_batch_size=16, gradient_accumulation_steps=4,
                        num_train_epochs=1, learning_rate=2e-4, warmup_steps=5,
                        weight_decay=0.01, lr_scheduler_type="linear", seed=3407,
                        optim="adamw_8bit" if cuda else "adamw_torch", bf16=cuda,
                        use_cpu=not cuda, logging_steps=1, report_to="none",
                        save_strategy="no", max_length=args.max_len, disable_tqdm=True,
                        gradient_checkpointing=True,
                        gradient_checkpointing_kwargs={"use_reentrant": False})
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer = SFTTrainer(model=model, args=sft, train_dataset=ds, processing_class=tok,
                             peft_config=peft_cfg, callbacks=[timer.callback()])
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        params = model_params(args.shape)
        peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
        row = summarise("c", timer, len(examples), mean_tok, params, peak, losses,
                        {"padding_free": False, "bs_x_ga": "16x4", "rank": rank,
                         "wall_s": round(time.time() - t0, 1)})
        emit(args, row)
        out.append(row)
        del trainer, model
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("role", nargs="?", default="run", choices=("run", "unsloth", "hf"))
    p.add_argument("--data", required=True, help="BC5CDR train.json (the seed's format).")
    p.add_argument("--shape", default="1b", help="scratch size: tiny, small, 1b, 8b.")
    p.add_argument("--records", type=int, default=1536)
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--ranks", type=lambda s: [int(x) for x in s.split(",")], default=[8])
    p.add_argument("--stacks", type=lambda s: s.split(","), default=["a", "a64", "b", "c"])
    p.add_argument("--out", type=Path, required=True, help="Work folder (models, runs).")
    p.add_argument("--rows", type=Path, help="JSONL of result rows (default OUT/rows.jsonl).")
    p.add_argument("--result", type=Path, help="Final JSON (default OUT/train_speed_SHAPE.json)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.rows = args.rows or args.out / "rows.jsonl"
    os.environ.setdefault("MEDSWEEP_SCRATCH_DIR", str(args.out / "scratch"))
    data, base = make_data(args, args.out)
    if args.role == "unsloth":
        rows = worker_unsloth(args, data, base)
    elif args.role == "hf":
        rows = worker_hf(args, data, base)
    else:
        rows = []
        for role in ("unsloth", "hf"):
            if role == "hf" and "c" not in args.stacks:
                continue
            if role == "unsloth" and not set(args.stacks) & {"a", "a64", "b"}:
                continue
            cmd = [sys.executable, __file__, role, *sys.argv[2 if sys.argv[1:2] == ["run"]
                                                             else 1:]]
            with open(args.out / f"{role}.log", "w") as log:
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            if proc.returncode != 0:
                print(f"{role} worker failed; see {args.out / (role + '.log')}",
                      file=sys.stderr)
        rows = [json.loads(line) for line in args.rows.read_text().splitlines()
                if line.strip()] if args.rows.is_file() else []
        peak = matmul_peak_tflops()
        for r in rows:
            if peak and r.get("real_tok_per_s"):
                r["mfu"] = round(6 * r["params_b"] * 1e9 * r["real_tok_per_s"] / (peak * 1e12), 4)
        result = {"shape": args.shape, "records": args.records, "matmul_peak_tflops": peak,
                  "gpu": _gpu_name(), "rows": rows}
        (args.result or args.out / f"train_speed_{args.shape}.json").write_text(
            json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return 0 if rows else 1
    return 0


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
