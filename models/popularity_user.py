"""Reference group scorer: an item's count of positives in the user-train part (GroupScorer).

``score_groups`` gives every group the same ranking: items by how many users interacted with them in
the user-train part (positives: rating > 0 where there is a rating), whatever the group's members
(docs/protocol.md, "Group recommendation: sampled and full ranking", References). It reads no group
data, so it also runs where test groups never occur in training (Weeplaces). ``predict`` (user-level
pairs) gives the same count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.core.errors import ConfigError
from benchmark.protocol.group_split import positives
from models.base import FitContext, Recommender


def item_counts(train: pd.DataFrame, n_items: int) -> np.ndarray:
    """Each item's count of positive rows (one per user and item) in ``train``, length >= ``n_items``."""
    pairs = positives(train)[["user", "item"]].drop_duplicates()
    return np.bincount(pairs["item"].to_numpy(np.int64), minlength=int(n_items)).astype(float)


def lookup(values: np.ndarray, items) -> np.ndarray:
    """``values[item]``, 0 for an item outside ``values``."""
    items = np.asarray(items, dtype=np.int64)
    inside = (items >= 0) & (items < len(values))
    return np.where(inside, values[np.clip(items, 0, max(len(values) - 1, 0))], 0.0)


def group_fold_of(context: FitContext, name: str, rule: str):
    group = getattr(context.fold, "group", None)
    if group is None:
        raise ConfigError(f"model={name} ranks items by {rule}: it needs a group split of a group-item dataset "
                          f"(dataset=camra2011, mafengwo, mafengwos or weeplaces)")
    return group


class PopularityUser(Recommender):
    def __init__(self, name: str = "popularity_user", seed: int = 0):
        self.name, self.seed = name, int(seed)
        self.counts = np.zeros(0)

    def fit(self, train: pd.DataFrame, context: FitContext) -> "PopularityUser":
        group = group_fold_of(context, self.name, "their user-train count")
        self.counts = item_counts(train, group.n_items)
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return lookup(self.counts, pairs["item"])

    def score_groups(self, members: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        return lookup(self.counts, pairs["item"])
