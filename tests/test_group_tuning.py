"""Tuning on group splits (benchmark/sweeps/tune.py with benchmark/protocol/group_split.tuning_fold):
a trial fits on the outer fitting rows, early-stops on a second carve, and is scored on the outer
validation cases; the test cases are never read. docs/protocol.md, "Tuning on group splits"."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from benchmark.protocol.group_split import GroupFold, corrected, pair_codes, positives, tuning_fold
from benchmark.sweeps import tune
from models.base import Recommender
from tests.test_group_protocol import generated

RANDOM_NDCG_AT_10 = sum(1 / math.log2(r + 1) for r in range(1, 11)) / 101


def _outer(seed: int = 3):
    dataset = generated(n_groups=1500)
    (split,) = corrected(dataset.ratings, seed=seed, dataset=dataset)
    return dataset, split


def _pairs(frame: pd.DataFrame, n_items: int) -> set[int]:
    return set(pair_codes(frame["group"], frame["item"], n_items).tolist())


def test_the_tuning_fold_tests_on_the_validation_cases_and_carves_its_own_validation_part():
    _, split = _outer()
    outer = split.group
    inner = tuning_fold(outer, seed=3)
    n = outer.n_items
    # its test cases are the outer validation cases, with their negatives; its training part the outer fit rows
    assert _pairs(inner.test, n) == _pairs(outer.val, n) and np.array_equal(inner.negatives, outer.val_negatives)
    assert _pairs(inner.train, n) == _pairs(outer.fit, n)
    # its validation part: one positive of each group with >= 2 training positives, taken out of its fit rows
    sizes = positives(inner.train).groupby("group").size()
    assert len(inner.val) == int((sizes >= 2).sum()) and inner.val["group"].is_unique
    assert _pairs(inner.val, n) <= _pairs(inner.train, n) and not (_pairs(inner.val, n) & _pairs(inner.fit, n))
    assert len(inner.fit) + len(inner.val) == len(inner.train)
    # its negatives avoid every positive it knows (its training part and its test cases), and never repeat
    known = _pairs(inner.train, n) | _pairs(inner.test, n)
    codes = pair_codes(np.repeat(inner.val["group"].to_numpy(), 100), inner.val_negatives.ravel(), n)
    assert not (set(codes.tolist()) & known)
    assert all(len(set(row)) == 100 for row in inner.val_negatives)
    # the outer test cases appear nowhere in it, and a second call gives the same fold
    assert not (_pairs(outer.test, n) & (_pairs(inner.train, n) | _pairs(inner.test, n)))
    again = tuning_fold(outer, seed=3)
    assert inner.val.equals(again.val) and np.array_equal(inner.val_negatives, again.val_negatives)


def test_the_tuning_fold_does_not_read_the_test_part():
    """Other test cases, other test negatives: the same tuning fold (it is made without them)."""
    _, split = _outer()
    outer = split.group
    rng = np.random.default_rng(0)
    other = GroupFold(train=outer.train, fit=outer.fit, test=outer.test.assign(item=rng.permutation(outer.test["item"])),
                      negatives=rng.integers(0, outer.n_items, outer.negatives.shape), val=outer.val,
                      val_negatives=outer.val_negatives, n_items=outer.n_items, label=outer.label, legacy=False)
    a, b = tuning_fold(outer, seed=5), tuning_fold(other, seed=5)
    assert a.fit.equals(b.fit) and a.val.equals(b.val) and np.array_equal(a.val_negatives, b.val_negatives)


def test_the_tuning_fold_of_ephemeral_groups_holds_out_whole_training_groups():
    train = pd.DataFrame({"group": np.repeat(np.arange(70), 3), "item": np.arange(210) % 50})
    val = pd.DataFrame({"group": np.repeat(np.arange(70, 80), 2), "item": np.arange(20)})
    test = pd.DataFrame({"group": np.repeat(np.arange(80, 100), 2), "item": np.arange(40)})
    outer = GroupFold(train=train, fit=train, test=test, negatives=None, val=val, val_negatives=None, n_items=50,
                      label="ephemeral", legacy=False, heldout=True)
    inner = tuning_fold(outer, seed=1)
    assert inner.heldout and inner.test.equals(val.reset_index(drop=True))
    # the outer ratio 10 validation groups : 70 training groups -> round(70 * 10 / 80) = 9 groups held out whole
    assert inner.val["group"].nunique() == 9 and len(inner.val) == 27
    assert not set(inner.val["group"]) & set(inner.train["group"])
    assert set(inner.val["group"]) | set(inner.train["group"]) == set(range(70))
    assert not set(inner.train["group"]) & set(test["group"])


class KnowsPairs(Recommender):
    """Scores a (group, item) pair 1 when it is in ``known`` (codes), else 0."""

    def __init__(self, known: set[int], n_items: int):
        self.known, self.n_items = known, n_items

    def fit(self, train, context):
        self.fitted_on = context.fold.group
        return self

    def predict(self, pairs):
        return np.zeros(len(pairs))

    def score_groups(self, members, pairs):
        return np.isin(pair_codes(pairs["group"], pairs["item"], self.n_items), list(self.known)).astype(float)


def test_a_trial_is_scored_on_the_validation_cases_never_the_test_cases(monkeypatch):
    dataset, split = _outer()
    outer = split.group
    from benchmark.evaluation.group_item import group_validation
    from benchmark.protocol.folds import Fold
    from benchmark.protocol.grouping import Groups

    inner = tuning_fold(outer, seed=3)
    groups = Groups(labels=pd.Series(0, index=pd.RangeIndex(2 * 1500)), k=1, method="members", membership=dataset.groups)
    data = tune.TuningData(dataset, Fold(split.train, None, seed=3, group=inner), groups,
                           group_validation(outer, dataset.groups, 3), "mean")
    n = outer.n_items
    for known, expected in ((_pairs(outer.val, n), 1.0), (_pairs(outer.test, n), RANDOM_NDCG_AT_10)):
        model = KnowsPairs(known, n)
        monkeypatch.setattr(tune, "build_model", lambda config, seed=0, model=model: model)
        scores = tune.score_trial(OmegaConf.create({"model": {}, "seed": 3}), data)
        assert list(scores) == ["val_group_ndcg_at_10"]
        assert scores["val_group_ndcg_at_10"] == pytest.approx(expected, abs=0.015)
        assert model.fitted_on is inner   # the trial's model saw the tuning fold, not the outer one


@pytest.mark.parametrize("model", ["agree", "bpr_mf"])   # a group scorer; a user-level model, members aggregated
def test_a_tuned_job_on_a_group_split_tunes_on_group_validation_and_tests_once(tracking_uri, model):
    from mlflow.tracking import MlflowClient

    from tests.test_group_scorer_seam import compose_with_tests_conf
    cfg = compose_with_tests_conf(tracking_uri, "dataset=agree_tiny", f"model={model}", "cache.enabled=false",
                                  "tune.enabled=true", "tune.trials=2", "trainer.max_epochs=2", "trainer.patience=1",
                                  "trainer.progress=false", "trainer.device=cpu")
    result = tune.run_tuned(cfg)
    client = MlflowClient(tracking_uri)
    final = client.get_run(result.run_id)
    assert final.data.tags["tuned.trials"] == "2" and "tuned.chosen" in final.data.tags
    assert final.data.tags["tuned.metric"] == "val_group_ndcg_at_10"
    headline = "group_sampled_ndcg_at_10" if model == "agree" else "group_sampled_mean_ndcg_at_10"
    assert 0 <= result.metrics[headline] <= 1
    study = client.get_run(final.data.tags["tuned.study_run_id"])
    assert study.data.params["tune.metric"] == "val_group_ndcg_at_10"
    trials = client.search_runs([final.info.experiment_id], "tags.`groupbench.role` = 'trial'")
    assert len(trials) == 2
    for trial in trials:   # each trial: the group validation score only, no test metric
        assert 0 <= trial.data.metrics["val_group_ndcg_at_10"] <= 1
        assert not any(name.startswith("group_sampled_") for name in trial.data.metrics)
    assert study.data.metrics["best_val_group_ndcg_at_10"] == max(t.data.metrics["objective"] for t in trials)
