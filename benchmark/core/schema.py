"""Types and ranges of the config's values, checked before any data work.

One table of rules, one rule per key: ``seed=true``, ``eval.k=abc``, ``trainer.lr=abc`` or
SVD's ``model.params.n_factors=-5`` are refused with a :class:`ConfigError` naming the key, the
value and the fix, before a dataset is read. Components still validate their own kwargs (DMTL
its sizes, the splitter its fractions); this module holds the checks no component owns, and the
types Hydra cannot know (an override's value is parsed by its looks: ``abc`` is a string, ``true``
a bool). Keys absent from a config are not checked, so a model without ``params`` or a config
without ``trainer`` passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmark.core.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What one key accepts: a kind (int, float, bool, str), an optional range and choices."""

    kind: type
    low: float | None = None           # inclusive unless low_open
    high: float | None = None          # inclusive unless high_open
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    nullable: bool = False
    fix: str = ""                      # where to set it / what to use, appended to the message

    def describe(self) -> str:
        kind = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}[self.kind]
        if self.choices:
            return f"one of {list(self.choices)}"
        bounds, shown = [], (lambda x: str(int(x)) if self.kind is int else f"{x:g}")
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {shown(self.low)}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {shown(self.high)}")
        return kind + (" " + " and ".join(bounds) if bounds else "") + (" (or null)" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind is bool:
            return isinstance(value, bool)
        if isinstance(value, bool):  # true is not a seed, nor a learning rate
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if self.kind is float and not (isinstance(value, (int, float)) and math.isfinite(value)):
            return False
        if self.kind is str and not isinstance(value, str):
            return False
        if self.choices is not None and value not in self.choices:
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


INT_POS, INT_NONNEG = Rule(int, low=1), Rule(int, low=0)
NONNEG, BOOL = Rule(float, low=0), Rule(bool, fix="use true or false")

RULES: dict[str, Rule] = {
    # numpy's and scikit-learn's seeds are 32-bit: 2**32 passed here and failed deep inside KMeans
    "seed": Rule(int, low=0, high=2**32 - 1, fix="use an integer such as seed=0"),
    "resume": BOOL,
    "data.download": BOOL,
    "data.verify": BOOL,
    "data.root": Rule(str, nullable=True, fix="set it to the folder holding ml-100k/ and itm-rec/"),
    "eval.k": Rule(int, low=1, fix="use e.g. eval.k=10"),
    # the dataset's rating scale bounds it too, checked once the data is loaded (check_threshold)
    "eval.threshold": Rule(float, fix="use a rating such as eval.threshold=3.5"),
    "eval.cold_threshold": Rule(int, low=0, nullable=True),
    "eval.full_catalogue": BOOL,
    "tracking.experiment": Rule(str, fix="use a name such as tracking.experiment=groupbench"),
    "tracking.uri": Rule(str, nullable=True, fix="use sqlite:////path/mlflow.db or http://HOST:PORT, or null"),
    "cache.enabled": BOOL,
    "cache.dir": Rule(str, nullable=True, fix="set it to a folder only you write to, or null for the default"),
    # tuning (+sweep=tuned, tune.enabled=true): a bool given as `maybe` used to start a full study
    "tune.enabled": BOOL,
    "tune.trials": INT_POS,
    "tune.val_size": Rule(float, low=0, high=1, low_open=True, high_open=True,
                          fix="use a share of each user's training ratings such as tune.val_size=0.1"),
    "tune.sampler_seed": Rule(int, low=0, high=2**32 - 1, fix="use an integer such as tune.sampler_seed=0"),
    # optimisation settings of the torch models (conf/trainer/)
    "trainer.lr": Rule(float, low=0, low_open=True, fix="use e.g. trainer.lr=0.005"),
    "trainer.weight_decay": NONNEG,
    "trainer.batch_size": INT_POS,
    "trainer.max_epochs": INT_POS,
    "trainer.patience": INT_POS,
    "trainer.val_size": Rule(float, low=0, high=1, low_open=True, high_open=True),
    "trainer.progress": BOOL,
    "trainer.sparse_embeddings": BOOL,
    "trainer.device": Rule(str, fix="use auto, cpu or cuda"),
    "split.test_size": Rule(float, low=0, high=1, low_open=True, high_open=True),
    "split.n_folds": Rule(int, low=2),
    "split.cold_users": Rule(float, low=0, high=1, high_open=True),
    "grouping.n_init": INT_POS,
    "grouping.standardize": BOOL,
    # Surprise hyperparameters (conf/model/*.yaml, model.params): Surprise itself accepts
    # n_factors=-5 and fails deep inside numpy, or trains nothing
    "model.params.n_factors": INT_POS,
    "model.params.n_epochs": INT_POS,
    "model.params.k": INT_POS,
    "model.params.min_k": INT_POS,
    "model.params.n_cltr_u": INT_POS,
    "model.params.n_cltr_i": INT_POS,
    "model.params.biased": BOOL,
    "model.params.verbose": BOOL,
    "model.params.cache_ratings": BOOL,
    "model.params.init_mean": Rule(float),
    "model.params.init_std_dev": NONNEG,
    "model.params.lr_all": NONNEG,
    "model.params.reg_all": NONNEG,
    "model.params.reg_pu": NONNEG,
    "model.params.reg_qi": NONNEG,
    "model.params.reg_bu": NONNEG,
    "model.params.reg_bi": NONNEG,
    "model.params.lr_bu": NONNEG,
    "model.params.lr_bi": NONNEG,
    "model.params.lr_pu": NONNEG,
    "model.params.lr_qi": NONNEG,
}

_MISSING = object()


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=True)
    except Exception as exc:  # an interpolation that does not resolve, a missing mandatory value
        raise ConfigError(f"{key}: {' '.join(str(exc).split())}; set {key} on the command line or in conf/") from None


def validate_config(cfg: DictConfig) -> None:
    """Refuse the first value that breaks its rule: ``<key>=<value> must be <what>; <fix>``."""
    for key, rule in RULES.items():
        value = _select(cfg, key)
        if value is _MISSING:
            continue
        if not rule.accepts(value):
            shown = "null" if value is None else (str(value).lower() if isinstance(value, bool) else repr(value)
                                                   if isinstance(value, str) else value)
            fix = rule.fix or "fix it on the command line or in its conf/ file"
            raise ConfigError(f"{key}={shown} must be {rule.describe()}; {fix}")


def check_threshold(threshold: float, rating_scale: tuple[float, float]) -> None:
    """``eval.threshold`` must lie inside the dataset's rating scale: outside it every item (or
    none) is relevant, and precision/recall mean nothing (e.g. P@10 = 1.0 at -1)."""
    low, high = rating_scale
    if not low <= float(threshold) <= high:
        raise ConfigError(f"eval.threshold={threshold} is outside the rating scale {low:g}..{high:g}; "
                          f"use a rating in that range such as eval.threshold=3.5")
