"""Types and ranges of config values, checked before any data work: the harness's keys here, a
model's own keys in the model's typed config (:class:`Settings`).

One rule per key: ``seed=true``, ``eval.k=abc`` or ``trainer.lr=abc`` are refused by
:func:`validate_config` with a :class:`ConfigError` naming the key, the value and the fix, before a
dataset is read; these are the harness's keys, which no component owns. A model's parameters
(SVD's ``model.params.n_factors=-5``, DMTL's ``model.lambda_profile=-1``) are declared by the
model itself, as a frozen dataclass subclassing :class:`Settings` whose fields carry a
:class:`Rule` (:func:`setting`); the model builds it in its constructor, so the runner, which
instantiates the model before any data work, refuses a bad value first, in the same one-line
form. Why there: the model knows its parameters, a new model brings its rules with it, and this
table stays the harness's. Hydra cannot know the types (an override's value is parsed by its
looks: ``abc`` is a string, ``true`` a bool). Keys absent from a config are not checked.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Mapping

from omegaconf import DictConfig, OmegaConf

from benchmark.core.errors import ConfigError, require


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
    "verbose": BOOL,
    "data.download": BOOL,
    "data.verify": BOOL,
    "data.root": Rule(str, nullable=True, fix="set it to the folder holding ml-100k/ and itm-rec/"),
    "eval.k": Rule(int, low=1, fix="use e.g. eval.k=10"),
    # the dataset's rating scale bounds it too, checked once the data is loaded (check_threshold)
    "eval.threshold": Rule(float, fix="use a rating such as eval.threshold=3.5"),
    "eval.cold_threshold": Rule(int, low=0, nullable=True),
    "eval.full_catalogue": BOOL,
    "eval.mask_member_items": BOOL,
    "eval.protocol": Rule(str, choices=("clean", "authors", "authors_metrics"),
                          fix="use eval.protocol=clean (the default), authors (the seed paper's whole protocol) "
                              "or authors_metrics (their metrics only)"),
    "eval.authors.threshold": Rule(float, fix="use a rating such as eval.authors.threshold=3.7"),
    "eval.ties": Rule(str, choices=("random", "positive_first"),
                      fix="use eval.ties=random (the default) or eval.ties=positive_first (legacy)"),
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
    "trainer.refit": BOOL,
    "trainer.fixed_epochs": Rule(int, low=1, nullable=True, fix="use null (early stopping) or e.g. trainer.fixed_epochs=6"),
    "trainer.device": Rule(str, fix="use auto, cpu or cuda"),
    "trainer.optimizer": Rule(str, choices=("adam", "rmsprop"), fix="use adam (default) or rmsprop"),
    "trainer.optimizer_reset": Rule(str, choices=("never", "epoch", "stream"), fix="use never (default), epoch or stream"),
    "split.test_size": Rule(float, low=0, high=1, low_open=True, high_open=True),
    "split.n_folds": Rule(int, low=2),
    "split.cold_users": Rule(float, low=0, high=1, high_open=True),
    "grouping.n_init": INT_POS,
    "grouping.standardize": BOOL,
}

_MISSING = object()


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=True)
    except Exception as exc:  # an interpolation that does not resolve, a missing mandatory value
        raise ConfigError(f"{key}: {' '.join(str(exc).split())}; set {key} on the command line or in conf/") from None


def shown(value: Any) -> str:
    """A value as the error line shows it: ``null``, ``true``, ``'abc'``, ``-5``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def check(key: str, value: Any, rule: Rule, fix: str = "fix it on the command line or in its conf/ file") -> None:
    """Refuse ``value`` unless ``rule`` accepts it: ``<key>=<value> must be <what>; <fix>``."""
    if not rule.accepts(value):
        raise ConfigError(f"{key}={shown(value)} must be {rule.describe()}; {rule.fix or fix}")


def validate_config(cfg: DictConfig) -> None:
    """Refuse the first harness value that breaks its rule (a model's own keys: its :class:`Settings`)."""
    for key, rule in RULES.items():
        value = _select(cfg, key)
        if value is not _MISSING:
            check(key, value, rule)


# ---------------------------------------------------------------------------- a component's own keys

class _Unset:
    """A parameter the config leaves out: the library's own default applies (never passed on)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def setting(rule: Rule, default: Any = MISSING) -> Any:
    """A field of a :class:`Settings` dataclass whose value must satisfy ``rule`` (no default: required)."""
    return field(default=default, metadata={"rule": rule})


class Settings:
    """Base of a component's typed config: a frozen dataclass whose fields are declared with
    :func:`setting`. Construction checks every field (``UNSET`` ones excepted) and refuses the first
    bad one as ``<PREFIX>.<field>=<value> must be <what>; <fix>``: the key as the user writes it
    on the command line (``PREFIX`` is where the dataclass sits in the config, e.g. ``model`` or
    ``model.params``)."""

    PREFIX: ClassVar[str] = "model"
    FIX: ClassVar[str] = "fix it on the command line or in the model's conf/model/*.yaml"

    def __post_init__(self) -> None:
        for each in fields(self):
            rule, value = each.metadata.get("rule"), getattr(self, each.name)
            if rule is not None and value is not UNSET:
                check(f"{self.PREFIX}.{each.name}", value, rule, self.FIX)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None):
        """From a config mapping: an unknown key, or a missing required one, is one line too."""
        values = dict(values or {})
        names = [each.name for each in fields(cls)]
        unknown = sorted(set(values) - set(names))
        require(not unknown, f"{cls.PREFIX} has unknown keys {unknown}; use {', '.join(names)}")
        missing = [each.name for each in fields(cls) if each.name not in values
                   and each.default is MISSING and each.default_factory is MISSING]
        require(not missing, f"{', '.join(f'{cls.PREFIX}.{name}' for name in missing)} missing; {cls.FIX}")
        return cls(**values)

    def given(self) -> dict[str, Any]:
        """The fields the config set (``UNSET`` ones left out), as keyword arguments."""
        return {each.name: getattr(self, each.name) for each in fields(self) if getattr(self, each.name) is not UNSET}


def check_threshold(threshold: float, rating_scale: tuple[float, float]) -> None:
    """``eval.threshold`` must lie inside the dataset's rating scale: outside it every item (or
    none) is relevant, and precision/recall mean nothing (e.g. P@10 = 1.0 at -1)."""
    low, high = rating_scale
    if not low <= float(threshold) <= high:
        raise ConfigError(f"eval.threshold={threshold} is outside the rating scale {low:g}..{high:g}; "
                          f"use a rating in that range such as eval.threshold=3.5")
