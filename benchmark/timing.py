"""Measuring a job, for the benchmark tools: ``python -m benchmark.speed`` and ``python -m benchmark.scale``.

Both tools time the real job (:func:`benchmark.run.job.run`, one pipeline definition) through the
runner's own stage timer, :class:`benchmark.run.job.Stages`, whose ``stage_<name>_seconds``
metrics they read back (:func:`stage_seconds`). A tool that wants more than seconds per stage
hands the runner a ``stages`` factory instead of replacing the runner's class: ``scale`` passes
:class:`MeteredStages`, which also notes the peak RSS and the page faults at the end of each
stage. So the library is never patched by a tool, and a job run by a tool is the job a sweep runs.

Both tools parse their command line under the harness's contract (a bad value is one line naming
it, exit 2; ``benchmark.core.cli``), and every Hydra override they take is checked with the
single run's own checks before anything is measured (:func:`tool_overrides`: the tool's own keys
refused, then ``benchmark.run.preflight.job_config``: group choices, composition, the schema, the
model's config). A measurement in which every job failed raises :class:`AllJobsFailed` (exit 1).

This module is above the library's layers (like the tools): it may import any of them.
"""

from __future__ import annotations

import resource
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, TypeVar

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from benchmark.core.config import CONF
from benchmark.core.errors import ConfigError, GroupbenchError, one_line
from benchmark.run.job import Stages

T = TypeVar("T")

# the runner's stages in pipeline order (benchmark/run/job.py); fit and predict are the model's
STAGES = ("load", "split", "grouping", "fit", "predict", "evaluate", "log")


def compose(overrides: list[str]) -> DictConfig:
    """conf/config.yaml with ``overrides``, as ``python -m benchmark`` composes a single run."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


class AllJobsFailed(GroupbenchError):
    """Every job a tool started failed: nothing was measured (the tool exits 1)."""


def tool_overrides(tool: str, overrides: list[str], owned: Mapping[str, str]) -> list[str]:
    """``overrides`` unchanged when none sets a key the tool sets itself (``owned``: key -> how to
    choose it instead); else ConfigError naming the override. Each job's config is then built by
    ``benchmark.run.preflight.job_config``, which checks them as a single run's."""
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0].strip()
        if key in owned:
            raise ConfigError(f"{override}: python -m benchmark.{tool} sets {key} itself; {owned[key]}")
    return list(overrides)


def stage_seconds(metrics: Mapping[str, float], missing: float = 0.0) -> dict[str, float]:
    """Seconds per stage from a job's metrics (``missing`` for a stage it did not log, e.g. a run
    logged before stage timing)."""
    return {name: float(metrics.get(f"stage_{name}_seconds", missing)) for name in STAGES}


def fit_predict_seconds(metrics: Mapping[str, float]) -> float:
    """A job's fit + predict (every prediction asked of the model, evaluation's included); runs
    logged before stage timing: the per-fold means of fit_seconds + predict_seconds."""
    if "stage_fit_seconds" in metrics:
        return metrics["stage_fit_seconds"] + metrics.get("stage_predict_seconds", 0.0)
    return metrics.get("fit_seconds", 0.0) + metrics.get("predict_seconds", 0.0)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class MeteredStages(Stages):
    """The runner's stage timer, also noting the process's peak RSS when each stage ends and the
    minor page faults (fresh memory the kernel maps in) inside it. The peak is reached in the first
    stage whose end shows the job's final peak (:meth:`peak_stage`). Meaningful for one job per
    process (``scale`` spawns one): ``ru_maxrss`` never goes down."""

    def __init__(self):
        super().__init__()
        self.peaks: dict[str, float] = {}
        self.page_faults: dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        with super().__call__(name):
            yield
        self.peaks[name] = max(self.peaks.get(name, 0.0), peak_rss_mb())
        self.page_faults[name] = (self.page_faults.get(name, 0)
                                  + resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)

    def peak_stage(self) -> str | None:
        """The stage in which the job's peak RSS was reached (stages in pipeline order; ``log`` last)."""
        return peak_stage(self.peaks)


def peak_stage(peaks: Mapping[str, float]) -> str | None:
    """The first stage, in pipeline order, whose peak is the highest."""
    top = max(peaks.values(), default=None)
    return next((name for name in (*STAGES, *peaks) if name in peaks and peaks[name] >= top), None)


def tool_main(work: Callable[[], T]) -> T:
    """Run a measuring tool's ``work``; a bad argument or input is one line on stderr and exit 2, a
    measurement in which every job failed one line and exit 1 (``speed`` and ``scale`` alike)."""
    try:
        return work()
    except AllJobsFailed as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except GroupbenchError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
