"""The five scoring defects of issue 14, each with its hand-worked reproducer, and the seed
tool's own true_pred_entities.json layout."""

import json

import pytest

from core.data import Entity as E
from core.metrics import score
from core.results import SCHEMA_VERSION, per_label

from .conftest import run_module


def rescore(tmp_path, doc):
    f = tmp_path / "true_pred_entities.json"
    f.write_text(json.dumps(doc))
    r = run_module("jobs.score", "--true-pred-file", str(f), "--results-dir", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    return json.loads((tmp_path / "o" / "performance.json").read_text())


def test_a_label_named_total_cannot_overwrite_the_totals(tmp_path):
    perf = rescore(tmp_path, {
        "true_ents": [[{"label": "total", "text": "fever"}, {"label": "X", "text": "cough"}]],
        "pred_ents": [[{"label": "X", "text": "cough"}]], "texts": ["fever cough"]})
    ex = perf["metrics"]["total"]["exact"]
    assert (ex["p"], ex["r"], round(ex["f1"], 3)) == (1.0, 0.5, 0.667)
    assert perf["schema_version"] == SCHEMA_VERSION == 2
    assert perf["labels"]["total"]["exact"]["r"] == 0.0  # the label's own scores, apart
    assert perf["labels"]["X"]["exact"]["f1"] == 1.0
    assert set(perf["metrics"]) == {"total"}


def test_per_label_reader_keeps_schema_1_files_working():
    old = {"schema_version": 1, "metrics": {"total": {}, "Disease": {"exact": {"f1": 0.5}}}}
    assert per_label(old) == {"Disease": {"exact": {"f1": 0.5}}}
    new = {"schema_version": 2, "metrics": {"total": {}}, "labels": {"total": {"x": 1}}}
    assert per_label(new) == {"total": {"x": 1}}


@pytest.mark.parametrize("order", [0, 1])
def test_overlap_is_label_blind_and_never_split_over_labels(order):
    gold = [E("Chemical", "cocaine"), E("Disease", "cocaine toxicity")]
    if order:
        gold.reverse()
    s = score([gold], [[E("Chemical", "cocaine")]], ["cocaine toxicity"])
    # Label-blind: one prediction matches one gold entity, whichever order they come in.
    assert s["total"]["overlap"]["tp"] == 1 and s["total"]["overlap"]["p"] == 1.0
    assert s["total"]["overlap"]["r"] == 0.5
    for lab in ("Chemical", "Disease"):
        assert "overlap" not in s["labels"][lab]
    assert "overlap" not in s["macro"]
    # Every per-label P / R / F1 is what its own counts give.
    for lab, by_metric in s["labels"].items():
        for m, prf in by_metric.items():
            tp, fp, fn = prf["tp"], prf["fp"], prf["fn"]
            assert prf["p"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0), (lab, m)
            assert prf["r"] == pytest.approx(tp / (tp + fn) if tp + fn else 0.0), (lab, m)
    assert s["labels"]["Chemical"]["exact"]["f1"] == 1.0
    assert s["labels"]["Disease"]["relaxed"]["r"] == 0.0


@pytest.mark.parametrize("text,gold,pred", [
    ("asthma and anemia", "asthma", "a"),
    ("asthma and anemia", "asthma", "a and"),
    ("He was given aspirin.", "aspirin", "in"),
    ("He was given aspirin.", "aspirin", "pirin"),
])
def test_a_shared_character_or_stopword_inside_a_word_is_not_a_match(text, gold, pred):
    s = score([[E("D", gold)]], [[E("D", pred)]], [text])
    assert s["total"]["relaxed"]["tp"] == 0 and s["total"]["overlap"]["tp"] == 0


def test_real_partial_matches_still_count():
    s = score([[E("Disease", "stress ulcers")]], [[E("Disease", "ulcers")]],
              ["Prevention of stress ulcers in the ICU."])
    assert s["total"]["relaxed"]["f1"] == 1.0 and s["total"]["exact"]["f1"] == 0.0


def test_rescoring_recomputes_the_parse_failure_rate_from_raw_outputs(tmp_path):
    raw = ['[{"label": "D", "text": "fever"}]',   # ok
           '[{"label": "D", "text": "cough"}, {"la',  # salvaged (truncated)
           "no idea",                              # failed
           ""]                                     # too long: never generated
    perf = rescore(tmp_path, {
        "true_ents": [[{"label": "D", "text": "fever"}], [{"label": "D", "text": "cough"}],
                      [{"label": "D", "text": "rash"}], [{"label": "D", "text": "pain"}]],
        "pred_ents": [[{"label": "D", "text": "fever"}], [{"label": "D", "text": "cough"}],
                      [], []],
        "texts": ["fever", "cough", "rash", "pain"], "raw_outputs": raw, "too_long": [3]})
    p = perf["parse"]
    assert (p["ok"], p["salvaged"], p["failed"], p["too_long"]) == (1, 1, 1, 1)
    assert p["failure_rate"] == pytest.approx(2 / 3)
    assert perf["hallucination_rate"] == 0.0


def test_seed_tool_layout_dicts_and_text_label_pairs_score_by_hand(tmp_path):
    # No texts; entities as dicts in one record and [text, label] pairs in the other.
    perf = rescore(tmp_path, {
        "true_ents": [[{"label": "Disease", "text": "Breast cancer"},
                       {"label": "Chemical", "text": "tamoxifen"}],
                      [["heart failure", "Disease"]]],
        "pred_ents": [[{"label": "Disease", "text": "breast cancer"},
                       {"label": "Disease", "text": "tamoxifen"}],
                      [["chronic heart failure", "Disease"], ["aspirin", "Chemical"]]]})
    tot = perf["metrics"]["total"]
    # exact: "breast cancer" only -> P 1/4, R 1/3
    assert (tot["exact"]["tp"], tot["exact"]["fp"], tot["exact"]["fn"]) == (1, 3, 2)
    # relaxed (shared words, no texts): + heart failure -> P 2/4, R 2/3
    assert (tot["relaxed"]["p"], round(tot["relaxed"]["r"], 4)) == (0.5, 0.6667)
    # overlap ignores the label: + tamoxifen -> P 3/4, R 3/3
    assert (tot["overlap"]["p"], tot["overlap"]["r"]) == (0.75, 1.0)
    assert perf["hallucination_rate"] is None and perf["parse"]["failure_rate"] is None


def test_a_record_with_thousands_of_overlapping_entities_is_scored():
    # A chain: gold i overlaps predictions i-1 and i; a greedy start leaves long augmenting
    # paths that exhausted the recursive matcher's stack.
    n = 2000
    words = [f"w{i}" for i in range(n + 2)]
    text = " ".join(words)
    gold = [E("D", f"{words[i]} {words[i + 1]}") for i in range(n)]
    pred = [E("D", f"{words[i + 1]} {words[i + 2]}") for i in range(n)]
    s = score([gold], [list(reversed(pred))], [text], ("relaxed", "overlap"))
    assert s["total"]["relaxed"]["tp"] == n and s["total"]["overlap"]["f1"] == 1.0


@pytest.mark.parametrize("metric", ["exact", "relaxed", "overlap"])
def test_indexed_candidates_equal_testing_every_pair(metric):
    import random

    from core.metrics import _edges, predicate

    rng = random.Random(7)
    vocab = ["acute", "renal", "failure", "of", "the", "cocaine", "toxicity", "pain", "in",
             "chest", "a", "aspirin", "Ca2+", "(CO)"]
    for _ in range(40):
        words = [rng.choice(vocab) for _ in range(rng.randint(5, 30))]
        text = " ".join(words)

        def ent(words=words):
            k = rng.randint(0, len(words) - 1)
            span = " ".join(words[k:k + rng.randint(1, 3)])
            if rng.random() < 0.2:
                span = rng.choice(["renal pain", "failures", "in the", "x"])  # unlocatable
            return E(rng.choice(["A", "B"]), span.upper() if rng.random() < 0.2 else span)

        gold = [ent() for _ in range(rng.randint(9, 20))]
        pred = [ent() for _ in range(rng.randint(9, 20))]
        ok = predicate(metric, text)
        brute = [[j for j, p in enumerate(pred) if ok(g, p)] for g in gold]
        assert _edges(gold, pred, metric, text) == brute


@pytest.mark.parametrize("bad", [float("nan"), 1e308, -0.1, "0.9", None])
def test_an_invalid_score_is_listed_not_ranked(bad):
    from core.results import check_performance

    doc = {"schema_version": 2, "num_examples": 1, "avg_inference_time": 0.0, "macro": {},
           "parse": {}, "config": {},
           "metrics": {"total": {"exact": {"p": 0.5, "r": 0.5, "f1": bad}}}}
    errs = check_performance(doc)
    assert len(errs) == 1 and "metrics.total.exact.f1" in errs[0] and "[0, 1]" in errs[0]


def test_results_honour_the_umask(tmp_path):
    import os

    from core.fileio import atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_json(tmp_path / "b.json", {})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_status_watch_must_be_a_positive_interval(capsys):
    from launcher.cli import main

    assert main(["status", "--watch", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--watch -1" in err and len(err.strip().splitlines()) == 1
