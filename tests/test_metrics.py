"""Hand-worked cases, including every fault DESIGN.md lists for the seed's tool."""

import pytest

from core.data import Entity as E
from core.metrics import hallucination_rate, max_matching, predicate, score


def f1(s, metric):
    return round(s["total"][metric]["f1"], 4)


def test_exact_match_is_case_and_space_insensitive_on_both_sides():
    # The seed lower-cased gold only: "Type 2 Diabetes" never matched.
    s = score([[E("Disease", "Type 2  Diabetes")]], [[E("Disease", "type 2 diabetes")]],
              ["Type 2  Diabetes noted."])
    assert f1(s, "exact") == 1.0


def test_one_shared_character_is_not_overlap():
    # The seed counted "a" in "asthma" vs "anemia" style pairs as overlap.
    s = score([[E("Disease", "asthma")]], [[E("Disease", "anemia")]], ["asthma and anemia"])
    assert f1(s, "overlap") == 0.0 and f1(s, "relaxed") == 0.0


def test_relaxed_is_one_to_one():
    # One long prediction overlapping two gold entities matches at most one of them.
    text = "breast cancer and lung cancer"
    gold = [[E("D", "breast cancer"), E("D", "lung cancer")]]
    pred = [[E("D", "breast cancer and lung cancer")]]
    s = score(gold, pred, [text])
    t = s["total"]["relaxed"]
    assert (t["tp"], t["fp"], t["fn"]) == (1, 0, 1)
    assert t["p"] == 1.0 and t["r"] == 0.5


def test_relaxed_overlap_by_span():
    text = "History of breast cancer."
    s = score([[E("D", "breast cancer")]], [[E("D", "cancer")]], [text])
    assert f1(s, "exact") == 0.0 and f1(s, "relaxed") == 1.0 and f1(s, "overlap") == 1.0


def test_spans_that_do_not_intersect_do_not_overlap():
    # Same word, different places: "cancer" (2nd) vs "lung cancer" (1st) still intersect
    # because "cancer" also occurs inside "lung cancer"; but "pain" vs "chest pain" where
    # "pain" only occurs elsewhere... here: "back pain" vs "chest" never share a span.
    text = "chest pain and back pain"
    s = score([[E("S", "back pain")]], [[E("S", "chest")]], [text])
    assert f1(s, "relaxed") == 0.0


def test_overlap_ignores_labels_relaxed_does_not():
    s = score([[E("Disease", "diabetes")]], [[E("Drug", "diabetes")]], ["diabetes"])
    assert f1(s, "overlap") == 1.0 and f1(s, "relaxed") == 0.0 and f1(s, "exact") == 0.0


def test_token_fallback_when_not_in_source_ignores_stopwords():
    s = score([[E("D", "disease of the heart")]], [[E("D", "heart failure")]], None)
    assert f1(s, "relaxed") == 1.0
    s = score([[E("D", "disease of the heart")]], [[E("D", "the lungs")]], None)
    assert f1(s, "relaxed") == 0.0


def test_maximum_matching_beats_greedy():
    # Greedy would match pred0 to gold0 and leave gold1 unmatched; the maximum matches both.
    gold = [E("D", "kidney stone"), E("D", "stone")]
    pred = [E("D", "stone"), E("D", "kidney")]
    pairs = max_matching(gold, pred, predicate("relaxed", None))
    assert len(pairs) == 2


def test_duplicates_with_unique_on_and_off():
    gold = [[E("D", "flu")]]
    pred = [[E("D", "flu"), E("D", "Flu")]]
    on = score(gold, pred, ["flu"], unique=True)["total"]["exact"]
    off = score(gold, pred, ["flu"], unique=False)["total"]["exact"]
    assert (on["tp"], on["fp"]) == (1, 0)
    assert (off["tp"], off["fp"]) == (1, 1)


def test_micro_macro_and_labels_only_in_predictions():
    gold = [[E("A", "x1"), E("A", "x2"), E("B", "y")]]
    pred = [[E("A", "x1"), E("C", "z")]]
    s = score(gold, pred, ["x1 x2 y z"])
    assert s["labels"]["C"]["exact"]["p"] == 0.0 and s["labels"]["C"]["exact"]["support"] == 0
    t = s["total"]["exact"]
    assert (t["tp"], t["fp"], t["fn"]) == (1, 1, 2)
    assert t["p"] == 0.5 and t["r"] == pytest.approx(1 / 3)
    # macro over A (p1 r.5 f.667), B (0), C (0)
    assert s["macro"]["exact"]["f1"] == pytest.approx((2 / 3) / 3)


def test_empty_everything():
    s = score([[]], [[]], ["text"])
    assert s["total"]["exact"] == {"p": 0.0, "r": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 0,
                                   "support": 0}


def test_hallucination_rate():
    assert hallucination_rate([[E("D", "flu"), E("D", "measles")]], ["Flu season"]) == 0.5
    assert hallucination_rate([[]], ["x"]) == 0.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="lengths differ"):
        score([[]], [[], []])
