"""Splits and groups: per-user, seeded, and leakage-free (tested, not assumed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler

from benchmark.protocol import grouping, split
from benchmark.data import synthetic
from benchmark.core.errors import ConfigError


@pytest.fixture(scope="module")
def data():
    return synthetic.load(n_users=120, n_items=80, n_ratings=2400, n_groups=4, seed=1)


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame.user, frame.item))


def test_holdout_is_per_user_disjoint_and_complete(data):
    (s,) = split.holdout(data.ratings, test_size=0.2, seed=0)
    assert _pairs(s.train).isdisjoint(_pairs(s.test))
    assert _pairs(s.train) | _pairs(s.test) == _pairs(data.ratings)
    n = data.ratings.groupby("user").size()
    n_test = s.test.groupby("user").size().reindex(n.index, fill_value=0)
    expected = np.minimum(np.rint(0.2 * n), n - 1)
    assert (n_test == expected).all()
    assert set(s.train.user) == set(data.ratings.user)  # every user keeps a training rating


def test_holdout_single_rating_user_stays_in_training():
    ratings = pd.DataFrame({"user": [1, 2, 2, 2, 2, 2], "item": [1, 1, 2, 3, 4, 5], "rating": [3.0] * 6})
    (s,) = split.holdout(ratings, test_size=0.5, seed=0)
    assert 1 not in set(s.test.user) and 1 in set(s.train.user)
    assert (s.test.user == 2).sum() == 2  # round(0.5 * 5) = 2 (banker's rounding of 2.5)


@pytest.mark.parametrize("n_codes", [1, 300, 70_000, 5_000_000])  # one radix pass, two passes
def test_stable_argsort_is_numpys_stable_argsort(n_codes):
    codes = np.random.default_rng(n_codes).integers(0, n_codes, size=200_000)
    np.testing.assert_array_equal(split.stable_argsort(codes, n_codes), np.argsort(codes, kind="stable"))


def test_holdout_matches_an_independent_pandas_reference():
    """Each user's test rows are the first round(0.2 n) of its rows in the seed's permutation order,
    computed here with a pandas sort and group-by (no radix sort, no factorize); user ids are sparse,
    above 2**16 (two radix passes) and shuffled."""
    rng = np.random.default_rng(3)
    ratings = (pd.DataFrame({"user": rng.integers(0, 90_000, 60_000) * 7 + 3, "item": rng.integers(0, 500, 60_000),
                             "rating": 1.0}).drop_duplicates(["user", "item"], ignore_index=True))
    position = np.empty(len(ratings), dtype=np.int64)
    position[np.random.default_rng(11).permutation(len(ratings))] = np.arange(len(ratings))
    ranked = ratings.assign(position=position).sort_values(["user", "position"])
    n = ranked.groupby("user")["item"].transform("size")
    expected = (ranked.groupby("user").cumcount() < np.minimum(np.rint(0.2 * n), n - 1)).sort_index().to_numpy()
    np.testing.assert_array_equal(split.holdout_mask(ratings, 0.2, seed=11), expected)


def test_kfold_matches_an_independent_pandas_reference():
    """A row's fold = (its rank among its user's rows in the seed's permutation + the user's start fold)
    mod n_folds; start folds are the seed's next draw, one per user in sorted id order."""
    rng = np.random.default_rng(4)
    ratings = (pd.DataFrame({"user": rng.integers(0, 90_000, 30_000) * 5 + 1, "item": rng.integers(0, 300, 30_000),
                             "rating": 1.0}).drop_duplicates(["user", "item"], ignore_index=True))
    draws = np.random.default_rng(2)
    position = np.empty(len(ratings), dtype=np.int64)
    position[draws.permutation(len(ratings))] = np.arange(len(ratings))
    users = np.sort(ratings["user"].unique())
    start = pd.Series(draws.integers(0, 5, size=len(users)), index=users)
    ranked = ratings.assign(position=position).sort_values(["user", "position"])
    fold = ((ranked.groupby("user").cumcount() + start.reindex(ranked["user"]).to_numpy()) % 5).sort_index()
    for f, part in enumerate(split.kfold(ratings, n_folds=5, seed=2)):
        pd.testing.assert_frame_equal(part.test, ratings[(fold == f).to_numpy()].reset_index(drop=True))


def test_splits_are_seeded(data):
    a = split.holdout(data.ratings, 0.2, seed=5)[0].test
    b = split.holdout(data.ratings, 0.2, seed=5)[0].test
    c = split.holdout(data.ratings, 0.2, seed=6)[0].test
    assert a.equals(b) and not a.equals(c)


def test_kfold_partitions_and_keeps_users_in_training(data):
    folds = split.kfold(data.ratings, n_folds=5, seed=0)
    tests = [_pairs(f.test) for f in folds]
    assert sum(len(t) for t in tests) == len(data.ratings)
    assert set().union(*tests) == _pairs(data.ratings)
    users_with_two = set(data.ratings.user.value_counts().loc[lambda s: s >= 2].index)
    for f in folds:
        assert _pairs(f.train).isdisjoint(_pairs(f.test))
        assert users_with_two <= set(f.train.user)
        # per-user stratified: a user's test share in a fold never exceeds ceil(n / 5)
        n = data.ratings.groupby("user").size()
        assert (f.test.groupby("user").size() <= np.ceil(n / 5).reindex(f.test.user.unique())).all()


def test_invalid_split_values_refused(data):
    with pytest.raises(ConfigError, match="split.test_size=1.5"):
        split.holdout(data.ratings, 1.5, 0)
    with pytest.raises(ConfigError, match="split.n_folds=1"):
        split.kfold(data.ratings, 1, 0)


def test_profiles_use_training_ratings_only(data):
    (s,) = split.holdout(data.ratings, 0.2, seed=0)
    profiles = grouping.user_profiles(data, s.train)
    # hand-computed mean genre vector of one user over training rows only
    user = int(s.train.user.iloc[0])
    items = s.train.loc[s.train.user == user, "item"]
    expected = data.item_features.loc[items].mean().to_numpy()
    np.testing.assert_allclose(profiles.loc[user].filter(like="mean_").to_numpy(), expected)


@pytest.mark.parametrize("clustering", ["kmeans", "bisecting_kmeans"])
def test_kmeans_and_scaler_never_see_test_ratings(data, monkeypatch, clustering):
    """Scramble every test rating and item: the scaler, KMeans input and labels must not change."""
    (s,) = split.holdout(data.ratings, 0.2, seed=0)
    seen = []
    real_fit = StandardScaler.fit

    def spy_fit(self, X, *args, **kwargs):
        seen.append(np.array(X, copy=True))
        return real_fit(self, X, *args, **kwargs)

    monkeypatch.setattr(StandardScaler, "fit", spy_fit)
    groups = grouping.kmeans(data, s.train, k=4, seed=0, clustering=clustering)

    scrambled = data.ratings.copy()
    rng = np.random.default_rng(0)
    test_rows = scrambled.merge(s.test[["user", "item"]], on=["user", "item"], how="left", indicator=True)
    mask = (test_rows["_merge"] == "both").to_numpy()
    scrambled.loc[mask, "rating"] = rng.integers(1, 6, mask.sum())
    scrambled.loc[mask, "item"] = rng.integers(1, data.n_items + 1, mask.sum())
    data_scrambled = type(data)(**{**data.__dict__, "ratings": scrambled})
    again = grouping.kmeans(data_scrambled, s.train, k=4, seed=0, clustering=clustering)

    assert groups.labels.equals(again.labels)
    np.testing.assert_array_equal(seen[0], seen[1])
    # the scaler was fit exactly on the training-only profiles of users with training ratings
    expected = grouping.user_profiles(data, s.train).loc[np.unique(s.train.user)].to_numpy()
    np.testing.assert_allclose(seen[0], expected)


@pytest.mark.parametrize("clustering", ["kmeans", "bisecting_kmeans"])
def test_kmeans_labels_every_user_and_refuses_large_k(data, clustering):
    (s,) = split.holdout(data.ratings, 0.2, seed=0)
    groups = grouping.kmeans(data, s.train, k=4, seed=0, clustering=clustering)
    assert groups.labels.index.equals(data.user_features.index)
    assert set(groups.labels.unique()) <= set(range(4))
    assert groups.stats["inertia"] > 0
    # planted groups are recovered (adjusted Rand index against the generator's truth)
    from sklearn.metrics import adjusted_rand_score

    truth = data.groups.set_index("user").group.reindex(groups.labels.index)
    assert adjusted_rand_score(truth, groups.labels) > 0.9
    with pytest.raises(ConfigError, match="grouping.k=500"):
        grouping.kmeans(data, s.train, k=500, seed=0, clustering=clustering)


def test_kmeans_matches_sklearn_on_standardized_profiles(data):
    (s,) = split.holdout(data.ratings, 0.2, seed=0)
    groups = grouping.kmeans(data, s.train, k=4, seed=7, n_init=3)
    X = grouping.user_profiles(data, s.train).loc[np.unique(s.train.user)].to_numpy()
    reference = KMeans(n_clusters=4, n_init=3, random_state=7).fit(StandardScaler().fit_transform(X))
    assert groups.stats["inertia"] == pytest.approx(reference.inertia_)


def test_bisecting_kmeans_matches_sklearn_and_refuses_unknown_clusterings(data):
    from sklearn.cluster import BisectingKMeans

    (s,) = split.holdout(data.ratings, 0.2, seed=0)
    groups = grouping.kmeans(data, s.train, k=6, seed=3, n_init=2, clustering="bisecting_kmeans")
    X = grouping.user_profiles(data, s.train)
    scaler = StandardScaler().fit(X.loc[np.unique(s.train.user)].to_numpy())
    reference = BisectingKMeans(n_clusters=6, n_init=2, random_state=3, bisecting_strategy="largest_cluster").fit(
        scaler.transform(X.loc[np.unique(s.train.user)].to_numpy()))
    assert groups.stats["inertia"] == pytest.approx(reference.inertia_)
    np.testing.assert_array_equal(groups.labels.to_numpy(), reference.predict(scaler.transform(X.to_numpy())))
    with pytest.raises(ConfigError, match=r"grouping.clustering='lloyd' is unknown; use one of kmeans, bisecting_kmeans"):
        grouping.kmeans(data, s.train, k=4, clustering="lloyd")
