"""The training job's user-facing error (a leaf: every module of the training job may raise it)."""

from __future__ import annotations

from core.errors import UserError


class TrainError(UserError):
    """A training run that cannot proceed; the message says what to change."""
