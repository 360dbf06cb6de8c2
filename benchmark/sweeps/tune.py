"""Equal-budget tuning on validation data (``+sweep=tuned``, or ``tune.enabled=true`` for one job).

A tuned job is one (model, dataset, seed). With the seed's split:

1. **validation part**: each user's training ratings are dealt to fitting and validation rows: the
   validation part of the split's fold at ``tune.val_size`` (:class:`benchmark.protocol.folds.Fold`, the
   job's seed), the part the trainer early-stops on when the fractions are equal; the test part of the
   split is never read here. A trial works on ``fold.inner(tune.val_size)``: it fits on the fitting
   rows (its trainer early-stops on that fold's own validation part) and is scored on the validation rows;
2. **study**: ``tune.trials`` trials of seeded Optuna TPE over the model's search space
   (``conf/search/<model>.yaml``); a trial fits on the fitting rows and scores the validation rows
   with the project's own metric code (``tune.metric``: ``val_rmse`` or ``val_ndcg_at_<k>``).
   Trial 0 is the untuned configuration itself (``default_trial``), so a study never chooses a
   configuration that scores worse on validation than the defaults;
3. **final run**: the best trial's values are applied to the config, refit on the whole training
   part and evaluated on test by the ordinary runner (one ``groupbench.role=job`` run).

Every seed has its own study: a configuration chosen on seed 0's data would have seen ratings that
are in seed 1's test part. For the same reason, under ``split=kfold`` every fold has its own study,
on that fold's own training part (the other folds' training parts hold its test rows), and the final
run evaluates each fold with its own study's choice (``run(..., fold_configs=...)``); the cost is
``split.n_folds`` studies per job instead of one. Models without a search space skip the study and
run once.

MLflow: the study is a run (``groupbench.role=study``) with one child per trial
(``groupbench.role=trial``, never a result) and the final run as a child; the chosen values are
logged on the study (params ``chosen.*``, tag ``tuned.chosen``) and on the final run (tag
``tuned.chosen``, and in its ``varies`` tag) and are its params. Trial seconds and the study's tuning seconds are logged.
Resume: a study rebuilds its Optuna history from the FINISHED trial runs with its ``study_key``
tag and runs only the missing trials; the sweeper skips a job whose final run finished (tag
``groupbench.grid_hash``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from benchmark.core.config import SEARCH_DIR, build_model, config_hash, instantiate, search_space_file
from benchmark.core.errors import ConfigError, require
from benchmark.evaluation.base import Scorer
from benchmark.evaluation.group_item import HELDOUT_VALIDATION_CUTOFF, VALIDATION_CUTOFF, group_validation
from benchmark.evaluation.groups import aggregations_of
from benchmark.evaluation.metrics import summarize
from benchmark.evaluation.scoring import group_scores_of
from benchmark.protocol.folds import Fold
from benchmark.protocol.group_split import tuning_fold
from benchmark.protocol.split import make_splits
from benchmark.run.job import build_tracker, dataset_defaults, run
from benchmark.tracking.queries import retry_locked
from benchmark.tracking.tracker import RunLogger
from models.base import FitContext

log = logging.getLogger("benchmark.sweeps.tune")

METRICS = ("val_rmse", "val_mae", "val_ndcg_at_{k}", "val_precision_at_{k}", "val_recall_at_{k}")


# --------------------------------------------------------------------------------------------
# search spaces


def search_space(model: str) -> dict[str, dict[str, Any]]:
    """``conf/search/<model>.yaml``: dotted config key -> {type: int|float|categorical, ...}; {} if none."""
    path = SEARCH_DIR / f"{model}.yaml"
    space = search_space_file(model)  # the file the config hash of a tuned job reads too
    for key, spec in space.items():
        require(isinstance(spec, dict) and spec.get("type") in ("int", "float", "categorical"),
                f"{path}: {key} needs type int, float or categorical")
    return space


def distributions(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    made = {}
    for key, spec in space.items():
        if spec["type"] == "categorical":
            made[key] = CategoricalDistribution(list(spec["choices"]))
        elif spec["type"] == "int":
            made[key] = IntDistribution(int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
        else:
            made[key] = FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
    return made


def apply(cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with the dotted keys set (``trainer.lr`` reaches DMTL through ``${trainer}``)."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        for key, value in values.items():
            OmegaConf.update(out, key, value, merge=True, force_add=True)
    return out


# --------------------------------------------------------------------------------------------
# the validation part and one trial


@dataclass
class TuningData:
    """What every trial reads: ``fold`` is the trial fold (train = the fitting rows, test = the
    validation rows of the split's fold at ``tune.val_size``), ``groups`` fit on its training part.

    On a group split (``fold.group``: CAMRa2011, Mafengwo, MafengwoS, Weeplaces) the trial fold's group
    stream is :func:`benchmark.protocol.group_split.tuning_fold` (the outer validation cases as its test
    cases, a second carve as its validation part), and ``scoring`` scores a fitted model on the outer
    validation cases (:class:`models.base.GroupValidation`): the objective of every model there."""

    dataset: Any
    fold: Fold
    groups: Any
    scoring: Any = None           # GroupValidation of the outer validation cases (group splits), else None
    strategy: str | None = None   # the member aggregation a user-level model is scored by there

    @property
    def fit_rows(self) -> pd.DataFrame:
        return self.fold.train

    @property
    def val_rows(self) -> pd.DataFrame:
        return self.fold.test


def load(cfg: DictConfig) -> tuple[Any, list]:
    """The job's dataset and its split (a list of folds, one for a hold-out), made as the runner makes them."""
    dataset = instantiate(cfg.dataset.loader, root=cfg.data.root, download=cfg.data.download, verify=cfg.data.verify)
    return dataset, make_splits(instantiate(cfg.split), dataset, int(cfg.seed))


def tuning_data(cfg: DictConfig, loaded: tuple[Any, list] | None = None, fold_number: int = 0) -> TuningData:
    """The training part of fold ``fold_number`` of the seed's split, split into fitting and validation
    rows by its fold; its test part is dropped unread (under k-fold, each fold is tuned on its own).
    On a group split: the user-train rows whole, the group stream's tuning fold (``TuningData``)."""

    dataset, splits = loaded if loaded is not None else load(cfg)
    split = splits[fold_number]
    if split.group is not None:
        inner = tuning_fold(split.group, int(cfg.seed))
        trial_fold = Fold(split.train, None, seed=int(cfg.seed), number=split.fold, group=inner)
        groups = instantiate(cfg.grouping)(dataset, trial_fold.train, seed=cfg.seed)
        scoring = group_validation(split.group, groups.members, int(cfg.seed))
        require(scoring is not None, f"dataset {cfg.dataset.name}: the split has no group validation cases to tune on")
        return TuningData(dataset, trial_fold, groups, scoring, aggregations_of(cfg.eval)[0])
    fold = Fold.from_split(split, seed=int(cfg.seed))
    require(not fold.validation(float(cfg.tune.val_size)).empty,
            f"tune.val_size={cfg.tune.val_size} leaves no validation rows")
    trial_fold = fold.inner(float(cfg.tune.val_size))
    groups = instantiate(cfg.grouping)(dataset, trial_fold.train, seed=cfg.seed)
    return TuningData(dataset, trial_fold, groups)


def score_trial(cfg: DictConfig, data: TuningData) -> dict[str, float]:
    """Fit on the fitting rows, predict the validation rows, and score them like test (metrics.summarize).
    On a group split: fit on the tuning fold (early stopping on its own validation part) and score the
    outer validation cases with the model's group scores (its own, or its members' aggregated by
    ``data.strategy``), ranked as the test cases are."""

    model = build_model(cfg.model, seed=cfg.seed)
    context = FitContext(dataset=data.dataset, groups=data.groups, seed=cfg.seed, fold=data.fold)
    if data.scoring is not None:
        context.group_validation = group_validation(data.fold.group, data.groups.members, int(cfg.seed))
        model.fit(data.fit_rows, context)
        scores = group_scores_of(Scorer(model), [data.strategy])
        strategy = scores.strategies[0]

        def score_fn(members, pairs):
            return scores.pairs(members, pairs)[strategy][1]

        return {f"val_{data.scoring.name}": data.scoring.score(score_fn)}
    model.fit(data.fit_rows, context)
    rating, score = Scorer(model).scored(data.val_rows, what="validation pairs")
    frame = data.val_rows[["user", "item", "rating"]].assign(prediction=rating)
    if score is not rating:  # a clipping model is ranked by its score before the clip, as in the test
        frame["score"] = score
    return summarize(frame, int(cfg.eval.k), float(cfg.eval.threshold), prefix="val_", seed=int(cfg.seed))


def objective(cfg: DictConfig, loaded: tuple[Any, list] | None = None) -> tuple[str, str]:
    """(metric name, optuna direction) of ``tune.metric``; on a group split (``loaded``'s split has a
    group stream), the group validation score whatever ``tune.metric`` says: ``val_group_ndcg_at_10``
    (sampled cases) or ``val_group_recall_at_20`` (ephemeral groups), maximised."""
    if loaded is not None and loaded[1][0].group is not None:
        name = f"group_recall_at_{HELDOUT_VALIDATION_CUTOFF}" if loaded[1][0].group.heldout \
            else f"group_ndcg_at_{VALIDATION_CUTOFF}"
        return f"val_{name}", "maximize"
    k = int(cfg.eval.k)
    names = [m.format(k=k) for m in METRICS]
    metric = str(cfg.tune.metric).format(k=k)
    if metric not in names:
        raise ConfigError(f"tune.metric={cfg.tune.metric} is not one of {', '.join(names)}")
    return metric, "minimize" if metric in ("val_rmse", "val_mae") else "maximize"


# --------------------------------------------------------------------------------------------
# the study


def study_key(cfg: DictConfig, space: dict, data_sha256: str, fold: int | None = None) -> str:
    """Same key = same study: the job's result-deciding config, the tuning settings, the space, and the
    data's sha256 (as a job's result is keyed: a study on other, e.g. edited, data is another study);
    ``fold``: the fold a k-fold job's study tunes on (None for a hold-out: its one study)."""

    tune = {k: cfg.tune[k] for k in ("trials", "metric", "val_size", "sampler_seed")}
    # "trial0", "sampler": studies since trial 0 became the defaults and each trial got its own seeded
    # sampler (an older study's trials are not mixed in)
    blob = json.dumps({"job": config_hash(cfg), "tune": OmegaConf.to_container(OmegaConf.create(tune)),
                       "space": space, "data": data_sha256, "trial0": "defaults", "sampler": "per trial",
                       **({"fold": int(fold)} if fold is not None else {})}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_trial(cfg: DictConfig, dists: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """Trial 0: the job's own values of the searched keys (conf/model/*.yaml, conf/trainer), each brought
    into its range (DMTL's ``trainer.weight_decay=0`` becomes the log range's 1e-07), and notes on what
    was moved; None when a value is not among a categorical key's choices or is unset."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    values, notes = {}, []
    for key, dist in dists.items():
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(dist, CategoricalDistribution):
            if value not in dist.choices:
                return None, [f"{key}={value} is not among the search space's choices {list(dist.choices)}"]
        elif value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, [f"{key}={value} is not a number"]
        else:
            inside = min(max(value, dist.low), dist.high)
            inside = int(inside) if isinstance(dist, IntDistribution) else float(inside)
            if inside != value:
                notes.append(f"{key}={value} -> {inside} (the search range)")
            value = inside
        values[key] = value
    return values, notes


def trial_sampler(cfg: DictConfig, number: int):
    """TPE seeded for trial ``number`` (from ``tune.sampler_seed``, the job's seed and the number): a
    trial's proposal depends only on them and the trials before it, so a study resumed after a kill
    proposes what the uninterrupted study would have (one sampler for the whole study restarts its
    random stream on resume and repeats the draws the killed run already made)."""
    import numpy as np
    import optuna

    seed = np.random.SeedSequence([int(cfg.tune.sampler_seed), int(cfg.seed), int(number)]).generate_state(1)[0]
    return optuna.samplers.TPESampler(seed=int(seed))


def finished_trials(tracker, key: str) -> dict[int, dict]:
    """trial number -> {values, value, seconds} of the FINISHED trial runs of a study (newest wins)."""

    runs = retry_locked(tracker.client.search_runs, [tracker.experiment_id],
                         filter_string=f"tags.`tuned.study_key` = '{key}' and tags.`groupbench.role` = 'trial' "
                                       f"and attributes.status = 'FINISHED'", max_results=5000,
                         order_by=["attributes.start_time ASC"])
    found = {}
    for trial in runs:
        number = int(trial.data.tags["tuned.trial"])
        found[number] = {"values": json.loads(trial.data.tags["tuned.values"]),
                         "value": trial.data.metrics.get("objective"),
                         "seconds": trial.data.metrics.get("trial_seconds", 0.0)}
    return found


def _override(key: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = "'" + value.replace("'", "\\'") + "'"
    else:
        text = repr(value)
    return f"++{key}={text}"


@dataclass
class StudyResult:
    run_id: str
    chosen: dict[str, Any]
    value: float
    trials_run: int
    tuning_seconds: float
    key: str = ""                 # its study_key (tag tuned.study_key of the study and its trials)


def run_study(cfg: DictConfig, tracker, parent_run_id: str | None = None,
              tags: dict[str, str] | None = None, loaded: tuple[Any, list] | None = None,
              fold_number: int = 0) -> StudyResult:
    """Run (or finish) the study of one job (of fold ``fold_number`` under k-fold, on that fold's own
    training part); returns the chosen values. Never reads a test part. ``loaded``: the job's
    (dataset, split) when the caller has them (``load``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = search_space(str(cfg.model.name))
    require(space, f"model {cfg.model.name} has no search space (conf/search/{cfg.model.name}.yaml)")
    trials = int(cfg.tune.trials)
    require(trials >= 1, f"tune.trials={cfg.tune.trials} must be >= 1")
    loaded = loaded if loaded is not None else load(cfg)
    metric, direction = objective(cfg, loaded)
    dists = distributions(space)
    per_fold = len(loaded[1]) > 1  # k-fold: one study per fold
    key = study_key(cfg, space, loaded[0].sha256, fold_number if per_fold else None)
    name = f"study:{cfg.model.name}/{cfg.dataset.name}/seed{cfg.seed}" + (f"/fold{fold_number}" if per_fold else "")
    fold_tag = {"tuned.fold": str(fold_number)} if per_fold else {}
    study_tags = {"groupbench.role": "study", "tuned.study_key": key, "dataset_sha256": loaded[0].sha256,
                  "model": str(cfg.model.name),
                  "dataset": str(cfg.dataset.name), "seed": str(cfg.seed), **fold_tag, **(tags or {})}
    with tracker.run(name, tags=study_tags, parent_run_id=parent_run_id) as study_log:
        study_log.log_params({"tune.trials": trials, "tune.metric": metric, "tune.val_size": cfg.tune.val_size,
                              "tune.sampler": "optuna.TPESampler, seeded per trial (trial_sampler)",
                              "tune.sampler_seed": cfg.tune.sampler_seed,
                              "search_space": json.dumps(space, sort_keys=True)})
        study = optuna.create_study(direction=direction, sampler=trial_sampler(cfg, 0))
        done = finished_trials(tracker, key)
        for number in sorted(done):
            if number < trials and done[number]["value"] is not None:
                study.add_trial(optuna.trial.create_trial(params=done[number]["values"], distributions=dists,
                                                          value=done[number]["value"]))
        seconds = sum(done[n]["seconds"] for n in done if n < trials)
        reused = len(study.trials)
        if reused:
            log.info("%s: %d of %d trials already FINISHED, resuming", name, reused, trials)
        data = tuning_data(cfg, loaded, fold_number) if reused < trials else None
        defaults, moved = default_trial(cfg, dists)
        if defaults is None:
            log.warning("%s: trial 0 cannot be the defaults (%s); every trial is sampled", name, "; ".join(moved))
        elif not reused:
            study.enqueue_trial(defaults)
            study_log.set_tags({"tuned.trial0": json.dumps(defaults, sort_keys=True),
                                **({"tuned.trial0_moved": "; ".join(moved)} if moved else {})})
        ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        while sum(t.state in ended for t in study.trials) < trials:  # an enqueued trial waits in study.trials
            study.sampler = trial_sampler(cfg, len(study.trials))
            trial = study.ask(dists)
            number = trial.number
            values = dict(trial.params)
            trial_tags = {"groupbench.role": "trial", "tuned.study_key": key, "tuned.trial": str(number),
                          "tuned.defaults": str(defaults is not None and number == 0 and not reused).lower(),
                          "tuned.values": json.dumps(values), "model": str(cfg.model.name),
                          "dataset": str(cfg.dataset.name), "seed": str(cfg.seed), **fold_tag}
            label = " ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                             for k, v in values.items())
            started = time.perf_counter()
            try:
                with tracker.run(f"trial{number} {label}", tags=trial_tags, parent_run_id=study_log.run_id) as trial_log:
                    trial_log.log_params(values)
                    scores = score_trial(apply(cfg, values), data)
                    elapsed = time.perf_counter() - started
                    value = scores[metric]
                    require(math.isfinite(value), f"trial {number}: {metric} is not finite")
                    trial_log.log_metrics({**scores, "objective": value, "trial_seconds": elapsed})
            except Exception as exc:  # a diverging configuration is a failed trial, not a failed study
                seconds += time.perf_counter() - started
                log.warning("%s trial %d failed: %s", name, number, str(exc).splitlines()[0] if str(exc) else exc)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            seconds += elapsed
            study.tell(trial, value)
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        require(completed, f"{name}: all {trials} trials failed; see the trial runs' errors")
        best = study.best_trial
        study_log.log_params({f"chosen.{k}": v for k, v in best.params.items()})
        study_log.set_tags({"tuned.chosen": json.dumps(best.params, sort_keys=True)})
        study_log.log_metrics({"tuning_seconds": seconds, "n_trials": len(study.trials),
                               "n_trials_failed": len(study.trials) - len(completed),
                               "n_trials_reused": reused, f"best_{metric}": best.value,
                               "mean_trial_seconds": seconds / max(len(study.trials), 1)})
        log.info("%s: best %s=%.4f with %s (%d trials, %.1f s)", name, metric, best.value, best.params,
                 len(study.trials), seconds)
        return StudyResult(study_log.run_id, dict(best.params), float(best.value), len(study.trials) - reused,
                           seconds, key)


# --------------------------------------------------------------------------------------------
# a tuned job: study, then the final run


def tuning(cfg: DictConfig) -> bool:
    """``tune.enabled`` is true (a bool): anything else (``maybe``) runs untuned, and the runner's schema
    check refuses it in one line with a FAILED run before any study or data work."""
    return OmegaConf.select(cfg, "tune.enabled", default=False) is True


def run_tuned(cfg: DictConfig, tracker=None, parent_run_id: str | None = None, tags: dict[str, str] | None = None):
    """Tune on validation data, then refit the chosen configuration on the training part and test it.
    Under k-fold, each fold is tuned on its own training part and tested with its own choice."""

    cfg = dataset_defaults(cfg)  # as the sweep hashed it and the job will run it
    tracker = tracker or build_tracker(cfg)
    tags = dict(tags or {})
    grid_hash = config_hash(cfg)  # the sweep's job before tuning: a rerun skips it once its final run finished
    space = search_space(str(cfg.model.name))
    if not space:
        return run(cfg, tracker, parent_run_id, {**tags, "groupbench.grid_hash": grid_hash, "tuned.trials": "0"})
    loaded = load(cfg)
    study_tags = {k: v for k, v in tags.items() if not k.startswith("varies.")}
    metric = objective(cfg, loaded)[0]
    final_tags = {**tags, "groupbench.grid_hash": grid_hash, "tuned.trials": str(cfg.tune.trials),
                  "tuned.metric": metric}  # what the study maximised or minimised (the group score on group splits)
    if len(loaded[1]) == 1:  # a hold-out: one study, its choice refit and tested
        study = run_study(cfg, tracker, parent_run_id, study_tags, loaded)
        final_tags.update({"tuned.study_run_id": study.run_id, "tuned.chosen": json.dumps(study.chosen, sort_keys=True),
                           **{f"varies.{k}": (f"{v:.4g}" if isinstance(v, float) else str(v))
                              for k, v in study.chosen.items()}})
        result = run(apply(cfg, study.chosen), tracker, study.run_id, final_tags)
        RunLogger(tracker.client, result.run_id).log_metrics({"tuning_seconds": study.tuning_seconds,
                                                              f"tuned_best_{metric}": study.value})
        return result
    # k-fold: fold f's study tunes on fold f's training part only (the other folds' training parts hold
    # its test rows); the final run fits and tests fold f with fold f's choice
    outside = sorted(key for key in space if not key.startswith(("model.", "trainer.")))
    require(not outside, f"conf/search/{cfg.model.name}.yaml searches {outside}: under split=kfold each fold is "
                         f"tuned on its own, and only model.* / trainer.* keys may differ between folds")
    studies = {split.fold: run_study(cfg, tracker, parent_run_id, study_tags, loaded, split.fold)
               for split in loaded[1]}
    final_tags.update({"tuned.study_run_ids": json.dumps({str(f): s.run_id for f, s in studies.items()}),
                       "tuned.chosen": json.dumps({f"fold{f}": s.chosen for f, s in studies.items()}, sort_keys=True)})
    result = run(cfg, tracker, parent_run_id, final_tags,
                 fold_configs={f: apply(cfg, s.chosen) for f, s in studies.items()})
    RunLogger(tracker.client, result.run_id).log_metrics({
        "tuning_seconds": sum(s.tuning_seconds for s in studies.values()),
        f"tuned_best_{metric}": sum(s.value for s in studies.values()) / len(studies),
        **{f"fold{f}_tuned_best_{metric}": s.value for f, s in studies.items()}})
    return result


def chosen_overrides(chosen: dict[str, Any]) -> list[str]:
    """The chosen values as Hydra overrides (to rerun a tuned configuration by hand)."""
    return [_override(k, v) for k, v in chosen.items()]
