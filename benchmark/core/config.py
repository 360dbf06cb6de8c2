"""Building components from config and naming a configuration: Hydra's ``instantiate`` with the
harness's one-line errors, and the config hash that identifies an experiment."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from benchmark.core.errors import GroupbenchError

REPO = Path(__file__).resolve().parents[2]  # the checkout (or the installed tree) holding conf/
CONF = REPO / "conf"

# Config keys that decide a result; the rest (paths, tracking, sweep bookkeeping) do not.
RESULT_KEYS = ("seed", "dataset", "split", "grouping", "model", "eval")
# A model config's display block (names, the paper's numbers: benchmark/core/models_meta.py). It decides
# no result: never hashed, never logged as a param, never passed to the model.
MODEL_META = "meta"


def instantiate(node, *args, **kwargs):
    """Hydra's instantiate, re-raising our own one-line errors instead of Hydra's wrapper."""
    try:
        return hydra_instantiate(node, *args, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, GroupbenchError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def build_model(model_cfg, **kwargs):
    """The model a ``model`` config node describes (``instantiate`` without its ``meta`` block)."""
    node = copy.copy(model_cfg)  # a shallow copy keeps its parent: ``trainer: ${trainer}`` still resolves
    if MODEL_META in node:
        if isinstance(node, DictConfig):
            with read_write(node), open_dict(node):
                del node[MODEL_META]
        else:
            del node[MODEL_META]
    return instantiate(node, **kwargs)


def without_meta(tree: dict[str, Any]) -> dict[str, Any]:
    """A resolved config (a dict) without ``model.meta``; the model's other keys untouched."""
    model = tree.get("model")
    if isinstance(model, dict) and MODEL_META in model:
        tree = {**tree, "model": {key: value for key, value in model.items() if key != MODEL_META}}
    return tree


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def config_hash(cfg: DictConfig) -> str:
    """sha256 of the resolved result-deciding config: equal hashes mean the same experiment."""
    resolved = without_meta(to_container(cfg))  # names and published numbers decide nothing
    relevant = {key: resolved.get(key) for key in RESULT_KEYS}
    if isinstance(relevant.get("model"), dict) and isinstance(relevant["model"].get("trainer"), dict):
        relevant["model"]["trainer"].pop("progress", None)  # a progress bar changes no result
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.model.name}/{cfg.dataset.name}/seed{cfg.seed}"


