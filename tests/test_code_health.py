"""Structure that keeps the code easy to change (issue 18): one kind of user error, caught once
per command line; one home for run-folder names."""

import importlib
import re
from pathlib import Path

import pytest

from core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
ERRORS = ["core.config:ConfigError", "core.gguf:GGUFError", "core.data:DataError",
          "launcher.yamlio:YamlError", "launcher.plan:PlanError", "launcher.submit:SubmitError",
          "jobs.export:ExportError", "jobs.evaluate:EvalError", "jobs.train:TrainError"]


@pytest.mark.parametrize("spec", ERRORS)
def test_every_user_error_is_a_user_error(spec):
    module, name = spec.split(":")
    assert issubclass(getattr(importlib.import_module(module), name), UserError)


def test_user_errors_are_printed_in_one_place_per_entry_point():
    for path in sorted((ROOT / "launcher").rglob("*.py")):
        text = path.read_text()
        if path.name != "cli.py":
            assert "except UserError" not in text, path
        assert len(re.findall(r"print\(f?\"error: \{exc\}", text)) <= (path.name == "cli.py"), path
    for name in ("train", "evaluate", "score", "export"):
        text = (ROOT / "jobs" / f"{name}.py").read_text()
        assert text.count("except UserError") == 1, name


def test_run_folder_names_are_spelled_only_in_core_rundir():
    names = ["sweep.yaml", "config.yaml", "job.json", "progress.json", "error.json",
             "performance.json", "true_pred_entities.json", "medsweep_train.json",
             "medsweep_train_started.json", "micro_batch.json", "_submitit", "demo-data",
             ".submit.lock"]
    for folder in ("launcher", "jobs", "core"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "rundir.py":
                continue
            for n in names:
                # in a message a name may appear; as a path literal it may not
                assert f'"{n}"' not in path.read_text(), (path, n)


def test_every_flag_named_in_validate_is_a_real_flag():
    """validate() names flags in its messages; a renamed field must not leave a stale name."""
    import inspect

    from core import config

    flags = {spec.flag for spec in config.SPECS.values()} | {
        a for spec in config.SPECS.values() for a in spec.aliases}
    # The whole module: validate() and the checks it is made of.
    named = set(re.findall(r"--[a-z][a-z0-9-]+", inspect.getsource(config))) - {"--help"}
    assert named and named <= flags, sorted(named - flags)


def test_a_sweep_value_is_coerced_once(tmp_path, monkeypatch):
    """parse_sweep types each value where it reads it; the combinations are only validated."""
    from core import config
    from core.demo_data import write_demo_data
    from launcher import sweep

    train, dev = write_demo_data(tmp_path / "d", n_train=4, n_dev=2)
    calls = []
    real = sweep.coerce
    monkeypatch.setattr(sweep, "coerce", lambda spec, v: calls.append(v) or real(spec, v))
    monkeypatch.setattr(config, "coerce", lambda *a: pytest.fail("coerced a second time"))
    doc = {"name": "t", "env": "local", "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.max_seq_length": 512},
           "grid": {"model.name_or_path": ["scratch:llama-tiny", "scratch:gemma-tiny"],
                    "peft.rank": [8, 16, 32]}}
    s = sweep.parse_sweep(doc, tmp_path / "s.yaml")
    assert len(s.runs) == 6
    assert len(calls) == 1 + 2 + 3  # base + each grid value, not once per run
