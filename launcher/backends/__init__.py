"""Where runs execute: one module per backend, each implementing launcher.backends.base.Backend
over typed job records (launcher.jobrecord). Nothing outside this package asks which backend
a profile or a record names; it asks the backend."""

from __future__ import annotations

from launcher.backends.base import Backend, JobState, SubmitContext
from launcher.backends.local import LocalBackend
from launcher.backends.slurm import SlurmBackend
from launcher.envs import EnvProfile

BACKENDS: dict[str, Backend] = {"local": LocalBackend(), "slurm": SlurmBackend()}


def backend_for(env: EnvProfile) -> Backend:
    """The backend of an env profile (its executor)."""
    return BACKENDS[env.executor]


def backend_named(name: str) -> Backend:
    """The backend a job record names; an unknown name reads as local (a process of this
    machine, checked before it is signalled)."""
    return BACKENDS.get(name, BACKENDS["local"])


__all__ = ["BACKENDS", "Backend", "JobState", "SubmitContext", "backend_for", "backend_named"]
