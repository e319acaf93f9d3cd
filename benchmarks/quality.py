"""Extraction quality of real pretrained models through medsweep's own CLIs.

For each model x corpus it trains with ``python -m jobs.train`` and scores with
``python -m jobs.evaluate`` on the corpus's dev split, under several recipes:

  defaults    medsweep's defaults (the seed table's training settings; greedy, grounded eval)
  seed        the seed tool's way of evaluating the same trained model: its per-family sampled
              presets and no grounding (its table's training settings are medsweep's defaults,
              so the model is shared with `defaults`)
  zeroshot    the base model, no training
  lora16      16-bit LoRA r32 / alpha 64, dropout 0, lr 1e-3, more epochs
  full        full fine-tuning, lr 1e-4, more epochs
  (a trained recipe written RECIPE@N in --jobs trains N epochs: full@6)
  (+ each trained recipe also evaluated with constrained decoding: `<recipe>+constrained`)

Tasks run side by side (``--parallel``), each in its own processes: small models leave most of
a GPU idle. Every row goes to RESULTS_DIR/rows.jsonl as soon as it exists, and
RESULTS_DIR/quality.md is rewritten after each, so a run stopped at its deadline keeps what it
finished. Paired bootstrap comparisons (``launcher compare``) of defaults vs seed and best vs
defaults are added at the end.

    python benchmarks/quality.py --data-root ../shared/data --out /tmp/quality \\
        --models pypi:smollm2-135m-instruct,pypi:gemma-3-270m --corpora bc5cdr,ncbi_disease,maccrobat
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRAIN_RECIPES: dict[str, list[str]] = {
    "defaults": [],
    "lora16": ["--model-load-in-4bit", "false", "--peft-rank", "32", "--peft-lora-alpha", "64",
               "--peft-lora-dropout", "0", "--train-learning-rate", "1e-3"],
    "full": ["--model-load-in-4bit", "false", "--model-full-finetuning", "true",
             "--train-learning-rate", "1e-4"],
}
SEED_PRESET_FAMILY = {"pypi:smollm2-135m-instruct": "llama3"}
"""The seed tool chose presets by name (Llama / Gemma / Mistral); SmolLM2 is a Llama-architecture
model that medsweep itself detected as llama3 before it read the tokenizer's template."""


def sh(cmd: list[str], log: Path, deadline: float) -> int:
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        while proc.poll() is None:
            if time.time() > deadline:
                proc.kill()
                proc.wait()
                fh.write("killed at the deadline\n")
                return -9
            time.sleep(1)
        return int(proc.returncode)


def row_of(perf: dict[str, Any], **keys: Any) -> dict[str, Any]:
    tot = perf["metrics"]["total"]
    g = perf.get("grounding") or {}
    from core.results import per_label

    labels = {k: v.get("exact", {}).get("f1") for k, v in per_label(perf).items()
              if isinstance(v, dict)}
    return {
        **keys,
        "exact_f1": tot.get("exact", {}).get("f1"), "exact_p": tot.get("exact", {}).get("p"),
        "exact_r": tot.get("exact", {}).get("r"),
        "relaxed_f1": tot.get("relaxed", {}).get("f1"),
        "overlap_f1": tot.get("overlap", {}).get("f1"),
        "exact_ci95": (perf.get("ci95") or {}).get("exact", {}).get("f1"),
        "parse_failure_rate": perf["parse"]["failure_rate"],
        "hallucination_rate": perf.get("hallucination_rate"),
        "hallucination_rate_ungrounded": g.get("hallucination_rate_ungrounded"),
        "grounding_dropped": g.get("dropped"),
        "ungrounded_exact_f1": (g.get("ungrounded_total") or {}).get("exact", {}).get("f1"),
        "train_s": (perf.get("timings") or {}).get("train_s"),
        "eval_s": (perf.get("timings") or {}).get("eval_s"),
        "eval_records": perf["num_examples"],
        "peak_vram_gb": perf.get("peak_vram_gb"),
        "per_label_exact_f1": labels,
    }


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        self.runs = Path(args.runs or self.out / "runs")
        self.epochs = dict(kv.split("=", 1) for kv in args.epochs.split(",") if "=" in kv)
        self.rows: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.deadline = time.time() + args.deadline_s
        self.py = sys.executable

    def add(self, row: dict[str, Any]) -> None:
        with self.lock:
            self.rows.append(row)
            with open(self.out / "rows.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            (self.out / "quality.md").write_text(render(self.rows))

    def evaluate(self, tag: str, model_dir: str, corpus: str, model: str, recipe: str,
                 flags: list[str], log: Path) -> None:
        res = self.runs / tag / recipe
        dev = Path(self.args.data_root) / corpus / "dev.json"
        # QUALITY_EVAL_WRAPPER="script args": run the evaluation through a wrapper script
        # (a diagnosis aid: benchmarks/diag_eval.py dumps stacks and can switch parts off).
        wrapper = os.environ.get("QUALITY_EVAL_WRAPPER", "").split()
        cmd = [self.py, *(wrapper or ["-m", "jobs.evaluate"]), "--eval-dataset-file", str(dev),
               "--results-dir",
               str(res), "--model-dir", model_dir, "--eval-batch-size",
               str(self.args.eval_batch_size), *flags]
        if self.args.eval_max_examples and "--eval-max-examples" not in flags:
            cmd += ["--eval-max-examples", str(self.args.eval_max_examples)]
        t = time.time()
        perf_path = res / "performance.json"
        # A later call on the same --runs folder reuses what an earlier one finished (the
        # device's calls are 10 minutes each; a BC5CDR evaluation may not fit beside training).
        rc = 0 if perf_path.is_file() else sh(cmd, log, self.deadline)
        if rc == 0 and perf_path.is_file():
            self.add(row_of(json.loads(perf_path.read_text()), model=model, corpus=corpus,
                            recipe=recipe, eval_wall_s=round(time.time() - t, 1),
                            results_dir=str(res)))
        else:
            self.add({"model": model, "corpus": corpus, "recipe": recipe, "error": f"rc={rc}"})

    def task(self, model: str, corpus: str, recipe: str) -> None:
        if time.time() > self.deadline - 60:
            return
        tag = f"{model.replace('pypi:', '').replace('/', '_')}-{corpus}"
        log = self.out / "logs" / f"{tag}-{recipe}.log"
        if recipe == "zeroshot":
            from jobs.modeling import resolve_model

            self.evaluate(tag, resolve_model(model), corpus, model, "zeroshot",
                          ["--eval-max-new-tokens", "192", "--eval-max-examples",
                           str(self.args.zeroshot_max_examples)], log)
            return
        mdir = self.runs / tag / f"model-{recipe}"
        train = Path(self.args.data_root) / corpus / "train.json"
        base, _, epochs = recipe.partition("@")
        cmd = [self.py, "-m", "jobs.train", "--train-dataset-file", str(train), "--output-dir",
               str(mdir), "--model-name", model, *TRAIN_RECIPES[base]]
        if base != "defaults":
            cmd += ["--train-num-epochs",
                    epochs or self.epochs.get(model, str(self.args.best_epochs))]
        t = time.time()
        rc = sh(cmd, log, self.deadline)
        if rc != 0:
            self.add({"model": model, "corpus": corpus, "recipe": recipe,
                      "error": f"train rc={rc}"})
            return
        train_wall = round(time.time() - t, 1)
        with open(log, "a") as fh:
            fh.write(f"train wall {train_wall} s\n")
        self.evaluate(tag, str(mdir), corpus, model, recipe, [], log)
        if recipe == "defaults":
            seed = ["--eval-generation", "model-presets", "--eval-grounding", "false"]
            if model in SEED_PRESET_FAMILY:
                seed += ["--model-family", SEED_PRESET_FAMILY[model]]
            self.evaluate(tag, str(mdir), corpus, model, "seed", seed, log)
        if base in self.args.constrained.split(","):
            self.evaluate(tag, str(mdir), corpus, model, f"{recipe}+constrained",
                          ["--eval-constrained", "true"], log)

    def run(self) -> None:
        a = self.args
        # In priority order: a run stopped at its deadline has the first ones.
        jobs = [(m, c, r) for r in a.recipes.split(",") for c in a.corpora.split(",")
                for m in a.models.split(",")]
        if a.jobs:
            jobs = [tuple(j.rsplit(":", 2)) for j in a.jobs.split(";") if j]  # type: ignore[misc]
        with ThreadPoolExecutor(max_workers=a.parallel) as ex:
            for f in [ex.submit(self.task, *j) for j in jobs]:
                f.result()
        self.compare()

    def compare(self) -> None:
        by = {(r["model"], r["corpus"], r["recipe"]): r for r in self.rows if "error" not in r}
        pairs = []
        for (m, c, rec), row in by.items():
            if rec == "defaults" and (m, c, "seed") in by:
                pairs.append((row, by[(m, c, "seed")]))
            if rec != "defaults" and rec not in ("seed", "zeroshot") and (m, c, "defaults") in by:
                pairs.append((row, by[(m, c, "defaults")]))
        out = []
        for a_row, b_row in pairs:
            cmd = [self.py, "-m", "launcher", "compare", a_row["results_dir"],
                   b_row["results_dir"], "--format", "json"]
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            try:
                res = json.loads(p.stdout)
            except ValueError:
                res = {"error": (p.stderr or p.stdout).strip()[-300:]}
            out.append({**res, "model": a_row["model"], "corpus": a_row["corpus"],
                        "recipe_a": a_row["recipe"], "recipe_b": b_row["recipe"]})
        (self.out / "compare.json").write_text(json.dumps(out, indent=1))
        with open(self.out / "quality.md", "a") as fh:
            fh.write("\n## Paired bootstrap (exact F1, A - B)\n\n| model | corpus | A | B | "
                     "A - B | 95% CI | A better in |\n|---|---|---|---|---|---|---|\n")
            for r in out:
                if "diff" in r:
                    ci = r.get("ci95") or [float("nan")] * 2
                    fh.write(f"| {r['model']} | {r['corpus']} | {r['recipe_a']} | {r['recipe_b']} | "
                             f"{r['diff']:+.3f} | {ci[0]:+.3f} to {ci[1]:+.3f} | "
                             f"{r.get('a_better', 0):.1%} |\n")
                else:
                    fh.write(f"| {r['model']} | {r['corpus']} | {r['recipe_a']} | "
                             f"{r['recipe_b']} | {r.get('error', '')} | | |\n")


def _f(x: Any) -> str:
    return "" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def render(rows: list[dict[str, Any]]) -> str:
    head = ("| model | corpus | recipe | exact F1 (95% CI) | relaxed F1 | overlap F1 | "
            "parse fail | halluc. (ungrounded) | dropped | ungrounded exact F1 | train s | "
            "eval s | records |\n" + "|---" * 13 + "|\n")
    lines = []
    for r in sorted(rows, key=lambda r: (r["corpus"], r["model"], r["recipe"])):
        if "error" in r:
            lines.append(f"| {r['model']} | {r['corpus']} | {r['recipe']} | {r['error']} |"
                         + " |" * 9)
            continue
        ci = r.get("exact_ci95") or []
        cis = f" ({ci[0]:.3f}-{ci[1]:.3f})" if len(ci) == 2 else ""
        lines.append(
            f"| {r['model']} | {r['corpus']} | {r['recipe']} | {_f(r['exact_f1'])}{cis} | "
            f"{_f(r['relaxed_f1'])} | {_f(r['overlap_f1'])} | {_f(r['parse_failure_rate'])} | "
            f"{_f(r['hallucination_rate_ungrounded'])} | {_f(r['grounding_dropped'])} | "
            f"{_f(r['ungrounded_exact_f1'])} | {_f(r['train_s'])} | {_f(r['eval_s'])} | "
            f"{r['eval_records']} |")
    labels = []
    for r in sorted(rows, key=lambda r: (r["corpus"], r["model"], r["recipe"])):
        if "error" not in r and r.get("per_label_exact_f1"):
            per = ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["per_label_exact_f1"].items())
                            if isinstance(v, float))
            labels.append(f"* {r['model']} / {r['corpus']} / {r['recipe']}: {per}")
    return ("# Quality\n\n" + head + "\n".join(lines) + "\n\n## Per-label exact F1\n\n"
            + "\n".join(labels) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="Folder with <corpus>/{train,dev}.json.")
    p.add_argument("--out", required=True)
    p.add_argument("--models", default="pypi:smollm2-135m-instruct,pypi:gemma-3-270m")
    p.add_argument("--corpora", default="bc5cdr,ncbi_disease,maccrobat")
    p.add_argument("--recipes", default="defaults,zeroshot,lora16,full")
    p.add_argument("--best-epochs", type=float, default=5)
    p.add_argument("--epochs", default="", help="Per-model epochs of the non-default recipes: "
                   "MODEL=N,...")
    p.add_argument("--runs", default="", help="Where models and results go (default OUT/runs).")
    p.add_argument("--jobs", default="", help="Explicit MODEL:CORPUS:RECIPE;... in priority "
                   "order (instead of the product of --models, --corpora, --recipes).")
    # Generation of a small model is bound by the time of one decoding step (50-90 ms on an
    # H200 beside other jobs): big batches and few evaluations at a time (RESULTS.md).
    p.add_argument("--eval-batch-size", type=int, default=1536)
    p.add_argument("--eval-max-examples", type=int, default=0)
    p.add_argument("--constrained", default="lora16,full",
                   help="Trained recipes also evaluated with constrained decoding.")
    p.add_argument("--zeroshot-max-examples", type=int, default=500,
                   help="Zero-shot answers run to the token budget: score this many records.")
    p.add_argument("--parallel", type=int, default=3)
    p.add_argument("--deadline-s", type=float, default=560)
    args = p.parse_args(argv)
    corpora = {j.rsplit(":", 2)[1] for j in args.jobs.split(";") if j} or set(
        args.corpora.split(","))
    for c in sorted(corpora):
        if not (Path(args.data_root) / c / "train.json").is_file():
            print(f"error: {args.data_root}/{c}/train.json: no such file; --data-root must hold "
                  "<corpus>/train.json and dev.json", file=sys.stderr)
            return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    Bench(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
