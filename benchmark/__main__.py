"""``python -m benchmark [overrides]``: one run (or a sweep with ``+sweep=NAME``)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from benchmark.errors import GroupbenchError

log = logging.getLogger("benchmark")

# Hydra may change directories; relative paths (data.root, the sqlite store) are resolved
# against the directory the command was started in.
os.environ.setdefault("GROUPBENCH_CWD", os.getcwd())


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | dict | None:
    from benchmark.runner import run
    from benchmark.sweep import in_sweep, run_sweep_job
    from benchmark.tune import run_tuned, tuning

    if in_sweep(cfg):  # a job launched by the sweeper: a failure is reported to it, never exits
        return run_sweep_job(cfg)
    try:
        result = run_tuned(cfg) if tuning(cfg) else run(cfg)
    except GroupbenchError as exc:
        log.error("error: %s", exc)
        sys.exit(2)
    except Exception as exc:  # the run is already marked FAILED with this message
        log.exception("error: %s: %s (the MLflow run is marked FAILED)", type(exc).__name__, exc)
        sys.exit(1)
    return result.metrics.get("rmse")


if __name__ == "__main__":
    main()
