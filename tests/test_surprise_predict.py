"""Vectorised Surprise predictions equal Surprise's own per-pair ``predict(u, i).est``."""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd
import pytest
import surprise

from baselines import surprise_predict
from benchmark.data import synthetic
from benchmark.protocol.split import holdout


@pytest.fixture(scope="module")
def data():
    """A small synthetic training set, sparse enough for k-NN to lack neighbours (half-star ratings
    too), and the pairs to predict: the test pairs, every user x item pair (training pairs included),
    unknown users and unknown items."""
    ratings = synthetic.load(n_users=40, n_items=30, n_ratings=300, n_groups=3, seed=3).ratings
    ratings.loc[ratings.index % 7 == 0, "rating"] -= 0.5
    ratings["rating"] = ratings["rating"].clip(1, 5)
    split = holdout(ratings, test_size=0.25, seed=1, cold_users=0.1)[0]
    train = split.train
    users = np.r_[np.unique(ratings.user), [999, 1000]]
    items = np.r_[np.unique(ratings.item), [777]]
    grid = pd.DataFrame([(u, i) for u in users for i in items], columns=["user", "item"])
    pairs = pd.concat([split.test[["user", "item"]], grid], ignore_index=True)
    trainset = surprise.Dataset.load_from_df(train[["user", "item", "rating"]],
                                             surprise.Reader(rating_scale=(1, 5))).build_full_trainset()
    assert (~pairs.user.isin(train.user)).sum() > 100 and (~pairs.item.isin(train.item)).sum() > 40
    return trainset, pairs


ALGORITHMS = {
    "svd": lambda: surprise.SVD(n_factors=8, n_epochs=5, random_state=0),
    "svd_large_init": lambda: surprise.SVD(n_factors=8, n_epochs=5, init_std_dev=1.0, random_state=0),  # clipping
    "pmf": lambda: surprise.SVD(n_factors=8, n_epochs=5, biased=False, random_state=0),
    "svdpp": lambda: surprise.SVDpp(n_factors=6, n_epochs=3, random_state=0),
    "nmf": lambda: surprise.NMF(n_factors=5, n_epochs=5, random_state=0),
    "nmf_biased": lambda: surprise.NMF(n_factors=5, n_epochs=5, biased=True, random_state=0),
    "baseline_only_als": lambda: surprise.BaselineOnly(verbose=False),
    "baseline_only_sgd": lambda: surprise.BaselineOnly(bsl_options={"method": "sgd"}, verbose=False),
    "slope_one": lambda: surprise.SlopeOne(),
    "co_clustering": lambda: surprise.CoClustering(n_cltr_u=3, n_cltr_i=3, n_epochs=5, random_state=0),
    # k-NN: small k so the k-th neighbour often ties (msd gives many equal similarities), min_k > 1
    # so "not enough neighbours" happens, user- and item-based, each similarity
    "knn_basic_msd": lambda: surprise.KNNBasic(k=3, min_k=2, sim_options={"name": "msd"}, verbose=False),
    "knn_basic_items": lambda: surprise.KNNBasic(k=4, sim_options={"name": "cosine", "user_based": False},
                                                 verbose=False),
    "knn_with_means": lambda: surprise.KNNWithMeans(k=5, min_k=3, sim_options={"name": "pearson"}, verbose=False),
    "knn_with_means_items": lambda: surprise.KNNWithMeans(k=2, sim_options={"name": "msd", "user_based": False},
                                                          verbose=False),
    "knn_with_zscore": lambda: surprise.KNNWithZScore(k=4, min_k=2, sim_options={"name": "msd"}, verbose=False),
    "knn_with_zscore_items": lambda: surprise.KNNWithZScore(
        k=3, sim_options={"name": "pearson", "user_based": False}, verbose=False),
    "knn_baseline": lambda: surprise.KNNBaseline(k=40, sim_options={"name": "pearson_baseline"}, verbose=False),
    "knn_baseline_items": lambda: surprise.KNNBaseline(
        k=2, min_k=2, sim_options={"name": "msd", "user_based": False}, verbose=False),
}


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_vectorised_equals_surprise_predict(data, name):
    trainset, pairs = data
    algo = ALGORITHMS[name]().fit(trainset)
    assert surprise_predict.vectorised(algo)
    expected = np.array([algo.predict(u, i).est for u, i in zip(pairs.user.tolist(), pairs.item.tolist())])
    got = surprise_predict.predict(algo, pairs.user.to_numpy(), pairs.item.to_numpy())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    few = slice(0, None, 97)  # scattered pairs (the dense grid above takes other code paths)
    np.testing.assert_allclose(surprise_predict.predict(algo, pairs.user[few], pairs.item[few]), expected[few],
                               rtol=0, atol=1e-9)
    unclipped = [algo.predict(u, i, clip=False).est for u, i in zip(pairs.user.tolist(), pairs.item.tolist())]
    np.testing.assert_allclose(surprise_predict.predict(algo, pairs.user, pairs.item, clip=False), unclipped,
                               rtol=0, atol=1e-9)


def test_the_cases_the_comparison_relies_on_occur(data):
    """The pairs above hit PredictionImpossible (unknown ids, too few neighbours) and clipping."""
    trainset, pairs = data
    knn = ALGORITHMS["knn_basic_msd"]().fit(trainset)
    details = [knn.predict(u, i).details for u, i in zip(pairs.user.tolist(), pairs.item.tolist())]
    reasons = {d.get("reason") for d in details if d["was_impossible"]}
    assert reasons == {"User and/or item is unknown.", "Not enough neighbors."}
    svd = ALGORITHMS["svd_large_init"]().fit(trainset)
    raw = surprise_predict.predict(svd, pairs.user, pairs.item, clip=False)
    assert (raw > 5).any() and (raw < 1).any()


def test_top_k_keeps_the_earlier_of_equal_similarities():
    """Against heapq.nlargest (what Surprise's k-NN uses) on rows full of ties."""
    rng = np.random.default_rng(0)
    sims = rng.integers(-2, 3, size=(200, 12)).astype(float) / 2
    for k in (1, 3, 5, 12, 20):
        mask = surprise_predict.top_k_mask(sims, k)
        for row, chosen in zip(sims, mask):
            expected = {j for j, _ in heapq.nlargest(k, enumerate(row), key=lambda t: t[1])}
            assert set(np.flatnonzero(chosen)) == expected


def test_normal_predictor_draws_the_same_sequence(data):
    trainset, pairs = data
    algo = surprise.NormalPredictor().fit(trainset)
    np.random.seed(5)
    expected = [algo.predict(u, i).est for u, i in zip(pairs.user.tolist(), pairs.item.tolist())]
    np.random.seed(5)
    got = surprise_predict.predict(algo, pairs.user, pairs.item)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    np.random.seed(5)
    raw = surprise_predict.predict(algo, pairs.user, pairs.item, clip=False)
    sigma = np.sqrt(np.mean([(r - trainset.global_mean) ** 2 for _, _, r in trainset.all_ratings()]))
    assert raw.mean() == pytest.approx(trainset.global_mean, abs=4 * sigma / np.sqrt(len(raw)))
    assert raw.std() == pytest.approx(sigma, rel=0.05)


def test_an_unregistered_class_is_predicted_by_surprise_itself(data):
    trainset, pairs = data

    class Shifted(surprise.SVD):
        def estimate(self, u, i):
            return super().estimate(u, i) + 0.25

    algo = Shifted(n_factors=4, n_epochs=2, random_state=0).fit(trainset)
    assert not surprise_predict.vectorised(algo)
    got = surprise_predict.predict(algo, pairs.user[:50], pairs.item[:50])
    assert np.allclose(got, [algo.predict(u, i).est for u, i in zip(pairs.user[:50], pairs.item[:50])])


def test_a_diverged_model_stays_non_finite(data):
    """Surprise clips NaN to the top of the scale; here it stays NaN so the runner refuses it."""
    trainset, pairs = data
    algo = surprise.SVD(n_factors=4, n_epochs=1, random_state=0).fit(trainset)
    algo.pu[:] = np.nan
    got = surprise_predict.predict(algo, pairs.user, pairs.item)
    known = pairs.user.isin(np.asarray([trainset.to_raw_uid(u) for u in range(trainset.n_users)])) \
        & pairs.item.isin(np.asarray([trainset.to_raw_iid(i) for i in range(trainset.n_items)]))
    assert np.isnan(got[known.to_numpy()]).all() and np.isfinite(got[~known.to_numpy()]).all()


@pytest.mark.parametrize("block_entries", [1 << 22, 7])
def test_rowwise_dot_in_every_layout(monkeypatch, block_entries):
    """Scattered pairs, a dense set in one product, and in blocks of rows: a[ra] . b[rb] each."""
    monkeypatch.setattr(surprise_predict, "BLOCK_ENTRIES", block_entries)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(13, 4)), rng.normal(size=(6, 4))
    for n in (5, 400):
        rows_a, rows_b = rng.integers(0, 13, n), rng.integers(0, 6, n)
        expected = [a[i] @ b[j] for i, j in zip(rows_a, rows_b)]
        np.testing.assert_allclose(surprise_predict.rowwise_dot(a, b, rows_a, rows_b), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("gather_cost", [0, 10**9])
def test_slope_one_both_ways(data, monkeypatch, gather_cost):
    """Its two layouts (gathered for few pairs, dense products for many) each equal Surprise."""
    monkeypatch.setattr(surprise_predict, "SLOPE_ONE_GATHER_COST", gather_cost)
    trainset, pairs = data
    algo = surprise.SlopeOne().fit(trainset)
    expected = [algo.predict(u, i).est for u, i in zip(pairs.user.tolist(), pairs.item.tolist())]
    np.testing.assert_allclose(surprise_predict.predict(algo, pairs.user, pairs.item), expected, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- the wrapper's trainset rows

@pytest.fixture(scope="module")
def shuffled_train():
    """A training frame in no particular order, with a repeated (user, item) row (Surprise keeps both)."""
    ratings = synthetic.load(n_users=40, n_items=30, n_ratings=300, n_groups=3, seed=5).ratings
    train = ratings.sample(frac=1.0, random_state=2).reset_index(drop=True)
    return pd.concat([train, train.iloc[[3]]], ignore_index=True)


def fitted(name: str, train: pd.DataFrame):
    from types import SimpleNamespace

    from baselines.surprise import SurpriseRecommender

    algorithm, params = {"svd": ("surprise.SVD", {"n_factors": 4, "n_epochs": 3}),
                         "knn": ("surprise.KNNBasic", {"k": 3, "min_k": 2, "verbose": False}),
                         "slope_one": ("surprise.SlopeOne", {})}[name]
    return SurpriseRecommender(name, algorithm, params).fit(train, SimpleNamespace(rating_scale=(1, 5)))


@pytest.mark.parametrize("side", ["ur", "ir"])
def test_rows_flatten_to_the_trainsets_own_lists(shuffled_train, side):
    model = fitted("knn", shuffled_train)
    from_rows = surprise_predict.rating_arrays(model.trainset, side)
    surprise_predict._rows.pop(model.trainset)
    surprise_predict._flattened.pop(model.trainset)
    from_tuples = surprise_predict.rating_arrays(model.trainset, side)  # the pass over Surprise's tuples
    for ours, theirs in zip(from_rows, from_tuples):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", ["svd", "knn", "slope_one"])
def test_a_pickled_model_rebuilds_the_same_trainset_and_predictions(shuffled_train, data, name):
    import pickle

    model = fitted(name, shuffled_train)
    _, pairs = data
    before = model.predict(pairs)
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    assert b"surprise.trainset" not in blob  # no Trainset object (and its per-rating tuples) in the pickle
    loaded = pickle.loads(blob)
    assert loaded.trainset.ur == model.trainset.ur and loaded.trainset.ir == model.trainset.ir
    assert loaded.algorithm.trainset is loaded.trainset and model.algorithm.trainset is model.trainset
    np.testing.assert_array_equal(loaded.predict(pairs), before)
    # and both equal Surprise's own per-pair predictions on the rebuilt trainset
    own = [loaded.algorithm.predict(u, i).est for u, i in zip(pairs["user"], pairs["item"])]
    np.testing.assert_allclose(before, own, rtol=0, atol=1e-9)
