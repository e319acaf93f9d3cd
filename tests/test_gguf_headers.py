"""Crafted GGUF headers (issue 27 item 11): each is a one-line GGUFError at plan time, never a
RecursionError, OverflowError, ValueError or a gigabyte of memory. The files are built here
byte by byte in the GGUF v3 layout."""

import struct
from pathlib import Path

import pytest

from core.gguf import GGUFError, read_header, shape_numbers

from .conftest import run_module
from .test_hardening import one_line_error

U32, U64, F32, STR, ARR = 4, 10, 6, 8, 9


def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def gguf(kvs: list[bytes], tensors: list[tuple[str, tuple[int, ...]]] = (("w", (4, 4)),),
         data: bytes = b"\0" * 64) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    for name, dims in tensors:
        head += s(name) + struct.pack("<I", len(dims)) + b"".join(
            struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, 0)
    return head + data


SHAPE = [kv("general.architecture", STR, s("llama")),
         kv("llama.embedding_length", U32, struct.pack("<I", 64)),
         kv("llama.block_count", U32, struct.pack("<I", 2)),
         kv("llama.feed_forward_length", U32, struct.pack("<I", 128)),
         kv("llama.vocab_size", U32, struct.pack("<I", 256))]


def write(tmp_path: Path, name: str, content: bytes) -> str:
    p = tmp_path / f"{name}.gguf"
    p.write_bytes(content)
    return str(p)


def test_a_well_formed_header_reads(tmp_path):
    h = read_header(write(tmp_path, "ok", gguf(SHAPE)))
    assert shape_numbers(h)[1:] == (64, 2, 128, 256)


def nested(depth: int) -> bytes:
    payload = struct.pack("<I", U32) + struct.pack("<Q", 1) + struct.pack("<I", 7)
    for _ in range(depth):
        payload = struct.pack("<I", ARR) + struct.pack("<Q", 1) + payload
    return payload


@pytest.mark.parametrize("case, content, words", [
    ("nested arrays", gguf([kv("general.x", ARR, nested(5000))] + SHAPE), "nested"),
    ("string for a number", gguf(SHAPE[:1] + [kv("llama.embedding_length", STR, s("wide"))]
                                 + SHAPE[2:]), "not a number"),
    ("NaN for a number", gguf(SHAPE[:2] + [kv("llama.block_count", F32,
                                              struct.pack("<f", float("nan")))] + SHAPE[3:]),
     "not a whole number"),
    ("inf for a number", gguf(SHAPE[:2] + [kv("llama.block_count", F32,
                                              struct.pack("<f", float("inf")))] + SHAPE[3:]),
     "not a whole number"),
    ("20 dims of 2^64-1", gguf(SHAPE, tensors=[("w", (2**64 - 1,) * 20)]), "dimensions"),
    ("huge dims", gguf(SHAPE, tensors=[("w", (2**63, 2**63))]), "implausible shape"),
    ("header only", gguf(SHAPE, data=b""), "ends before its tensor data"),
])
def test_crafted_header_is_a_one_line_error(tmp_path, case, content, words):
    path = write(tmp_path, "crafted", content)
    with pytest.raises(GGUFError, match=words):
        shape_numbers(read_header(path))


def test_a_big_array_under_a_general_key_is_kept_by_length(tmp_path):
    n = 4_000_000  # 16 MB of uint32
    big = kv("general.junk", ARR, struct.pack("<I", U32) + struct.pack("<Q", n)
             + b"\0" * (4 * n))
    path = write(tmp_path, "big", gguf([big] + SHAPE))
    import tracemalloc

    tracemalloc.start()
    h = read_header(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert h.metadata["general.junk"] == n
    # Read past (its 16 MB), never built as a list of 4 million ints (61 MB at its peak
    # before; a 64 MB array took about 1 GB).
    assert peak < 32 * 2**20, peak


def test_plan_of_a_crafted_file_is_one_line(tmp_path):
    path = write(tmp_path, "nan", gguf(SHAPE[:2] + [kv("llama.block_count", F32,
                                                       struct.pack("<f", float("nan")))]
                                       + SHAPE[3:]))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: g\ndata: {{demo: true}}\nbase: {{model.name_or_path: '{path}'}}\n")
    one_line_error(run_module("launcher", "submit", str(sweep), "--dry-run"),
                   "not a whole number")


BROKEN = Path(__file__).resolve().parent / "fixtures" / "broken"


@pytest.mark.parametrize("path", sorted(BROKEN.glob("gguf_*.gguf")), ids=lambda p: p.name)
def test_broken_gguf_fixtures_are_one_line_errors_at_submit(tmp_path, path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: g\ndata: {{demo: true}}\nbase: {{model.name_or_path: '{path}'}}\n")
    one_line_error(run_module("launcher", "submit", str(sweep), "--dry-run"), path.name)
