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
SEARCH_DIR = CONF / "search"  # a model's search space for tuning: conf/search/<model>.yaml

# Config keys that decide a result; the rest (paths, tracking, sweep bookkeeping) do not. The top-level
# ``trainer`` decides through ``model.trainer`` (``${trainer}``) for the models that read it, and
# ``tune`` joins the hash of a job that tunes (``config_hash``). What is deliberately left out, and
# why: tests/test_config_hash.py (HASH_EXCLUDED), which perturbs every other key of every model.
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


def search_space_file(model: str) -> dict[str, Any]:
    """``conf/search/<model>.yaml`` as a plain dict ({} when the model has none)."""
    path = SEARCH_DIR / f"{model}.yaml"
    if not path.exists():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}


def tunes(cfg: DictConfig) -> bool:
    """True when the job tunes before its final run: ``tune.enabled`` and a search space for its model."""
    return bool(OmegaConf.select(cfg, "tune.enabled", default=False)) and \
        bool(search_space_file(str(OmegaConf.select(cfg, "model.name", default=""))))


# Bump when the evaluation computes other numbers from the same config (a sweep then reruns its jobs
# instead of resuming runs made under the old rule). 2: rankings read unclipped scores and break ties
# by the seeded random rule (benchmark/protocol/ranking.py; docs/protocol.md, "Ties").
EVALUATION_VERSION = 2


EPHEMERAL_SPLIT = "benchmark.protocol.group_split.ephemeral"  # the one split whose evaluator reads eval.mask_member_items


def config_hash(cfg: DictConfig) -> str:
    """sha256 of the resolved result-deciding config: equal hashes mean the same experiment (with the
    data's sha256, the key a sweep resumes and dedupes by). A job that tunes (``tunes``) adds every
    ``tune.*`` key and its model's search space, which decide what it computes; an untuned job's hash
    is unchanged by them (it reads neither). A model's ``meta`` (names, published numbers) decides nothing.
    A reproduction run (``+reproduction=<name>``) adds the reproduction's name: the same overrides typed by
    hand are another job (untagged), and an ordinary run's hash is unchanged."""
    resolved = without_meta(to_container(cfg))
    relevant = {key: resolved.get(key) for key in RESULT_KEYS}
    relevant["evaluation_version"] = EVALUATION_VERSION
    if isinstance(relevant.get("eval"), dict) and relevant["eval"].get("ties") == "random":
        relevant["eval"] = {k: v for k, v in relevant["eval"].items() if k != "ties"}  # the default: old hashes hold
    split_target = relevant["split"].get("_target_") if isinstance(relevant.get("split"), dict) else None
    if isinstance(relevant.get("eval"), dict) and (relevant["eval"].get("mask_member_items") is False
                                                   or split_target != EPHEMERAL_SPLIT):
        # the default, or a split without held-out groups: only the ephemeral split's evaluator reads the key
        # (+sweep=groups' masked Weeplaces grid, narrowed to another dataset, dedupes with the unmasked jobs)
        relevant["eval"] = {k: v for k, v in relevant["eval"].items() if k != "mask_member_items"}
    if isinstance(relevant.get("eval"), dict) and relevant["eval"].get("protocol", "clean") == "clean":
        # the default (clean) protocol reads neither key: old hashes hold (eval.protocol=authors|authors_metrics, #26)
        relevant["eval"] = {k: v for k, v in relevant["eval"].items() if k not in ("protocol", "authors")}
    if isinstance(relevant.get("dataset"), dict):  # what the files hold (implicit or rated): the data sha256 says it
        relevant["dataset"] = {k: v for k, v in relevant["dataset"].items() if k != "feedback"}
    if isinstance(relevant.get("model"), dict) and isinstance(relevant["model"].get("trainer"), dict):
        trainer = relevant["model"]["trainer"]
        trainer.pop("progress", None)  # a progress bar changes no result
        for key, default in (("optimizer", "adam"), ("optimizer_reset", "never")):  # the defaults: old hashes hold
            if trainer.get(key) == default:
                trainer.pop(key)
    reproduction = resolved.get("reproduction")
    if isinstance(reproduction, dict):  # +reproduction=<name>: its own job (benchmark/core/reproduction.py); its
        relevant["reproduction"] = reproduction.get("name")  # name only, and only when present: old hashes hold
    if tunes(cfg):
        relevant["tune"] = resolved.get("tune")
        relevant["search_space"] = search_space_file(str(cfg.model.name))
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.model.name}/{cfg.dataset.name}/seed{cfg.seed}"


