"""The launcher's user-facing errors (each a core.errors.UserError: printed once by the CLI)."""

from __future__ import annotations

from core.errors import UserError


class SubmitError(UserError):
    """Submission refused or failed; nothing of this call stays submitted."""


class SearchStateError(UserError):
    """search.json or a budget.json that cannot be read back; the message names the fix."""
