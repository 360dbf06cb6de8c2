"""``python -m benchmark [-v] [overrides]``: one run (or a sweep with ``+sweep=NAME``).

The results and the next commands on stdout, logs on stderr; ``-v`` is ``verbose=true``
(benchmark/core/console.py)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from benchmark.core import console
from benchmark.core.errors import GroupbenchError, one_line
from benchmark.run import preflight, summary
from benchmark.run.job import build_tracker, run
from benchmark.sweeps.sweep import in_sweep, run_sweep_job
from benchmark.sweeps.tune import run_tuned, tuning
from benchmark.tracking import provenance, saved_models
from models.trainer import REMOVED_KEYS

log = logging.getLogger("benchmark")

# Hydra may change directories; relative paths (data.root, the sqlite store) are resolved
# against the directory the command was started in.
os.environ.setdefault("GROUPBENCH_CWD", os.getcwd())


def admit_removed_keys(argv: list[str]) -> list[str]:
    """``trainer.KEY=x`` -> ``+trainer.KEY=x`` for a removed KEY: Hydra refuses a key its config lacks with a multi-line
    error before any run exists; admitted, the key reaches the runner, which refuses it in one line
    with a FAILED run (models/trainer.py, REMOVED_KEYS)."""

    removed = tuple(f"trainer.{key}=" for key in REMOVED_KEYS)
    return [f"+{arg}" if arg.startswith(removed) else arg for arg in argv]


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | dict | None:

    if in_sweep(cfg):  # a job launched by the sweeper: a failure is reported to it, never exits
        return run_sweep_job(cfg)
    console.set_verbosity(bool(cfg.get("verbose", False)))
    try:
        tracker = build_tracker(cfg)
        result = run_tuned(cfg, tracker=tracker) if tuning(cfg) else run(cfg, tracker=tracker)
    except GroupbenchError as exc:
        log.error("error: %s", one_line(exc))
        sys.exit(2)
    except Exception as exc:  # the run is already marked FAILED with this message
        log.exception("error: %s: %s (the MLflow run is marked FAILED)", type(exc).__name__, exc)
        sys.exit(1)
    print_summary(cfg, tracker, result)
    return result.metrics.get("rmse")


def print_summary(cfg: DictConfig, tracker, result) -> None:
    """Headline metrics and the next commands (UI, report, recommend) at the end of a single run."""

    saved = any(f.path == saved_models.ARTIFACT for f in tracker.client.list_artifacts(result.run_id))
    summary.print_run(provenance.display_name(cfg), result.run_id, result.metrics, tracker.uri,
                      tracker.experiment_name, tracker.experiment_id, saved, user=result.predictions["user"].min())


if __name__ == "__main__":
    sys.argv[1:] = admit_removed_keys(console.expand_flags(sys.argv[1:]))

    preflight.check(sys.argv[1:])  # a config that does not compose: one line, exit 2, a FAILED run
    main()
