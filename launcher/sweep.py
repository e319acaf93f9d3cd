"""Sweep files: validation and expansion into runs with stable ids.

    name: medical
    env: slurm                      # envs/<name>.yaml or a path; --env overrides
    data: {train: data/train.json, eval: data/dev.json}    # or {demo: true}
    base: {model.max_seq_length: 2048, train.num_epochs: 3}
    grid: {model.name_or_path: [...], peft.rank: [8, 16]}  # Cartesian product
    paired: [{peft.rank: [8, 16], peft.lora_alpha: [16, 32]}]  # values that vary together
    seeds: [1, 2, 3]                # train.seed, crossed with everything else
    ensemble: {top: 3}              # when the sweep ends here, its 3 best runs vote

Every problem is reported at once, each naming the file and the key.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import (
    REFERENCE,
    SPECS,
    ConfigError,
    RunConfig,
    checked,
    coerce,
    config_hash,
    short,
)
from core.data import DataError, read_once
from core.demo_data import DEMO_EVAL, DEMO_TRAIN
from core.ensemble import EnsembleSpec, parse_ensemble
from core.errors import unknown_key
from core.search import BUDGET_KEYS, SearchSpec, parse_search
from launcher.yamlio import YamlError, load_yaml_mapping

SWEEP_KEYS = ("name", "description", "env", "data", "base", "grid", "paired", "seeds",
              "max_runs", "search", "ensemble")
MAX_RUNS = 10_000
"""Default cap on the runs one sweep may expand to (the sweep's max_runs raises it)."""
DATA_KEYS = ("train", "eval", "validation", "demo")
_ABBREV = {
    "model.name_or_path": "", "peft.rank": "r", "peft.lora_alpha": "a", "train.num_epochs": "e",
    "train.learning_rate": "lr", "train.seed": "s", "peft.lora_dropout": "do",
    "train.per_device_batch_size": "bs", "model.load_in_4bit": "4bit",
    "model.load_in_8bit": "8bit", "model.full_finetuning": "full",
    "model.max_seq_length": "len", "train.gradient_accumulation_steps": "ga",
    "model.compile": "compile-", "data.context_sentences": "ctx", "data.context_after": "after",
    "eval.max_item_repeats": "rep", "eval.unique_entities": "eval-unique",
}

_FALSE_NAME = {"model.full_finetuning": "lora"}


@dataclass(frozen=True)
class Run:
    run_id: str
    config: RunConfig
    varied: dict[str, Any]


@dataclass
class Sweep:
    name: str
    path: Path
    env: str
    runs: list[Run]
    varied_keys: list[str]
    demo_data: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    search: SearchSpec | None = None
    """The adaptive search (core.search), None for the full grid."""
    ensemble: EnsembleSpec | None = None
    """The vote built when the sweep ends here (core.ensemble), None for none."""


_SPLIT_NAMES = {"train", "dev", "test", "eval", "valid", "validation", "val"}


def _slug_value(key: str, value: Any) -> str:
    if key.startswith("data.") and key.endswith("_dataset_file"):
        # A corpus is named by its folder where the file is a split (bc5cdr/train.json).
        p = Path(str(value))
        return p.parent.name if p.stem.lower() in _SPLIT_NAMES and p.parent.name else p.stem
    if key == "model.name_or_path":
        v = str(value).lower().rstrip("/").rsplit("/", 1)[-1].replace("scratch:", "")
        v = re.sub(r"\.gguf$", "", v.replace("pypi:", ""))
        v = re.sub(r"[-_](instruct|it)$", "", v)
    elif isinstance(value, bool):
        # A varied switch names both sides: compile / no-compile, full / lora.
        name = _ABBREV.get(key) or key.rsplit(".", 1)[-1].replace("_", "-")
        return name if value else _FALSE_NAME.get(key, f"no-{name}")
    else:
        v = f"{value:g}" if isinstance(value, float) else str(value)
    prefix = _ABBREV.get(key, key.rsplit(".", 1)[-1].replace("_", "")[:6] + "-")
    return prefix + v


_KEY_ORDER = {k: i for i, k in enumerate(SPECS)}


def run_id(cfg: RunConfig, varied: dict[str, Any]) -> str:
    """A readable slug of the varied values, in the config's own key order (not the YAML's),
    then the hash of the resolved config, which alone identifies the run."""
    ordered = sorted(varied.items(), key=lambda kv: _KEY_ORDER.get(kv[0], len(_KEY_ORDER)))
    parts = list(dict.fromkeys(_slug_value(k, v) for k, v in ordered))  # a corpus named once
    slug = re.sub(r"[^a-z0-9.+-]+", "-", "-".join(p for p in parts if p).lower()).strip("-.")
    slug = re.sub(r"-{2,}", "-", slug)[:80]
    return f"{slug}-{config_hash(cfg)}" if slug else f"run-{config_hash(cfg)}"


def flatten_keys(base: Any, where: str, errors: list[str]) -> dict[str, Any]:
    """base may use dotted keys or nested sections; both give dotted keys."""
    if not isinstance(base, dict):
        errors.append(f"{where}: expected a mapping of config keys")
        return {}
    flat: dict[str, Any] = {}
    for k, v in base.items():
        if isinstance(v, dict) and "." not in str(k):
            for kk, vv in v.items():
                flat[f"{k}.{kk}"] = vv
        else:
            flat[str(k)] = v
    return flat


def _typed(key: str, value: Any, where: str, errors: list[str]) -> Any:
    spec = SPECS.get(key)
    if spec is None:
        errors.append(f"{where}: {unknown_key(key, SPECS, REFERENCE)}")
        return None
    if spec.secret:
        errors.append(f"{where}: {key} must not be written in a sweep file; export HF_TOKEN in "
                      "the environment instead")
        return None
    try:
        return coerce(spec, value)
    except ValueError as exc:
        errors.append(f"{where}: {key}: {exc}")
        return None


def _axis(values: Any, where: str, key: str, errors: list[str], *,
          unique: bool = True) -> list[Any]:
    if not isinstance(values, list):
        errors.append(f"{where}: {key}: expected a list of values, got {short(values)}")
        return []
    if not values:
        errors.append(f"{where}: {key}: empty list; give at least one value or remove the key")
        return []
    if key not in SPECS:  # said once, and its values are not compared
        errors.append(f"{where}: {unknown_key(key, SPECS, REFERENCE)}")
        return [None] * len(values)
    typed = [_typed(key, v, where, errors) for v in values]
    if unique and len({json.dumps(t, default=str) for t in typed}) != len(typed):
        errors.append(f"{where}: {key}: repeated values {short(values)}")
    return typed


def _data_section(data_sec: Any, where: str, base_dir: Path | None,
                  errors: list[str]) -> tuple[dict[str, Any], bool]:
    """The sweep's data files as config values (absolute paths), and whether it is a demo.
    Relative paths are relative to base_dir, else to the directory the command runs in."""
    fixed: dict[str, Any] = {}
    demo = False
    if not isinstance(data_sec, dict):
        errors.append(f"{where}: data: required mapping with train and eval files "
                      "(or demo: true)")
    else:
        for k in data_sec:
            if k not in DATA_KEYS:
                errors.append(f"{where}: data: unknown key {k!r}; valid keys: "
                              f"{', '.join(DATA_KEYS)}")
        demo_value = data_sec.get("demo", False)
        if not isinstance(demo_value, bool):
            errors.append(f"{where}: data.demo: expected true or false, got {short(demo_value)}"[:300])
            demo_value = True  # reported once: no follow-on "data.train required" lines
        demo = demo_value
        wanted = [] if demo else [("train", "data.train_dataset_file"),
                                  ("eval", "data.eval_dataset_file")]
        if data_sec.get("validation") is not None:  # optional: the loss per epoch on a dev split
            wanted.append(("validation", "data.validation_dataset_file"))
        for k, cfg_key in wanted:
            v = data_sec.get(k)
            if not isinstance(v, str) or not v:
                errors.append(f"{where}: data.{k}: required path to a JSON dataset")
                continue
            p = Path(_absolute(v, base_dir))
            if not p.is_file():
                errors.append(f"{where}: data.{k}: {p} does not exist")
            fixed[cfg_key] = str(p)
    return fixed, demo


DATASET_KEYS = ("data.train_dataset_file", "data.eval_dataset_file",
                "data.validation_dataset_file")


def _absolute(value: str, base_dir: Path | None) -> str:
    """A dataset path as the job will read it: absolute, relative ones taken from base_dir
    (else the directory the command runs in), so a job started elsewhere finds the file."""
    if not value or value.startswith("demo:"):
        return value
    p = Path(value).expanduser()
    return str(((base_dir or Path.cwd()) / p if not p.is_absolute() else p).resolve())


def _absolute_paths(values: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """values with every dataset file (set in base, grid or paired) made absolute."""
    return {k: _absolute(v, base_dir) if k in DATASET_KEYS and isinstance(v, str) else v
            for k, v in values.items()}


def _expand(fixed: dict[str, Any], axes: list[list[dict[str, Any]]], demo: bool,
            where: str) -> list[Run]:
    """One validated config per combination of the axes (ids come later); every problem of
    every combination, and of every data file's content, is reported at once."""
    runs: list[Run] = []
    combo_errors: dict[str, None] = {}
    data_files: dict[str, tuple[str, int, int]] = {}
    for combo in itertools.product(*axes) if axes else [()]:
        values = dict(fixed)
        varied: dict[str, Any] = {}
        for part in combo:
            values.update(part)
            varied.update(part)
        if demo:
            values.setdefault("data.train_dataset_file", DEMO_TRAIN)
            values.setdefault("data.eval_dataset_file", DEMO_EVAL)
        try:
            # Values were coerced once, by _typed: only the combination is left to check.
            cfg = checked(RunConfig().replace({k: v for k, v in values.items()
                                               if v is not None}))
        except ConfigError as exc:
            label = ", ".join(f"{k}={v}" for k, v in varied.items()) or "the base config"
            for line in str(exc).splitlines():
                combo_errors[f"{where}: run with {label}: {line}"] = None
            continue
        for key in DATASET_KEYS:
            value = str(getattr(cfg.data, key.split(".", 1)[1]))
            if not value and key == "data.validation_dataset_file":
                continue
            f = Path(value).expanduser()
            if not value.startswith("demo:") and not f.is_file():
                label = ", ".join(f"{k}={v}" for k, v in varied.items()) or "the base config"
                what = "is a folder" if f.is_dir() else (
                    "is not a regular file" if f.exists() else "does not exist")
                combo_errors[f"{where}: run with {label}: {key}: {f} {what}; give a JSON "
                             "dataset file"] = None
            elif not value.startswith("demo:"):
                first_key, before, after = data_files.get(str(f), (key, 0, 0))
                data_files[str(f)] = (first_key, max(before, cfg.data.context_sentences),
                                      max(after, cfg.data.context_after))
        runs.append(Run("", cfg, varied))
    # The content too, once per file: a symlink to a binary file or a list of strings would
    # otherwise be found by the job, after the submission and the queue wait.
    for data_file, (key, before, after) in data_files.items():
        try:
            read_once(data_file, before, after)
        except DataError as exc:
            combo_errors[f"{where}: {key}: {exc}"] = None
    if combo_errors:
        raise YamlError("\n".join(combo_errors))
    return runs


def _header(data: dict[str, Any], where: str, errors: list[str]) -> tuple[Any, Any]:
    """The sweep's top-level keys checked, and its name and env profile."""
    for k in data:
        if k not in SWEEP_KEYS:
            errors.append(f"{where}: unknown key {k!r}; valid keys: {', '.join(SWEEP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        errors.append(f"{where}: name: required, 1 to 64 letters, digits, '.', '_' or '-', "
                      f"starting with a letter or digit (got {short(name)})")
    env = data.get("env", "local")
    if not isinstance(env, str):
        errors.append(f"{where}: env: expected a profile name such as local or slurm")
    return name, env


def _base(data: dict[str, Any], where: str, errors: list[str]) -> dict[str, Any]:
    """The `base` block: one typed value per key, the same in every run."""
    base = flatten_keys(data.get("base", {}) or {}, f"{where}: base", errors)
    fixed: dict[str, Any] = {}
    for k, v in base.items():
        t = _typed(k, v, f"{where}: base", errors)
        if t is not None or (k in SPECS and v is None):
            fixed[k] = t
    return fixed


def _grid_axes(data: dict[str, Any], where: str,
               errors: list[str]) -> list[tuple[list[str], list[dict[str, Any]]]]:
    """The `grid` block: one axis per key, each value a run's setting."""
    grid = data.get("grid", {}) or {}
    if not isinstance(grid, dict):
        errors.append(f"{where}: grid: expected a mapping of key: [values]")
        return []
    axes = []
    for k, values in flatten_keys(grid, f"{where}: grid", errors).items():
        vals = _axis(values, f"{where}: grid", k, errors)
        if vals:
            axes.append(([k], [{k: v} for v in vals]))
    return axes


def _paired_axes(data: dict[str, Any], where: str,
                 errors: list[str]) -> list[tuple[list[str], list[dict[str, Any]]]]:
    """The `paired` block: one axis per group, whose keys take their i-th values together."""
    paired = data.get("paired", []) or []
    if not isinstance(paired, list):
        errors.append(f"{where}: paired: expected a list of groups (key: [values] mappings)")
        return []
    axes = []
    for gi, group in enumerate(paired):
        gw = f"{where}: paired[{gi}]"
        if not isinstance(group, dict) or not group:
            errors.append(f"{gw}: expected a mapping of key: [values]")
            continue
        # A key may repeat a value inside a group ([false, true, true] beside [false, false,
        # true]); only a whole repeated combination is refused.
        cols = {k: _axis(v, gw, k, errors, unique=False)
                for k, v in flatten_keys(group, gw, errors).items()}
        lens = {len(v) for v in cols.values()}
        if len(lens) != 1:
            errors.append(f"{gw}: lists must have equal lengths, got "
                          + ", ".join(f"{k}: {len(v)}" for k, v in cols.items()))
            continue
        n = lens.pop()
        rows = [{k: cols[k][i] for k in cols} for i in range(n)]
        seen = [json.dumps(r, default=str, sort_keys=True) for r in rows]
        if len(set(seen)) != len(seen):
            repeated = next(i for i, r in enumerate(seen) if seen.index(r) != i)
            errors.append(f"{gw}: combination {repeated + 1} repeats an earlier one "
                          f"({short(rows[repeated])}); give each combination once")
        elif n:
            axes.append((list(cols), rows))
    return axes


def _seed_axes(data: dict[str, Any], where: str,
               errors: list[str]) -> list[tuple[list[str], list[dict[str, Any]]]]:
    """The `seeds` list: one axis of train.seed values."""
    seeds = data.get("seeds")
    if seeds is None:
        return []
    vals = _axis(seeds, f"{where}: seeds", "train.seed", errors)
    if vals and all(v is not None for v in vals):
        return [(["train.seed"], [{"train.seed": v} for v in vals])]
    return []


def _check_search(data: dict[str, Any], where: str, fixed: dict[str, Any],
                  varied_keys: list[str], errors: list[str]) -> SearchSpec | None:
    """The `search` block, if any, checked against the rest; every run is then configured
    for the largest budget, so that its schedule is a straight run's."""
    search = parse_search(data.get("search"), where, errors)
    if search is None:
        return None
    for key in BUDGET_KEYS:
        if key in varied_keys or key in fixed:
            errors.append(f"{where}: {key} is the search's budget (search.rungs sets "
                          "it): remove it from base, grid, paired and seeds")
    if search.metric == "val_loss" and not (isinstance(data.get("data"), dict)
                                            and data["data"].get("validation")):
        errors.append(f"{where}: search.metric: val_loss needs data.validation (a dev "
                      "file for the loss per epoch); add it or rank by dev_exact_f1")
    if "train.max_steps" in varied_keys or (fixed.get("train.max_steps") or -1) > 0:
        errors.append(f"{where}: train.max_steps: a search budgets epochs (search.rungs); "
                      "remove train.max_steps")
    fixed[BUDGET_KEYS[0]] = search.rungs[-1]
    return search


def _check_size(data: dict[str, Any], where: str, axes: list[list[dict[str, Any]]],
                errors: list[str]) -> None:
    """At most max_runs runs (default MAX_RUNS), so that a typo in a grid is not a flood."""
    cap = data.get("max_runs", MAX_RUNS)
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        errors.append(f"{where}: max_runs: expected a positive integer, got {short(cap)}")
        cap = MAX_RUNS
    total = math.prod(len(a) for a in axes) if axes else 1
    if total > cap:
        errors.append(f"{where}: the grid expands to {total:,} runs, more than max_runs "
                      f"{cap:,}; shrink the grid or set max_runs: {total} at the top of the sweep")


def _named(runs: list[Run], varied_keys: list[str]) -> list[Run]:
    """Each run with its id. Only keys that take more than one value name runs: a one-value
    grid is the same config as that value in base, and must get the same id."""
    moving = {k for k in varied_keys
              if len({json.dumps(r.varied.get(k), sort_keys=True, default=str)
                      for r in runs}) > 1}
    return [Run(run_id(r.config, {k: v for k, v in r.varied.items() if k in moving}
                       or {"model.name_or_path": r.config.model.name_or_path}),
                r.config, r.varied) for r in runs]


def parse_sweep(data: dict[str, Any], path: Path, base_dir: Path | None = None) -> Sweep:
    """The sweep file's runs, every problem of the file reported at once (YamlError)."""
    where = str(path)
    errors: list[str] = []
    name, env = _header(data, where, errors)
    fixed, demo = _data_section(data.get("data"), where, base_dir, errors)
    base = _base(data, where, errors)
    fixed.update(base)
    named_axes = (_grid_axes(data, where, errors) + _paired_axes(data, where, errors)
                  + _seed_axes(data, where, errors))
    axes = [rows for _, rows in named_axes]
    varied_keys = [k for keys, _ in named_axes for k in keys]
    for k in sorted(k for k in set(varied_keys) if varied_keys.count(k) > 1 or k in base):
        errors.append(f"{where}: {k} is set in more than one of base, grid, paired, seeds; "
                      "set it in one place")
    search = _check_search(data, where, fixed, varied_keys, errors)
    ensemble = parse_ensemble(data.get("ensemble"), where, errors)
    if "model.name_or_path" not in fixed and "model.name_or_path" not in varied_keys:
        errors.append(f"{where}: model.name_or_path: set it in base or grid")
    _check_size(data, where, axes, errors)
    if errors:
        raise YamlError("\n".join(dict.fromkeys(errors)))
    runs = _expand(_absolute_paths(fixed, base_dir),
                   [[_absolute_paths(part, base_dir) for part in axis] for axis in axes],
                   demo, where)
    return Sweep(name=str(name), path=path, env=str(env), runs=_named(runs, varied_keys),
                 varied_keys=varied_keys, demo_data=demo, raw=data, search=search,
                 ensemble=ensemble)


def load_sweep(path: str | Path) -> Sweep:
    p = Path(path)
    return parse_sweep(load_yaml_mapping(p), p)
