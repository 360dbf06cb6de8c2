"""Reference group scorer: the members' own items first, each part by user-train popularity (GroupScorer).

The rule (docs/protocol.md, "Group recommendation: sampled and full ranking", References): with
``c(i)`` item i's count of positives in the user-train part (as ``popularity_user``) and ``C`` the
largest count,

    score(g, i) = [some member of g has i among its visible interactions] + c(i) / (C + 1)

The popularity term lies in [0, 1), so every member item (score >= 1) ranks above every other item
(score < 1), and each part is ordered by c(i); equal counts stay ties for the harness's tie rule.
Visible interactions (``group_split.visible_user_items``): the user-train positives, plus on Weeplaces
the fold-in parts (``val_ui_tr``, ``test_ui_tr``) that are observed at test time; never a held-out
``_te`` part or a group test row. ``predict`` (user-level pairs) gives the same score with the user
as a group of one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.protocol.group_split import member_item_codes, pair_codes, visible_user_items
from models.base import FitContext, Recommender
from models.popularity_user import group_fold_of, item_counts, lookup


class MembersItems(Recommender):
    def __init__(self, name: str = "members_items", seed: int = 0):
        self.name, self.seed = name, int(seed)
        self.popularity = np.zeros(0)
        self.user_items = pd.DataFrame({"user": [], "item": []}, dtype="int64")

    def fit(self, train: pd.DataFrame, context: FitContext) -> "MembersItems":
        group = group_fold_of(context, self.name, "whether a member has them, then their user-train count")
        counts = item_counts(train, group.n_items)
        self.popularity = counts / (counts.max(initial=0.0) + 1.0)
        self.user_items = visible_user_items(train, group)
        return self

    def _scores(self, members: pd.DataFrame, pairs: pd.DataFrame, id_column: str) -> np.ndarray:
        items = pairs["item"].to_numpy(np.int64)
        base = int(max(len(self.popularity), items.max(initial=-1) + 1,
                       self.user_items["item"].max() + 1 if len(self.user_items) else 0))
        own = member_item_codes(members, self.user_items, base)
        hit = np.isin(pair_codes(pairs[id_column], items, base), own)
        return hit + lookup(self.popularity, items)

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        users = pd.DataFrame({"group": pairs["user"].unique()}).assign(user=lambda f: f["group"])
        return self._scores(users, pairs.rename(columns={"user": "group"}), "group")

    def score_groups(self, members: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        return self._scores(members, pairs, "group")
