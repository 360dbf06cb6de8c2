"""Before Hydra runs a single job: a config that does not compose is one line, exit 2, a FAILED run.

Hydra reports a bad config-group choice (``model=foo``, ``dataset=../../etc``) or a malformed
override itself, with exit 1 and, under HYDRA_FULL_ERROR, a traceback, before any of our code
runs. So ``python -m benchmark`` first composes the config with Hydra's compose API; if that
fails, the first line of Hydra's message becomes the one error line, the run is recorded FAILED
in the tracking store named on the command line (or the default one), and the exit code is 2.
Sweeps (``-m``, ``+sweep=...``) compose each job in the sweeper, which reports the same way.
"""

from __future__ import annotations

import logging
import os
import re

from benchmark.core.config import CONF
from benchmark.core.errors import ConfigError, one_line
from benchmark.tracking.tracker import Tracker

log = logging.getLogger("benchmark")

_SAFE_GROUP_VALUE = re.compile(r"^[A-Za-z0-9_.-]+$")


def _is_single_run(argv: list[str]) -> bool:
    return not any(a.startswith("-") or a.startswith(("+sweep=", "sweep=", "hydra.mode", "hydra/")) for a in argv)


def _override_value(argv: list[str], key: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if a.lstrip("+~").split("=", 1)[0] == key and "=" in a]
    return values[-1].strip("'\"") if values else None


def compose_error(argv: list[str]) -> str | None:
    """None when the command line composes; else the one-line reason and fix."""
    from hydra import compose, initialize_config_dir

    for arg in argv:  # a group choice is a file name under conf/<group>/, never a path
        key, _, value = arg.lstrip("+~").partition("=")
        if "/" not in key and "." not in key and (CONF / key).is_dir() and value and \
                (not _SAFE_GROUP_VALUE.match(value) or not (CONF / key / f"{value}.yaml").is_file()):
            choices = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
            return f"{key}={value} is not a {key} name; use one of {choices}"
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            compose(config_name="config", overrides=list(argv))
    except Exception as exc:
        message = one_line(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return f"the command line does not compose a config ({message}); fix the override (see README.md)"
    return None


def record_failure(uri: str | None, experiment: str | None, message: str, overrides: list[str],
                   name: str = "invalid config") -> None:
    """A FAILED run holding ``message`` in the given store and experiment (best effort: a store that
    cannot be opened has already been reported by its own error)."""

    try:
        tracker = Tracker(uri, experiment or "groupbench", base_dir=os.environ.get("GROUPBENCH_CWD"))
        with tracker.run(name, tags={"groupbench.role": "job"}) as logger:
            logger.log_params({"overrides": " ".join(overrides) or "(none)"})
            raise ConfigError(message)
    except ConfigError:
        pass
    except Exception as exc:  # GroupbenchError or MLflow's own: the error line is what matters here
        log.debug("could not record the failure: %s", exc)


def check(argv: list[str]) -> None:
    """Exit 2 with one line (and a FAILED run) when a single run's command line does not compose."""
    if not _is_single_run(argv):
        return
    message = compose_error(argv)
    if message is None:
        return
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    record_failure(_override_value(argv, "tracking.uri"), _override_value(argv, "tracking.experiment"),
                   message, argv)
    log.error("error: %s", message)
    raise SystemExit(2)
