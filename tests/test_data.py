import json

import pytest

from core.data import DataError, load_dataset


def write(tmp_path, content, name="d.json", raw=False):
    p = tmp_path / name
    if raw:
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    else:
        p.write_text(json.dumps(content))
    return p


GOOD = [{"text": "Fever and cough.", "entities": [{"label": "Symptom", "text": "Fever"}]}]


def test_loads_a_good_file(tmp_path):
    ds = load_dataset(write(tmp_path, GOOD))
    assert len(ds.records) == 1 and ds.records[0].entities[0].label == "Symptom"
    assert not ds.warnings


@pytest.mark.parametrize("content,raw,expect", [
    ('[{"text": "a", "entities": []},', True, "invalid JSON at line 1 column 32"),
    ('{"text": "a"}', True, "top level is a JSON dict, expected a list"),
    ("[]", True, "the dataset is empty"),
    ("", True, "file is empty"),
    (b"\xff\xfe[]", True, "not UTF-8 (byte 0xff at offset 0)"),
    ([{"text": "a"}], False, "record 0: missing key 'entities'"),
    ([{"entities": []}], False, "record 0: missing key 'text'"),
    ([GOOD[0], {"text": 5, "entities": []}], False, "record 1: 'text' must be a string"),
    ([{"text": "a", "entities": {}}], False, "record 0: 'entities' must be a list"),
    ([{"text": "a", "entities": [{"label": "X"}]}], False, "record 0, entity 0: missing key 'text'"),
    ([{"text": "a", "entities": [{"label": 1, "text": "a"}]}], False, "'label' must be a string"),
    ([{"text": "a", "entities": ["a"]}], False, "entity 0: expected an object"),
    (["just text"], False, "record 0: expected an object"),
    ([{"text": "  ", "entities": []}], False, "record 0: 'text' is empty"),
])
def test_errors_name_file_and_record(tmp_path, content, raw, expect):
    p = write(tmp_path, content, raw=raw)
    with pytest.raises(DataError) as e:
        load_dataset(p)
    msg = str(e.value)
    assert str(p) in msg and expect in msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_dataset(tmp_path / "nope.json")


def test_paraphrased_entity_is_a_counted_warning(tmp_path):
    data = [{"text": "High blood pressure.", "entities": [
        {"label": "Disease", "text": "hypertension"},
        {"label": "Disease", "text": "blood pressure"}]}]
    ds = load_dataset(write(tmp_path, data))
    assert len(ds.records) == 1
    assert ds.warnings and "1 of 2 entity texts do not occur" in ds.warnings[0]


def test_real_corpora_load(shared_data):
    for name in ("bc5cdr", "ncbi_disease", "maccrobat"):
        ds = load_dataset(shared_data / name / "dev.json")
        assert len(ds.records) > 500
    assert set(load_dataset(shared_data / "bc5cdr" / "dev.json").labels) == {"Chemical",
                                                                            "Disease"}
