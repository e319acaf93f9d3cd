"""Evaluation throughput: medsweep's ``jobs.evaluate`` vs the seed tool's way, same records.

1. A scratch model is trained on BC5CDR train (full fine-tuning, 16-bit) until medsweep's
   evaluation parses at least 90% of a 200-record dev probe and reaches --min-probe-f1 exact F1
   on it (more epochs otherwise): a model that extracts nothing cannot show whether the seed's
   sampling costs F1. On the CPU, scratch:llama-small reached exact F1 0.051 (relaxed 0.118,
   parse 99.5%) on 200 dev records after 8 epochs (benchmarks/RESULTS.md).
2. On the same dev records, with the same loaded model:
   - medsweep: batches sorted by length, left padding, greedy, answer budget from the data,
     ``--eval-batch-size`` (default 64 here);
   - the seed's way: batch 4, records in file order, the per-family sampling preset (Llama:
     temperature 1.5, min_p 0.1), ``max_new_tokens = min(max_seq_length // 4, 1024)``.
   Both are parsed and scored with medsweep's parser and metrics (so the comparison is of the
   generation settings, not of the seed's metric faults). The seed's way may be time-boxed
   (``--seed-deadline-s``): then it is measured on the records it reached, and says so.

    python benchmarks/eval_speed.py --train BC5CDR_TRAIN --dev BC5CDR_DEV --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def score_outputs(records: list[Any], raw: list[str]) -> dict[str, Any]:
    from core.metrics import score
    from core.parsing import FAILED, OK, parse_output
    from core.prompts import target_entities

    parsed = [parse_output(r) for r in raw]
    gold = [target_entities(r) for r in records]
    s = score(gold, [p.entities for p in parsed], [r.text for r in records], ("exact",))
    return {"parse_ok_rate": sum(p.status == OK for p in parsed) / len(parsed),
            "parse_fail_rate": sum(p.status == FAILED for p in parsed) / len(parsed),
            "exact_f1": round(s["total"]["exact"]["f1"], 4)}


def seed_way(model: Any, tok: Any, records: list[Any], cfg: Any, deadline_s: float
             ) -> dict[str, Any]:
    import torch

    from core.families import FAMILIES
    from core.prompts import prompt_messages
    from jobs.modeling import stop_token_ids

    preset = FAMILIES["llama3"].generation_preset
    max_new = min(4096 // 4, 1024)  # the seed's max_seq_length default is 4096
    torch.manual_seed(0)
    tok.padding_side = "left"
    dev = next(model.parameters()).device
    raw: list[str] = []
    gen_tokens = 0
    t0 = time.time()
    stops = stop_token_ids(tok)
    for b in range(0, len(records), 4):
        batch = records[b:b + 4]
        texts = [tok.apply_chat_template(prompt_messages(r, cfg.model.system_prompt),
                                         tokenize=False, add_generation_prompt=True)
                 for r in batch]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new, eos_token_id=stops,
                                 pad_token_id=tok.pad_token_id, **preset)
        new = out[:, enc["input_ids"].shape[1]:]
        for row in new.tolist():
            cut = next((k for k, t in enumerate(row) if t in stops), len(row))
            gen_tokens += cut
            raw.append(tok.decode(row[:cut], skip_special_tokens=True))
        if time.time() - t0 > deadline_s:
            break
    wall = time.time() - t0
    n = len(raw)
    return {"records": n, "wall_s": round(wall, 2), "records_per_s": round(n / wall, 3),
            "gen_tokens_per_s": round(gen_tokens / wall, 1), "max_new_tokens": max_new,
            "time_boxed": n < len(records), **score_outputs(records[:n], raw)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="scratch:llama-small")
    p.add_argument("--records", type=int, default=1000)
    p.add_argument("--train-records", type=int, default=0, help="0: all")
    p.add_argument("--epochs", type=lambda s: [float(x) for x in s.split(",")], default=[8, 16])
    p.add_argument("--min-probe-f1", type=float, default=0.03,
                   help="Exact F1 on the dev probe the model must reach before timing.")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed-deadline-s", type=float, default=240)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEDSWEEP_SCRATCH_DIR", str(args.out / "scratch"))

    import torch

    from core.config import build_config
    from core.data import load_dataset
    from core.fileio import atomic_write_json
    from jobs.evaluate import evaluate
    from jobs.modeling import load_model
    from jobs.train import train

    train_file = args.out / "train.json"
    dev_file = args.out / "dev.json"
    tr = json.loads(Path(args.train).read_text())
    atomic_write_json(train_file, tr[:args.train_records] if args.train_records else tr)
    atomic_write_json(dev_file, json.loads(Path(args.dev).read_text())[:args.records])
    cuda = torch.cuda.is_available()
    result: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0) if cuda else "cpu",
                              "model": args.model, "records": args.records, "attempts": []}
    model_dir = None
    for epochs in args.epochs:
        values = {"model.name_or_path": args.model, "model.load_in_4bit": False,
                  "model.full_finetuning": True, "model.max_seq_length": 1024,
                  "data.train_dataset_file": str(train_file),
                  "data.eval_dataset_file": str(dev_file), "train.num_epochs": epochs,
                  "train.learning_rate": args.lr, "train.per_device_batch_size": 32,
                  "train.gradient_accumulation_steps": 1, "train.warmup_steps": 20,
                  "train.save_steps": 100000, "eval.batch_size": args.batch_size,
                  "eval.max_examples": 200}
        cfg = build_config(values)
        model_dir = args.out / f"model-e{epochs:g}"
        summary = train(cfg, model_dir)
        probe = evaluate(cfg, model_dir, args.out / f"probe-e{epochs:g}")
        ok = probe["parse"]["ok"] / probe["num_examples"]
        f1 = probe["metrics"]["total"]["exact"]["f1"]
        result["attempts"].append({"epochs": epochs, "train_s": summary["train_s"],
                                   "final_loss": summary["final_loss"], "parse_ok_200": ok,
                                   "exact_f1_200": round(f1, 4)})
        print(json.dumps(result["attempts"][-1]), flush=True)
        if ok >= 0.9 and f1 >= args.min_probe_f1:
            break
    assert model_dir is not None
    cfg = cfg.replace({"eval.max_examples": 0})
    doc = evaluate(cfg, model_dir, args.out / "medsweep")
    t = doc["timings"]
    result["medsweep"] = {
        "records": doc["num_examples"], "wall_s": t["eval_s"],
        "records_per_s": round(t["records_per_s"], 3),
        "gen_tokens_per_s": round(t["generated_tokens_per_s"], 1),
        "max_new_tokens": doc["generation"]["max_new_tokens"], "batch_size": args.batch_size,
        "parse_ok_rate": doc["parse"]["ok"] / doc["num_examples"],
        "parse_fail_rate": doc["parse"]["failed"] / doc["num_examples"],
        "exact_f1": round(doc["metrics"]["total"]["exact"]["f1"], 4)}
    print(json.dumps({"medsweep": result["medsweep"]}), flush=True)

    from unsloth import FastLanguageModel

    model, tok = load_model(str(model_dir), cfg, for_training=False)
    FastLanguageModel.for_inference(model)
    records = load_dataset(dev_file).records
    result["seed_way"] = seed_way(model, tok, records, cfg, args.seed_deadline_s)
    print(json.dumps({"seed_way": result["seed_way"]}), flush=True)
    m, s = result["medsweep"], result["seed_way"]
    result["speedup_records_per_s"] = round(m["records_per_s"] / s["records_per_s"], 2)
    (args.out / "eval_speed.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
