"""What a run records about itself in MLflow besides metrics: params, tags, name, description, dataset.

* **Params** hold the result-deciding configuration only: the ``RESULT_KEYS`` subtrees of the
  resolved config (``seed``, ``dataset.*``, ``split.*``, ``grouping.*``, ``model.*``, ``eval.*``),
  without settings that change no result (``model.trainer.progress``). A model that reads the
  top-level ``trainer`` node does so through ``model.trainer`` (``trainer: ${trainer}``), so it is
  logged there once, not twice.
* **Tags** hold everything else: paths and tracking settings (``config.data.root``,
  ``config.tracking.uri``, ...), package versions (``version.torch``, ...), the sweep's bookkeeping,
  and ``mlflow.note.content``, the run's description in the MLflow UI.
* The **dataset** is logged as an MLflow dataset input whose digest is the data's sha256, so
  the runs table's Dataset column shows ``ml100k`` and the compare view tells data versions apart.
* The **run name** puts what varies first and stays short: ``λ=0.5 · dmtl · ml100k · s0``.
"""

from __future__ import annotations

import json
import logging
import platform
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

# Distributions whose versions can change a result, tagged ``version.<name>`` on every run; the models'
# own libraries (``meta.packages`` of conf/model/*.yaml) are added after torch.
PACKAGES = ("groupbench", "torch", "numpy", "pandas", "scikit-learn", "scipy", "mlflow", "hydra-core", "omegaconf")
# Config values that change no result: logged as tags, never as params.
UNLOGGED_PARAMS = ("model.trainer.progress",)
HYDRA_FLAGS = ("._partial_", "._convert_", "._recursive_")  # how Hydra builds an object, not what it builds
# Short labels of swept keys, for run names and the sweep's job lines; a model's own come from its
# ``meta.swept`` (benchmark/core/models_meta.py).
SHORT_NAMES = {"trainer.max_epochs": "epochs"}
# Keys a run name and a job line already show in their fixed part.
SHOWN = ("model", "dataset", "seed")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def run_params(cfg: DictConfig, result_keys) -> dict[str, Any]:
    """The result-deciding configuration, flattened (``model.lambda_profile``, ``split.test_size``...)."""
    resolved = without_meta(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))  # display only
    params = flatten({key: resolved[key] for key in result_keys if key in resolved})
    return {key: value for key, value in params.items()
            if key not in UNLOGGED_PARAMS and not key.endswith(HYDRA_FLAGS)}


def config_tags(cfg: DictConfig, result_keys) -> dict[str, str]:
    """Every other config value (paths, tracking, resume, the trainer a model does not read) as
    ``config.<key>`` tags: recorded, searchable, but never a column of the params table."""
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    rest = flatten({key: value for key, value in resolved.items() if key not in result_keys})
    return {f"config.{key}": str(value) for key, value in rest.items()}


@lru_cache(maxsize=8)
def package_versions(packages: tuple[str, ...] | None = None) -> dict[str, str]:
    """``version.<distribution>`` tags (and ``version.python``); "not installed" for a missing one.
    The one place versions are read: the runs' tags (``PACKAGES`` with the models' own libraries
    after torch, by default), and the report's header line."""
    versions = {"version.python": platform.python_version()}
    for name in packages or (*PACKAGES[:2], *models_meta.packages(), *PACKAGES[2:]):
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[f"version.{name}"] = "not installed"
    return versions


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


def describe_run(cfg: DictConfig, varies: Mapping[str, Any] | None = None, sweep: str | None = None) -> str:
    """A Markdown description for the run page (``mlflow.note.content``)."""
    model = cfg.model
    what = f"**{model.name}**"
    swept = [s for s in models_meta.parse(str(model.name), _meta(model)).swept if s.key in model]
    if swept:  # ``(λ = 0.5, attention softmax)``: the model's swept parameters (its meta.swept)
        what += " (" + ", ".join(f"{s.short} = {model[s.key]}" if s.kind == "number" else f"{s.short} {model[s.key]}"
                                 for s in swept) + ")"
    split = str(cfg.split.get("_target_", "?")).rsplit(".", 1)[-1]
    grouping = str(cfg.grouping.get("_target_", "?")).rsplit(".", 1)[-1]
    lines = [f"{what} on **{cfg.dataset.name}**, seed {cfg.seed}: {split} split, {grouping} groups "
             f"(k = {cfg.grouping.get('k', '?')}), P/R/NDCG@{cfg.eval.k} with relevance threshold {cfg.eval.threshold}."]
    if sweep:
        swept = ", ".join(swept_values(varies or {})) or "model, dataset, seed"
        lines.append(f"Job of sweep `{sweep}` (varies: {swept}).")
    lines.append("Artifacts: `config.yaml` (the resolved config), the tables `predictions`, `per_user_metrics`, "
                 "`groups` (Parquet or CSV), and `model.pkl` when saved (`python -m benchmark.recommend --run <run id> --user U`).")
    return "\n\n".join(lines)


def describe_experiment(name: str, sweep: str | None = None, grids: Mapping[str, Any] | None = None,
                        overrides: str = "", jobs: int | None = None) -> str:
    """The experiment's description: for a sweep, its grids and, when the command line narrowed them
    (``overrides``), that command line and the number of ``jobs`` it made (not the full grids')."""
    if sweep is None:
        return (f"Single runs of `python -m benchmark` (experiment `{name}`). One run per command: "
                f"params = the result-deciding config, tags = provenance (`config_hash`, `dataset_sha256`, "
                f"`git_commit`, `version.*`).")
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
