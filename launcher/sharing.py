"""Runs that differ only in what evaluation reads train once.

A sweep over decoding or scoring settings (``eval.constrained``, ``eval.max_item_repeats``,
``eval.max_new_tokens``, a second eval file, ...) would otherwise train the same model once per
value. Runs with one training key (core.identity.training_key: the config less its eval section
and eval file) share one trained model:

* the first of them to submit trains, in its own job, and that job then evaluates the others
  (its *followers*) with the model it trained: ``followers.json`` in its folder names them;
* a run whose key matches a run of the sweep that has trained already is submitted alone and
  only evaluates that model;
* each keeps its own folder, config, progress, results and ``error.json``; its
  ``shared_training.json`` names the run whose model it is evaluated with, and the job checks
  that model's recorded training identity against the run's own before using it.

Adaptive sweeps (``search:``) do not share: their runs train to rungs of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.rundir import TRAIN_SUMMARY, RunDir


def has_trained_model(rd: RunDir) -> bool:
    """Whether the run folder holds a finished trained model (its training summary)."""
    summary = rd.adapter / TRAIN_SUMMARY
    return not rd.adapter.is_symlink() and not summary.is_symlink() and summary.is_file()


def share_training(todo: Sequence[tuple[str, str]], trained: Sequence[tuple[str, str]]
                   ) -> dict[str, str]:
    """The model each run to submit is evaluated with, where it trains none of its own.

    todo: (run id, training key) of the runs to submit, in sweep order; trained: those of the
    sweep's other runs whose model is trained. Returns {run id: the run whose model it uses}:
    a trained run of its key, else the first run of its key to submit.

    >>> share_training([("a", "k1"), ("b", "k1"), ("c", "k2"), ("d", "k1")], [])
    {'b': 'a', 'd': 'a'}
    >>> share_training([("b", "k1"), ("c", "k2")], [("a", "k1")])
    {'b': 'a'}
    >>> share_training([("a", "k1"), ("c", "k2")], [])
    {}
    """
    owner: dict[str, str] = {}
    for run_id, key in trained:
        owner.setdefault(key, run_id)
    out: dict[str, str] = {}
    for run_id, key in todo:
        if key in owner:
            out[run_id] = owner[key]
        else:
            owner[key] = run_id
    return out
