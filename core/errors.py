"""One kind of error for "the user can fix this", caught once per command line.

Every module raises its own subclass (ConfigError, DataError, YamlError, ...) so a reader sees
where a problem was found; ``launcher.cli.main`` and each ``jobs.*`` main catch only UserError,
print it as ``error: <message>`` on stderr and exit 2. The message is complete: the file, the key
or record, and the fix; one line per problem.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input or a bad state the user can fix; the message says what and how."""
