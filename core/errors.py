"""One kind of error for "the user can fix this", caught once per command line.

Every module raises its own subclass (ConfigError, DataError, YamlError, ...) so a reader sees
where a problem was found; ``launcher.cli.main`` and each ``jobs.*`` main catch only UserError,
print it as ``error: <message>`` on stderr and exit 2. The message is complete: the file, the key
or record, and the fix; one line per problem.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(ValueError):
    """Bad input or a bad state the user can fix; the message says what and how."""


def unknown_key(key: object, valid: Iterable[str], where: str = "") -> str:
    """The one-line message for a key that is not one of valid: the nearest valid keys (at
    most three), not all of them.

    >>> unknown_key("train.learnign_rate", ["train.learning_rate", "train.num_epochs"])
    "unknown key 'train.learnign_rate'; did you mean train.learning_rate?"
    >>> unknown_key("zzz", list("abcdefghij"), "docs/reference.md")
    "unknown key 'zzz'; valid keys: a, b, c, ... (docs/reference.md lists every key)"
    """
    import difflib

    names = list(valid)
    near = difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)
    if near:
        return f"unknown key {key!r}; did you mean {' or '.join(near)}?"
    shown = names if len(names) <= 8 else names[:3]
    more = ", ..." if len(shown) < len(names) else ""
    where = f" ({where} lists every key)" if where else ""
    return f"unknown key {key!r}; valid keys: {', '.join(shown)}{more}{where}"
