"""``hydra/launcher=ray``: each sweep job is one Ray task, on one machine or a Ray cluster.

Ray's own API does the work: ``ray.init(address=...)`` joins a cluster (or starts a local
instance when ``address`` is null) and every job becomes ``ray.remote(run_job).remote(...)``,
scheduled on any node with a free CPU. Hydra's Ray launcher plugin (hydra-ray-launcher 1.2.2,
its last release) is not used: it pins ``cloudpickle<3``, which conflicts with joblib 1.6
(``cloudpickle>=3``) that hydra-joblib-launcher and scikit-learn need here.

Workers must be able to import groupbench (the same virtual environment on every node) and to
reach the tracking store: with several nodes, log to an ``mlflow server`` (README, "Launchers").
Environment variables named ``GROUPBENCH_*`` and ``MLFLOW_*`` travel with the jobs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from benchmark.core.errors import ConfigError

log = logging.getLogger(__name__)

FORWARDED_ENV = ("GROUPBENCH_", "MLFLOW_")
# ``address: null`` starts a private local instance that listens on the loopback only (see _connect).
# A cluster for other machines is started deliberately: ``ray start --head --node-ip-address=IP`` on
# the head, then ``hydra.launcher.address=IP:PORT`` (README, "Launchers").
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _run_on_worker(hydra_context: HydraContext, sweep_config: DictConfig, task_function: TaskFunction,
                   singleton_state: dict[Any, Any]) -> JobReturn:
    """Runs inside a Ray worker: restore Hydra's global state, then run the job as any launcher does."""
    from hydra.core.hydra_config import HydraConfig

    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class RayLauncher(Launcher):
    def __init__(self, address: str | None = None, init: dict[str, Any] | None = None,
                 remote: dict[str, Any] | None = None) -> None:
        self.address = address
        self.init = dict(init or {})
        self.remote = dict(remote or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def _connect(self) -> None:
        if self.address is None:
            # Ray's own switch for a local-only instance, read when ray is imported and inherited by
            # every process it starts: the node address is the loopback, so GCS, raylet, workers and
            # agents bind 127.0.0.1 instead of every interface (on Linux Ray otherwise takes the
            # machine's external address and binds gRPC servers on ``::``).
            os.environ[LOCAL_ONLY_ENV] = "0"
        try:
            import ray  # optional, heavy: only a Ray sweep needs it
        except ImportError:
            raise ConfigError("hydra/launcher=ray needs Ray: pip install 'groupbench[ray]' (or ray>=2.50,<3)") from None

        if ray.is_initialized():
            return
        env = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV)}
        init = dict(self.init)
        runtime_env = dict(init.pop("runtime_env", None) or {})
        runtime_env["env_vars"] = {**env, **runtime_env.get("env_vars", {})}
        if self.address is None:
            init = {"include_dashboard": False, **init}  # no HTTP dashboard for a private instance
        log.info("ray.init(address=%s)", self.address)
        ray.init(address=self.address, runtime_env=runtime_env, **init)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        # an absolute sweep folder, so jobs write under the sweep's start directory, not a worker's
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self._connect()
        import ray  # optional, heavy: imported by _connect above

        remote_job = ray.remote(**self.remote)(_run_on_worker) if self.remote else ray.remote(_run_on_worker)
        refs = []
        for offset, overrides in enumerate(job_overrides):
            index = initial_job_idx + offset
            log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"ray_{index}"
                sweep_config.hydra.job.num = index
                sweep_config.hydra.sweep.dir = str(sweep_dir)
            refs.append(remote_job.remote(self.hydra_context, sweep_config, self.task_function,
                                          Singleton.get_state()))
        returns = []
        for ref, overrides in zip(refs, job_overrides):
            try:
                returns.append(ray.get(ref))
            except Exception as exc:  # a lost worker or node: this job fails, the others keep their results
                log.error("ray task for %s failed: %s: %s", " ".join(overrides), type(exc).__name__, exc)
                returns.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=exc))
        return returns

