"""Reference predictors: what a metric gives without learning anything, and its ceiling.

They run like any model (``model=oracle``, ``model=constant``, ... in a run or a sweep) so every
metric can be read against them (docs/protocol.md, "Metrics"):

- ``oracle``: the true test rating (the ceiling of each metric under the protocol). It reads
  the truth through the harness (``Recommender.reads_truth``): ``predict`` gets the pairs'
  ``rating`` column, NaN for pairs without a test rating, which it puts below the scale so that
  under full-catalogue ranking the test items, by true rating, come above every unrated item.
- ``constant``: one value for every pair: the top of the scale (``value: top``) or the
  training mean (``value: mean``, conf/model/global_mean.yaml).
- ``random``: uniform on the rating scale, a seeded hash of (seed, user, item), so a pair gets
  the same value whichever call asks for it.
- ``item_mean``: the item's mean training rating (the global mean for unseen items).
- ``popularity``: the item's training rating count, mapped linearly onto the rating scale
  (only its ranking means something; its rating errors do not).

Only ``constant`` has a parameter (``model.value``, :class:`ConstantConfig`); the others take a
name and the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.core.errors import ConfigError
from benchmark.core.schema import Rule, Settings, setting
from models.base import FitContext, Recommender

CONSTANT_VALUES = ("top", "mean")


@dataclass(frozen=True)
class ConstantConfig(Settings):
    """conf/model/constant.yaml and global_mean.yaml: which constant every pair gets."""

    value: str = setting(Rule(str, choices=CONSTANT_VALUES, fix="use model=constant (top) or model=global_mean (mean)"),
                         "top")


class Oracle(Recommender):
    reads_truth = True

    def __init__(self, name: str = "oracle", seed: int = 0):
        self.name, self.seed = name, int(seed)
        self.floor = 0.0

    def fit(self, train: pd.DataFrame, context: FitContext) -> "Oracle":
        # below every rating: pairs without a test rating rank under every test item
        self.floor = float(context.rating_scale[0]) - 1.0
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        if "rating" not in pairs:
            raise ConfigError("model=oracle needs the true rating of the pairs it scores; it runs only inside the "
                              "harness's evaluation (python -m benchmark model=oracle)")
        return pairs["rating"].astype(float).fillna(self.floor).to_numpy()


class Constant(Recommender):
    def __init__(self, name: str = "constant", value: str = "top", seed: int = 0):
        ConstantConfig(value=value)  # refuses a bad value, naming its key
        self.name, self.value, self.seed = name, value, int(seed)
        self.constant = float("nan")

    def fit(self, train: pd.DataFrame, context: FitContext) -> "Constant":
        self.constant = (float(context.rating_scale[1]) if self.value == "top"
                         else float(train["rating"].mean()))
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return np.full(len(pairs), self.constant)


class Random(Recommender):
    def __init__(self, name: str = "random", seed: int = 0):
        self.name, self.seed = name, int(seed)
        self.low, self.high = 0.0, 1.0

    def fit(self, train: pd.DataFrame, context: FitContext) -> "Random":
        self.low, self.high = map(float, context.rating_scale)
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        # a hash of (seed, user, item): the same pair gets the same draw in every call
        keyed = pd.DataFrame({"seed": np.full(len(pairs), self.seed), "user": pairs["user"].to_numpy(),
                              "item": pairs["item"].to_numpy()})
        hashed = pd.util.hash_pandas_object(keyed, index=False).to_numpy()
        uniform = (hashed >> np.uint64(11)).astype(float) * 2.0 ** -53
        return self.low + (self.high - self.low) * uniform


class ItemMean(Recommender):
    def __init__(self, name: str = "item_mean", seed: int = 0):
        self.name, self.seed = name, int(seed)
        self.means = pd.Series(dtype=float)
        self.fallback = float("nan")

    def fit(self, train: pd.DataFrame, context: FitContext) -> "ItemMean":
        self.means = train.groupby("item")["rating"].mean()
        self.fallback = float(train["rating"].mean())
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return self.means.reindex(pairs["item"].to_numpy()).fillna(self.fallback).to_numpy()


class Popularity(Recommender):
    def __init__(self, name: str = "popularity", seed: int = 0):
        self.name, self.seed = name, int(seed)
        self.scores = pd.Series(dtype=float)
        self.low = 0.0

    def fit(self, train: pd.DataFrame, context: FitContext) -> "Popularity":
        low, high = map(float, context.rating_scale)
        counts = train.groupby("item").size()
        self.scores = low + (high - low) * counts / counts.max()
        self.low = low
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return self.scores.reindex(pairs["item"].to_numpy()).fillna(self.low).to_numpy(dtype=float)
