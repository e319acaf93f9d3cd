"""Which run a config.yaml is: the hashes its run id may end in (core.config.config_hash), read
by the job (a config.yaml changed after the submit is refused) and by submit (a run submitted
before, under another slug or by an older medsweep, is found again)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from core.config import ConfigError, RunConfig, config_from_dict, config_hash, legacy_config_hash
from core.demo_data import demo_ref
from core.rundir import DEMO_DATA, RunDir


def submitted_hashes(run_path: Path, cfg: RunConfig, raw: Any = None) -> set[str]:
    """The hashes a run id may end in for this config.yaml: of the config, of it with a demo
    sweep's data paths as submitted (demo:train / demo:eval), and, from raw (the file as read),
    the hash that medsweep wrote before stop 38 (of every key the file holds)."""
    demo = run_path.parent / DEMO_DATA
    as_submitted = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, train_dataset_file=demo_ref(cfg.data.train_dataset_file, demo),
        eval_dataset_file=demo_ref(cfg.data.eval_dataset_file, demo)))
    out = {config_hash(cfg), config_hash(as_submitted)}
    if isinstance(raw, dict) and isinstance(raw.get("data"), dict):
        out.add(legacy_config_hash(raw))
        data = dict(raw["data"])
        for key in ("train_dataset_file", "eval_dataset_file"):
            if isinstance(data.get(key), str):
                data[key] = demo_ref(data[key], demo)
        out.add(legacy_config_hash({**raw, "data": data}))
    return out


def folder_hashes(rd: RunDir) -> set[str]:
    """The hashes of the run a folder's config.yaml describes; none where the file is missing,
    a link, or not a config this medsweep reads."""
    if rd.path.is_symlink() or rd.config.is_symlink() or not rd.config.is_file():
        return set()
    try:
        raw = yaml.safe_load(rd.config.read_text(encoding="utf-8"))
        return submitted_hashes(rd.path, config_from_dict(raw, str(rd.config)), raw)
    except (OSError, ValueError, RecursionError, ConfigError, yaml.YAMLError, AttributeError):
        return set()


CONFIG_SHA_ENV = "MEDSWEEP_CONFIG_SHA256"
"""A packed run's process gets its job's expected config digests here ({run id: sha256}),
from the pack's process (the private job call), never from the runs folder."""


def text_sha256(text: str | bytes) -> str:
    """The SHA-256 of a config.yaml's bytes: what submit wrote, what the job must read. The run
    id's 8 hex digits name a run; this, carried in the private job call, proves its config."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def training_part(cfg: RunConfig) -> dict[str, Any]:
    """The config less what only evaluation reads (the eval section and the eval file): runs
    that agree on it train the same model (jobs.train adds the data files' hashes)."""
    d = cfg.to_dict()
    d.pop("eval")
    d["data"].pop("eval_dataset_file", None)
    return d


def training_key(cfg: RunConfig) -> str:
    """A short hash of training_part: a sweep's runs with one key share one trained model."""
    text = json.dumps(training_part(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
