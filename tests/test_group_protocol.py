"""The sampled leave-one-out group protocol (docs/protocol.md, "Group recommendation: sampled and full
ranking"): group splits (benchmark/protocol/group_split.py), the group-item evaluators
(benchmark/evaluation/group_item.py), the tie rule and its legacy alternative, popularity_group."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from benchmark.data.base import Dataset
from benchmark.data.group_item import GroupItemData
from benchmark.evaluation import group_item
from benchmark.evaluation.base import EvalContext
from benchmark.protocol import ranking
from benchmark.protocol.folds import Fold
from benchmark.protocol.group_split import GroupFold, corrected, shipped
from benchmark.protocol.grouping import Groups, members
from models.base import FitContext, Recommender
from models.popularity_group import PopularityGroup
from tests.conftest import data_root

# a uniformly random rank among 101 candidates (the positive and its 100 negatives)
RANDOM_HR_AT_5 = 5 / 101                                                        # 0.049505
RANDOM_NDCG_AT_5 = sum(1 / math.log2(r + 1) for r in range(1, 6)) / 101         # 0.029193


def test_analytic_random_figures_are_the_documented_ones():
    assert RANDOM_HR_AT_5 == pytest.approx(0.049505, abs=1e-6)
    assert RANDOM_NDCG_AT_5 == pytest.approx(0.029193, abs=1e-6)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    assert "0.049505" in doc and "0.029193" in doc


# ---------------------------------------------------------------------------- generated data

def generated(n_groups: int = 3000, n_items: int = 500, n_train: int = 5, leaks: int = 40, seed: int = 1) -> Dataset:
    """Groups of two users, ``n_train`` training positives each, one test case each; the first
    ``leaks`` groups also have their test item among their training rows (planted leaks)."""
    rng = np.random.default_rng(seed)
    picks = np.array([rng.choice(n_items, n_train + 1, replace=False) for _ in range(n_groups)])
    train = pd.DataFrame({"group": np.repeat(np.arange(n_groups), n_train), "item": picks[:, :n_train].ravel()})
    test = pd.DataFrame({"group": np.arange(n_groups), "item": picks[:, n_train]})
    train = pd.concat([train, test.iloc[:leaks]], ignore_index=True)
    member_rows = pd.DataFrame({"group": np.repeat(np.arange(n_groups), 2), "user": np.arange(2 * n_groups)})
    user_train = pd.DataFrame({"user": np.arange(2 * n_groups), "item": rng.integers(0, n_items, 2 * n_groups)})
    data = GroupItemData(members=member_rows, user_train=user_train, user_test=user_train.iloc[:0],
                         group_train=train, group_test=test, n_users=2 * n_groups, n_items=n_items,
                         n_groups=n_groups, implicit=True,
                         group_negatives=rng.integers(0, n_items, (n_groups, 100)))
    ratings = user_train.assign(rating=1.0)
    return Dataset(name="generated", ratings=ratings, user_features=pd.DataFrame(index=pd.RangeIndex(2 * n_groups)),
                   item_features=pd.DataFrame(index=pd.RangeIndex(n_items)), rating_scale=(0.0, 1.0),
                   groups=member_rows, group_item=data)


class HashScores(Recommender):
    """Group scores that know nothing: a seeded hash of (group, item) (random), or one constant (tied)."""

    def __init__(self, constant: bool = False):
        self.constant, self.name = constant, "tied" if constant else "hash"

    def fit(self, train, context):
        return self

    def predict(self, pairs):
        return np.zeros(len(pairs))

    def score_groups(self, members_, pairs):
        if self.constant:
            return np.ones(len(pairs))
        return (ranking.tie_key(pairs["group"].to_numpy() + 10**6, pairs["item"].to_numpy(), 99) >> np.uint64(11)
                ).astype(float)


def context(dataset: Dataset, fold: GroupFold, model, ties: str = "random", seed: int = 0) -> EvalContext:
    groups = members(dataset, dataset.ratings)
    return EvalContext(dataset, dataset.ratings, dataset.ratings.iloc[:0].assign(prediction=0.0), groups, model,
                       {"ties": ties, "group": {"aggregations": ["mean"]}, "full_catalogue": True},
                       seed=seed, group_fold=fold)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return generated()


@pytest.fixture(scope="module")
def fold(data) -> GroupFold:
    return corrected(data.ratings, seed=0, dataset=data)[0].group


# ---------------------------------------------------------------------------- the acceptance tests

# tolerance: 4 standard errors of a mean over 3,000 cases (HR@5: sqrt(p(1 - p) / n) = 0.0040;
# NDCG@5: sqrt(var / n) = 0.0025 with var = E[g^2] - E[g]^2 = 0.01964 - 0.00085)
HR_TOLERANCE, NDCG_TOLERANCE = 0.016, 0.010


def test_random_reference_sits_at_the_analytic_figures(data, fold):
    metrics = group_item.sampled(context(data, fold, HashScores())).metrics
    assert metrics["group_sampled_n_cases"] == 3000
    assert metrics["group_sampled_hr_at_5"] == pytest.approx(RANDOM_HR_AT_5, abs=HR_TOLERANCE)
    assert metrics["group_sampled_ndcg_at_5"] == pytest.approx(RANDOM_NDCG_AT_5, abs=NDCG_TOLERANCE)
    assert metrics["group_sampled_pos_ties"] == 0.0


def test_equal_scores_give_chance_under_the_tie_rule_and_one_only_positive_first(data, fold):
    tied = group_item.sampled(context(data, fold, HashScores(constant=True))).metrics
    assert tied["group_sampled_hr_at_5"] == pytest.approx(RANDOM_HR_AT_5, abs=HR_TOLERANCE)
    assert tied["group_sampled_ndcg_at_5"] == pytest.approx(RANDOM_NDCG_AT_5, abs=NDCG_TOLERANCE)
    assert tied["group_sampled_pos_ties"] == 1.0 and tied["group_ties_positive_first"] == 0.0
    legacy = group_item.sampled(context(data, fold, HashScores(constant=True), ties="positive_first")).metrics
    assert legacy["group_sampled_hr_at_5"] == 1.0 and legacy["group_sampled_ndcg_at_5"] == 1.0
    assert legacy["group_ties_positive_first"] == 1.0
    full = group_item.full(context(data, fold, HashScores(constant=True), ties="positive_first")).metrics
    assert full["group_full_hr_at_5"] == 1.0


def test_an_unknown_tie_rule_is_refused(data, fold):
    with pytest.raises(Exception, match="eval.ties=first is unknown"):
        group_item.sampled(context(data, fold, HashScores(), ties="first"))


# ---------------------------------------------------------------------------- the corrected split

def known_positives(data: GroupItemData) -> set[tuple[int, int]]:
    return {(int(g), int(i)) for frame in (data.group_train, data.group_test) for g, i in frame[["group", "item"]].to_numpy()}


def test_corrected_split_drops_exactly_the_leaked_rows(data, fold):
    test_pairs = {(int(g), int(i)) for g, i in data.group_item.group_test[["group", "item"]].to_numpy()}
    leaked = sum((int(g), int(i)) in test_pairs for g, i in data.group_item.group_train[["group", "item"]].to_numpy())
    assert leaked == 40
    assert len(fold.train) == len(data.group_item.group_train) - leaked
    assert fold.stats["n_leaked_train_rows"] == leaked
    assert not any((int(g), int(i)) in test_pairs for g, i in fold.train[["group", "item"]].to_numpy())
    kept = shipped(data.ratings, seed=0, dataset=data)[0].group
    assert len(kept.train) == len(data.group_item.group_train) and kept.legacy and not fold.legacy
    assert np.array_equal(kept.negatives, data.group_item.group_negatives)


def test_corrected_negatives_avoid_positives_and_repeats_and_follow_the_seed(data, fold):
    known = known_positives(data.group_item)
    negatives = fold.negatives
    assert negatives.shape == (3000, 100) and negatives.min() >= 0 and negatives.max() < 500
    groups = fold.test["group"].to_numpy()
    assert not any((int(g), int(i)) in known for g, row in zip(groups, negatives) for i in row)
    assert all(len(set(row)) == 100 for row in negatives.tolist())
    again = corrected(data.ratings, seed=0, dataset=data)[0].group
    other = corrected(data.ratings, seed=1, dataset=data)[0].group
    assert np.array_equal(again.negatives, negatives)
    assert (other.negatives != negatives).mean() > 0.9


def test_validation_is_one_training_positive_per_group_with_its_own_negatives(data, fold):
    assert len(fold.val) == 3000 and fold.val["group"].is_unique
    assert len(fold.fit) + len(fold.val) == len(fold.train)
    assert set(map(tuple, fold.val[["group", "item"]].to_numpy())) <= set(map(tuple, fold.train[["group", "item"]].to_numpy()))
    known = known_positives(data.group_item)
    assert not any((int(g), int(i)) in known for g, row in zip(fold.val["group"], fold.val_negatives) for i in row)
    exposed = Fold.from_split(corrected(data.ratings, seed=0, dataset=data)[0], seed=0)
    assert exposed.group.val.equals(fold.val)


# ---------------------------------------------------------------------------- popularity_group by hand

def test_popularity_group_sampled_metrics_equal_a_hand_computation():
    # item k (1..5) is a training positive of groups 0..5-k: counts 1 -> 5, 2 -> 4, 3 -> 3, 4 -> 2, 5 -> 1, 0 -> 0
    train = pd.DataFrame([(g, k) for k in range(1, 6) for g in range(6 - k)], columns=["group", "item"])
    test = pd.DataFrame({"group": [4, 3], "item": [3, 0]})
    negatives = np.array([[1, 0, 5, 4, 2],    # case A: item 3 (count 3), ahead: 1 and 2 -> rank 3
                          [1, 2, 3, 4, 5]])   # case B: item 0 (count 0), all five ahead -> rank 6
    empty = np.zeros((0, 5), dtype=np.int64)
    fold = GroupFold(train=train, fit=train, test=test, negatives=negatives, val=test.iloc[:0], val_negatives=empty,
                     n_items=10, label="corrected", legacy=False)
    member_rows = pd.DataFrame({"group": range(6), "user": range(6)})
    dataset = Dataset(name="hand", ratings=pd.DataFrame({"user": [0], "item": [0], "rating": [1.0]}),
                      user_features=pd.DataFrame(index=pd.RangeIndex(6)), item_features=pd.DataFrame(index=pd.RangeIndex(10)),
                      rating_scale=(0.0, 1.0), groups=member_rows)
    groups = Groups(labels=pd.Series(range(6)), k=6, method="members", membership=member_rows)
    model = PopularityGroup().fit(dataset.ratings, FitContext(dataset, groups, fold=Fold(dataset.ratings, group=fold)))
    ctx = EvalContext(dataset, dataset.ratings, dataset.ratings.assign(prediction=0.0), groups, model,
                      {"ties": "random", "group": {"aggregations": ["mean"]}}, group_fold=fold)
    metrics = group_item.sampled(ctx).metrics
    assert metrics["group_sampled_hr_at_5"] == 0.5                      # (1 + 0) / 2
    assert metrics["group_sampled_ndcg_at_5"] == pytest.approx(0.25)    # (1 / log2(3 + 1) + 0) / 2
    assert metrics["group_sampled_hr_at_10"] == 1.0
    assert metrics["group_sampled_ndcg_at_10"] == pytest.approx((0.5 + 1 / math.log2(7)) / 2)


# ---------------------------------------------------------------------------- the real files, end to end

def camra_present() -> bool:
    return (data_root() / "group-rec" / "CAMRa2011").is_dir() or any(data_root().glob("**/CAMRa2011"))


def cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "benchmark", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                           f"data.root={data_root()}", "data.download=false", "hydra.run.dir=" + str(tmp_path / "out"),
                           *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_camra2011_popularity_group_end_to_end(tmp_path):
    if not camra_present():
        pytest.skip(f"CAMRa2011 files not under {data_root()}")
    proc = cli(tmp_path, "dataset=camra2011", "model=popularity_group")
    assert proc.returncode == 0, proc.stderr
    assert "group sampled, corrected split: HR@5" in proc.stdout and "group full, corrected split: HR@5" in proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("groupbench").experiment_id])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in ("hr_at_5", "ndcg_at_5", "hr_at_10", "ndcg_at_10"):
        assert 0 < metrics[f"group_sampled_{name}"] <= 1 and 0 < metrics[f"group_full_{name}"] <= 1
    assert metrics["group_sampled_n_cases"] == 1450 and metrics["group_split_legacy"] == 0.0
    assert f"HR@5 {metrics['group_sampled_hr_at_5']:.4f}" in proc.stdout
    assert run.data.tags["group_split"] == "corrected"
    assert run.data.params["split"].endswith("corrected") or "corrected" in str(run.data.params)


@pytest.mark.slow
def test_camra2011_random_and_shipped_legacy(tmp_path):
    if not camra_present():
        pytest.skip(f"CAMRa2011 files not under {data_root()}")
    proc = cli(tmp_path, "dataset=camra2011", "model=random", "split=shipped")
    assert proc.returncode == 0, proc.stderr
    assert "group sampled, legacy (shipped split): HR@5" in proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("groupbench").experiment_id])
    metrics = run.data.metrics
    assert metrics["group_split_legacy"] == 1.0 and run.data.tags["group_split"] == "shipped (legacy)"
    # 1,450 cases, member-averaged random scores: 4 standard errors (0.023 for HR@5, 0.014 for NDCG@5)
    assert metrics["group_sampled_mean_hr_at_5"] == pytest.approx(RANDOM_HR_AT_5, abs=0.023)
    assert metrics["group_sampled_mean_ndcg_at_5"] == pytest.approx(RANDOM_NDCG_AT_5, abs=0.014)


def test_corrected_split_on_the_camra2011_files_drops_its_576_leaked_rows():
    if not camra_present():
        pytest.skip(f"CAMRa2011 files not under {data_root()}")
    from benchmark.data import camra2011
    dataset = camra2011.load(root=str(data_root()), download=False)
    data = dataset.group_item
    test_pairs = set(map(tuple, data.group_test[["group", "item"]].to_numpy().tolist()))
    leaked = sum(pair in test_pairs for pair in map(tuple, data.group_train[["group", "item"]].to_numpy().tolist()))
    fold = corrected(dataset.ratings, seed=0, dataset=dataset)[0].group
    assert leaked == 576 == fold.stats["n_leaked_train_rows"]
    assert len(fold.train) == len(data.group_train) - leaked and len(fold.negatives) == len(data.group_test) == 1450
    known = known_positives(GroupItemData(**{**data.__dict__, "group_train": data.group_train[data.group_train.rating > 0]}))
    assert not any((int(g), int(i)) in known for g, row in zip(fold.test["group"], fold.negatives) for i in row)


@pytest.mark.slow
def test_a_group_item_sweep_hashes_its_jobs_as_they_run_and_resumes(tmp_path):
    """The sweeper hashes a group-item job with the dataset's own split, as the job logs it: a rerun
    skips it (before, the planner hashed the user-level hold-out and every rerun ran everything)."""
    if not camra_present():
        pytest.skip(f"CAMRa2011 files not under {data_root()}")
    overrides = ("+sweep=smoke", "dataset=camra2011", "model=popularity_group")
    first = cli(tmp_path, *overrides)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "1 jobs: 1 finished, 0 failed, 0 skipped" in first.stdout or "1 job: 1 finished" in first.stdout, first.stdout
    second = cli(tmp_path, *overrides)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 finished, 0 failed, 1 skipped" in second.stdout, second.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    jobs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id],
                              "tags.`groupbench.role` = 'job'")
    assert len(jobs) == 1 and jobs[0].data.tags["group_split"] == "corrected"


def test_a_group_item_only_model_is_refused_in_one_line_on_user_level_data(make_cfg):
    from benchmark.core import models_meta
    from benchmark.core.errors import ConfigError
    from benchmark.run.job import run

    assert "popularity_group" in models_meta.group_item_models()
    with pytest.raises(ConfigError) as refused:
        run(make_cfg("dataset=synthetic", "model=popularity_group"))
    assert "needs a group split" in str(refused.value) and "\n" not in str(refused.value)
