"""One benchmark job: conf -> dataset -> groups -> split -> model -> predictions -> metrics -> tracker.

The runner is model-agnostic: the model, the split, the grouping and the dataset loader
are all built with Hydra's ``instantiate`` from their config groups.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

import benchmark.evaluation.authors  # registers eval.protocol=authors (authors_* metrics); its run tags
import benchmark.evaluation.full_ranking  # registers the full-catalogue top-N evaluator (full_* metrics)
import benchmark.evaluation.group_item  # registers the group-item evaluators (group_sampled_*, group_full_*)
import benchmark.evaluation.groups  # registers the group-level and cold-start evaluators; validates eval.group
from benchmark.core import models_meta
from benchmark.core import reproduction as reproductions
from benchmark.core.config import CONF, RESULT_KEYS, build_model, config_hash, instantiate, run_name
from benchmark.core.errors import ConfigError, require
from benchmark.core.schema import check_threshold, validate_config
from benchmark.data.cache import ProtocolCache
from benchmark.evaluation import divergence
from benchmark.evaluation.base import EvalContext, Scorer, evaluate, model_clock
from benchmark.evaluation.group_item import group_validation
from benchmark.protocol.folds import Fold
from benchmark.protocol.grouping import Groups
from benchmark.protocol.split import are_splits, make_splits
from benchmark.run import summary
from benchmark.tracking import claims, orphans, provenance, saved_models
from benchmark.tracking.artifacts import check_format, table_name
from benchmark.tracking.tracker import Tracker, git_commit
from models.base import Diagnosed, FitContext, RawScores
from models.trainer import check_removed_keys, effective_settings

log = logging.getLogger(__name__)

PROVENANCE = "provenance.json"  # package versions, the data files' sha256 and notes (provenance.provenance_record)

@dataclass
class JobResult:
    run_id: str
    metrics: dict[str, float]
    predictions: pd.DataFrame = field(repr=False)
    models: list = field(default_factory=list, repr=False)  # the fitted model of each fold


class Stages:
    """Seconds per stage of a job (summed over folds), logged as ``stage_<name>_seconds``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def move(self, source: str, target: str, seconds: float) -> None:
        """Count ``seconds`` measured inside ``source`` under ``target`` instead."""
        self.seconds[source] = self.seconds.get(source, 0.0) - seconds
        self.seconds[target] = self.seconds.get(target, 0.0) + seconds

    def metrics(self) -> dict[str, float]:
        return {f"stage_{name}_seconds": value for name, value in self.seconds.items()}


def validate(cfg: DictConfig) -> None:
    """Checks that do not belong to one component (components validate their own kwargs)."""
    validate_config(cfg)  # types and ranges of every known key (benchmark/core/schema.py)
    benchmark.evaluation.groups.validate_config(cfg.eval)
    benchmark.evaluation.authors.protocol_of(cfg.eval)
    check_removed_keys(cfg.get("trainer"))  # every model: a removed key must not pass silently
    check_format(artifact_format(cfg))
    # +reproduction=<name>: its node parses and the run is the configuration its file says
    reproductions.check(cfg, lambda model: models_meta.model_meta(model).reference is not None)


# the user-level choices a group-item dataset replaces by its own (``dataset.split``, ``dataset.grouping``)
USER_LEVEL = {"split": ("benchmark.protocol.split.holdout", "benchmark.protocol.split.kfold"),
              "grouping": ("benchmark.protocol.grouping.kmeans", "benchmark.protocol.grouping.real")}


def dataset_defaults(cfg: DictConfig) -> DictConfig:
    """``cfg`` with a group-item dataset's own split and grouping (its YAML's ``split:`` and ``grouping:``,
    e.g. corrected and members) in place of the user-level defaults, which do not apply to it (Hydra
    cannot let a dataset's YAML override another group's default). An explicit group split
    (``split=shipped``) is kept. Then ``eval.protocol=authors``'s split and grouping (:func:`authors_defaults`).
    First, a reproduction's (``+reproduction=<name>``) model keys (``benchmark.core.reproduction.apply``).
    The replaced config is the run's: hashed (sweep plans too), logged, in config.yaml."""
    return authors_defaults(group_item_defaults(reproductions.apply(cfg)))


def group_item_defaults(cfg: DictConfig) -> DictConfig:
    """A group-item dataset's own split and grouping (``dataset_defaults``'s first step)."""
    changes = {}
    for group, user_level in USER_LEVEL.items():
        name = OmegaConf.select(cfg, f"dataset.{group}", default=None)
        if name and OmegaConf.select(cfg, f"{group}._target_", default=None) in user_level:
            changes[group] = OmegaConf.load(CONF / group / f"{name}.yaml")
    if not changes:
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        for group, node in changes.items():
            log.info("dataset=%s: %s=%s (its own; user-level %s do not apply)", cfg.dataset.name, group,
                     cfg.dataset[group], "splits" if group == "split" else "groupings")
            cfg[group] = node
    return cfg


def authors_defaults(cfg: DictConfig) -> DictConfig:
    """``eval.protocol=authors``: the seed paper's authors' whole protocol, so ``cfg`` with their split and
    grouping (conf/split/authors.yaml, conf/grouping/authors.yaml) in place of the user-level ones
    (``eval.protocol=authors_metrics`` keeps the run's own: the protocol ablation). The replaced config
    is the run's: hashed, logged, in config.yaml."""
    if OmegaConf.select(cfg, "eval.protocol", default="clean") != "authors":
        return cfg
    require(OmegaConf.select(cfg, "dataset.split", default=None) is None,
            f"eval.protocol=authors: dataset={OmegaConf.select(cfg, 'dataset.name')} is a group-item dataset with its "
            f"own group split; the authors' protocol is for rating datasets (dataset=ml100k or dataset=itmrec)")
    cfg = cfg.copy()
    with open_dict(cfg):
        for group, target in (("split", "benchmark.protocol.authors.authors_split"),
                              ("grouping", "benchmark.protocol.authors.authors_kmeans")):
            if OmegaConf.select(cfg, f"{group}._target_", default=None) != target:
                log.debug("eval.protocol=authors: %s=authors (the authors' protocol, leaks included)", group)
                cfg[group] = OmegaConf.load(CONF / group / "authors.yaml")
    return cfg


def feedback_error(cfg: DictConfig) -> str | None:
    """The one-line refusal of a model that learns from rating values (``meta.feedback: explicit``) on a
    dataset of implicit feedback (``dataset.feedback: implicit``), else None. A single job fails with it
    (exit 2) before any data work; a sweep skips such jobs with a note (benchmark/sweeps/sweep.py)."""
    implicit = OmegaConf.select(cfg, "dataset.feedback", default="explicit") == "implicit"
    return models_meta.feedback_error(str(cfg.model.name), str(cfg.dataset.name), implicit)


def artifact_format(cfg: DictConfig) -> str:
    return OmegaConf.select(cfg, "artifacts.format", default="parquet")


def build_tracker(cfg: DictConfig) -> Tracker:
    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment, base_dir=os.environ.get("GROUPBENCH_CWD"))
    orphans.reap(tracker)  # runs left RUNNING by a killed process -> KILLED, with a note
    return tracker


def run(cfg: DictConfig, tracker: Tracker | None = None, parent_run_id: str | None = None,
        tags: dict[str, str] | None = None, claim: bool | None = None,
        stages: Callable[[], Stages] = Stages, fold_configs: Mapping[int, DictConfig] | None = None) -> JobResult:
    """Run one job and log it as one MLflow run (FAILED, with the error, if anything raises).

    ``claim`` (sweep jobs): once the data hash is known, claim (config hash, data hash) or stop as a
    duplicate (:class:`benchmark.tracking.claims.AlreadyClaimed`); True also yields to FINISHED runs (resume).
    ``stages`` makes the job's stage timer: a tool measuring more per stage passes its own
    (``benchmark.timing.MeteredStages``: peak memory too) instead of patching this module.
    ``fold_configs``: fold number -> the config whose ``model`` that fold fits (k-fold tuning: each fold's
    own choice, benchmark/sweeps/tune.py); the rest of the job follows ``cfg``."""
    cfg = dataset_defaults(cfg)
    tracker = tracker or build_tracker(cfg)
    # sweep jobs pass what varies as ``varies.<key>`` tags: one ``varies`` tag (JSON) on the run, and the
    # run name shows it first (e.g. λ=0.5 · dmtl · ml100k · s0)
    varies = {key.split(".", 1)[1]: value for key, value in (tags or {}).items() if key.startswith("varies.")}
    base_tags = {"groupbench.role": "job", "config_hash": config_hash(cfg), "git_commit": git_commit(),
                 **benchmark.evaluation.authors.tags(cfg),  # protocol=authors|mixed, its pieces and leaks
                 **reproductions.tags(cfg),  # +reproduction=<name>: reproduction, .label, .role
                 **{key: value for key, value in (tags or {}).items() if not key.startswith("varies.")},
                 **({"varies": json.dumps(varies, default=str)} if varies else {})}
    base_tags.update({**provenance.source_tags(base_tags["git_commit"]),
                      "mlflow.note.content": provenance.describe_run(cfg, varies, base_tags.get("sweep"))})
    record = provenance.provenance_record()  # reads package metadata (0.1-0.5 s): before the run, as the tags were
    if parent_run_id is None:
        provenance.set_experiment_description(tracker.client, tracker.experiment_id,
                                              provenance.describe_experiment(tracker.experiment_name))
    with tracker.run(provenance.display_name(cfg, varies), tags=base_tags, parent_run_id=parent_run_id) as logger:
        stage, models = stages(), []
        with stage("log"):
            node = OmegaConf.select(cfg, reproductions.NODE, default=None)  # +reproduction: what the report compares
            logger.log_artifacts({"config.yaml": OmegaConf.to_yaml(cfg, resolve=True), PROVENANCE: record,
                                  **({reproductions.ARTIFACT: OmegaConf.to_container(node, resolve=True)}
                                     if node is not None else {})})
        try:
            return _body(cfg, tracker, logger, stage, models, base_tags, varies, claim, fold_configs)
        except BaseException:
            if not logger.params_logged:  # a run that failed before its fit says what it was configured with
                try:
                    logger.log_params(provenance.configured_params(cfg, RESULT_KEYS))
                except Exception as exc:  # the run's own error is the one to report
                    log.debug("configured params not logged: %s", exc)
            raise


def _body(cfg: DictConfig, tracker: Tracker, logger, stage: Stages, models: list, base_tags: dict[str, str],
          varies: Mapping[str, Any], claim: bool | None, fold_configs: Mapping[int, DictConfig] | None) -> JobResult:
    """The job inside its run: ``run``'s work from validation to the last metric."""
    validate(cfg)
    for fold_cfg in (fold_configs or {}).values():
        validate(fold_cfg)
    saved_models.policy(cfg.get("artifacts"))
    build_model(cfg.model, seed=cfg.seed)  # validates the model's config before any data work
    refused = feedback_error(cfg)  # a rating model on implicit data: refused before any data work
    if refused:
        raise ConfigError(refused)
    protocol = ProtocolCache(cfg)

    with stage("load"):  # loading, split and grouping come from the protocol cache when they can
        dataset = protocol.dataset(lambda: instantiate(cfg.dataset.loader, root=cfg.data.root,
                                                       download=cfg.data.download, verify=cfg.data.verify))
    log.info("%s", dataset.summary())
    if dataset.group_item is not None:  # the loaded data decides too (a dataset conf without ``feedback``)
        refused = models_meta.feedback_error(str(cfg.model.name), str(cfg.dataset.name), dataset.group_item.implicit)
        if refused:
            raise ConfigError(refused)
    if claim is not None:
        claims.claim(tracker, logger, base_tags["config_hash"], dataset.sha256, include_finished=claim)
    logger.set_tags({"dataset_sha256": dataset.sha256})
    if dataset.group_item is None:  # group-item protocols read no rating threshold
        check_threshold(cfg.eval.threshold, dataset.rating_scale)
    with stage("log"):
        provenance.log_dataset_input(logger, dataset)
        logger.log_artifacts({PROVENANCE: provenance.provenance_record(dataset)})

    with stage("split"):
        splits = protocol.splits(lambda: make_splits(instantiate(cfg.split), dataset, int(cfg.seed)), are_splits)
    if splits[0].group is not None:  # the group split's label (corrected, or shipped: legacy)
        logger.set_tags({"group_split": splits[0].group.label})
    fold_metrics, frames, tables = [], [], {}
    for split in splits:
        metrics, frame, fold_tables = run_fold(cfg, dataset, split, logger, n_folds=len(splits),
                                               stage=stage, protocol=protocol, models=models,
                                               model_cfg=(fold_configs or {}).get(split.fold))
        fold_metrics.append(metrics)
        frames.append(frame)
        for name, table in fold_tables.items():
            tables.setdefault(name, []).append(table.assign(fold=split.fold) if len(splits) > 1 else table)

    metrics = aggregate(fold_metrics)
    predictions = pd.concat(frames, ignore_index=True)
    with stage("log"):
        params, configured = provenance.run_params(cfg, RESULT_KEYS, effective_params(models))
        logger.log_params(params)  # what was trained: the effective values
        logger.set_tags(configured)
        logger.log_metrics(metrics)
        fmt = artifact_format(cfg)
        artifacts: dict[str, Any] = {table_name("predictions", fmt): predictions}
        artifacts.update({table_name(name, fmt): pd.concat(parts, ignore_index=True)
                          for name, parts in tables.items()})
        logger.log_artifacts(artifacts)
    log.debug("%s: %s", run_name(cfg), ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    metrics.update(stage.metrics())  # the last log stage's own writes excluded
    logger.log_metrics(stage.metrics())
    logger.set_tags({"protocol_cache": protocol.summary(),
                     "mlflow.note.content": provenance.describe_run(cfg, varies, base_tags.get("sweep"),
                                                                    summary.headline_cells(metrics))})
    return JobResult(logger.run_id, metrics, predictions, models)


def run_fold(cfg: DictConfig, dataset, split, logger, n_folds: int, stage: Stages | None = None,
             protocol: ProtocolCache | None = None, models: list | None = None, model_cfg: DictConfig | None = None):
    prefix = f"fold{split.fold}_" if n_folds > 1 else ""
    stage = stage or Stages()
    with stage("grouping"):
        make_groups = lambda: instantiate(cfg.grouping)(dataset, split.train, seed=cfg.seed)
        groups = (protocol.groups(split.fold, make_groups, lambda value: isinstance(value, Groups))
                  if protocol is not None else make_groups())
    model = build_model((model_cfg if model_cfg is not None else cfg).model, seed=cfg.seed)

    def log_epoch(values: dict[str, float], step: int | None = None) -> None:
        logger.log_metrics({f"{prefix}{k}": v for k, v in values.items()}, step=step)

    context = FitContext(dataset=dataset, groups=groups, seed=cfg.seed, log_metrics=log_epoch,
                         fold=Fold.from_split(split, seed=cfg.seed),  # its validation part: carved once
                         group_validation=group_validation(split.group, groups.members, int(cfg.seed)))
    with stage("fit"):
        started = time.perf_counter()
        model.fit(split.train, context)
        fit_seconds = time.perf_counter() - started
    weak = divergence.check_model(model)  # far worse than the training mean on validation: a failure
    if weak:
        logger.set_tags(weak)
    if split.fold == 0:  # k-fold runs keep the first fold's model
        with stage("log"):
            blob, note = saved_models.serialize(model, cfg.get("artifacts"))
            logger.set_tags(saved_models.tags(blob, note))
            if blob is not None:
                logger.log_artifacts({saved_models.ARTIFACT: blob})

    with stage("predict"):
        started = time.perf_counter()
        # the rating (RMSE, MAE, the P@k threshold) and, for a model that clips, the score it ranks by
        prediction, score = Scorer(model).scored(split.test, "test pairs")
        predict_seconds = time.perf_counter() - started
    if models is not None:
        models.append(model)

    frame = split.test[["user", "item", "rating"]].assign(prediction=prediction)
    if isinstance(model, RawScores):
        frame["score"] = score
    # the predictions evaluation asks the model for (catalogue, group members, profiling) are the
    # model's work: the predict stage, not the harness's evaluate stage (ranking, aggregation, metrics)
    eval_context = EvalContext(dataset, split.train, frame, groups, model, cfg.eval, seed=int(cfg.seed),
                               group_fold=split.group)
    with stage("evaluate"), model_clock(eval_context) as eval_predict:
        result = evaluate(eval_context)
    stage.move("evaluate", "predict", eval_predict.seconds)
    metrics = {**result.metrics, "fit_seconds": fit_seconds, "predict_seconds": predict_seconds,
               "eval_predict_seconds": eval_predict.seconds,
               **{f"grouping_{k}": v for k, v in groups.stats.items()}}
    if split.group is not None:  # what the group split is (legacy or not) and what it corrected
        metrics.update({"group_split_legacy": float(split.group.legacy),
                        **{f"group_split_{k}": v for k, v in split.group.stats.items()}})
    tables = dict(result.tables)
    tables["groups"] = groups.labels.rename("group").reset_index()
    if isinstance(model, Diagnosed):
        metrics.update(model.diagnostics())
        for name, table in model.artifacts().items():
            tables[name] = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    if n_folds > 1:
        frame = frame.assign(fold=split.fold)
        # per-fold values under their own names: the headline names hold the mean over folds
        logger.log_metrics({f"{prefix}{k}": v for k, v in metrics.items()})
    return metrics, frame, tables


def effective_params(models: list) -> dict[str, Any]:
    """``model.<key>`` -> the value the fitted models trained with, where a model reports one
    (models.trainer.effective_settings); folds that differ give their values in fold order
    (``"111, 110, 111"``)."""
    found: dict[str, list] = {}
    for model in models:
        for key, value in effective_settings(model).items():
            found.setdefault(f"model.{key}", []).append(value)
    return {key: values[0] if len(set(map(str, values))) == 1 else ", ".join(map(str, values))
            for key, values in found.items()}


def aggregate(fold_metrics: list[dict[str, float]]) -> dict[str, float]:
    """Mean over folds (a hold-out has one fold); k-fold also reports ``<metric>_std``."""
    frame = pd.DataFrame(fold_metrics)
    metrics = {k: float(v) for k, v in frame.mean().items()}
    if len(frame) > 1:
        metrics.update({f"{k}_std": float(v) for k, v in frame.std(ddof=1).items()})
    return metrics
