"""Hand-worked cases, including every fault DESIGN.md lists for the seed's tool."""

import pytest

from core.data import Entity as E
from core.metrics import bootstrap_ci, hallucination_rate, max_matching, predicate, score


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


def _records(n, seed=1):
    """n records of (predicted, gold, matched) counts, about half the entities matched."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        n_pred, n_gold = rng.randint(0, 4), rng.randint(0, 4)
        out.append((n_pred, n_gold, rng.randint(0, min(n_pred, n_gold))))
    return out


def _micro_f1(counts):
    n_pred, n_gold, tp = (sum(c[i] for c in counts) for i in range(3))
    p, r = tp / n_pred, tp / n_gold
    return 2 * p * r / (p + r)


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_records():
    small, large = _records(50), _records(800)
    lo_s, hi_s = bootstrap_ci(small)["f1"]
    lo_l, hi_l = bootstrap_ci(large)["f1"]
    assert lo_s < _micro_f1(small) < hi_s
    assert lo_l < _micro_f1(large) < hi_l
    # The width shrinks about as 1/sqrt(n): 16x the records, about a quarter of the width.
    assert (hi_l - lo_l) < 0.4 * (hi_s - lo_s)
    assert 0 < lo_s and hi_s < 1


def test_bootstrap_is_seeded_and_degenerate_where_every_record_agrees():
    counts = _records(100)
    assert bootstrap_ci(counts) == bootstrap_ci(counts)
    assert bootstrap_ci(counts, seed=1) != bootstrap_ci(counts, seed=2)
    assert bootstrap_ci([(2, 2, 2)] * 30) == {"p": [1.0, 1.0], "r": [1.0, 1.0],
                                               "f1": [1.0, 1.0]}
    assert bootstrap_ci([]) == {} and bootstrap_ci(counts, reps=0) == {}


def test_score_resamples_records_not_entities():
    # One record with 10 gold entities all found, nine records with one gold entity missed:
    # micro recall is 10/19. Resampling records keeps the 10 together, so the interval is far
    # wider than an entity-level resample (19 independent draws) would suggest.
    gold = [[E("D", f"d{i}") for i in range(10)]] + [[E("D", "x")] for _ in range(9)]
    pred = [list(gold[0])] + [[] for _ in range(9)]
    s = score(gold, pred, metrics=("exact",), ci_reps=2000)
    lo, hi = s["ci95"]["exact"]["r"]
    assert s["total"]["exact"]["r"] == pytest.approx(10 / 19)
    # Without the big record (0.9**10 = 35% of resamples) recall is 0; with it three times,
    # 30/37. Entity-level draws would give about 0.53 +- 0.22.
    assert lo == 0.0 and hi > 0.8
    assert {k: s["ci95"][k] for k in ("level", "reps", "resampled")} == {
        "level": 0.95, "reps": 2000, "resampled": "records"}
    assert "ci95" not in score(gold, pred, metrics=("exact",))


def test_docstring_examples_hold():
    import doctest

    import core.metrics

    result = doctest.testmod(core.metrics)
    assert result.attempted >= 4 and result.failed == 0


def test_a_word_repeated_thousands_of_times_under_many_labels_scores_correctly():
    """Issue 27 item 12: relaxed / overlap matching looked at every located span for every
    gold span (over 120 s here); now only the spans that can overlap."""
    from core.data import Entity
    from core.metrics import score

    text = " ".join(["fever"] * 4000)
    gold = [[Entity(f"L{i}", "fever") for i in range(40)]]
    pred = [[Entity(f"L{i}", "fever") for i in range(0, 40, 2)] + [Entity("X", "fever fever")]]
    s = score(gold, pred, [text], ["exact", "relaxed", "overlap"], unique=True, ci_reps=0)
    assert s["total"]["exact"]["tp"] == 20
    assert s["total"]["relaxed"]["tp"] == 20
    assert s["total"]["overlap"]["tp"] == 21  # the unlabelled two-word span overlaps one more
