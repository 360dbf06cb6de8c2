"""Reference predictors (models/reference.py) and the full-catalogue protocol (benchmark/evaluation/full_ranking.py).

The full-catalogue metrics are checked against a brute-force implementation written here with
plain Python loops (one user, one item at a time), on a small synthetic dataset.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from benchmark.data.synthetic import load as load_synthetic
from benchmark.evaluation.base import EvalContext, checked_predictions, profiling
from benchmark.evaluation.full_ranking import full_catalogue
from benchmark.evaluation.metrics import metric_name, per_user_metrics, summarize
from benchmark.protocol.candidates import group_truth
from benchmark.protocol.grouping import kmeans, size_stats
from benchmark.protocol.ranking import tie_key
from benchmark.protocol.split import holdout
from models.base import FitContext
from models.reference import Constant, ItemMean, Oracle, Popularity, Random

K, THRESHOLD = 5, 3.5
CONFIG = OmegaConf.create({"k": K, "threshold": THRESHOLD, "full_catalogue": True,
                           "group": {"aggregations": ["mean", "least_misery"], "min_raters": 1}})


@pytest.fixture(scope="module")
def small():
    dataset = load_synthetic(n_users=30, n_items=25, n_ratings=300, n_groups=3, seed=3)
    split = holdout(dataset.ratings, test_size=0.3, seed=0)[0]
    groups = kmeans(dataset, split.train, k=3, seed=0)
    return dataset, split, groups


def fitted(model, dataset, split, groups):
    return model.fit(split.train, FitContext(dataset=dataset, groups=groups, seed=0))


def context(model, dataset, split, groups) -> EvalContext:
    frame = split.test[["user", "item", "rating"]].assign(prediction=checked_predictions(model, split.test))
    return EvalContext(dataset, split.train, frame, groups, model, CONFIG)


# ---------------------------------------------------------------------------- test-items-only protocol

def test_oracle_reaches_the_analytic_ceiling_of_recall(small):
    """R@10 of the oracle = min(10, |rel|) / |rel| per user (0 without a relevant test item)."""
    dataset, split, groups = small
    oracle = fitted(Oracle(), dataset, split, groups)
    frame = split.test.assign(prediction=checked_predictions(oracle, split.test))
    table = per_user_metrics(frame, k=10, threshold=THRESHOLD)
    relevant = split.test[split.test["rating"] >= THRESHOLD].groupby("user").size().reindex(table.index, fill_value=0)
    ceiling = np.where(relevant > 0, np.minimum(10, relevant) / relevant.clip(lower=1), 0.0)
    np.testing.assert_allclose(table["recall"].to_numpy(), ceiling)
    np.testing.assert_allclose(table["ndcg"], 1.0)
    assert (table["user_rmse"] == 0.0).all()


def test_oracle_refuses_pairs_without_truth():
    with pytest.raises(Exception, match="oracle needs the true rating"):
        Oracle().predict(pd.DataFrame({"user": [1], "item": [2]}))


def test_constant_top_on_a_small_frame_by_hand():
    """Constant 5: every prediction ties, so the top k are the seeded tie rule's first items (not
    the lowest item ids), every user has a tie across the cut-off, and all predictions are >= threshold."""
    test = pd.DataFrame({"user": [1, 1, 1, 1, 2, 2, 2], "item": [4, 1, 3, 2, 7, 5, 6],
                         "rating": [5.0, 2.0, 4.0, 1.0, 3.0, 4.0, 5.0]})
    model = Constant(value="top").fit(test, FitContext(dataset=_scale_only(), groups=None))
    frame = test.assign(prediction=model.predict(test))
    assert (frame["prediction"] == 5.0).all()
    table = per_user_metrics(frame, k=2, threshold=3.5, seed=5)
    rating = dict(zip(zip(test["user"], test["item"]), test["rating"]))
    for user, items in ((1, [4, 1, 3, 2]), (2, [7, 5, 6])):
        order = sorted(items, key=lambda i: int(tie_key(user, i, 5)))  # the tie key, pair by pair
        gains = [rating[(user, i)] for i in order]
        hits = sum(g >= 3.5 for g in gains[:2])
        relevant = sum(g >= 3.5 for g in gains)
        assert table.loc[user, ["precision", "recall"]].tolist() == [hits / 2, hits / relevant]
        ideal = sorted(gains, reverse=True)
        dcg = gains[0] + gains[1] / math.log2(3)
        assert table.loc[user, "ndcg"] == pytest.approx(dcg / (ideal[0] + ideal[1] / math.log2(3)))
        assert table.loc[user, "tie_at_cutoff"] == 1.0
    summary = summarize(frame, k=2, threshold=3.5, seed=5)
    assert summary["precision_at_2"] == pytest.approx(table["precision"].mean()) and summary["ties_at_2"] == 1.0
    errors = np.array([0, 3, 1, 4, 2, 1, 0], dtype=float)
    assert summary["rmse"] == pytest.approx(np.sqrt((errors ** 2).mean()))
    # another seed, another permutation of the ties: over seeds, user 1's P@2 is not always one value
    assert len({per_user_metrics(frame, k=2, threshold=3.5, seed=s).loc[1, "precision"] for s in range(20)}) > 1


def _scale_only():
    class Scale:
        rating_scale = (1.0, 5.0)
    return Scale()


def test_global_mean_item_mean_popularity_and_random(small):
    dataset, split, groups = small
    train = split.train
    pairs = split.test[["user", "item"]]
    mean = fitted(Constant(value="mean"), dataset, split, groups).predict(pairs)
    np.testing.assert_allclose(mean, train["rating"].mean())
    item_mean = fitted(ItemMean(), dataset, split, groups).predict(pairs)
    by_item = train.groupby("item")["rating"].mean()
    expected = [by_item.get(i, train["rating"].mean()) for i in pairs["item"]]
    np.testing.assert_allclose(item_mean, expected)
    popularity = fitted(Popularity(), dataset, split, groups).predict(pairs)
    counts = train.groupby("item").size()
    assert np.argsort(-popularity, kind="stable").tolist() == np.argsort(
        -counts.reindex(pairs["item"]).fillna(0).to_numpy(), kind="stable").tolist()
    assert popularity.max() <= 5.0 and popularity.min() >= 1.0
    first = fitted(Random(seed=1), dataset, split, groups)
    values = first.predict(pairs)
    assert ((values >= 1.0) & (values <= 5.0)).all() and values.std() > 0.8
    # the same pair gets the same draw whatever else is asked; another seed draws differently
    np.testing.assert_array_equal(first.predict(pairs.iloc[::-1]), values[::-1])
    assert not np.allclose(fitted(Random(seed=2), dataset, split, groups).predict(pairs), values)


# ---------------------------------------------------------------------------- full catalogue

def brute_force(model, dataset, split, groups, members_of: dict | None = None):
    """Plain-loop full-catalogue metrics: users (or groups) one at a time, items one at a time."""
    items = sorted(dataset.item_features.index)
    trained = {(u, i) for u, i in zip(split.train["user"], split.train["item"])}

    def score(u, i):
        pair = pd.DataFrame({"user": [u], "item": [i]})
        return float(checked_predictions(model, pair, truth=split.test)[0])

    def metrics_of(ranked, relevant):
        top = ranked[:K]
        hits = [1 if i in relevant else 0 for i in top]
        out = {"precision": sum(hits) / K, "recall": sum(hits) / len(relevant)}
        dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
        idcg = sum(1 / math.log2(j + 2) for j in range(min(K, len(relevant))))
        out["ndcg"] = dcg / idcg
        out["hit_rate"] = 1.0 if sum(hits) else 0.0
        ap, seen = 0.0, 0
        for j, h in enumerate(hits):
            seen += h
            ap += h * seen / (j + 1)
        out["map"] = ap / min(K, len(relevant))
        out["mrr"] = next(1.0 / (j + 1) for j, i in enumerate(ranked) if i in relevant)
        return out, top

    if members_of is None:
        scores = {(u, i): score(u, i) for u in split.test["user"].unique() for i in items}
        per, shown = {}, set()
        for u in sorted(split.test["user"].unique()):
            # ties: the seeded tie key of (seed 0, user, item), one pair at a time
            ranked = sorted((i for i in items if (u, i) not in trained),
                            key=lambda i: (-scores[(u, i)], int(tie_key(u, i, 0))))
            shown.update(ranked[:K])
            relevant = {i for uu, i, r in zip(split.test["user"], split.test["item"], split.test["rating"])
                        if uu == u and r >= THRESHOLD}
            if relevant:
                per[u] = metrics_of(ranked, relevant)[0]
        return per, len(shown) / len(items)
    truth = group_truth(split.test, groups.members, 1)
    per = {}
    for g, members in members_of.items():
        group_score = {i: sum(score(u, i) for u in members) / len(members) for i in items}
        ranked = sorted((i for i in items if not all((u, i) in trained for u in members)),
                        key=lambda i: (-group_score[i], int(tie_key(g, i, 0))))
        relevant = set(truth.loc[(truth["group"] == g) & (truth["rating"] >= THRESHOLD), "item"])
        if relevant:
            per[g] = metrics_of(ranked, relevant)[0]
    return per, None


@pytest.mark.parametrize("model", [Random(seed=4), ItemMean(), Constant(value="top"), Oracle()],
                         ids=["random", "item_mean", "constant (all ties)", "oracle"])
@pytest.mark.slow
def test_full_catalogue_equals_brute_force(small, model):
    dataset, split, groups = small
    model = fitted(model, dataset, split, groups)
    result = full_catalogue(context(model, dataset, split, groups))
    expected, coverage = brute_force(model, dataset, split, groups)
    table = result.tables["per_user_full_metrics"].set_index("user")
    scored = table[table["n_relevant"] > 0]
    assert sorted(scored.index) == sorted(expected)
    for metric in ("precision", "recall", "ndcg", "hit_rate", "map", "mrr"):
        values = [expected[u][metric] for u in scored.index]
        np.testing.assert_allclose(scored[metric].to_numpy(), values, err_msg=metric)
        assert result.metrics[metric_name(metric, K)] == pytest.approx(np.mean(values))
    assert result.metrics[f"full_coverage_at_{K}"] == pytest.approx(coverage)
    # groups, mean aggregation, against the same loops over each group's members
    members = groups.members.groupby("group")["user"].apply(list).to_dict()
    expected_groups, _ = brute_force(model, dataset, split, groups, members_of=members)
    per_group = result.tables["per_group_full_metrics"]
    per_group = per_group[(per_group["aggregation"] == "mean") & (per_group["n_relevant"] > 0)].set_index("group")
    assert sorted(per_group.index) == sorted(expected_groups)
    for metric in ("precision", "ndcg", "mrr"):
        np.testing.assert_allclose(per_group[metric].to_numpy(), [expected_groups[g][metric] for g in per_group.index])


def test_oracle_is_the_full_catalogue_ceiling(small):
    dataset, split, groups = small
    oracle = fitted(Oracle(), dataset, split, groups)
    result = full_catalogue(context(oracle, dataset, split, groups))
    table = result.tables["per_user_full_metrics"]
    table = table[table["n_relevant"] > 0]
    np.testing.assert_allclose(table[["ndcg", "hit_rate", "map", "mrr"]].to_numpy(), 1.0)
    np.testing.assert_allclose(table["recall"], np.minimum(K, table["n_relevant"]) / table["n_relevant"])
    np.testing.assert_allclose(table["precision"], np.minimum(K, table["n_relevant"]) / K)


def test_score_all_is_used_and_gives_the_same_ranking(small):
    dataset, split, groups = small

    class Grid(ItemMean):
        calls = 0

        def score_all(self, users, items):
            Grid.calls += 1
            pairs = pd.DataFrame({"user": np.repeat(users, len(items)), "item": np.tile(items, len(users))})
            return self.predict(pairs).reshape(len(users), len(items))

    plain = full_catalogue(context(fitted(ItemMean(), dataset, split, groups), dataset, split, groups))
    fast = full_catalogue(context(fitted(Grid(), dataset, split, groups), dataset, split, groups))
    assert Grid.calls == 1
    for name, value in plain.metrics.items():
        if name != "full_seconds":
            assert fast.metrics[name] == pytest.approx(value), name


def test_full_catalogue_can_be_switched_off(small):
    dataset, split, groups = small
    ctx = context(fitted(ItemMean(), dataset, split, groups), dataset, split, groups)
    ctx.config = OmegaConf.merge(CONFIG, {"full_catalogue": False})
    assert full_catalogue(ctx).metrics == {}


# ---------------------------------------------------------------------------- groups

def test_group_size_stats_by_hand():
    members = pd.DataFrame({"group": [0, 0, 0, 1, 2, 2, 2], "user": [1, 2, 2, 3, 4, 5, 6]})
    stats = size_stats(members)  # sizes 2 (a repeated member counts once), 1, 3
    assert stats == {"size_mean": 2.0, "size_median": 2.0, "size_max": 3.0, "size_singleton_share": pytest.approx(1 / 3)}


def test_profiling_saves_each_test_users_predicted_group(small):
    dataset, split, groups = small

    class Profiler(ItemMean):
        def predict_groups(self, users):
            return np.asarray(users) % 3

    model = fitted(Profiler(), dataset, split, groups)
    result = profiling(context(model, dataset, split, groups))
    audit = result.tables["predicted_groups"]
    assert sorted(audit["user"]) == sorted(split.test["user"].unique())
    np.testing.assert_array_equal(audit["predicted_group"], audit["user"] % 3)
    np.testing.assert_array_equal(audit["group"], groups.labels.reindex(audit["user"]).to_numpy())


# ---------------------------------------------------------------------------- ranking without a full sort

@pytest.mark.parametrize("tied", [False, True], ids=["distinct scores", "heavy ties"])
def test_top_k_and_first_relevant_rank_equal_a_sorted_ranking(tied):
    """top_k_positions / first_relevant_rank (partition + linear passes) against Python's sorted() on
    (-score, position), excluded items dropped, on random rows with many ties and short rows."""
    from benchmark.evaluation.metrics import rank_metrics

    rng = np.random.default_rng(7)
    for _ in range(300):
        rows, n_items, k = int(rng.integers(1, 5)), int(rng.integers(1, 25)), int(rng.integers(1, 12))
        scores = rng.integers(0, 3, (rows, n_items)).astype(float) if tied else rng.normal(size=(rows, n_items))
        excluded = rng.random((rows, n_items)) < rng.random()
        relevant = (rng.random((rows, n_items)) < 0.3) & ~excluded
        table, top_items = rank_metrics(scores, excluded, relevant, k)
        for r in range(rows):
            ranked = sorted((j for j in range(n_items) if not excluded[r, j]), key=lambda j: (-scores[r, j], j))
            expected_top = ranked[:k] + [-1] * (min(k, n_items) - len(ranked[:k]))
            assert top_items[r].tolist() == expected_top
            first = next((n for n, j in enumerate(ranked) if relevant[r, j]), None)
            if first is None:
                assert np.isnan(table["mrr"].iloc[r])
            else:
                assert table["mrr"].iloc[r] == pytest.approx(1.0 / (first + 1))


@pytest.mark.parametrize("name, reduce", [("mean", np.mean), ("least_misery", np.min), ("most_pleasure", np.max)])
def test_each_full_catalogue_group_aggregation_equals_a_per_group_loop(small, name, reduce):
    """The group rows of the full-catalogue evaluation: each group's members' score rows reduced one
    group at a time (numpy's mean / min / max), ranked by sorted()."""
    dataset, split, groups = small
    model = fitted(Random(seed=2), dataset, split, groups)  # distinct scores: min, max and mean rank apart
    ctx = context(model, dataset, split, groups)
    ctx.config = OmegaConf.merge(CONFIG, {"group": {"aggregations": [name]}})
    result = full_catalogue(ctx)
    per_group = result.tables["per_group_full_metrics"]
    per_group = per_group[(per_group["aggregation"] == name) & (per_group["n_relevant"] > 0)].set_index("group")
    items = np.sort(dataset.item_features.index.to_numpy())
    trained = set(zip(split.train["user"], split.train["item"]))
    truth = group_truth(split.test, groups.members, 1)
    assert len(per_group) > 0
    for g, members in groups.members.groupby("group")["user"]:
        members = sorted(set(members))
        pairs = pd.DataFrame({"user": np.repeat(members, len(items)), "item": np.tile(items, len(members))})
        score = reduce(model.predict(pairs).reshape(len(members), len(items)), axis=0)
        ranked = sorted((n for n, i in enumerate(items) if not all((u, i) in trained for u in members)),
                        key=lambda n: (-score[n], n))
        relevant = set(truth.loc[(truth["group"] == g) & (truth["rating"] >= THRESHOLD), "item"])
        if not relevant:
            continue
        hits = [items[n] in relevant for n in ranked[:K]]
        assert per_group.loc[g, "precision"] == pytest.approx(sum(hits) / K)
        first = next(n for n, j in enumerate(ranked) if items[j] in relevant)
        assert per_group.loc[g, "mrr"] == pytest.approx(1.0 / (first + 1))


@pytest.mark.parametrize("chunk, max_matrix", [(7, None), (60, None), (600, None), (40, 10)],
                         ids=["a row per chunk", "a few rows per chunk", "several groups per chunk", "users only, chunked"])
def test_chunked_full_catalogue_equals_the_whole_matrix(small, monkeypatch, chunk, max_matrix):
    """Scoring and ranking in chunks (rows of users, runs of groups) gives the whole-matrix metrics;
    above MAX_GROUP_MATRIX the users are scored a chunk at a time and the group ranking is skipped."""
    import benchmark.evaluation.pipeline as full_ranking

    dataset, split, groups = small
    model = fitted(Random(seed=5), dataset, split, groups)
    whole = full_catalogue(context(model, dataset, split, groups))
    monkeypatch.setattr(full_ranking, "CHUNK_PAIRS", chunk)  # the catalogue has 25 items
    if max_matrix is not None:
        monkeypatch.setattr(full_ranking, "MAX_GROUP_MATRIX", max_matrix)
    chunked = full_catalogue(context(model, dataset, split, groups))
    pd.testing.assert_frame_equal(chunked.tables["per_user_full_metrics"], whole.tables["per_user_full_metrics"])
    if max_matrix is None:
        pd.testing.assert_frame_equal(chunked.tables["per_group_full_metrics"],
                                      whole.tables["per_group_full_metrics"])
        assert {k: v for k, v in chunked.metrics.items() if k != "full_seconds"} == \
            pytest.approx({k: v for k, v in whole.metrics.items() if k != "full_seconds"})
    else:
        assert "per_group_full_metrics" not in chunked.tables
        assert not any(name.startswith("full_group_") for name in chunked.metrics)
        assert chunked.metrics["full_ndcg_at_5"] == pytest.approx(whole.metrics["full_ndcg_at_5"])
