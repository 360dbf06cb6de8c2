"""Building components from config and naming a configuration: Hydra's ``instantiate`` with the
harness's one-line errors, and the config hash that identifies an experiment."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from benchmark.core.errors import GroupbenchError

REPO = Path(__file__).resolve().parents[2]  # the checkout (or the installed tree) holding conf/
CONF = REPO / "conf"

# Config keys that decide a result; the rest (paths, tracking, sweep bookkeeping) do not.
RESULT_KEYS = ("seed", "dataset", "split", "grouping", "model", "eval")



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


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def config_hash(cfg: DictConfig) -> str:
    """sha256 of the resolved result-deciding config: equal hashes mean the same experiment."""
    resolved = to_container(cfg)
    relevant = {key: resolved.get(key) for key in RESULT_KEYS}
    if isinstance(relevant.get("model"), dict) and isinstance(relevant["model"].get("trainer"), dict):
        relevant["model"]["trainer"].pop("progress", None)  # a progress bar changes no result
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.model.name}/{cfg.dataset.name}/seed{cfg.seed}"


