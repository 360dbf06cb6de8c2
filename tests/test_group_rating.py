"""Group-level rating prediction on CAMRa2011-like data (benchmark/evaluation/group_item.py,
``group_rating_*``): the members' predicted ratings aggregated per strategy against the held-out group
rating, compared with a hand computation; the splits keep each test case's group rating."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation import group_item
from benchmark.evaluation.base import EvalContext
from benchmark.protocol.group_split import GroupFold, corrected, group_loo, shipped
from models.base import FitContext, Recommender
from tests.conftest import data_root
from tests.test_group_references import dataset_of, groups_of

MEMBERS = pd.DataFrame({"group": [0, 0, 1], "user": [0, 1, 2]})
RATINGS = pd.DataFrame({"user": [0, 1, 2], "item": [0, 0, 0], "rating": [50.0, 50.0, 50.0]})
# the members' predicted ratings of the test items
TABLE = {(0, 4): 60.0, (1, 4): 90.0, (2, 2): 40.0, (0, 3): 10.0, (1, 3): 10.0}


class Table(Recommender):
    name = "table"

    def fit(self, train: pd.DataFrame, context: FitContext) -> "Table":
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return np.array([TABLE[(u, i)] for u, i in zip(pairs["user"], pairs["item"])])


def toy_fold(test: pd.DataFrame) -> GroupFold:
    train = pd.DataFrame({"group": [0, 1], "item": [0, 0], "rating": [80.0, 70.0]})
    return GroupFold(train=train, fit=train, test=test, negatives=np.zeros((len(test), 0), dtype=np.int64),
                     val=train.iloc[:0], val_negatives=None, n_items=6, label="corrected", legacy=False)


def context(model: Recommender, fold: GroupFold) -> EvalContext:
    return EvalContext(dataset_of(RATINGS, MEMBERS, 3, 6), RATINGS, RATINGS.assign(prediction=0.0), groups_of(MEMBERS),
                       model, {"ties": "random", "group": {"aggregations": ["mean", "least_misery", "most_pleasure"]}},
                       group_fold=fold)


def test_group_rating_errors_equal_a_hand_computation():
    # cases: group 0 item 4 rated 70, group 1 item 2 rated 50, group 0 item 3 rated 0 (no interaction: left out)
    test = pd.DataFrame({"group": [0, 1, 0], "item": [4, 2, 3], "rating": [70.0, 50.0, 0.0]})
    metrics = group_item.group_rating(context(Table(), toy_fold(test))).metrics
    # mean: (60 + 90) / 2 = 75 -> +5; 40 -> -10.  least misery: 60 -> -10; 40 -> -10.  most pleasure: 90 -> +20; -10
    assert metrics["group_rating_n_cases"] == 2
    assert metrics["group_rating_mean_rmse"] == pytest.approx(math.sqrt((25 + 100) / 2))
    assert metrics["group_rating_mean_mae"] == pytest.approx(7.5)
    assert metrics["group_rating_least_misery_rmse"] == pytest.approx(10.0)
    assert metrics["group_rating_least_misery_mae"] == pytest.approx(10.0)
    assert metrics["group_rating_most_pleasure_rmse"] == pytest.approx(math.sqrt((400 + 100) / 2))
    assert metrics["group_rating_most_pleasure_mae"] == pytest.approx(15.0)


def test_a_repeated_test_pair_counts_once_per_case_with_its_own_rating():
    test = pd.DataFrame({"group": [0, 0], "item": [4, 4], "rating": [70.0, 85.0]})
    metrics = group_item.group_rating(context(Table(), toy_fold(test))).metrics
    assert metrics["group_rating_mean_mae"] == pytest.approx((5 + 10) / 2)


def test_no_rating_no_metric():
    test = pd.DataFrame({"group": [0, 1], "item": [4, 2]})
    assert group_item.group_rating(context(Table(), toy_fold(test))).metrics == {}


@pytest.fixture(scope="module")
def camra_dataset():
    from benchmark.data import camra2011
    if not (data_root() / "group-rec" / "CAMRa2011").is_dir():
        pytest.skip(f"CAMRa2011 files not under {data_root()}")
    return camra2011.load(str(data_root()))


@pytest.mark.slow
@pytest.mark.parametrize("split", [shipped, corrected, group_loo], ids=["shipped", "corrected", "group_loo"])
def test_every_camra2011_split_keeps_each_test_cases_group_rating(camra_dataset, split):
    dataset = camra_dataset
    fold = split(None, seed=1, dataset=dataset)[0].group
    data = dataset.group_item
    rated = data.group_test.assign(rating=data.group_test["rating"].astype(float))
    if split is group_loo:  # a pooled pair's rating: its highest-rated row in the train or test file
        pool = pd.concat([data.group_train, rated])[["group", "item", "rating"]]
        best = pool.groupby(["group", "item"])["rating"].max()
        assert (fold.test["rating"].to_numpy() == best.loc[list(zip(fold.test.group, fold.test.item))].to_numpy()).all()
    else:  # the shipped test file's cases, in order, with their own ratings
        assert fold.test[["group", "item", "rating"]].values.tolist() == rated[["group", "item", "rating"]].values.tolist()
    assert fold.test["rating"].notna().all() and len(fold.test) == len(fold.negatives)
