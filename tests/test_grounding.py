"""Grounded answers and constrained decoding on hand-made cases (pure functions, no torch)."""

from core.data import Entity
from core.grounding import (
    allowed_piece,
    escaped_source,
    ground,
    ground_all,
    json_value_state,
)

TEXT = 'Cocaine-induced hepatitis in a "crack" user.'


def test_ground_keeps_located_texts_and_drops_invented_ones():
    kept, dropped = ground([Entity("Chemical", "cocaine"), Entity("Disease", "liver failure"),
                            Entity("Disease", "HEPATITIS")], TEXT)
    assert [e.text for e in kept] == ["cocaine", "HEPATITIS"]
    assert [e.text for e in dropped] == ["liver failure"]


def test_ground_all_counts_what_it_dropped_per_corpus():
    preds, dropped = ground_all([[Entity("D", "fever")], [Entity("D", "sepsis"),
                                                          Entity("D", "cough")]],
                                ["fever", "cough"])
    assert preds == [[Entity("D", "fever")], [Entity("D", "cough")]]
    assert dropped == 1


def test_state_inside_text_label_and_neither():
    assert json_value_state('[{"label": "Disease", "text": "Coc') == ("text", "Coc")
    assert json_value_state('[{"label": "Dis') == ("label", "Dis")
    # Between objects, after a closed value, inside a key: free.
    assert json_value_state('[{"label": "Disease", "text": "x"}, ') is None
    assert json_value_state('[{"label": "Disease", "text": "x"') is None
    assert json_value_state('[{"lab') is None
    # An escaped quote does not end the value.
    assert json_value_state('[{"label": "C", "text": "\\"cra') == ("text", '\\"cra')
    # The second object's value is tracked, not the first's.
    assert json_value_state('[{"label": "C", "text": "a"}, {"label": "D", "text": "hep') == (
        "text", "hep")


def test_text_values_must_stay_spans_of_the_input():
    src = escaped_source(TEXT)
    assert allowed_piece("caine", ("text", "Co"), src, [])
    assert allowed_piece(" hepatitis", ("text", "cocaine-induced"), src, [])
    assert not allowed_piece(" liver", ("text", "cocaine-induced"), src, [])
    # Closing: only a non-empty span may be closed; the rest of the piece is structure.
    assert allowed_piece('"}', ("text", "hepatitis"), src, [])
    assert not allowed_piece('"}', ("text", ""), src, [])
    assert not allowed_piece('itis"', ("text", "hepatosis"), src, [])
    # A quote in the input is written escaped, as JSON requires.
    assert allowed_piece('crack\\"', ("text", '\\"'), src, [])


def test_label_values_must_be_training_labels():
    labels = ["Chemical", "Disease"]
    assert allowed_piece("Chem", ("label", ""), "", labels)
    assert allowed_piece('ical"', ("label", "Chem"), "", labels)
    assert not allowed_piece("Drug", ("label", ""), "", labels)
    assert not allowed_piece('"', ("label", "Chem"), "", labels)


def test_broken_multibyte_pieces_pass_only_for_non_ascii_inputs():
    src = escaped_source("Ca²⁺ overload")
    assert src == "ca2+ overload"  # NFKC, as the metrics read it
    assert allowed_piece("\ufffd", ("text", ""), src, [], fragments="Ca²⁺ overload".isascii() is False)
    assert allowed_piece("²", ("text", "ca"), src, [])  # the character itself, joined
    assert not allowed_piece("\ufffd", ("text", ""), escaped_source("calcium overload"), [],
                             fragments=False)


def test_unusual_spaces_in_the_input_match_the_model_s_plain_space():
    """MACCROBAT writes "1.19\u2009kg" and "5\u2005years"; the metrics (NFKC) count a plain
    space as the same text, so the constraint must let the model write one (on the card it
    refused it and 42 answers ran to the token budget in byte fragments)."""
    src = escaped_source("Weight 1.19\u2009kg at birth, 5\u2005years later")
    assert allowed_piece(" kg", ("text", "1.19"), src, [])
    assert allowed_piece(" years", ("text", "5"), src, [])
    assert allowed_piece('"}', ("text", "1.19 kg"), src, [])
    assert not allowed_piece(" lb", ("text", "1.19"), src, [])


def test_byte_fragments_stop_where_no_character_can_come_of_them():
    src = escaped_source("Children\u2019s Emergency")
    # A fragment may start a character in a value that is a span of the input ...
    assert allowed_piece("\ufffd", ("text", "children"), src, [])
    assert not allowed_piece("\ufffd", ("text", "children"), src, [], fragments=False)
    # ... and continue it while at most three wait (UTF-8: 4 bytes), nothing else meanwhile.
    assert allowed_piece("\ufffd", ("text", "children\ufffd"), src, [], pending=3)
    assert not allowed_piece("\ufffd", ("text", "children\ufffd"), src, [], pending=4)
    assert not allowed_piece("s", ("text", "children\ufffd"), src, [], pending=1)
    # Not after a value that has already left the input.
    assert not allowed_piece("\ufffd", ("text", "children\u00e9"), src, [])
