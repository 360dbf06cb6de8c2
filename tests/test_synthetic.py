"""The synthetic generator at size: exact counts, distinct pairs, uniform spread, planted signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.data import synthetic
from benchmark.core.errors import ConfigError


def test_large_draw_is_exact_distinct_sorted_and_uniform():
    data = synthetic.load(n_users=2_000, n_items=500, n_ratings=200_000, n_groups=10, seed=1)
    r = data.ratings
    assert len(r) == 200_000 and not r.duplicated(["user", "item"]).any()
    assert r.user.nunique() == 2_000 and r.item.between(1, 500).all()
    assert r.user.is_monotonic_increasing  # sorted by (user, item)
    # pairs are uniform over users: each user's count is ~Binomial around 100 (no bias to low ids)
    per_user = r.groupby("user").size()
    first_half, second_half = per_user.iloc[:1000].mean(), per_user.iloc[1000:].mean()
    assert abs(first_half - second_half) < 3 and per_user.std() < 20
    # the planted signal: ratings differ by group far more than noise alone would make them
    group = data.groups.set_index("user").group
    by_group_item = r.assign(group=group.reindex(r.user).to_numpy()).groupby(["group", "item"]).rating.mean()
    assert by_group_item.groupby(level="item").std().mean() > 0.5


def test_dense_request_fills_the_matrix():
    data = synthetic.load(n_users=20, n_items=10, n_ratings=200, n_groups=2)
    assert len(data.ratings) == 200 and not data.ratings.duplicated(["user", "item"]).any()


def test_impossible_size_is_refused():
    with pytest.raises(ConfigError, match=r"n_ratings=300 must be in n_users..n_users\*n_items"):
        synthetic.load(n_users=10, n_items=20, n_ratings=300, n_groups=2)


def test_sorted_unique_is_numpys_unique():
    rng = np.random.default_rng(4)
    for values in (rng.integers(0, 2 ** 40, 5_000), rng.integers(0, 50, 5_000), np.array([7]),
                   np.empty(0, dtype=np.int64)):
        np.testing.assert_array_equal(synthetic.sorted_unique(values), np.unique(values))


def test_the_fast_dedupe_draws_the_same_data_as_numpys_unique(monkeypatch):
    fast = synthetic.load(n_users=300, n_items=400, n_ratings=20_000, n_groups=5, seed=2)
    monkeypatch.setattr(synthetic, "sorted_unique", np.unique)
    reference = synthetic.load(n_users=300, n_items=400, n_ratings=20_000, n_groups=5, seed=2)
    pd.testing.assert_frame_equal(fast.ratings, reference.ratings)


def test_affinity_chunks_change_no_rating(monkeypatch):
    whole = synthetic.load(n_users=300, n_items=400, n_ratings=20_000, n_groups=5, seed=3)
    monkeypatch.setattr(synthetic, "AFFINITY_CHUNK", 7)
    chunked = synthetic.load(n_users=300, n_items=400, n_ratings=20_000, n_groups=5, seed=3)
    pd.testing.assert_frame_equal(whole.ratings, chunked.ratings)
