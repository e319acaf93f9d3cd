"""The examples in docstrings are tests too: each module's doctests run in the fast tier."""

import doctest
import importlib

import pytest

MODULES = ["core.config", "core.vram", "core.metrics", "core.families", "core.batching", "core.parsing",
           "core.gguf", "core.rundir", "core.grounding", "core.textnorm", "jobs.train", "jobs.mps",
           "jobs.pack", "jobs.checkpointing", "jobs.steptime", "launcher.gpus", "launcher.envs",
           "launcher.leaderboard", "jobs.modeling", "core.search", "launcher.commands.submit", "jobs.evaluate",
           "launcher.plan", "launcher.sharing", "jobs.unsloth_import", "core.workqueue", "core.errors", "jobs.microbatch",
           "jobs.answer_head", "launcher.svgchart", "launcher.ensemble", "core.ensemble"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples; take it off the list"
    assert result.failed == 0


def test_every_module_with_examples_is_listed():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    with_examples = {f"{d}.{p.stem}" for d in ("core", "jobs", "launcher")
                     for p in (root / d).glob("*.py")
                     if ">>> " in p.read_text()}
    assert with_examples <= set(MODULES), sorted(with_examples - set(MODULES))
