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
          "jobs.export:ExportError", "jobs.evaluate:EvalError", "jobs.train:TrainError",
          "launcher.errors:SearchStateError", "jobs.pack:PackError"]


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


def _import_graph() -> dict[str, set[str]]:
    """Module -> the medsweep modules it imports, at the top or inside a function."""
    import ast

    mods = {}
    for pkg in ("core", "jobs", "launcher"):
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[m] |= {n for n in names if n in mods and n != m}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules on it, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_circle_in_core_jobs_or_launcher():
    graph = _import_graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_launcher_and_core_never_import_torch():
    for pkg in ("launcher", "core"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text()
            assert not re.search(r"^\s*(import torch|from torch)", text, re.M), path


def test_submit_is_plan_lock_tasks_backend_and_only_backends_ask_which_backend():
    assert len((ROOT / "launcher" / "submit.py").read_text().splitlines()) < 300
    backends = ROOT / "launcher" / "backends"
    for path in sorted((ROOT / "launcher").rglob("*.py")):
        if path.parent == backends or path.name == "jobrecord.py":  # the record's one reader
            continue
        text = path.read_text()
        for pattern in (r'cluster"?\)? *[!=]= *"slurm"', r'executor *[!=]= *"(slurm|local)"',
                        r'job\w*\.get\("(pack|trained_in|cluster)"\)'):
            if path.name == "envs.py" and "executor" in pattern:
                continue  # the profile's own validation of its executor key
            assert not re.search(pattern, text), (path, pattern)
