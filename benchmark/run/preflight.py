"""Before Hydra runs anything: a command line that does not compose is one line, exit 2, a FAILED run.

Hydra reports a bad config-group choice (``model=foo``, ``dataset=../../etc``, ``+sweep=nosuch``,
``hydra/launcher=nosuch``) or a malformed override itself, with exit 1 and, under
HYDRA_FULL_ERROR, a traceback, before any of our code runs; a path-like choice
(``model=../../../tmp/x``) even loads a file from outside conf/. So ``python -m benchmark`` first
checks every config-group choice of its command line against the group's options (every value of
a sweep's ``a,b,c`` too) and composes the config with Hydra's compose API (a sweep's without its
swept values, as Hydra composes a multirun's config); if that fails, the first line of Hydra's
message becomes the one error line, the run is recorded FAILED in the tracking store named on the
command line (or the default one), ``sweep:<name>`` for a sweep, and the exit code is 2. The
sweeper applies :func:`group_error` to every job of its grids before it composes or launches any
(benchmark/sweeps/sweep.py). The tools (``benchmark.speed``, ``benchmark.scale``) build each job's
config through :func:`job_config`: these checks, then the schema and the model's own config, as
the runner checks them before any data work.
"""

from __future__ import annotations

import logging
import os
import re

from hydra import compose, initialize_config_dir
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from benchmark.core.config import CONF, build_model
from benchmark.core.errors import ConfigError, one_line
from benchmark.run.job import validate
from benchmark.tracking.tracker import Tracker

log = logging.getLogger("benchmark")

_SAFE_GROUP_VALUE = re.compile(r"^[A-Za-z0-9_.-]+$")
SWEEP_FLAGS = ("-m", "--multirun")


def _mode(argv: list[str]) -> str | None:
    """``run`` or ``sweep``; None for a command line Hydra handles itself (``--help``, ``--cfg job``, ``-cn``)."""
    flags = [a for a in argv if a.startswith("-")]
    if any(flag not in SWEEP_FLAGS for flag in flags):
        return None
    sweep = flags or any(a.lstrip("+~").startswith(("sweep=", "hydra.mode=")) for a in argv)
    return "sweep" if sweep else "run"


def _override_value(argv: list[str], key: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if a.lstrip("+~").split("=", 1)[0] == key and "=" in a]
    return values[-1].strip("'\"") if values else None


def _not_composed(exc: Exception) -> str:
    message = one_line(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return f"the command line does not compose a config ({message}); fix the override (see README.md)"


def group_error(overrides: list[str], loader: ConfigLoader) -> str | None:
    """None when every config-group choice in ``overrides`` (each value of a sweep ``a,b,c``) is one of
    its group's options (a file name under conf/<group>/ or a Hydra plugin's, never a path); else
    the one-line reason and fix. ``loader``: Hydra's config loader (which keys are groups, their options)."""
    parser = OverridesParser.create(config_loader=loader)
    try:
        parsed = parser.parse_overrides(list(overrides))
    except Exception as exc:
        return _not_composed(exc)
    groups: dict[str, set[str]] = {}
    for override in parsed:
        group = override.key_or_group
        parent, _, leaf = group.rpartition("/")
        if parent not in groups:
            try:
                groups[parent] = set(loader.list_groups(parent))
            except Exception:  # not a group folder: nothing under it is a group
                groups[parent] = set()
        if override.is_delete() or leaf not in groups[parent]:
            continue
        if override.is_discrete_sweep():
            values = list(override.sweep_string_iterator())
        elif override.is_sweep_override():
            values = [override.get_value_element_as_str()]  # an interval of group names: never a name
        else:
            value = override.value()
            values = [value if isinstance(value, str) else override.get_value_element_as_str()]
        options = sorted(loader.get_group_options(group))
        for value in values:
            if not _SAFE_GROUP_VALUE.match(value) or value not in options:
                return f"{group}={value} is not a {group} name; use one of {options}"
    return None


def _compose(overrides: list[str], sweep: bool = False) -> tuple[DictConfig | None, str | None]:
    """(config, None) when ``overrides`` compose (a sweep's: its values that are not swept), else (None, reason)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        message = group_error(overrides, loader)
        if message is not None:
            return None, message
        if sweep:  # Hydra composes a multirun's config without its swept values
            parsed = OverridesParser.create(config_loader=loader).parse_overrides(list(overrides))
            for override in parsed:
                if override.is_sweep_override() and override.key_or_group.startswith("hydra."):
                    return None, (f"{override.input_line}: Hydra's own configuration cannot be swept; quote the "
                                  f"value to set it ({override.key_or_group}='{override.input_line.split('=', 1)[1]}')")
            overrides = [o.input_line for o in parsed if not o.is_sweep_override()]
        try:
            return compose(config_name="config", overrides=list(overrides)), None
        except Exception as exc:
            return None, _not_composed(exc)


def compose_error(argv: list[str], sweep: bool = False) -> str | None:
    """None when the command line composes; else the one-line reason and fix."""
    return _compose(argv, sweep)[1]


def job_config(overrides: list[str]) -> DictConfig:
    """One job's config, checked as ``python -m benchmark`` and its runner check a single run before
    any data work: its group choices and composition (:func:`compose_error`), the schema of every
    harness key (``benchmark.run.job.validate``) and the model's own config (``build_model``).
    ConfigError (one line) otherwise."""
    cfg, message = _compose(overrides)
    if message is not None:
        raise ConfigError(message)
    validate(cfg)
    build_model(cfg.model, seed=cfg.seed)
    return cfg


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


def _sweep_target(argv: list[str]) -> tuple[str | None, str]:
    """(experiment, run name) of a sweep that cannot start: its sweep file's experiment and
    ``sweep:<name>`` where the sweep exists, as the sweeper records its own refusals."""
    name = _override_value(argv, "sweep")
    if name is None or not (_SAFE_GROUP_VALUE.match(name) and (CONF / "sweep" / f"{name}.yaml").is_file()):
        return None, f"sweep:{name}" if name and _SAFE_GROUP_VALUE.match(name) else "sweep:multirun"
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"+sweep={name}"])
        return str(cfg.tracking.experiment), f"sweep:{name}"
    except Exception:
        return None, f"sweep:{name}"


def check(argv: list[str]) -> None:
    """Exit 2 with one line (and a FAILED run) when a run's or a sweep's command line does not compose."""
    mode = _mode(argv)
    if mode is None:
        return
    message = compose_error([a for a in argv if a not in SWEEP_FLAGS], sweep=mode == "sweep")
    if message is None:
        return
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    experiment, name = _sweep_target(argv) if mode == "sweep" else (None, "invalid config")
    record_failure(_override_value(argv, "tracking.uri"), _override_value(argv, "tracking.experiment") or experiment,
                   message, argv, name=name)
    log.error("error: %s", message)
    raise SystemExit(2)
