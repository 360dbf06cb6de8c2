"""Reference group scorer: an item's count of positives in the group train part (GroupScorer).

``score_groups`` gives every group the same ranking: items by how many training groups chose them
(docs/protocol.md, "Group recommendation: sampled and full ranking"); what a group model must beat.
It reads the group stream of its fold (``FitContext.fold.group``: a group split of a group-item
dataset); ``predict`` (user-level pairs) gives the same count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.core.errors import ConfigError
from benchmark.protocol.group_split import positives
from models.base import FitContext, Recommender


class PopularityGroup(Recommender):
    def __init__(self, name: str = "popularity_group", seed: int = 0):
        self.name, self.seed = name, int(seed)
        self.counts = np.zeros(0)

    def fit(self, train: pd.DataFrame, context: FitContext) -> "PopularityGroup":
        group = getattr(context.fold, "group", None)
        if group is None:
            raise ConfigError(f"model={self.name} ranks items by their group-train count: it needs a group split "
                              f"of a group-item dataset (dataset=camra2011 or dataset=mafengwo)")
        items = positives(group.train)["item"].to_numpy(np.int64)
        self.counts = np.bincount(items, minlength=group.n_items).astype(float)
        return self

    def _count(self, items) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        inside = (items >= 0) & (items < len(self.counts))
        return np.where(inside, self.counts[np.clip(items, 0, max(len(self.counts) - 1, 0))], 0.0)

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return self._count(pairs["item"])

    def score_groups(self, members: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        return self._count(pairs["item"])
