"""The group validation cases as a score (models.base.GroupValidation, built by
benchmark/evaluation/group_item.group_validation): what a model that scores groups early-stops on.
docs/protocol.md, "Validation on group splits"."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation.group_item import group_validation
from benchmark.protocol.group_split import GroupFold, corrected
from tests.test_group_protocol import generated

# E[NDCG@10] of a uniformly random rank among 101 candidates
RANDOM_NDCG_AT_10 = sum(1 / math.log2(r + 1) for r in range(1, 11)) / 101   # 0.04499


def _fold():
    dataset = generated(n_groups=1500)
    (split,) = corrected(dataset.ratings, seed=3, dataset=dataset)
    return split.group, dataset.groups


def test_sampled_validation_reads_the_validation_cases_not_the_test_cases():
    fold, members = _fold()
    validation = group_validation(fold, members, seed=3)
    assert validation.name == "group_ndcg_at_10" and validation.n_cases == len(fold.val) > 1000
    val_pairs = set(zip(fold.val["group"], fold.val["item"]))
    test_pairs = set(zip(fold.test["group"], fold.test["item"]))
    seen = []

    def knows_validation(members_, pairs):  # the held-out training positive on top, everything else 0
        seen.append(pairs)
        return np.array([float((g, i) in val_pairs) for g, i in zip(pairs["group"], pairs["item"])])

    def knows_test(members_, pairs):
        return np.array([float((g, i) in test_pairs) for g, i in zip(pairs["group"], pairs["item"])])

    assert validation.score(knows_validation) == pytest.approx(1.0)
    # a model that only knows the test items is no better than chance here: the test part is not read
    assert validation.score(knows_test) == pytest.approx(RANDOM_NDCG_AT_10, abs=0.015)
    # the members handed to the model are the validation groups' own
    assert set(seen[0]["group"]) == set(fold.val["group"])


def test_tied_scores_score_as_chance_never_as_a_hit():
    fold, members = _fold()
    validation = group_validation(fold, members, seed=3)
    tied = validation.score(lambda m, pairs: np.zeros(len(pairs)))
    assert tied == pytest.approx(RANDOM_NDCG_AT_10, abs=0.015)   # 1.0 under positive-first ties


def test_heldout_validation_is_recall_at_20_over_the_catalogue():
    n_items = 60
    val = pd.DataFrame({"group": [5, 5, 5, 7], "item": [1, 2, 3, 40]})
    train = pd.DataFrame({"group": [1, 1], "item": [1, 2]})
    fold = GroupFold(train=train, fit=train, test=val.iloc[:0], negatives=None, val=val, val_negatives=None,
                     n_items=n_items, label="ephemeral", legacy=False, heldout=True)
    members = pd.DataFrame({"group": [1, 5, 5, 7], "user": [0, 1, 2, 3]})
    validation = group_validation(fold, members, seed=0)
    assert validation.name == "group_recall_at_20" and validation.n_cases == 2

    def scores(members_, pairs):  # group 5: items 1 and 2 on top, item 3 last; group 7: item 40 on top
        value = np.where(pairs["item"].isin([1, 2]) & (pairs["group"] == 5), 2.0, 1.0)
        value = np.where((pairs["item"] == 3) & (pairs["group"] == 5), 0.0, value)
        return np.where((pairs["item"] == 40) & (pairs["group"] == 7), 2.0, value)

    # group 5: 2 of its 3 items in the top 20 -> 2/3 (3 = min(20, 3)); group 7: 1/1; mean 5/6
    assert validation.score(scores) == pytest.approx((2 / 3 + 1) / 2)


def test_no_validation_cases_gives_none():
    fold, members = _fold()
    empty = GroupFold(train=fold.train, fit=fold.train, test=fold.test, negatives=fold.negatives, val=fold.val.iloc[:0],
                      val_negatives=fold.val_negatives[:0], n_items=fold.n_items, label="x", legacy=False)
    assert group_validation(empty, members, seed=0) is None
