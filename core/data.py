"""Loading and validating the seed's dataset format: a JSON list of {text, entities}.

Every error names the file and, where there is one, the record index, and says what to fix.
Problems that may be legitimate (paraphrased entity text) are warnings with a count.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.textnorm import normalise


class DataError(UserError):
    """A dataset that cannot be used; the message is one complete line."""


@dataclass(frozen=True)
class Entity:
    label: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"label": self.label, "text": self.text}


@dataclass(frozen=True)
class Record:
    text: str
    entities: tuple[Entity, ...]
    context: str = ""
    """Earlier sentences of the same document shown with the text (data.context_sentences)."""
    context_after: str = ""
    """Later sentences of the same document shown with the text (data.context_after)."""


@dataclass
class Dataset:
    path: str
    records: list[Record]
    warnings: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.records:
            for e in r.entities:
                seen.setdefault(e.label, None)
        return list(seen)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _decode(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory; give the path of a .json file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        "re-save the file as UTF-8") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty; it must hold a JSON list of "
                        "{\"text\", \"entities\"} records")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            hint = ("; this looks like JSON Lines (one record per line): medsweep reads one "
                    "JSON list of records, e.g. python -c \"import json,sys; print(json.dumps("
                    "[json.loads(l) for l in open(sys.argv[1]) if l.strip()]))\" in.jsonl > "
                    "out.json")
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}{hint}") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply; records are flat objects") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise DataError(f"{path}: unreadable JSON value ({str(exc).split(';')[0]}); "
                        "records hold only text and entities") from None


_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"
"""Zero-width and other invisible characters: a label of only these looks empty."""


def parse_records(data: Any, where: str) -> list[Record]:
    if not isinstance(data, list):
        raise DataError(f"{where}: top level is a JSON {type(data).__name__ if data is not None else 'null'}"
                        ", expected a list of {\"text\", \"entities\"} records")
    if not data:
        raise DataError(f"{where}: the dataset is empty (a list with no records)")
    records = []
    for i, rec in enumerate(data):
        at = f"{where}: record {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{at}: expected an object with 'text' and 'entities', "
                            f"got {_kind(rec)}")
        missing = [k for k in ("text", "entities") if k not in rec]
        if missing:
            raise DataError(f"{at}: missing key {', '.join(repr(m) for m in missing)} "
                            f"(each record needs 'text' and 'entities'; it has "
                            f"{', '.join(map(repr, rec)) or 'no keys'})")
        if not isinstance(rec["text"], str):
            raise DataError(f"{at}: 'text' must be a string, got {_kind(rec['text'])}")
        if not rec["text"].strip():
            raise DataError(f"{at}: 'text' is empty")
        if _SURROGATE.search(rec["text"]):
            raise DataError(f"{at}: 'text' holds a lone UTF-16 surrogate (an escape like "
                            "\\ud800 without its pair), which is no character; fix the "
                            "escape or remove it")
        ents = rec["entities"]
        if not isinstance(ents, list):
            raise DataError(f"{at}: 'entities' must be a list, got {_kind(ents)}")
        parsed = []
        for j, ent in enumerate(ents):
            eat = f"{at}, entity {j}"
            if not isinstance(ent, dict):
                raise DataError(f"{eat}: expected an object with 'label' and 'text', "
                                f"got {_kind(ent)}")
            for key in ("label", "text"):
                if key not in ent:
                    raise DataError(f"{eat}: missing key {key!r} (entities need 'label' and "
                                    "'text')")
                if not isinstance(ent[key], str):
                    raise DataError(f"{eat}: {key!r} must be a string, got {_kind(ent[key])}")
                if not ent[key].strip():
                    raise DataError(f"{eat}: {key!r} is empty")
                if key == "label" and not ent[key].strip(_INVISIBLE + " \t\r\n"):
                    raise DataError(f"{eat}: 'label' holds only invisible characters "
                                    f"({ent[key]!r}); give the label a name")
                if _SURROGATE.search(ent[key]):
                    raise DataError(f"{eat}: {key!r} holds a lone UTF-16 surrogate; fix the "
                                    "escape or remove it")
            parsed.append(Entity(ent["label"].strip(), ent["text"]))
        records.append(Record(rec["text"], tuple(parsed)))
    return records


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _missing_entities(rec: Record) -> int:
    """Entities whose (normalised) text does not occur in the record's: one search each, the
    record normalised once (a long record with a word repeated thousands of times under
    hundreds of labels took seconds when every occurrence was listed)."""
    if not rec.entities:
        return 0
    src = normalise(rec.text)
    return sum(1 for e in rec.entities if not (n := normalise(e.text)) or n not in src)


def load_dataset(path: str | Path, context_sentences: int = 0,
                 context_after: int = 0) -> Dataset:
    """Load and validate a dataset file; raise DataError on the first structural problem.
    With context_sentences (context_after), each record carries up to that many earlier
    (later) sentences of its document, found through the document ids beside the file
    (ids_path)."""
    p = Path(path)
    records = parse_records(_decode(p), str(p))
    if context_sentences > 0 or context_after > 0:
        records = with_context(records, load_ids(p, len(records)), context_sentences,
                               str(ids_path(p)), after=context_after)
    ds = Dataset(str(p), records)
    missing = sum(_missing_entities(r) for r in records)
    if missing:
        total = sum(len(r.entities) for r in records)
        ds.warnings.append(f"{p}: {missing} of {total} entity texts do not occur in their "
                           "record's text (paraphrased or mis-annotated); they are kept")
    return ds


_ID = re.compile(r"(.+):[A-Za-z]+([0-9]{1,9})")
"""A record's place in its document: "<doc>:s<k>" (sentence k; MACCROBAT: "<doc>:l<k>")."""


def ids_path(dataset: str | Path) -> Path:
    """The document ids of a dataset: train.json -> train.ids.json beside it."""
    p = Path(dataset)
    return p.with_name(p.stem + ".ids.json")


def load_ids(dataset: Path, n_records: int) -> list[tuple[str, int]]:
    """(document, position) of every record, from ids_path(dataset); DataError where the file
    is missing, malformed or not aligned with the records."""
    path = ids_path(dataset)
    fix = (f"data.context_sentences / context_after need {path}: a JSON list of \"<doc>:s<k>\" "
           f"ids, one per record of {dataset} in the same order; add it or set both to 0")
    if not path.is_file():
        raise DataError(f"{path}: file not found; {fix}")
    data = _decode(path)
    if not isinstance(data, list) or len(data) != n_records:
        got = f"{len(data)} ids" if isinstance(data, list) else f"a JSON {_kind(data)}"
        raise DataError(f"{path}: {got} for {n_records} records; {fix}")
    out = []
    for i, ident in enumerate(data):
        m = _ID.fullmatch(ident) if isinstance(ident, str) else None
        if m is None:
            shown = ident if not isinstance(ident, str) or len(ident) <= 80 else ident[:80] + "..."
            raise DataError(f"{path}: id {i} is {shown!r}, not \"<doc>:s<k>\" (k at most 9 "
                            f"digits); {fix}")
        out.append((m.group(1), int(m.group(2))))
    return out


def with_context(records: list[Record], ids: list[tuple[str, int]], n: int,
                 where: str = "the ids file", after: int = 0) -> list[Record]:
    """Each record with the texts of the up to n sentences just before it in its document
    (positions k-n .. k-1 that the file holds) and of the up to `after` sentences just after
    it (k+1 .. k+after), in document order, joined by spaces. A document given twice
    (NCBI-disease's training file holds one twice) is fine; one id on two different sentences
    is a DataError."""
    first: dict[tuple[str, int], int] = {}
    for i, place in enumerate(ids):
        j = first.setdefault(place, i)
        if records[j].text != records[i].text:
            raise DataError(f"{where}: ids {j} and {i} name the same sentence ({place[0]}, "
                            f"position {place[1]}) but the records' texts differ; give each "
                            "sentence its own id or set data.context_sentences and "
                            "data.context_after 0")

    def texts(doc: str, positions: range) -> str:
        return " ".join(records[first[(doc, j)]].text for j in positions if (doc, j) in first)

    return [Record(rec.text, rec.entities, texts(doc, range(max(0, k - n), k)),
                   texts(doc, range(k + 1, k + 1 + after)))
            for rec, (doc, k) in zip(records, ids, strict=True)]


_READ: dict[tuple[str, int, int, int, int], Dataset] = {}


def read_once(path: str | Path, context_sentences: int = 0, context_after: int = 0) -> Dataset:
    """load_dataset, read once per file version in this process (a submit validates a file
    and then plans from its longest record: one read, not two). The file's size and
    modification time are part of the key, so an edited file is read again."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size, context_sentences,
           context_after)
    if key not in _READ:
        if len(_READ) > 32:
            _READ.clear()
        _READ[key] = load_dataset(path, context_sentences, context_after)
    return _READ[key]
