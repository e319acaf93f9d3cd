"""Export a trained run: ``python -m jobs.export --model-dir DIR --output-dir OUT --format ...``.

Formats:
  lora         the adapter and tokenizer as they are (a copy)
  merged-16bit the base model with the adapter merged in, 16-bit, loadable by plain
               transformers (Unsloth's merged save)
  gguf         through Unsloth's GGUF export; needs a llama.cpp install (LLAMA_CPP_DIR or
               llama.cpp/ next to the output), a clear error otherwise
``--push-to-hub REPO`` uploads the exported folder with the token from HF_TOKEN (never written).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from core.errors import UserError
from core.fileio import folder_problem

FORMATS = ("lora", "merged-16bit", "gguf")


class ExportError(UserError):
    """An export that cannot be done; the message says what is missing."""


def _llama_cpp(output_dir: Path) -> Path | None:
    for cand in (os.environ.get("LLAMA_CPP_DIR"), output_dir.parent / "llama.cpp",
                 Path.cwd() / "llama.cpp"):
        if cand and (Path(cand) / "convert_hf_to_gguf.py").is_file():
            return Path(cand)
    return None


def export(model_dir: Path, output_dir: Path, fmt: str, quantization: str = "q8_0") -> Path:
    if not (model_dir / "adapter_config.json").is_file() and not (
            model_dir / "config.json").is_file():
        raise ExportError(f"--model-dir {model_dir}: no trained model (no adapter_config.json "
                          "or config.json); give the --output-dir of jobs.train or a run's "
                          "adapter/ folder")
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ExportError(f"--output-dir {output_dir} is not empty; choose a new folder")
    if fmt == "lora":
        links = [p for p in model_dir.rglob("*") if p.is_symlink()]
        if links:
            raise ExportError(f"{links[0]} is a symbolic link; an export copies (and may "
                              "upload) only the model folder's own files: remove the link")
        shutil.copytree(model_dir, output_dir, dirs_exist_ok=True, symlinks=True,
                        ignore=shutil.ignore_patterns("checkpoints", "scratch_base"))
        return output_dir
    if fmt == "gguf" and _llama_cpp(output_dir) is None:
        raise ExportError("GGUF export needs llama.cpp (its convert_hf_to_gguf.py): set "
                          "LLAMA_CPP_DIR to a llama.cpp checkout with its tools built")
    from jobs.evaluate import saved_config
    from jobs.modeling import load_model

    cfg = saved_config(model_dir)
    if cfg is None:
        raise ExportError(f"--model-dir {model_dir}: no medsweep_train.json; export needs a "
                          "folder written by jobs.train")
    # Merging needs 16-bit base weights, whatever the training loaded.
    cfg = cfg.replace({"model.load_in_4bit": False, "model.load_in_8bit": False})
    model, tokenizer = load_model(str(model_dir), cfg, for_training=False)
    token = os.environ.get("HF_TOKEN")
    if fmt == "merged-16bit":
        model.save_pretrained_merged(str(output_dir), tokenizer, save_method="merged_16bit",
                                     token=token)
    else:
        model.save_pretrained_gguf(str(output_dir), tokenizer, quantization_method=quantization,
                                   token=token)
    return output_dir


def push(folder: Path, repo: str) -> None:
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ExportError("--push-to-hub needs a token: export HF_TOKEN (it is read from the "
                          "environment and never written)")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo, exist_ok=True, private=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.export", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True, type=Path,
                   help="The --output-dir of jobs.train (or a run's adapter/ folder).")
    p.add_argument("--output-dir", required=True, type=Path, help="Where the export goes.")
    p.add_argument("--format", default="merged-16bit", choices=FORMATS)
    p.add_argument("--gguf-quantization", default="q8_0", help="GGUF quantisation method.")
    p.add_argument("--push-to-hub", metavar="REPO", help="Upload the export to this Hub repo.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.push_to_hub and not os.environ.get("HF_TOKEN"):
            raise ExportError("--push-to-hub needs a token: export HF_TOKEN (it is read from "
                              "the environment and never written)")
        if args.push_to_hub and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
            raise ExportError("--push-to-hub while HF_HUB_OFFLINE is set: nothing can be "
                              "uploaded; export without it here, and push from a machine "
                              "with internet (unset HF_HUB_OFFLINE there)")
        bad = folder_problem(args.output_dir, "--output-dir")
        if bad:
            raise ExportError(bad)
        out = export(args.model_dir, args.output_dir, args.format, args.gguf_quantization)
        if args.push_to_hub:
            push(out, args.push_to_hub)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.format} to {out}")
    return 0




if __name__ == "__main__":
    sys.exit(main())
