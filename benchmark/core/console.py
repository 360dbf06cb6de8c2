"""What the console shows (README, "Output"): a pipe gets the results, a person gets the logs.

* Results (a run's headline metrics, a sweep's counts, a tool's tables) and the ``next:`` commands go
  to **stdout** (:func:`result`); logs, progress bars and the one-line errors go to **stderr**. So
  ``python -m benchmark model=svd | tail -3`` shows the last results and ``2>/dev/null`` the results alone.
* Progress bars (tqdm) only when stderr is a terminal (:func:`progress`): redirected to a file, a bar's
  carriage-return updates would become one line of thousands of characters.
* A sweep job is one line (``[3/12] FINISHED svd ml100k seed=0 rmse=0.9316 1.2s``) unless verbose:
  ``-v`` (or ``--verbose``, or the override ``verbose=true``) also shows each job's own log lines and
  the launcher's, and the harness's DEBUG lines (a failed job's traceback) in runs and sweeps.
  Warnings and errors are always shown.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, Sequence

OWN_LOGGERS = ("benchmark", "models", "baselines")  # the harness's loggers
# Hydra's launchers log "Launching N jobs" and "#i : overrides" per job; the plugins' (joblib, submitit,
# the Ray launcher) live under hydra_plugins
LAUNCHER_LOGGERS = ("hydra._internal.core_plugins.basic_launcher", "hydra_plugins")
VERBOSE_FLAGS = ("-v", "--verbose")


def expand_flags(argv: Sequence[str]) -> list[str]:
    """``-v`` / ``--verbose`` -> the override ``verbose=true`` (Hydra's own parser does not know the flag)."""
    return ["verbose=true" if arg in VERBOSE_FLAGS else arg for arg in argv]


def result(*lines: str) -> None:
    """Lines of a result (or of ``next:``) on stdout, flushed so they interleave with stderr in order."""
    print("\n".join(lines), file=sys.stdout, flush=True)


def progress(wanted: bool = True) -> bool:
    """Whether to draw a progress bar (tqdm, on stderr): ``wanted`` and stderr is a terminal."""
    stream = sys.stderr
    return bool(wanted) and hasattr(stream, "isatty") and stream.isatty()


def set_verbosity(verbose: bool) -> None:
    """The harness's loggers at DEBUG when verbose, else inheriting the root's level (INFO); the
    launchers' per-job lines (``#i : overrides``) only when verbose."""
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.NOTSET)
    for name in LAUNCHER_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


@contextlib.contextmanager
def quiet_job(verbose: bool) -> Iterator[None]:
    """Inside a sweep job: the harness's INFO lines (dataset, epochs) hidden unless verbose; warnings
    and errors still shown. The levels are restored afterwards (the sweep's own lines are INFO)."""
    loggers = [logging.getLogger(name) for name in OWN_LOGGERS]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, before):
            logger.setLevel(level)
