"""Both CLIs accept every flag of the seed's tables, with the seed's defaults."""

import re
from pathlib import Path

import pytest

from core.cliargs import config_from_args
from core.config import DEFAULT_SYSTEM_PROMPT
from jobs import evaluate, train

from .conftest import FIXTURES, ROOT

TABLES = FIXTURES / "seed_flag_tables.md"
SEED = ROOT.parent / "shared" / "seed" / "000_a42991787f939a46.txt"
ROW = re.compile(r"^\| `(--[a-z0-9-]+)` \| (\w+) \| ([^|]+) \|")


def seed_rows():
    rows = [ROW.match(line) for line in TABLES.read_text().splitlines()]
    rows = [(m.group(1), m.group(2), m.group(3).strip()) for m in rows if m]
    return rows[:26], rows[26:]


def test_fixture_matches_the_seed_document():
    if not SEED.is_file():
        pytest.skip("../shared/seed is not here (a user's clone); the fixture is the copy")
    seed_lines = {ln for ln in SEED.read_text().splitlines() if ln.startswith("| `--")}
    fixture_lines = {ln for ln in TABLES.read_text().splitlines() if ln.startswith("| `--")}
    assert seed_lines == fixture_lines


def _expected(default: str, typ: str):
    d = default.strip("`\"")
    if d in ("*required*",):
        return None
    if d in ("See below", "Same as training"):
        return DEFAULT_SYSTEM_PROMPT
    if d == "None":
        return "NONE"
    if typ == "bool":
        return d == "true"
    if typ == "int":
        return int(d)
    if typ == "float":
        return float(d)
    return d


def _flag_to_key(parser, flag):
    for action in parser._actions:
        if flag in action.option_strings:
            return action
    raise AssertionError(f"{flag} not accepted")


@pytest.mark.parametrize("cli,part", [(train, 0), (evaluate, 1)])
def test_cli_accepts_every_seed_flag_with_its_default(cli, part):
    parser = cli.build_parser()
    rows = seed_rows()[part]
    assert len(rows) == (26 if part == 0 else 10)
    required = {"--train-dataset-file": "t.json", "--output-dir": "o",
                "--model-name-or-path": "scratch:llama-tiny", "--eval-dataset-file": "e.json",
                "--results-dir": "r", "--model-dir": "m"}
    argv = [x for f, v in required.items() if any(f == r[0] for r in rows) for x in (f, v)]
    cfg = config_from_args(parser.parse_args(argv))
    for flag, typ, default in rows:
        action = _flag_to_key(parser, flag)
        want = _expected(default, typ)
        if want is None or not action.dest.startswith("cfg__"):
            continue
        _, section, name = action.dest.split("__")
        got = getattr(getattr(cfg, section), name)
        if want == "NONE":
            assert got is None
        else:
            assert got == want, flag


def test_seed_example_command_parses_verbatim():
    argv = ("--train-dataset-file data/final/train.json --output-dir models/x "
            "--model-name unsloth/Llama-3.1-8B-Instruct --model-max-seq-length 4096 "
            "--model-load-in-4bit true --model-load-in-8bit false --model-full-finetuning false "
            "--peft-ft-vision-layers false --peft-ft-language-layers true "
            "--peft-ft-attention-modules true --peft-ft-mlp-modules true --peft-rank 8 "
            "--peft-lora-alpha 16 --peft-lora-dropout 0.0 --peft-lora-bias false "
            "--train-per-device-batch-size 4 --train-gradient-accumulation-steps 4 "
            "--train-num-epochs 10 --train-learning-rate 2e-4 --train-weight-decay 0.01 "
            "--train-warmup-steps 5 --train-lr-scheduler-type linear --train-seed 42 "
            "--unique-entities true").split()
    argv += ["--model-system-prompt", DEFAULT_SYSTEM_PROMPT]
    cfg = config_from_args(train.build_parser().parse_args(argv))
    assert cfg.train.num_epochs == 10 and cfg.peft.lora_dropout == 0.0
    assert cfg.train.per_device_batch_size == 4
    eval_argv = ("--eval-dataset-file t.json --results-dir r --model-dir m "
                 "--model-max-seq-length 4096 --model-load-in-4bit true "
                 "--model-load-in-8bit false --eval-batch-size 4 --unique-entities true").split()
    ecfg = config_from_args(evaluate.build_parser().parse_args(eval_argv))
    assert ecfg.eval.unique_entities is True


def test_bad_boolean_is_a_clear_error(capsys):
    rc = train.main(["--train-dataset-file", "x.json", "--output-dir", "o", "--model-name",
                     "scratch:llama-tiny", "--model-load-in-4bit", "maybe"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--model-load-in-4bit: expected true or false, got 'maybe'" in err
    assert not Path("o").exists()
