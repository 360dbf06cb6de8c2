"""The tools' command lines under the harness's error contract: a bad argument is one line naming
it and the fix (``error: ...`` on stderr, exit 2), never argparse's usage block nor a traceback.

:class:`ArgumentParser` turns argparse's own refusals (an unknown flag, ``--workers abc``, a
missing ``--run``, an invalid choice) into a :class:`ConfigError`; each tool then checks every
value's range in one function of its own (``parse_args`` of ``benchmark.speed``,
``benchmark.scale``, ``benchmark.report``, ``benchmark.recommend``) with the checks below, and
its ``main`` prints the one line.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from benchmark.core.errors import ConfigError


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors raise ConfigError (one line: argparse's message and ``see --help``)."""

    def error(self, message: str):
        raise ConfigError(f"{' '.join(message.split())}; see {self.prog} --help")


def whole(flag: str, value: int | None, minimum: int = 1) -> int | None:
    """``value`` (None: not given) if it is at least ``minimum``, else ConfigError naming ``flag``."""
    if value is not None and value < minimum:
        raise ConfigError(f"{flag} {value} must be an integer >= {minimum}")
    return value


def positive(flag: str, value: float | None) -> float | None:
    """``value`` (None: not given) if it is a finite number > 0 (``nan`` and ``inf`` are not), else ConfigError."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{flag} {value:g} must be a finite number > 0")
    return value


def writable_folder(flag: str, folder: Path) -> Path:
    """``folder`` if it can be written, or made where it is missing, else ConfigError naming it: a
    tool finds out before it measures, not after its first job. Nothing is left behind (a probe
    file, or the first missing folder, is made and removed)."""
    missing, existing = None, folder.absolute()
    while not existing.exists() and existing != existing.parent:
        missing, existing = existing, existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a folder")
        if missing is not None:
            missing.mkdir()
            missing.rmdir()
        else:
            probe = existing / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{flag} {folder} is not a writable folder ({existing}: {exc.strerror or exc}); pass a "
                          f"folder that can be written") from None
    return folder
