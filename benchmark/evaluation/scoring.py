"""Group scores: what a group's candidates are ranked by, for a group model and a user model alike.

The evaluation asks one :class:`GroupScores` object for group scores and ranks whatever it returns
(benchmark/evaluation/pipeline.py); it does not know where they come from:

* a model that scores groups itself (models.base.GroupScorer: group embeddings, member attention)
  gets :class:`DirectGroupScores`: its own ``score_groups``, one strategy named ``model``
  (``group_model_ndcg_at_10``);
* any other model gets :class:`MemberAggregation`, the ONE adapter from user scores to group
  scores: every member's predicted rating of an item, reduced by an aggregation of the registry
  below (mean, least misery = min, most pleasure = max), one strategy per aggregation
  (``group_mean_ndcg_at_10`` ...). The members' ratings are predicted once and shared by every
  aggregation.

Both answer two shapes of question: ``pairs`` (one score per listed ``group, item`` pair: test
items) and ``matrix`` (every group of a run x the whole catalogue). The model is reached only through
the evaluation's timed :class:`~benchmark.evaluation.base.Scorer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import pandas as pd

from benchmark.core.registry import Registry
from benchmark.evaluation.base import Scorer
from models.base import GroupScorer, Recommender

# An aggregation reduces contiguous segments along axis 0: ``values[starts[j]:starts[j + 1]]`` are
# the members' predictions for segment j (one group's item: 1-D; one group's members x the whole
# catalogue: 2-D) and row j of the result is the group's score. Segments are never empty. numpy's
# ``ufunc.reduceat`` does the common ones without a Python loop; a new strategy is one function.
Aggregation = Callable[[np.ndarray, np.ndarray], np.ndarray]
AGGREGATIONS: Registry[Aggregation] = Registry("aggregation")
aggregation = AGGREGATIONS.register

DIRECT = "model"  # the strategy name of a GroupScorer's own scores


def segment_sizes(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Rows per segment, shaped to broadcast against the reduced values."""
    sizes = np.diff(np.append(starts, len(values)))
    return sizes.reshape(-1, *([1] * (values.ndim - 1)))


@aggregation("mean")
def mean_score(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Average satisfaction: the mean of the members' predicted ratings."""
    return np.add.reduceat(values, starts, axis=0) / segment_sizes(values, starts)


@aggregation("least_misery")
def least_misery(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The group is as happy as its least happy member: the minimum predicted rating."""
    return np.minimum.reduceat(values, starts, axis=0)


@aggregation("most_pleasure")
def most_pleasure(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The group is as happy as its happiest member: the maximum predicted rating."""
    return np.maximum.reduceat(values, starts, axis=0)


def segment_starts(keys: np.ndarray) -> np.ndarray:
    """First row of each run of equal rows in ``keys`` (sorted, shape ``(n,)`` or ``(n, m)``)."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.intp)
    differs = keys[1:] != keys[:-1]
    if differs.ndim > 1:
        differs = differs.any(axis=1)
    return np.concatenate([[0], np.flatnonzero(differs) + 1])


def pair_rows(members: pd.DataFrame, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item row, member row) of every member x item pair of the same group, item-major (an item's
    members consecutive), and the first pair of each item that has members: the segments the
    aggregations reduce. ``members``: distinct ``group, user`` sorted by group; ``items``: distinct
    ``group, item`` sorted by group, item."""
    member_groups, item_groups = members["group"].to_numpy(), items["group"].to_numpy()
    first = np.searchsorted(member_groups, item_groups, side="left")
    counts = np.searchsorted(member_groups, item_groups, side="right") - first
    item_rows = np.repeat(np.arange(len(items)), counts)
    starts = np.cumsum(counts) - counts
    # pair p of an item's segment [start, start + count) is that group's (p - start)-th member
    member_rows = np.repeat(first - starts, counts) + np.arange(len(item_rows))
    return item_rows, member_rows, starts[counts > 0]


class GroupScores(Protocol):
    """Group scores under one or more named strategies (see the module docstring)."""

    strategies: list[str]

    def pairs(self, members: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each strategy's (predicted rating, ranking score) of every ``group, item`` row of ``pairs``
        (distinct, sorted by group and item; every group has members); the two are one array unless
        the model clips its scores (models.base.RawScores). ``members``: distinct ``group, user``,
        sorted by group."""
        ...

    def matrix(self, members: pd.DataFrame, items: np.ndarray) -> dict[str, np.ndarray]:
        """Each strategy's ``(n_groups, len(items))`` scores, one row per group of ``members``
        (distinct ``group, user`` sorted by group), in group order."""
        ...


class MemberAggregation:
    """A user-level model's group scores: its members' predicted ratings, aggregated.

    ``scorer`` gives the members' ratings: ``predict`` for listed pairs, ``score_matrix`` for the
    catalogue (the evaluation's :class:`Scorer`, or :class:`MatrixScores` over scores it already has).
    """

    def __init__(self, scorer, aggregations: list[str]):
        self.scorer, self.strategies = scorer, list(aggregations)

    def pairs(self, members: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        item_rows, member_rows, starts = pair_rows(members, pairs)
        users = pd.DataFrame({"user": members["user"].to_numpy()[member_rows],
                              "item": pairs["item"].to_numpy()[item_rows]})
        ratings, scores = self._scored(users, one_group_each=not members["user"].duplicated().any())
        out = {}
        for name in self.strategies:
            rating = AGGREGATIONS[name](ratings, starts)
            # a clipping model's group is ranked by its members' scores before the clip, aggregated
            out[name] = (rating, rating if scores is ratings else AGGREGATIONS[name](scores, starts))
        return out

    def _distinct(self, pairs: pd.DataFrame, one_group_each: bool) -> tuple[pd.DataFrame, np.ndarray | None]:
        """The distinct ``user, item`` pairs and each row's pair (None: every row is distinct)."""
        if one_group_each:  # (KMeans) every pair is distinct
            return pairs, None
        pair = pairs.groupby(["user", "item"], sort=False).ngroup().to_numpy()
        _, first = np.unique(pair, return_index=True)  # the first row of each distinct pair, in pair-id order
        return pairs.iloc[first].reset_index(drop=True), pair

    def _predicted(self, pairs: pd.DataFrame, one_group_each: bool) -> np.ndarray:
        """The members' predictions of ``user, item`` pairs; a pair shared by several groups is predicted once."""
        distinct, pair = self._distinct(pairs, one_group_each)
        values = self.scorer.predict(distinct, what="group-member pairs")
        return values if pair is None else values[pair]

    def _scored(self, pairs: pd.DataFrame, one_group_each: bool) -> tuple[np.ndarray, np.ndarray]:
        """The members' (predicted ratings, ranking scores) of ``user, item`` pairs (Scorer.scored),
        each distinct pair asked once; the two are one array for a model that does not clip."""
        distinct, pair = self._distinct(pairs, one_group_each)
        ratings, scores = self.scorer.scored(distinct, what="group-member pairs")
        if pair is None:
            return ratings, scores
        rows = ratings[pair]
        return (rows, rows) if scores is ratings else (rows, scores[pair])

    def matrix(self, members: pd.DataFrame, items: np.ndarray) -> dict[str, np.ndarray]:
        starts = segment_starts(members["group"].to_numpy())
        users, inverse = np.unique(members["user"].to_numpy(), return_inverse=True)
        values = self.scorer.score_matrix(users, items)[inverse.ravel()]  # a row per member, group after group
        return {name: AGGREGATIONS[name](values, starts) for name in self.strategies}


class DirectGroupScores:
    """A group model's own scores (models.base.GroupScorer), under the one strategy ``model``."""

    strategies = [DIRECT]

    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    def pairs(self, members: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        scores = self.scorer.score_groups(members, pairs)
        return {DIRECT: (scores, scores)}

    def matrix(self, members: pd.DataFrame, items: np.ndarray) -> dict[str, np.ndarray]:
        groups = members["group"].to_numpy()[segment_starts(members["group"].to_numpy())]
        pairs = pd.DataFrame({"group": np.repeat(groups, len(items)), "item": np.tile(items, len(groups))})
        return {DIRECT: self.scorer.score_groups(members, pairs).reshape(len(groups), len(items))}


def group_scores_of(scorer: Scorer, aggregations: list[str]) -> GroupScores:
    """The model's group scores: its own when it is a GroupScorer, else its members' aggregated."""
    if isinstance(scorer.model, GroupScorer):
        return DirectGroupScores(scorer)
    return MemberAggregation(scorer, aggregations)


class MatrixScores:
    """Scores already computed for ``users`` x ``items``, served as a scorer's ``score_matrix``: the
    full-catalogue evaluation scores every user once and both levels read the same rows."""

    def __init__(self, users: pd.Index, items: np.ndarray, matrix: np.ndarray):
        self.users, self.items, self.matrix = users, items, matrix

    def score_matrix(self, users: np.ndarray, items: np.ndarray, chunk_pairs: int | None = None) -> np.ndarray:
        rows = self.users.get_indexer(users)
        if (rows < 0).any() or not np.array_equal(items, self.items):
            raise ValueError("MatrixScores: asked for users or items it was not built with")
        return self.matrix[rows]


# ---------------------------------------------------------------------------- frame-level helpers

def member_pairs(members: pd.DataFrame, group_items: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """``group, item, user`` for every member of every group and each of its items, sorted by group
    and item (an item's members consecutive), and the first row of each (group, item)."""
    members, items = sorted_members_items(members, group_items)
    item_rows, member_rows, starts = pair_rows(members, items)
    pairs = pd.DataFrame({"group": items["group"].to_numpy()[item_rows], "item": items["item"].to_numpy()[item_rows],
                          "user": members["user"].to_numpy()[member_rows]})
    return pairs, starts


def sorted_members_items(members: pd.DataFrame, group_items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Distinct ``group, user`` rows sorted by group; distinct ``group, item`` rows sorted by group, item."""
    members = (members[["group", "user"]].drop_duplicates(ignore_index=True)
               .sort_values("group", kind="stable", ignore_index=True))
    items = (group_items[["group", "item"]].drop_duplicates()
             .sort_values(["group", "item"], kind="stable", ignore_index=True))
    return members, items


def member_predictions(model: Recommender, members: pd.DataFrame, group_items: pd.DataFrame,
                       truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """``group, item, user, prediction`` for every member of every group and each of its items,
    sorted by group and item (``member_pairs``); each distinct (user, item) pair predicted once."""
    pairs, _ = member_pairs(members, group_items)
    adapter = MemberAggregation(Scorer(model, truth=truth), [])
    one_group_each = not members[["group", "user"]].drop_duplicates()["user"].duplicated().any()
    return pairs.assign(prediction=adapter._predicted(pairs[["user", "item"]], one_group_each))


def aggregate(member_preds: pd.DataFrame, name: str) -> pd.DataFrame:
    """``group, item, prediction``: the members' predictions turned into one group score (sorted)."""
    ordered = member_preds.sort_values(["group", "item"], kind="stable")
    if ordered.empty:
        return pd.DataFrame({"group": ordered["group"], "item": ordered["item"], "prediction": np.zeros(0)})
    keys = ordered[["group", "item"]].to_numpy()
    starts = segment_starts(keys)
    scores = AGGREGATIONS[name](ordered["prediction"].to_numpy(dtype=float), starts)
    return pd.DataFrame({"group": ordered["group"].to_numpy()[starts], "item": ordered["item"].to_numpy()[starts],
                         "prediction": scores})
