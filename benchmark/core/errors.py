"""One exception type for every bad input: its message is the one-line error a user sees.

Each message names the thing that is wrong and the fix, e.g.
``data file ml-100k/u.data: sha256 mismatch (expected 0641..., found 9a3c...); delete it and rerun with data.download=true``.
"""


class GroupbenchError(Exception):
    """A user-facing error: bad data, bad config, NaN loss, unreachable tracking server."""


class DataError(GroupbenchError):
    """Missing, corrupt or malformed dataset files."""


class ConfigError(GroupbenchError):
    """An invalid configuration value, refused before any training."""


class TrainingError(GroupbenchError):
    """Training went wrong (NaN/inf loss, divergence)."""


class TrackingError(GroupbenchError):
    """The tracking store cannot be reached or written."""


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds: the config validators' one-liner."""
    if not condition:
        raise ConfigError(message)


def one_line(message: object) -> str:
    """A message as one line (whitespace runs, newlines included, become one space): pandas and
    sqlite errors may span lines, and the error line and the ``error`` tag must hold all of it."""
    return " ".join(str(message).split())
