"""Candidates: per query (a user or a group), the items to rank and which of them are relevant.

The evaluation scores and ranks candidates; it does not decide what they are. How they are built
is the protocol (docs/protocol.md, "Metrics" and "Group-level evaluation and cold start"), and none
of it needs a model, so it lives here, below the models:

* **Listed** candidates (:class:`ListedCandidates`): each query's own list of items with a true
  rating (graded relevance). Users: their test items. Groups: :func:`group_test_items`, the
  KMeans groups' test items (truth = the raters' mean test rating, ``eval.group.min_raters``) or a
  real group's own ratings (ITM-Rec). The metrics rank each list (benchmark/evaluation/metrics.py).
* **Catalogue** candidates (:class:`CatalogueCandidates`): every catalogue item except the
  query's excluded ones, binary relevance. Users: all but their training items
  (:func:`user_catalogue`); groups: all but the items every member rated in training
  (:func:`group_catalogue`); relevant = the listed truth rated >= ``eval.threshold``.

Sampled negatives (a query's relevant items plus n sampled unrated ones) will be one more builder
here, not another evaluator. The group truth is built by :func:`group_test_items` only; the
catalogue candidates of groups take it as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.core.errors import require
from benchmark.data import Dataset
from benchmark.protocol.grouping import Groups


def unique_members(members: pd.DataFrame) -> pd.DataFrame:
    """``group, user`` rows without repeats (a user listed twice in a group counts once)."""
    return members[["group", "user"]].drop_duplicates(ignore_index=True)


# ---------------------------------------------------------------------------- listed candidates

@dataclass
class ListedCandidates:
    """Each query's listed items: ``frame`` holds ``<key>, item, rating`` rows (``key``: user or group).

    ``rating`` is the truth: relevant = rating >= ``eval.threshold``, and NDCG's gain. ``rated`` says
    it is a rating on the data's scale, so rating metrics (RMSE, MAE of the scores) mean something;
    a builder of implicit truth (1 = relevant) sets it False and only the ranking metrics run.
    """

    key: str
    frame: pd.DataFrame
    rated: bool = True

    @property
    def empty(self) -> bool:
        return self.frame.empty


def group_truth(test: pd.DataFrame, members: pd.DataFrame, min_raters: int = 1) -> pd.DataFrame:
    """KMeans-group ground truth: ``group, item, rating, n_raters`` for items of the test fold
    rated by at least ``min_raters`` members; rating = mean of those members' test ratings."""
    rated = test[["user", "item", "rating"]].merge(unique_members(members), on="user")
    truth = rated.groupby(["group", "item"], as_index=False, sort=True).agg(
        rating=("rating", "mean"), n_raters=("user", "size"))
    return truth[truth["n_raters"] >= min_raters].reset_index(drop=True)


def group_test_items(groups: Groups, dataset: Dataset | None, test: pd.DataFrame, min_raters: int) -> ListedCandidates:
    """Each group's candidates and truth: for groups made by the harness (KMeans), the fold's test
    items rated by >= ``min_raters`` members (:func:`group_truth`); for real groups, the group's own
    ratings (``dataset.group_ratings``, never trained on) of the groups in ``groups.members``."""
    if groups.method != "real":
        return ListedCandidates("group", group_truth(test, groups.members, min_raters))
    ratings = dataset.group_ratings if dataset is not None else None
    require(ratings is not None, f"grouping=real: dataset {getattr(dataset, 'name', None)} has no group ratings; "
                                 f"use dataset=itmrec or grouping=kmeans")
    known = ratings["group"].isin(groups.members["group"])
    return ListedCandidates("group", ratings.loc[known, ["group", "item", "rating"]].reset_index(drop=True))


# ---------------------------------------------------------------------------- catalogue candidates

class PairIndex:
    """The (row, item) pairs of ``frame`` as positions, sorted by row once: the boolean matrix of any
    range of rows costs only that range (chunked evaluation never rescans the whole frame)."""

    def __init__(self, frame: pd.DataFrame, row_key: str, rows: pd.Index, items: pd.Index):
        r = rows.get_indexer(frame[row_key].to_numpy())
        c = items.get_indexer(frame["item"].to_numpy())
        keep = (r >= 0) & (c >= 0)
        order = np.argsort(r[keep], kind="stable")
        self.rows, self.items, self.n_rows, self.n_items = r[keep][order], c[keep][order], len(rows), len(items)

    def matrix(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Boolean ``(stop - start, n_items)`` matrix, True at the pairs of rows ``start:stop``."""
        stop = self.n_rows if stop is None else stop
        lo, hi = np.searchsorted(self.rows, [start, stop])
        matrix = np.zeros((stop - start, self.n_items), dtype=bool)
        matrix[self.rows[lo:hi] - start, self.items[lo:hi]] = True
        return matrix


@dataclass
class CatalogueCandidates:
    """Every query (``queries``, sorted ids of ``key``) ranks every catalogue item (``items``, sorted)
    but its ``excluded`` ones; ``relevant`` marks the hits (never among the excluded: the metrics
    drop them). Both are read a range of queries at a time (:meth:`matrices`)."""

    key: str
    queries: pd.Index
    items: pd.Index
    excluded: PairIndex
    relevant: PairIndex

    def matrices(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Boolean ``(excluded, relevant)`` matrices of queries ``start:stop`` x every item."""
        return self.excluded.matrix(start, stop), self.relevant.matrix(start, stop)


def catalogue(dataset: Dataset) -> pd.Index:
    """The items every query ranks: the dataset's item table (else the rated items), sorted."""
    items = dataset.item_features.index
    return pd.Index(np.sort(items.to_numpy())) if len(items) else pd.Index(np.sort(dataset.ratings["item"].unique()))


def user_catalogue(items: pd.Index, users: np.ndarray, train: pd.DataFrame, test: pd.DataFrame,
                   threshold: float) -> CatalogueCandidates:
    """Each of ``users`` ranks the catalogue minus their training items; relevant = their test items
    rated >= ``threshold``."""
    queries = pd.Index(users)
    return CatalogueCandidates("user", queries, items, PairIndex(train, "user", queries, items),
                               PairIndex(test[test["rating"] >= threshold], "user", queries, items))


def group_catalogue(items: pd.Index, members: pd.DataFrame, train: pd.DataFrame, truth: pd.DataFrame,
                    threshold: float) -> CatalogueCandidates:
    """Each group with members ranks every catalogue item that not every member rated in training
    (an item all of them have seen is no recommendation); relevant = its truth rated >= ``threshold``
    (``truth``: the ``group, item, rating`` of :func:`group_test_items`)."""
    members = unique_members(members)
    queries = pd.Index(np.unique(members["group"].to_numpy()))
    seen = train[["user", "item"]].drop_duplicates().merge(members, on="user")
    raters = seen.groupby(["group", "item"], sort=True).size()
    sizes = members.groupby("group").size()
    everyone = raters.to_numpy() == sizes.reindex(raters.index.get_level_values("group")).to_numpy()
    excluded = raters[everyone].reset_index()[["group", "item"]]
    return CatalogueCandidates("group", queries, items, PairIndex(excluded, "group", queries, items),
                               PairIndex(truth[truth["rating"] >= threshold], "group", queries, items))
