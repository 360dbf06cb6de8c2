"""What a run records about itself in MLflow besides metrics: params, tags, name, description, dataset.

* **Params** hold what was trained: the ``RESULT_KEYS`` subtrees of the resolved config (``seed``,
  ``dataset.*``, ``split.*``, ``grouping.*``, ``model.*``, ``eval.*``), with the values the fit
  actually used where they differ from the configured ones (``model.trainer.batch_size`` and
  ``model.trainer.lr``, which the trainer scales down on a small dataset; the configured values
  stay in the ``config.yaml`` artifact and in the ``configured`` tag). No import paths: a
  ``split._target_`` becomes ``split = holdout``, a ``_target_`` under a node with a ``name``
  (the model, the dataset's loader) is dropped; no plumbing (``PLUMBING``: the device, the
  progress bar). A model that reads the top-level ``trainer`` node does so through
  ``model.trainer`` (``trainer: ${trainer}``), so it is logged there once, not twice.
* **Tags** are few (at most about 15 besides MLflow's own ``mlflow.*``, tests/test_runner.py): the
  keys resume and the report read (``groupbench.role``, ``config_hash``, ``dataset_sha256``,
  ``git_commit``, the sweep's ``sweep``, ``varies``, ``tuned.*``), the saved model's
  (``model_artifact``, ``model_sha256``), the owner process (``groupbench.owner``) and the
  description (``mlflow.note.content``), which leads with the headline metrics. Everything else is
  in artifacts: the resolved config in ``config.yaml``, the package versions and the per-file data
  hashes and notes in ``provenance.json``.
* The **dataset** is logged as an MLflow dataset input whose digest is the data's sha256, so
  the runs table's Dataset column shows ``ml100k`` and the compare view tells data versions apart.
* The **run name** puts what varies first and stays short: ``λ=0.5 · dmtl · ml100k · s0``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import platform
import re
import time
import warnings
from functools import lru_cache
from importlib import metadata
from typing import Any, Mapping

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag
from omegaconf import DictConfig, OmegaConf

from benchmark.core import models_meta
from benchmark.core.config import MODEL_META, without_meta
from benchmark.tracking.queries import retry_locked

log = logging.getLogger(__name__)

# Distributions whose versions can change a result, in every run's ``provenance.json`` (``versions``); the models'
# own libraries (``meta.packages`` of conf/model/*.yaml) are added after torch.
PACKAGES = ("groupbench", "torch", "numpy", "pandas", "scikit-learn", "scipy", "mlflow", "hydra-core", "omegaconf")
# Plumbing among the result keys, by the key's last part: where and how a model runs, or what it prints,
# not what it computes (config.yaml keeps them).
PLUMBING = ("device", "progress", "verbose")
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
HYDRA_FLAGS = ("._partial_", "._convert_", "._recursive_")  # how Hydra builds an object, not what it builds
TARGET = "._target_"
# A run's tags besides MLflow's own (``mlflow.*``, which the UI does not list): at most this many on any
# job run, single, sweep job or tuned (tests/test_run_record.py, tests/test_sweeps.py, tests/test_tune.py).
MAX_TAGS = 15
# The tag holding the configured values of the params that differ from them (the trainer's scaled batch and lr).
CONFIGURED_TAG = "configured"
# Short labels of swept keys, for run names and the sweep's job lines; a model's own come from its
# ``meta.swept`` (benchmark/core/models_meta.py).
SHORT_NAMES = {"trainer.max_epochs": "epochs"}
# Keys a run name and a job line already show in their fixed part.
SHOWN = ("model", "dataset", "seed")


def visible_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """A run's tags as its page lists them: MLflow's own ``mlflow.*`` (name, description, source,
    parent) are shown in their places, not among the tags."""
    return {key: value for key, value in tags.items() if not key.startswith("mlflow.")}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@lru_cache(maxsize=256)
def _import_path(value: str) -> bool:
    """``surprise.SVD``, ``lenskit.als.BiasedMFScorer``: dotted names under an installed module."""
    return bool(IMPORT_PATH.fullmatch(value)) and importlib.util.find_spec(value.split(".", 1)[0]) is not None


def readable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Flat config keys -> params: plumbing (``PLUMBING``) and Hydra's flags dropped, and no import
    path: a top-level node's ``_target_`` (``split._target_: benchmark.protocol.split.holdout``)
    becomes the node's own param (``split = holdout``), one under a named node or deeper
    (``model._target_``, ``dataset.loader._target_``) is dropped (``model.name`` / ``dataset.name``
    say it), and a value naming a class keeps its last part (``model.algorithm = SVD``). Also the
    report's view of runs logged before these rules (benchmark/report/collect.py)."""
    named = {key.split(".", 1)[0] for key in params if key.count(".") == 1 and key.endswith(".name")}
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key.rsplit(".", 1)[-1] in PLUMBING or key.endswith(HYDRA_FLAGS):
            continue
        if key.endswith(TARGET):
            node = key[:-len(TARGET)]
            if "." not in node and node not in named:
                out[node] = str(value).rsplit(".", 1)[-1]
            continue
        out[key] = value.rsplit(".", 1)[-1] if isinstance(value, str) and _import_path(value) else value
    return out


def configured_params(cfg: DictConfig, result_keys) -> dict[str, Any]:
    """The result-deciding configuration as configured, flattened and :func:`readable`
    (``model.lambda_profile``, ``split = holdout``, ``split.test_size``...)."""
    resolved = without_meta(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))  # display only
    return readable(flatten({key: resolved[key] for key in result_keys if key in resolved}))


def run_params(cfg: DictConfig, result_keys, effective: Mapping[str, Any] | None = None,
               ) -> tuple[dict[str, Any], dict[str, str]]:
    """(params, tags): the configured params with the ``effective`` values (full keys,
    ``model.trainer.lr``) in place of the configured ones, and, when any differs, the
    ``configured`` tag: a JSON object of those keys' configured values."""
    params = configured_params(cfg, result_keys)
    changed = {key: params[key] for key, value in (effective or {}).items()
               if key in params and str(value) != str(params[key])}
    params.update({key: value for key, value in (effective or {}).items() if key in params})
    return params, ({CONFIGURED_TAG: json.dumps(changed, sort_keys=True, default=str)} if changed else {})


def as_configured(params: Mapping[str, Any], configured_tag: str | None) -> dict[str, Any]:
    """A run's params as configured: :func:`readable`, with the ``configured`` tag's values in place of
    the effective ones. What groups runs into one configuration whatever their data size did to the
    trainer (the report's cells)."""
    out = readable(params)
    if configured_tag:
        try:
            out.update({key: str(value) for key, value in json.loads(configured_tag).items()})
        except (ValueError, AttributeError):
            pass
    return out


@lru_cache(maxsize=8)
def package_versions(packages: tuple[str, ...] | None = None) -> dict[str, str]:
    """``version.<distribution>`` (and ``version.python``); "not installed" for a missing one.
    The one place versions are read: the runs' ``provenance.json`` (``PACKAGES`` with the models' own libraries
    after torch, by default), and the report's header line."""
    versions = {"version.python": platform.python_version()}
    for name in packages or (*PACKAGES[:2], *models_meta.packages(), *PACKAGES[2:]):
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[f"version.{name}"] = "not installed"
    return versions


def provenance_record(dataset=None) -> dict[str, Any]:
    """The ``provenance.json`` artifact: the package versions and, once loaded, the data's sha256, per
    file, and the loader's notes (ITM-Rec's quirks)."""
    record: dict[str, Any] = {"versions": {key.removeprefix("version."): value
                                           for key, value in package_versions().items()}}
    if dataset is not None:
        record["dataset"] = {"name": dataset.name, "sha256": dataset.sha256, "files_sha256": dict(dataset.files_sha256),
                             "notes": dict(dataset.notes)}
    return record


def source_tags(commit: str) -> dict[str, str]:
    """MLflow's own source tags, so the runs table's Source column names the command and commit."""
    tags = {"mlflow.source.name": "python -m benchmark", "mlflow.source.type": "LOCAL"}
    if commit and commit != "unknown":
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    return tags


def short_name(key: str) -> str:
    return {**SHORT_NAMES, **models_meta.short_names()}.get(key, key.rsplit(".", 1)[-1])


def swept_values(varies: Mapping[str, Any]) -> list[str]:
    """``["λ=0.5", "attention=none"]``: what a sweep job varies beyond model, dataset and seed."""
    return [f"{short_name(key)}={value}" for key, value in varies.items() if key not in SHOWN]


def display_name(cfg: DictConfig, varies: Mapping[str, Any] | None = None) -> str:
    """The MLflow run name: swept values first, then model, dataset, seed (``λ=0.5 · dmtl · ml100k · s0``)."""
    parts = swept_values(varies or {}) + [str(cfg.model.name), str(cfg.dataset.name), f"s{cfg.seed}"]
    return " · ".join(parts)


def _meta(model: DictConfig) -> dict | None:
    node = model.get(MODEL_META)
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def describe_run(cfg: DictConfig, varies: Mapping[str, Any] | None = None, sweep: str | None = None,
                 headline: list[tuple[str, list[str]]] | None = None) -> str:
    """A Markdown description for the run page (``mlflow.note.content``); a finished run's leads with its
    ``headline`` metrics (``[("rating", ["RMSE 0.9312", "MAE 0.7352"]), ...]``, benchmark/run/summary.py)."""
    model = cfg.model
    what = f"**{model.name}**"
    swept = [s for s in models_meta.parse(str(model.name), _meta(model)).swept if s.key in model]
    if swept:  # ``(λ = 0.5, attention softmax)``: the model's swept parameters (its meta.swept)
        what += " (" + ", ".join(f"{s.short} = {model[s.key]}" if s.kind == "number" else f"{s.short} {model[s.key]}"
                                 for s in swept) + ")"
    split = str(cfg.split.get("_target_", "?")).rsplit(".", 1)[-1]
    grouping = str(cfg.grouping.get("_target_", "?")).rsplit(".", 1)[-1]
    lines = ["\n".join(f"- **{label}**: " + " · ".join(cells) for label, cells in headline)] if headline else []
    lines += [f"{what} on **{cfg.dataset.name}**, seed {cfg.seed}: {split} split, {grouping} groups "
             f"(k = {cfg.grouping.get('k', '?')}), P/R/NDCG@{cfg.eval.k} with relevance threshold {cfg.eval.threshold}."]
    if sweep:
        swept = ", ".join(swept_values(varies or {})) or "model, dataset, seed"
        lines.append(f"Job of sweep `{sweep}` (varies: {swept}).")
    lines.append("Artifacts: `config.yaml` (the resolved config, as configured: the params hold the values "
                 "trained with), `provenance.json` (package versions, the data files' sha256 and notes), the tables `predictions`, `per_user_metrics`, "
                 "`groups` (Parquet or CSV), and `model.pkl` when saved (`python -m benchmark.recommend --run <run id> --user U`).")
    return "\n\n".join(lines)


def describe_experiment(name: str, sweep: str | None = None, grids: Mapping[str, Any] | None = None,
                        overrides: str = "", jobs: int | None = None) -> str:
    """The experiment's description: for a sweep, its grids and, when the command line narrowed them
    (``overrides``), that command line and the number of ``jobs`` it made (not the full grids')."""
    if sweep is None:
        return (f"Single runs of `python -m benchmark` (experiment `{name}`). One run per command: "
                f"params = the result-deciding config as trained, tags = what resume and the report read "
                f"(`config_hash`, `dataset_sha256`, `git_commit`), `config.yaml` and `provenance.json` = the rest.")
    grid_text = "; ".join(f"{grid}: " + ", ".join(f"{k}={v}" for k, v in values.items())
                          for grid, values in (grids or {}).items())
    return (f"Sweep `{sweep}` (`python -m benchmark +sweep={sweep}`): one parent run `sweep:{sweep}` per "
            f"invocation, one child run per job. Grids: {grid_text or 'command line'}. "
            + (f"The first invocation's command line `{overrides}` narrows or overrides them: "
               f"{jobs} job(s), not the full grids. " if overrides and jobs is not None else
               f"{jobs} job(s). " if jobs is not None else "")
            + f"Report: `python -m benchmark.report --experiment {name}`.")


def set_experiment_description(client, experiment_id: str, text: str) -> None:
    """Describe the experiment once; a description written by a person is kept."""
    try:
        experiment = client.get_experiment(experiment_id)
        if not experiment.tags.get("mlflow.note.content"):
            client.set_experiment_tag(experiment_id, "mlflow.note.content", text)
    except Exception as exc:  # a description is a courtesy: never fail a run over it
        log.debug("experiment description not set: %s", exc)


class FilesSource(DatasetSource):
    """Where a dataset input came from: the files its loader read (``ml-100k/u.data``, ...)."""

    def __init__(self, files: list[str]):
        self.files = list(files)

    @staticmethod
    def _get_source_type() -> str:
        return "groupbench"

    def load(self, **kwargs):
        raise NotImplementedError("load the data with its groupbench loader (conf/dataset/*.yaml)")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> "FilesSource":
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> "FilesSource":
        return cls(source_dict.get("files", []))


def log_dataset_input(logger, dataset, context: str = "ratings") -> None:
    """The run's data as an MLflow dataset input: its name, digest = the data's sha256 (cut to
    MLflow's 36-character digest column), source = the files read, the ratings' schema and size."""

    ratings = dataset.ratings
    with warnings.catch_warnings():  # MLflow's hint about integer columns concerns model signatures
        warnings.simplefilter("ignore", UserWarning)
        # the schema from a few rows: inferring it from all of ML-100K's costs 0.13 s per job
        schema = PandasDataset(ratings.head(100), source=FilesSource([]), targets="rating")._to_mlflow_entity().schema
    source = FilesSource(sorted(dataset.files_sha256))
    entity = DatasetInput(
        dataset=DatasetEntity(name=dataset.name, digest=dataset.sha256[:36], source_type=source._get_source_type(),
                              source=json.dumps(source.to_dict()), schema=schema,
                              profile=json.dumps({"num_rows": len(ratings), "num_elements": int(ratings.size)})),
        tags=[InputTag(key="mlflow.data.context", value=context)])
    try:
        retry_locked(logger.client.log_inputs, logger.run_id, datasets=[entity])
    except Exception:  # parallel jobs may insert the experiment's dataset row at once: the second finds it
        time.sleep(0.5)
        retry_locked(logger.client.log_inputs, logger.run_id, datasets=[entity])
