"""Group-level evaluation (aggregations, KMeans-group truth, real groups) and cold start."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from benchmark.core.errors import ConfigError
from benchmark.data import Dataset
from benchmark.data.synthetic import load as load_synthetic
from benchmark.evaluation.base import EvalContext
from benchmark.evaluation.groups import aggregations_of, cold_users, group_training_counts, kmeans_groups, real_groups
from benchmark.evaluation.scoring import aggregate, member_predictions
from benchmark.protocol.candidates import group_truth
from benchmark.protocol.grouping import Groups, real
from benchmark.protocol.ranking import tie_key
from benchmark.protocol.split import holdout, kfold
from benchmark.run.job import run
from benchmark.tracking.tracker import Tracker
from models.base import Recommender

A, B, C = 1, 2, 3  # item ids


class StubModel(Recommender):
    """Predictions we control: a (user, item) -> rating table, 3.0 elsewhere; counts predict calls."""

    name = "stub"

    def __init__(self, table: dict[tuple[int, int], float], labels: dict[int, int] | None = None):
        self.table, self.labels, self.calls = table, labels or {}, []

    def fit(self, train, context):
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        self.calls.append(pairs[["user", "item"]].copy())
        return np.array([self.table.get((u, i), 3.0) for u, i in zip(pairs["user"], pairs["item"])])


class StubProfiler(StubModel):
    def predict_groups(self, users) -> np.ndarray:
        return np.array([self.labels[u] for u in users])


def eval_config(**overrides) -> OmegaConf:
    base = {"k": 2, "threshold": 3.5, "cold_threshold": None,
            "group": {"aggregations": ["mean", "least_misery", "most_pleasure"], "min_raters": 1}}
    return OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(overrides))


def ndcg(gains_in_rank_order: list[float], k: int = 2) -> float:
    dcg = sum(g / np.log2(r + 2) for r, g in enumerate(gains_in_rank_order[:k]))
    ideal = sorted(gains_in_rank_order, reverse=True)
    return dcg / sum(g / np.log2(r + 2) for r, g in enumerate(ideal[:k]))


# --------------------------------------------------------------------------- aggregations

def test_each_aggregation_on_a_hand_computed_example():
    preds = pd.DataFrame({"group": [7, 7, 7, 7, 8], "item": [A, A, A, B, A], "user": [1, 2, 3, 1, 4],
                          "prediction": [2.0, 4.0, 4.5, 1.0, 5.0]})
    expected = {"mean": [3.5, 1.0, 5.0], "least_misery": [2.0, 1.0, 5.0], "most_pleasure": [4.5, 1.0, 5.0]}
    for name, values in expected.items():
        scores = aggregate(preds, name)
        assert scores[["group", "item"]].values.tolist() == [[7, A], [7, B], [8, A]]
        np.testing.assert_allclose(scores["prediction"], values)


def test_unknown_aggregation_refused():
    with pytest.raises(ConfigError, match=r"eval.group.aggregations=.*unknown \['median'\]"):
        aggregations_of(eval_config(group={"aggregations": ["mean", "median"]}))


# --------------------------------------------------------------------------- KMeans-group truth

def test_group_truth_min_raters_and_duplicate_memberships():
    # group 1 = users 1, 2, 3 (user 1 listed twice); group 2 = user 4
    members = pd.DataFrame({"group": [1, 1, 1, 1, 2], "user": [1, 1, 2, 3, 4]})
    test = pd.DataFrame({"user": [1, 2, 3, 1, 4, 4, 5],
                         "item": [A, A, A, B, A, C, A],
                         "rating": [5.0, 4.0, 3.0, 2.0, 1.0, 4.0, 5.0]})
    truth = group_truth(test, members, min_raters=1)
    assert truth.values.tolist() == [[1, A, 4.0, 3], [1, B, 2.0, 1], [2, A, 1.0, 1], [2, C, 4.0, 1]]
    truth2 = group_truth(test, members, min_raters=2)  # the duplicate row of user 1 must not count twice
    assert truth2.values.tolist() == [[1, A, 4.0, 3]]
    assert group_truth(test, members, min_raters=4).empty


def test_kmeans_group_evaluator_ranks_by_all_members_predictions():
    labels = pd.Series([0, 0, 1], index=pd.Index([1, 2, 3], name="user"))
    groups = Groups(labels=labels, k=2, method="kmeans")
    test = pd.DataFrame({"user": [1, 2, 2, 3], "item": [A, A, B, A], "rating": [5.0, 3.0, 2.0, 4.0]})
    # group 0: truth A = 4.0, B = 2.0; user 1 did not rate B but its prediction counts
    model = StubModel({(1, A): 4.0, (2, A): 3.0, (1, B): 5.0, (2, B): 4.0, (3, A): 4.0})
    ctx = EvalContext(None, test.iloc[:0], test.assign(prediction=0.0), groups, model,
                      eval_config(group={"aggregations": ["mean"], "min_raters": 1}))
    result = kmeans_groups(ctx)
    # group 0 ranks B (4.5) over A (3.5): both recommended (>= 3.5), only A relevant
    assert result.metrics["group_mean_precision_at_2"] == pytest.approx((0.5 + 1.0) / 2)
    assert result.metrics["group_mean_recall_at_2"] == pytest.approx(1.0)
    assert result.metrics["group_mean_ndcg_at_2"] == pytest.approx((ndcg([2.0, 4.0]) + 1.0) / 2)
    assert result.metrics["group_n_groups"] == 2


# --------------------------------------------------------------------------- real groups

def tiny_dataset() -> tuple[Dataset, pd.DataFrame]:
    """Users 1..3, items A..C; real groups G1 = {1, 2}, G2 = {2, 3} (user 2 in both, listed twice)."""
    users = pd.DataFrame({"x": [0.0, 1.0, 2.0]}, index=pd.Index([1, 2, 3], name="user"))
    items = pd.DataFrame({"f": [0.0, 1.0, 0.0]}, index=pd.Index([A, B, C], name="item"))
    train = pd.DataFrame({"user": [1, 1, 1, 2], "item": [A, B, C, A], "rating": [4.0, 4.0, 2.0, 3.0]})
    dataset = Dataset(name="tiny", ratings=train, user_features=users, item_features=items, rating_scale=(1, 5),
                      groups=pd.DataFrame({"group": [10, 10, 20, 20, 20], "user": [1, 2, 2, 3, 2]}),
                      group_ratings=pd.DataFrame({"group": [10, 10, 10, 20, 20], "item": [A, B, C, A, B],
                                                  "rating": [5.0, 2.0, 4.0, 1.0, 4.0]}))
    return dataset, train


def test_real_group_evaluator_hand_computed():
    dataset, train = tiny_dataset()
    groups = Groups(labels=pd.Series([0, 0, 0], index=[1, 2, 3]), k=1, method="real",
                    membership=dataset.groups.drop_duplicates(ignore_index=True))
    model = StubModel({(1, A): 4.0, (1, B): 4.0, (1, C): 2.0, (2, A): 3.0, (2, B): 2.0, (2, C): 5.0,
                       (3, A): 2.0, (3, B): 5.0})
    ctx = EvalContext(dataset, train, train.assign(prediction=3.0), groups, model, eval_config(cold_threshold=1))
    result = real_groups(ctx)
    m = result.metrics

    # one predict call on the 8 distinct (member, item) pairs (user 2's A and B shared by both groups)
    assert len(model.calls) == 1 and len(model.calls[0]) == 8
    assert not model.calls[0].duplicated().any()

    # Equal group scores are ordered by the seeded tie key of (seed 0, group, item) (``tied``).
    truth = {10: {A: 5.0, B: 2.0, C: 4.0}, 20: {A: 1.0, B: 4.0}}

    def tied(group, *items):
        return sorted(items, key=lambda i: int(tie_key(group, i, 0)))

    def expected(ranked: dict, scores: dict) -> tuple[float, float, float, float]:
        """(P@2, R@2, NDCG@2, share of groups with a tie across the cut-off) averaged over the groups."""
        p, r, n, ties = [], [], [], []
        for g, order in ranked.items():
            rec = [i for i in order[:2] if scores[g][i] >= 3.5]
            rel = [i for i in order if truth[g][i] >= 3.5]
            hits = len(set(rec) & set(rel))
            p.append(hits / len(rec) if rec else 0.0)
            r.append(hits / len(rel) if rel else 0.0)
            n.append(ndcg([truth[g][i] for i in order]))
            ties.append(float(len(order) > 2 and scores[g][order[1]] == scores[g][order[2]]))
        return tuple(float(np.mean(v)) for v in (p, r, n, ties))

    # mean: G1 A 3.5, C 3.5, B 3.0; G2 B 3.5, A 2.5
    mean = {10: {A: 3.5, B: 3.0, C: 3.5}, 20: {A: 2.5, B: 3.5}}
    least = {10: {A: 3.0, B: 2.0, C: 2.0}, 20: {A: 2.0, B: 2.0}}
    most = {10: {A: 4.0, B: 4.0, C: 5.0}, 20: {A: 3.0, B: 5.0}}
    rankings = {"mean": ({10: tied(10, A, C) + [B], 20: [B, A]}, mean),
                "least_misery": ({10: [A] + tied(10, B, C), 20: tied(20, A, B)}, least),
                "most_pleasure": ({10: [C] + tied(10, A, B), 20: [B, A]}, most)}
    for name, (ranked, scores) in rankings.items():
        assert tuple(m[f"group_{name}_{metric}_at_2"] for metric in ("precision", "recall", "ndcg", "ties")) == \
            pytest.approx(expected(ranked, scores)), name
    assert m["group_mean_precision_at_2"] == 1.0 and m["group_mean_recall_at_2"] == 1.0  # either order of A, C
    # least misery: nothing reaches 3.5; most pleasure: G1's 2nd place is a tie of A and B across the cut-off
    assert m["group_least_misery_precision_at_2"] == 0.0 and m["group_most_pleasure_ties_at_2"] == 0.5
    assert m["group_n_groups"] == 2

    # group training interactions: G1 = 3 + 1, G2 = 1 + 0 -> only G2 is cold at threshold 1
    assert group_training_counts(train, dataset.groups).to_dict() == {10: 4, 20: 1}
    assert m["cold_group_n_groups"] == 1
    assert m["cold_group_least_misery_ndcg_at_2"] == pytest.approx(ndcg([truth[20][i] for i in tied(20, A, B)]))
    per_group = result.tables["per_group_metrics"]
    assert set(per_group["aggregation"]) == {"mean", "least_misery", "most_pleasure"} and len(per_group) == 6


def test_member_predictions_cover_members_without_ratings():
    dataset, _ = tiny_dataset()
    preds = member_predictions(StubModel({}), dataset.groups, dataset.group_ratings)
    # user 3 has no rating at all but is scored for G2's items (the model's fallback, here 3.0)
    assert sorted(preds.loc[preds.user == 3, "item"]) == [A, B]
    assert len(preds) == 3 * 2 + 2 * 2  # G1: 2 members x 3 items; G2: 2 distinct members x 2 items


def test_grouping_real_refused_without_real_groups():
    synthetic = load_synthetic(n_users=30, n_items=20, n_ratings=300, n_groups=3)
    with pytest.raises(ConfigError, match="grouping=real: dataset synthetic has no real groups"):
        real(synthetic, synthetic.ratings, k=3)


def test_grouping_real_keeps_a_label_per_user_and_the_real_membership():
    dataset, train = tiny_dataset()
    groups = real(dataset, train, k=1, n_init=1)
    assert groups.method == "real" and groups.labels.index.tolist() == [1, 2, 3]
    assert groups.members.values.tolist() == [[10, 1], [10, 2], [20, 2], [20, 3]]
    assert groups.stats["n_users_in_several_groups"] == 1 and groups.stats["n_members_without_training"] == 1


# --------------------------------------------------------------------------- cold start

def test_cold_users_have_no_training_rating():
    ratings = load_synthetic().ratings
    (plain,) = holdout(ratings, 0.2, seed=3)
    (split,) = holdout(ratings, 0.2, seed=3, cold_users=0.1)
    cold = np.setdiff1d(split.test.user.unique(), split.train.user.unique())
    assert len(cold) == 30
    assert (split.test.user.isin(cold).sum() == ratings.user.isin(cold).sum())  # ALL their ratings in test
    # the other users' split is the one without cold users
    warm = lambda frame: frame[~frame.user.isin(cold)].sort_values(["user", "item"], ignore_index=True)
    pd.testing.assert_frame_equal(warm(split.train), warm(plain.train))
    pd.testing.assert_frame_equal(warm(split.test), warm(plain.test))
    # seeded: same seed same users, another seed other users
    (again,) = holdout(ratings, 0.2, seed=3, cold_users=0.1)
    (other,) = holdout(ratings, 0.2, seed=4, cold_users=0.1)
    assert set(again.test.user) - set(again.train.user) == set(cold)
    assert set(other.test.user) - set(other.train.user) != set(cold)
    for fold in kfold(ratings, 3, seed=3, cold_users=0.1):
        assert not fold.train.user.isin(cold).any()
    with pytest.raises(ConfigError, match=r"split.cold_users=1.0 must be in \[0, 1\)"):
        holdout(ratings, 0.2, cold_users=1.0)


def test_cold_evaluator_threshold_and_unseen_users_with_profiling():
    train = pd.DataFrame({"user": [1, 1, 1, 2], "item": [A, B, C, A], "rating": [4.0, 4.0, 2.0, 3.0]})
    predictions = pd.DataFrame({"user": [1, 2, 3, 3, 4], "item": [A, B, A, B, C],
                                "rating": [4.0, 5.0, 2.0, 4.0, 1.0], "prediction": [4.0, 4.0, 3.0, 4.0, 2.0]})
    labels = pd.Series([0, 1, 1, 0], index=[1, 2, 3, 4])
    model = StubProfiler({}, labels={3: 1, 4: 1})
    ctx = EvalContext(None, train, predictions, Groups(labels, 2, "kmeans"), model, eval_config(cold_threshold=1))
    m = cold_users(ctx).metrics
    assert m["cold_n_users"] == 3           # users 2 (1 training rating), 3 and 4 (none)
    assert m["cold_rmse"] == pytest.approx(np.sqrt((1 + 1 + 0 + 1) / 4))
    assert m["cold_user_n_users"] == 2      # users 3 and 4 only
    assert m["cold_user_mae"] == pytest.approx((1 + 0 + 1) / 3)
    # one profiling prediction per unseen user: 3 -> 1 (right), 4 -> 1 (wrong, truth 0)
    assert m["cold_profile_accuracy"] == 0.5
    assert "cold_profile_accuracy" not in cold_users(
        EvalContext(None, train, predictions, Groups(labels, 2, "kmeans"), StubModel({}), eval_config())).metrics


# --------------------------------------------------------------------------- end to end

def test_run_logs_group_and_cold_metrics(make_cfg, tracking_uri):
    result = run(make_cfg("dataset=synthetic", "model=baseline_only", "split.cold_users=0.1",
                          "eval.cold_threshold=5", "grouping.n_init=1"))
    m = result.metrics
    for agg in ("mean", "least_misery", "most_pleasure"):
        for metric in ("precision", "recall", "ndcg"):
            assert 0.0 <= m[f"group_{agg}_{metric}_at_10"] <= 1.0
    assert m["cold_user_n_users"] == 30 and "cold_user_rmse" in m and "cold_rmse" in m
    logged = MlflowClient(tracking_uri).get_run(result.run_id).data.metrics
    assert logged["group_mean_ndcg_at_10"] == pytest.approx(m["group_mean_ndcg_at_10"])


def test_run_grouping_real_without_groups_fails_the_run(make_cfg, tracking_uri):
    with pytest.raises(ConfigError, match="grouping=real"):
        run(make_cfg("dataset=synthetic", "model=baseline_only", "grouping=real"))
    (logged,) = MlflowClient(tracking_uri).search_runs([Tracker(tracking_uri).experiment_id])
    assert logged.info.status == "FAILED" and "grouping=real" in logged.data.tags["error"]


@pytest.mark.parametrize("chunk", [1, 60], ids=["a group per chunk", "a few groups per chunk"])
def test_group_evaluation_a_run_of_groups_at_a_time_equals_one_pass(monkeypatch, chunk):
    """KMeans and real groups: predicting and aggregating a run of groups at a time (bounded memory at
    size) gives the per-group table of one pass over every member x item pair."""
    import benchmark.evaluation.pipeline as group_eval
    from benchmark.evaluation.base import checked_predictions
    from benchmark.protocol.grouping import kmeans
    from models.base import FitContext
    from models.reference import Random

    dataset = load_synthetic(n_users=60, n_items=30, n_ratings=900, n_groups=4, seed=1)
    split = holdout(dataset.ratings, test_size=0.3, seed=0)[0]
    groups = kmeans(dataset, split.train, k=4, seed=0)
    model = Random(seed=3).fit(split.train, FitContext(dataset=dataset, groups=groups, seed=0))
    frame = split.test.assign(prediction=checked_predictions(model, split.test))
    ctx = EvalContext(dataset, split.train, frame, groups, model, eval_config(k=3))
    real_dataset, train = tiny_dataset()
    real_groups_ = Groups(labels=pd.Series([0, 0, 0], index=[1, 2, 3]), k=1, method="real",
                          membership=real_dataset.groups.drop_duplicates(ignore_index=True))
    stub = StubModel({(1, A): 4.0, (1, B): 4.0, (1, C): 2.0, (2, A): 3.0, (2, B): 2.0, (2, C): 5.0,
                      (3, A): 2.0, (3, B): 5.0})
    real_ctx = EvalContext(real_dataset, train, train.assign(prediction=3.0), real_groups_, stub, eval_config())
    one_pass = kmeans_groups(ctx), real_groups(real_ctx)
    monkeypatch.setattr(group_eval, "GROUP_CHUNK_PAIRS", chunk)
    chunked = kmeans_groups(ctx), real_groups(real_ctx)
    for whole, parts in zip(one_pass, chunked):
        pd.testing.assert_frame_equal(parts.tables["per_group_metrics"], whole.tables["per_group_metrics"])
        assert parts.metrics == pytest.approx(whole.metrics)
    assert one_pass[0].metrics["group_n_groups"] == 4


@pytest.mark.parametrize("overlapping", [False, True], ids=["a group per user", "users in several groups"])
def test_group_scores_equal_a_merge_and_groupby(overlapping):
    """The segment path (pairs built in (group, item) order, no sort) against pandas: merge every
    group's items with its members, predict, group by (group, item) and reduce; each distinct pair is
    predicted once even when a user sits in several groups."""
    from benchmark.evaluation.pipeline import group_scores
    from benchmark.evaluation.scoring import member_pairs

    rng = np.random.default_rng(4)
    members = pd.DataFrame({"group": rng.integers(0, 12, 80), "user": rng.permutation(200)[:80]})
    if overlapping:
        members = pd.concat([members, members.sample(30, random_state=1).assign(group=lambda f: (f.group + 5) % 12)])
    members = pd.concat([members, members.iloc[:5]])  # repeated memberships count once
    items = pd.DataFrame({"group": rng.integers(0, 14, 300), "item": rng.integers(0, 40, 300)})  # groups 12, 13: no members
    table = {(u, i): float(rng.integers(1, 6)) for u in range(200) for i in range(40)}
    model = StubModel(table)

    pairs, starts = member_pairs(members, items)
    expected_pairs = (items.drop_duplicates().merge(members.drop_duplicates(), on="group")
                      .sort_values(["group", "item", "user"], ignore_index=True))
    ours = pairs.sort_values(["group", "item", "user"], ignore_index=True)
    pd.testing.assert_frame_equal(ours[["group", "item", "user"]], expected_pairs[["group", "item", "user"]])
    keys = pairs[["group", "item"]].to_numpy()
    assert (np.diff(keys[:, 0]) >= 0).all() and len(starts) == len(expected_pairs[["group", "item"]].drop_duplicates())
    np.testing.assert_array_equal(keys[starts], expected_pairs[["group", "item"]].drop_duplicates().to_numpy())

    scores = group_scores(model, members, items, ["mean", "least_misery", "most_pleasure"])
    predicted = expected_pairs.assign(prediction=[table[(u, i)] for u, i in zip(expected_pairs.user, expected_pairs.item)])
    by_key = predicted.groupby(["group", "item"])["prediction"]
    for name, reduce in {"mean": by_key.mean, "least_misery": by_key.min, "most_pleasure": by_key.max}.items():
        expected = reduce().reset_index()
        pd.testing.assert_frame_equal(scores[name].astype({"group": int, "item": int}), expected, check_dtype=False)
    distinct = pd.concat(model.calls).drop_duplicates()
    assert sum(len(call) for call in model.calls) == len(distinct)  # every distinct pair predicted once
