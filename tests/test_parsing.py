import pytest

from core.data import Entity
from core.parsing import FAILED, OK, SALVAGED, parse_output

E = Entity


@pytest.mark.parametrize("raw,status,ents", [
    ('[{"label": "Disease", "text": "flu"}]', OK, [E("Disease", "flu")]),
    ('```json\n[{"label": "Disease", "text": "flu"}]\n```', OK, [E("Disease", "flu")]),
    ('```\n[]\n```', OK, []),
    ('Here you go: [{"label": "D", "text": "a"}] Hope this helps!', OK, [E("D", "a")]),
    ('{"entities": [{"label": "D", "text": "a"}]}', OK, [E("D", "a")]),
    ('[{"label": "D", "text": "a"}, {"label": "D", "text": "b"}, {"label": "D", "te',
     SALVAGED, [E("D", "a"), E("D", "b")]),
    ('[{"label": "D", "text": "a"}', SALVAGED, [E("D", "a")]),
    ("I cannot find any entities.", FAILED, []),
    ("", FAILED, []),
    ('[{"type": "D", "name": "a"}]', OK, []),
])
def test_parse(raw, status, ents):
    r = parse_output(raw)
    assert r.status == status
    assert r.entities == ents


def test_wrong_keys_are_counted_as_invalid_items():
    r = parse_output('[{"label": "D", "text": "a"}, {"type": "D"}, 5]')
    assert r.entities == [E("D", "a")] and r.invalid_items == 2


def test_deeply_nested_output_is_a_parse_failure_not_a_crash():
    from core.parsing import parse_output

    for raw in ("[" * 1000, "{" * 5000 + '"a"', '[{"label": "D", "text": "x"}' + "[" * 900):
        assert parse_output(raw).status in ("failed", "salvaged")


def test_max_new_tokens_beyond_the_sequence_length_is_refused():
    import pytest

    from core.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="leaves no room for a prompt"):
        config_from_dict({"model": {"max_seq_length": 512}, "eval": {"max_new_tokens": 600}},
                         "t")
