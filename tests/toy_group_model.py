"""A toy model that scores groups DIRECTLY (models.base.GroupScorer), for the tests only.

It proves the seam a real group recommender (AGREE, ConsRec) will use: no generic module knows it;
it is reached through tests/conf/model/toy_group.yaml (``hydra.searchpath``), and its group scores go
through the same candidates, ranking and metrics as a member-aggregated user model's.

Each member's vector over items is 1 where the member rated the item in training, else 0; a group's
score of an item is the mean of its members' vectors (the share of the group that already liked it
enough to rate it), blended with the item's global popularity, on the rating scale:
``low + (high - low) * (0.8 * share + 0.2 * count / max count)``. That is no aggregation of the
user-level predictions (``predict``: the global popularity term alone, ``low + (high - low) * count
/ max count``), so its group metrics come only from ``score_groups``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.base import FitContext, Recommender

SHARE_WEIGHT = 0.8


class ToyGroupModel(Recommender):
    def __init__(self, name: str = "toy_group", seed: int = 0):
        self.name, self.seed = name, int(seed)
        self.popularity = pd.Series(dtype=float)   # count / max count, per item
        self.rated = pd.DataFrame(columns=["user", "item"])
        self.low, self.high = 0.0, 1.0

    def fit(self, train: pd.DataFrame, context: FitContext) -> "ToyGroupModel":
        self.low, self.high = map(float, context.rating_scale)
        counts = train.groupby("item").size()
        self.popularity = counts / counts.max()
        self.rated = train[["user", "item"]].drop_duplicates(ignore_index=True)
        return self

    def _popularity(self, items) -> np.ndarray:
        return self.popularity.reindex(np.asarray(items)).fillna(0.0).to_numpy(dtype=float)

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return self.low + (self.high - self.low) * self._popularity(pairs["item"])

    def score_groups(self, members: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        members = members[["group", "user"]].drop_duplicates()
        sizes = members.groupby("group").size()
        raters = (self.rated.merge(members, on="user").groupby(["group", "item"]).size()
                  .rename("raters").reset_index())
        rows = pairs[["group", "item"]].merge(raters, on=["group", "item"], how="left")  # keeps pairs' order
        share = rows["raters"].fillna(0).to_numpy() / sizes.reindex(pairs["group"].to_numpy()).to_numpy()
        blend = SHARE_WEIGHT * share + (1 - SHARE_WEIGHT) * self._popularity(pairs["item"])
        return self.low + (self.high - self.low) * blend
