"""Sweeps: ``python -m benchmark +sweep=NAME`` runs a grid (or several) as nested MLflow runs.

The sweeper (``hydra/sweeper=groupbench``, the default) does, in order (steps 1-2 in
benchmark/sweeps/plan.py):

1. expands each grid of ``hydra.sweeper.grids`` (and ``hydra.sweeper.params``, Hydra's single
   grid) into jobs, exactly as Hydra's basic sweeper does: a command-line override replaces the
   grid's values for the same key, so ``+sweep=lambda dataset=ml100k seed=0`` narrows the grid;
2. composes every job's config once and drops jobs whose config hash was already seen: grids are
   concatenated, not multiplied, and an overlap (attention=softmax at the default λ is also in
   the λ grid) runs once; a bad override, or a value the harness or the model refuses, fails
   here, before anything runs;
3. skips jobs whose config hash already has a FINISHED job run in the experiment (``resume=true``);
4. opens the parent run ``sweep:<name>`` (tags ``groupbench.role=sweep``, ``sweep=<name>``) before
   any job starts, and hands its id, the sweep's name, the absolute tracking URI and the job's
   swept values to each job as one ``hydra.job.env_set.GROUPBENCH_SWEEP_RUN`` override: it travels
   with the job's config to joblib and submitit workers, Hydra sets it as an environment variable
   around the job only, launchers do not print ``hydra.*`` overrides, and it is never a param;
5. launches the rest with the configured launcher (basic, joblib, submitit); a failing job is
   FAILED in MLflow and reported, never fatal;
6. logs n_jobs / n_finished / n_failed / n_skipped / wall_seconds on the parent, prints a summary
   and exits 1 when any job failed (the parent is then FAILED, else FINISHED).

The job side is :func:`run_sweep_job`, called by ``benchmark.__main__`` when ``GROUPBENCH_SWEEP_RUN`` is set.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from benchmark.core import console
from benchmark.core.config import build_model, run_name
from benchmark.core.errors import ConfigError, GroupbenchError, TrackingError, one_line
from benchmark.run import summary
from benchmark.run.job import build_tracker, feedback_error, run, validate
from benchmark.run.preflight import group_error, record_failure
from benchmark.sweeps.plan import Composer, Job, plan
from benchmark.sweeps.tune import run_tuned, tuning
from benchmark.tracking import claims, provenance
from benchmark.tracking.claims import AlreadyClaimed
from benchmark.tracking.tracker import Tracker, git_commit

log = logging.getLogger("benchmark.sweeps.sweep")

KEY_METRIC = "rmse"  # the metric of the per-job progress line
SWEEP_ENV = "GROUPBENCH_SWEEP_RUN"  # the sweep's bookkeeping for one job (JSON), set by Hydra around the job


class SweepFailed(GroupbenchError):
    """Some jobs of a sweep failed (the parent run is FAILED with this message)."""


@dataclass
class Outcome:
    """What a job returns to the sweeper (picklable: it crosses joblib and submitit processes)."""

    status: str                   # FINISHED | FAILED | SKIPPED
    name: str
    run_id: str | None = None
    metric: float | None = None
    seconds: float = 0.0
    error: str | None = None
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# tracking


def _quote(value: str) -> str:
    """A Hydra override value as a quoted string (run ids may look like numbers)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


# --------------------------------------------------------------------------------------------
# the sweeper


class SweeperBase(Sweeper):
    """See the module docstring; registered as ``hydra_plugins.groupbench_sweeper.GroupbenchSweeper``."""

    def __init__(self, name: str | None = None, params: Mapping[str, Any] | None = None,
                 grids: Mapping[str, Mapping[str, Any]] | None = None, max_batch_size: int | None = None,
                 dry_run: bool = False, only: Any = None):
        super().__init__()
        self.name = name or "multirun"
        self.dry_run = dry_run
        self.grids = {k: dict(v) for k, v in (grids or {}).items() if v}
        if params:
            self.grids["params"] = dict(params)
        self.only = None if only is None else ([str(only)] if isinstance(only, str) else [str(n) for n in only])
        self.max_batch_size = max_batch_size
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        # SIGTERM (a scheduler, `kill`) ends the sweep like Ctrl-C: runs are marked KILLED, not left RUNNING
        signal.signal(signal.SIGTERM, _raise_interrupt)
        sys.unraisablehook = _redeliver_interrupt
        console.set_verbosity(bool(self.config.get("verbose", False)))  # the launchers' per-job lines: -v only
        try:
            outcomes = self._sweep(list(arguments))
        except KeyboardInterrupt:  # anywhere, store creation included: one line, the runs KILLED, never RUNNING
            self._interrupted()
        except SweepFailed:
            sys.exit(1)
        except GroupbenchError as exc:
            if _INTERRUPTED:  # SIGTERM inside the store's creation: SQLAlchemy may swallow the interrupt and fail
                self._interrupted()  # the next statement ("Can't reconnect until invalid transaction is rolled back")
            if not isinstance(exc, TrackingError):  # a FAILED run holds the line, where the store opens
                record_failure(self.config.tracking.uri, self.config.tracking.experiment, one_line(exc), arguments,
                               name=f"sweep:{self.name}")
            log.error("error: %s", one_line(exc))
            sys.exit(2)
        return outcomes

    def _interrupted(self) -> None:
        log.error("sweep %s interrupted: rerun the same command to resume (FINISHED jobs are skipped)", self.name)
        sys.exit(130)

    def _compose(self, overrides: list[str]) -> DictConfig:
        # a group choice of any job (the sweep file's grids included) is one of its group's options,
        # checked before it is composed: never a path, never launched (the single-run preflight's rule)
        message = group_error(list(overrides), self.hydra_context.config_loader)
        if message is not None:
            raise ConfigError(f"sweep {self.name}: {message}; fix the sweep file conf/sweep/{self.name}.yaml "
                              f"or the command-line override")
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):  # the job sees its config without the hydra node, as Hydra hands it over
                del cfg["hydra"]
            return cfg
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"sweep {self.name}: job {' '.join(overrides)} does not compose ({message}); "
                              f"fix the sweep file conf/sweep/{self.name}.yaml or the command-line override") from None

    def _only(self) -> None:
        """``hydra.sweeper.only=groups`` (or ``[a,b]``): keep these grids of the sweep file, refuse an unknown name."""
        if self.only is None:
            return
        unknown = [name for name in self.only if name not in self.grids]
        if unknown or not self.only:
            raise ConfigError(f"hydra.sweeper.only={','.join(self.only)}: sweep {self.name} has no grid "
                              f"{','.join(unknown) or '(none named)'}; its grids are {', '.join(self.grids) or '(none)'}")
        self.grids = {name: grid for name, grid in self.grids.items() if name in self.only}

    def _sweep(self, arguments: list[str]) -> list[Outcome]:
        started = time.perf_counter()
        self._only()
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        composer = Composer(self._compose, parser, self.hydra_context.config_loader)
        jobs = plan(self.grids or {"command line": {}}, arguments, parser, composer)
        configs = [composer(job.overrides) for job in jobs]  # cached: no second full compose
        jobs, configs, not_applicable = not_applicable_jobs(jobs, configs)
        models_checked: set[str] = set()
        for cfg in configs:  # a bad value (eval.k=abc, seed=true, model.params.k=0) fails here, before anything runs
            validate(cfg)
            model = json.dumps(OmegaConf.to_container(cfg.model, resolve=True), sort_keys=True, default=str)
            if model not in models_checked:  # the model's own keys: its typed config, checked on construction
                build_model(cfg.model, seed=cfg.seed)
                models_checked.add(model)
        if self.dry_run:  # the plan on stdout, one job a line; nothing is run or logged
            print(f"sweep {self.name}: {len(jobs)} jobs" + (f" ({not_applicable} not applicable, left out)"
                                                          if not_applicable else ""))
            for job in jobs:
                print(f"{job.config_hash} {job.name} {' '.join(job.overrides)}")
            return []
        tracker = build_tracker(self.config)  # creates the store and experiment before any worker starts
        # a result is (config hash, data hash): one on other data (corrupt, edited) is not resumed
        done = claims.finished_keys(tracker) if self.config.get("resume", True) else set()
        keys = [(job.config_hash, claims.dataset_sha256(cfg)) if done else None for job, cfg in zip(jobs, configs)]
        todo = [job for job, key in zip(jobs, keys) if key not in done]
        skipped = [job for job, key in zip(jobs, keys) if key in done]
        log.info("sweep %s: %d jobs (%d already FINISHED, skipped), experiment %r at %s", self.name, len(jobs),
                 len(skipped), tracker.experiment_name, tracker.uri)
        for job in skipped:
            log.info("skipped %s (config_hash %s has a FINISHED run on the same data)", job.name, job.config_hash)

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        tags = {"groupbench.role": "sweep", "sweep": self.name, "git_commit": git_commit(),
                **provenance.package_versions(),
                "mlflow.note.content": f"Sweep `{self.name}`: {len(jobs)} jobs ({len(skipped)} already FINISHED); "
                                       f"overrides: `{' '.join(arguments) or '(none)'}`."}
        provenance.set_experiment_description(tracker.client, tracker.experiment_id, provenance.describe_experiment(
            tracker.experiment_name, self.name, self.grids, overrides=" ".join(arguments),
            jobs=len(jobs)))
        outcomes: list[Outcome] = [Outcome("SKIPPED", job.name) for job in skipped]
        with tracker.run(f"sweep:{self.name}", tags=tags) as parent:
            parent.log_params({"overrides": " ".join(arguments) or "(none)",
                               "grids": json.dumps(self.grids, sort_keys=True, default=str),
                               "launcher": self.config.hydra.launcher.get("_target_", "?"),
                               # parallel workers, for python -m benchmark.speed --sweep (1: basic launcher)
                               "launcher_workers": self.config.hydra.launcher.get(
                                   "n_jobs", self.config.hydra.launcher.get("array_parallelism", 1)),
                               "resume": self.config.get("resume", True)})
            parent.log_metrics({"n_jobs": len(jobs), "n_skipped": len(skipped), "n_not_applicable": not_applicable})
            common = {"name": self.name, "parent_run_id": parent.run_id, "total": len(todo),
                      "tracking_uri": tracker.uri}
            size = self.max_batch_size or max(len(todo), 1)
            for start in range(0, len(todo), size):
                batch = todo[start:start + size]
                overrides = [job.overrides + [f"hydra.job.env_set.{SWEEP_ENV}=" + _quote(json.dumps(
                    {**common, "index": start + n + 1, "varies": job.varies}))] for n, job in enumerate(batch)]
                outcomes += self._launch(batch, overrides, start)
            counts = {status: sum(o.status == status for o in outcomes) for status in ("FINISHED", "FAILED")}
            wall = time.perf_counter() - started
            parent.log_metrics({"n_finished": counts["FINISHED"], "n_failed": counts["FAILED"],
                                "wall_seconds": wall})
            failures = [o for o in outcomes if o.status == "FAILED"]
            report(self.name, outcomes, wall, not_applicable)
            console.result(*summary.next_steps(tracker.uri, tracker.experiment_name, tracker.experiment_id))
            if failures:
                raise SweepFailed(f"{len(failures)} of {len(jobs)} jobs failed: "
                                  + "; ".join(f"{o.name}: {o.error}" for o in failures)[:1000])
        return outcomes

    def _launch(self, batch: list[Job], overrides: list[list[str]], index: int) -> list[Outcome]:
        try:
            returns: Sequence[JobReturn] = self.launcher.launch(overrides, initial_job_idx=index)
        except Exception as exc:  # a launcher error (a lost worker, a cluster refusal) fails its batch only
            log.error("launcher error for jobs %d..%d: %s: %s", index + 1, index + len(batch), type(exc).__name__, exc)
            return [Outcome("FAILED", job.name, error=f"launcher: {type(exc).__name__}: {exc}") for job in batch]
        outcomes = []
        for job, ret in zip(batch, returns):
            value = getattr(ret, "_return_value", None)
            if ret.status == JobStatus.COMPLETED and isinstance(value, dict):
                outcomes.append(Outcome(**value))
            else:  # the task function raised outside run_sweep_job's guard
                outcomes.append(Outcome("FAILED", job.name, error=f"{type(value).__name__}: {value}"))
        return outcomes


def not_applicable_jobs(jobs: list[Job], configs: list[DictConfig]) -> tuple[list[Job], list[DictConfig], int]:
    """(jobs, configs) without the jobs a model cannot run (a rating model, ``meta.feedback: explicit``, on
    a dataset of implicit feedback: benchmark.run.job.feedback_error), and their count. One log line per
    (model, dataset) left out; the sweep's summary counts them as "not applicable"."""
    kept, noted, dropped = [], set(), 0
    for job, cfg in zip(jobs, configs):
        reason = feedback_error(cfg)
        if reason is None:
            kept.append((job, cfg))
            continue
        dropped += 1
        pair = (str(cfg.model.name), str(cfg.dataset.name))
        if pair not in noted:
            noted.add(pair)
            log.info("not applicable, skipped: %s/%s (%s)", *pair, reason)
    return [job for job, _ in kept], [cfg for _, cfg in kept], dropped


_INTERRUPTED: list[int] = []  # the signals received: an error after one is the interrupt's, not the input's


def _raise_interrupt(signum, frame):
    _INTERRUPTED.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def _redeliver_interrupt(unraisable) -> None:
    """An interrupt raised where Python ignores exceptions (a ``__del__``, a weakref callback such as
    SQLAlchemy's during store creation) would be lost and the sweep go on: it is raised again
    50 ms later instead, in the code then running. Anything else: Python's own report."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        signal.signal(signal.SIGALRM, _raise_interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        return
    sys.__unraisablehook__(unraisable)


def report(name: str, outcomes: list[Outcome], wall: float, not_applicable: int = 0) -> None:
    """The end-of-sweep summary: counts and time split (a result: stdout), and one line per failure (stderr).
    ``not_applicable``: jobs left out before the sweep (a rating model on implicit data), not among the jobs."""
    count = {s: sum(o.status == s for o in outcomes) for s in ("FINISHED", "FAILED", "SKIPPED")}
    ran = [o for o in outcomes if o.status != "SKIPPED"]
    compute = sum(o.fit_seconds + o.predict_seconds for o in ran)
    left_out = f", {not_applicable} not applicable (rating models on implicit data)" if not_applicable else ""
    console.result(f"sweep {name}: {len(outcomes)} jobs: {count['FINISHED']} finished, {count['FAILED']} failed, "
                   f"{count['SKIPPED']} skipped{left_out} in {wall:.1f} s (job time {sum(o.seconds for o in ran):.1f} s, "
                   f"of which fit+predict {compute:.1f} s)")
    for outcome in outcomes:
        if outcome.status == "FAILED":
            log.error("FAILED %s (run %s): %s", outcome.name, outcome.run_id or "-", outcome.error)


# --------------------------------------------------------------------------------------------
# the job side


def in_sweep(cfg: DictConfig) -> bool:
    return bool(os.environ.get(SWEEP_ENV))


@lru_cache(maxsize=4)
def _tracker(uri: str, experiment: str):
    """One MlflowClient per worker process: a sequential sweep reuses it job after job."""

    return Tracker(uri, experiment, base_dir=os.environ.get("GROUPBENCH_CWD"))


def run_sweep_job(cfg: DictConfig) -> dict[str, Any]:
    """Run one sweep job as a child run; never raises (the sweep goes on), returns an Outcome dict."""

    info = json.loads(os.environ[SWEEP_ENV])
    started = time.perf_counter()
    name = run_name(cfg)
    with open_dict(cfg):  # the store the sweeper opened, as an absolute URI (the job may run elsewhere)
        cfg.tracking.uri = info["tracking_uri"]
    tags = {"sweep": str(info["name"]), **{f"varies.{k}": v for k, v in info["varies"].items()}}
    outcome = Outcome("FAILED", name)
    verbose = bool(cfg.get("verbose", False))
    console.set_verbosity(verbose)  # in a worker process too (joblib, submitit, Ray)
    try:
        with console.quiet_job(verbose):  # one line a job (below) unless verbose
            outcome = _run_job(cfg, info, name, tags)
    except Exception as exc:  # the child run is already FAILED with this message (runner/tracking)

        message = str(exc) if isinstance(exc, GroupbenchError) else f"{type(exc).__name__}: {exc}"
        outcome.error = one_line(message) or type(exc).__name__
        if not isinstance(exc, GroupbenchError):
            log.debug("job %s failed", name, exc_info=True)
    outcome.seconds = time.perf_counter() - started
    metric = f"{KEY_METRIC}={outcome.metric:.4f}" if outcome.metric is not None else f"{KEY_METRIC}=-"
    swept = "".join(f" {value}" for value in provenance.swept_values(info["varies"]))
    line = (f"[{info['index']}/{info['total']}] {outcome.status} {cfg.model.name} {cfg.dataset.name} seed={cfg.seed}"
            f"{swept} {metric} {outcome.seconds:.1f}s")
    if outcome.status == "FAILED":
        log.error("%s: %s", line, outcome.error)
    elif outcome.status == "SKIPPED":
        log.info("%s (%s)", line, outcome.error)
    else:
        log.info("%s", line)
    return asdict(outcome)


def _run_job(cfg: DictConfig, info: dict[str, Any], name: str, tags: dict[str, str]) -> Outcome:
    """The job's run (or tuned runs): FINISHED, or SKIPPED when another sweep holds its configuration."""
    try:
        tracker = _tracker(cfg.tracking.uri, cfg.tracking.experiment)
        if tuning(cfg):  # a tuned job resumes through its study's finished trials and its grid hash
            result = run_tuned(cfg, tracker=tracker, parent_run_id=str(info["parent_run_id"]), tags=tags)
        else:
            result = run(cfg, tracker=tracker, parent_run_id=str(info["parent_run_id"]), tags=tags,
                         claim=bool(cfg.get("resume", True)))
    except AlreadyClaimed as exc:  # another sweep runs (or ran) this configuration on this data
        return Outcome("SKIPPED", name, error=str(exc))
    return Outcome("FINISHED", name, run_id=result.run_id, metric=result.metrics.get(KEY_METRIC),
                   fit_seconds=result.metrics.get("stage_fit_seconds", result.metrics.get("fit_seconds", 0.0)),
                   # every prediction the job asked of the model: test pairs and evaluation's
                   predict_seconds=result.metrics.get("stage_predict_seconds",
                                                      result.metrics.get("predict_seconds", 0.0)))
