"""Unsloth's import, without the TRL trainers medsweep never uses.

On a GPU, ``import unsloth`` rewrites every TRL trainer (``PatchFastRL`` ->
``patch_trl_rl_trainers``): GRPO, DPO, KTO, RLOO, the reward trainer and seven experimental
ones, each generated from TRL's source and executed. On this project's CPU machine that loop
takes about 6 s, the SFT trainer 0.3 s of it (``benchmarks/RESULTS.md``, "Start-up"). medsweep
trains with ``SFTTrainer`` alone, so the import hook here lets Unsloth rewrite that one only. The
SFT trainer is rewritten by Unsloth's own function, exactly as before.

Where an Unsloth version lacks the two functions this relies on, nothing is changed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Iterator, Sequence

RL_MODULE = "unsloth.models.rl"
KEPT_TRAINERS = ("sft_trainer",)


def rewrite_only(rl: ModuleType, trainers: Sequence[str] = KEPT_TRAINERS) -> bool:
    """Make ``rl.patch_trl_rl_trainers`` rewrite only ``trainers``; False where this Unsloth
    does not have the per-trainer function, and then the module is left as it is.

    >>> rl = ModuleType("rl"); done = []
    >>> rl._patch_trl_rl_trainers = done.append
    >>> rl.patch_trl_rl_trainers = lambda: done.append("every trainer")
    >>> rewrite_only(rl), rl.patch_trl_rl_trainers(), done
    (True, None, ['sft_trainer'])
    >>> rewrite_only(ModuleType("older"))
    False
    """
    one = getattr(rl, "_patch_trl_rl_trainers", None)
    if not callable(one) or not callable(getattr(rl, "patch_trl_rl_trainers", None)):
        return False

    def patch_trl_rl_trainers() -> None:
        for trainer in trainers:
            one(trainer)

    patch_trl_rl_trainers.medsweep_trimmed = tuple(trainers)  # type: ignore[attr-defined]
    rl.patch_trl_rl_trainers = patch_trl_rl_trainers  # type: ignore[attr-defined]
    return True


class _Loader(importlib.abc.Loader):
    """The module's own loader; once the module has run, ``rewrite_only`` is applied to it
    (before anything else imports it: ``unsloth.models.llama`` calls ``PatchFastRL`` right
    after importing it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        rewrite_only(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ... for inspect
        return getattr(self.inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != RL_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


@contextmanager
def sft_trainer_only() -> Iterator[None]:
    """While this is open, an import of Unsloth rewrites the SFT trainer alone."""
    finder = _Finder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
