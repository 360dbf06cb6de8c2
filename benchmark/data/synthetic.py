"""A generator with planted group structure, for fast tests and scaling measurements.

Each user belongs to one of ``n_groups`` planted groups. A group has a taste vector over
item genres; a user's side features are a noisy copy of the group's centroid, and a rating
is ``3 + 1.5 * taste . genres + user bias + noise``, rounded into 1..5. So both the group
label and the ratings are learnable from the features, which tests can check.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark.data.base import Dataset
from benchmark.core.errors import require


# ratings whose group-genre affinity is computed at once (load): 65,536 rows of temporaries are reused
# from the heap; a chunk of 2^20 maps ~130 MB of fresh pages per chunk (1M ratings: 0.36 s instead of 0.08)
AFFINITY_CHUNK = 1 << 16


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` by one sort and a comparison of neighbours. numpy 2.4's ``np.unique``
    (and ``np.union1d``, which calls it) takes seconds on millions of wide-range int64 values: 3.4 s
    for 3.6M flat pair indices here, against 0.02 s for this."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _draw_pairs(rng: np.random.Generator, n_users: int, n_items: int, n_ratings: int) -> np.ndarray:
    """``n_ratings`` distinct (user, item) pairs, sorted, every user with at least one, as the rows
    of one ``(2, n_ratings)`` int64 array (user indices, item indices).

    Each user gets one item first; the rest are drawn uniformly over the other pairs as flat
    indices ``user * n_items + item`` (with replacement, deduplicated, topped up until enough),
    then thinned uniformly to the count. Sorting int64 flat indices is the only O(n log n) step
    (``sorted_unique``, not ``np.union1d``: see there).
    """
    first = np.arange(n_users, dtype=np.int64) * n_items + rng.integers(0, n_items, size=n_users)
    n_extra = n_ratings - n_users
    population = n_users * n_items
    if population <= 4 * n_ratings:  # dense: draw from the explicit rest, no rejection loop
        rest = np.setdiff1d(np.arange(population, dtype=np.int64), first, assume_unique=True)
        return _split_flat(np.sort(np.concatenate([first, rng.choice(rest, size=n_extra, replace=False)])), n_items)
    extra = np.empty(0, dtype=np.int64)
    while len(extra) < n_extra:
        need = n_extra - len(extra)
        # oversample by the expected loss to repeats and to the users' first pairs
        drawn = rng.integers(0, population, size=int(need * 1.2) + 16, dtype=np.int64)
        extra = sorted_unique(np.concatenate([extra, drawn]))
        at = np.minimum(np.searchsorted(first, extra), n_users - 1)  # first is sorted
        extra = extra[first[at] != extra]
    # thin uniformly to the count; dropping keeps the order, so no second sort
    extra = np.delete(extra, rng.choice(len(extra), size=len(extra) - n_extra, replace=False))
    flat = np.sort(np.concatenate([first, extra]), kind="stable")
    return _split_flat(flat, n_items)


def _split_flat(flat: np.ndarray, n_items: int) -> np.ndarray:
    """Flat indices -> one (2, n) block of (user, item) indices. One block, so the ratings frame can
    take it without a copy: a frame built from two separate int64 columns stacks them into a new
    block (1.1 s at 10M ratings here, against 0.04 s for this)."""
    ids = np.empty((2, len(flat)), dtype=np.int64)
    np.divmod(flat, n_items, out=(ids[0], ids[1]))
    return ids


def load(n_users: int = 300, n_items: int = 200, n_ratings: int = 6000, n_groups: int = 5,
         n_genres: int = 8, n_user_features: int = 6, noise: float = 0.5, seed: int = 0,
         **_ignored) -> Dataset:
    require(n_users >= n_groups >= 1, f"dataset.loader.n_groups={n_groups} must be in 1..n_users={n_users}")
    require(n_items >= 1 and n_genres >= 1, "dataset.loader.n_items and dataset.loader.n_genres must be >= 1")
    require(n_users <= n_ratings <= n_users * n_items,
            f"dataset.loader.n_ratings={n_ratings} must be in n_users..n_users*n_items ({n_users}..{n_users * n_items})")
    require(isinstance(noise, (int, float)) and not isinstance(noise, bool) and math.isfinite(noise) and noise >= 0,
            f"dataset.loader.noise={noise} must be a finite number >= 0; use e.g. dataset.loader.noise=0.5")
    rng = np.random.default_rng(seed)
    group = np.arange(n_users) % n_groups
    rng.shuffle(group)
    centroids = rng.normal(0.0, 2.0, size=(n_groups, n_user_features))
    user_x = centroids[group] + rng.normal(0.0, 0.3, size=(n_users, n_user_features))
    taste = rng.normal(0.0, 1.0, size=(n_groups, n_genres))
    genres = (rng.random((n_items, n_genres)) < 2.0 / n_genres).astype(float)
    genres[genres.sum(1) == 0, rng.integers(0, n_genres)] = 1.0
    bias = rng.normal(0.0, 0.3, size=n_users)

    ids = _draw_pairs(rng, n_users, n_items, n_ratings)
    users, items = ids
    # each rating's taste . genres / sqrt(#genres), a chunk of ratings at a time: linear in the ratings
    # (a group x item affinity matrix grows as users x sqrt(ratings): 337 MB and 1 s at 10M ratings)
    scaled = genres / np.sqrt(genres.sum(1))[:, None]
    affinity = np.empty(len(users))
    for start in range(0, len(users), AFFINITY_CHUNK):
        part = slice(start, start + AFFINITY_CHUNK)
        affinity[part] = np.einsum("ij,ij->i", taste[group[users[part]]], scaled[items[part]])
    rating = np.rint(3.0 + 1.5 * affinity + bias[users]
                     + rng.normal(0.0, noise, size=len(users)).astype(np.float32))
    np.clip(rating, 1, 5, out=rating)

    user_ids = pd.Index(np.arange(1, n_users + 1), name="user")
    item_ids = pd.Index(np.arange(1, n_items + 1), name="item")
    # pairs come sorted by (user, item) from _draw_pairs
    ids += 1  # 1-based ids, in place: the frame's user and item columns are this block (no copy)
    ratings = pd.DataFrame(ids.T, columns=["user", "item"], copy=False)
    ratings["rating"] = rating.astype(np.float64)
    user_features = pd.DataFrame(user_x, index=user_ids, columns=[f"x{j}" for j in range(n_user_features)])
    item_features = pd.DataFrame(genres, index=item_ids, columns=[f"genre_{j}" for j in range(n_genres)])
    planted = pd.DataFrame({"group": group + 1, "user": user_ids.to_numpy()})
    params = f"{n_users}:{n_items}:{n_ratings}:{n_groups}:{n_genres}:{n_user_features}:{noise}:{seed}"
    return Dataset(name="synthetic", ratings=ratings, user_features=user_features, item_features=item_features,
                   rating_scale=(1.0, 5.0), files_sha256={"synthetic": params}, groups=planted,
                   notes={"generator": f"planted groups: {params}"})
