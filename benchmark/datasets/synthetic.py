"""A generator with planted group structure, for fast tests and scaling measurements.

Each user belongs to one of ``n_groups`` planted groups. A group has a taste vector over
item genres; a user's side features are a noisy copy of the group's centroid, and a rating
is ``3 + 1.5 * taste . genres + user bias + noise``, rounded into 1..5. So both the group
label and the ratings are learnable from the features, which tests can check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.datasets.base import Dataset
from benchmark.errors import require


def load(n_users: int = 300, n_items: int = 200, n_ratings: int = 6000, n_groups: int = 5,
         n_genres: int = 8, n_user_features: int = 6, noise: float = 0.5, seed: int = 0,
         **_ignored) -> Dataset:
    require(n_users >= n_groups >= 1, f"dataset.n_groups={n_groups} must be in 1..n_users={n_users}")
    require(n_items >= 1 and n_genres >= 1, "dataset.n_items and dataset.n_genres must be >= 1")
    require(n_users <= n_ratings <= n_users * n_items,
            f"dataset.n_ratings={n_ratings} must be in n_users..n_users*n_items ({n_users}..{n_users * n_items})")
    rng = np.random.default_rng(seed)
    group = np.arange(n_users) % n_groups
    rng.shuffle(group)
    centroids = rng.normal(0.0, 2.0, size=(n_groups, n_user_features))
    user_x = centroids[group] + rng.normal(0.0, 0.3, size=(n_users, n_user_features))
    taste = rng.normal(0.0, 1.0, size=(n_groups, n_genres))
    genres = (rng.random((n_items, n_genres)) < 2.0 / n_genres).astype(float)
    genres[genres.sum(1) == 0, rng.integers(0, n_genres)] = 1.0
    bias = rng.normal(0.0, 0.3, size=n_users)

    # every user gets at least one rating; the rest are spread uniformly without repeats
    first = rng.integers(0, n_items, size=n_users)
    flat = np.setdiff1d(rng.choice(n_users * n_items, size=min(n_users * n_items, n_ratings * 2), replace=False),
                        np.arange(n_users) * n_items + first)
    flat = np.concatenate([np.arange(n_users) * n_items + first, flat])[:n_ratings]
    users, items = np.divmod(flat, n_items)
    affinity = (taste[group[users]] * genres[items]).sum(1) / np.sqrt(genres[items].sum(1))
    rating = np.clip(np.rint(3.0 + 1.5 * affinity + bias[users] + rng.normal(0.0, noise, size=len(users))), 1, 5)

    user_ids = pd.Index(np.arange(1, n_users + 1), name="user")
    item_ids = pd.Index(np.arange(1, n_items + 1), name="item")
    ratings = pd.DataFrame({"user": users + 1, "item": items + 1, "rating": rating}).sort_values(
        ["user", "item"], ignore_index=True)
    user_features = pd.DataFrame(user_x, index=user_ids, columns=[f"x{j}" for j in range(n_user_features)])
    item_features = pd.DataFrame(genres, index=item_ids, columns=[f"genre_{j}" for j in range(n_genres)])
    planted = pd.DataFrame({"group": group + 1, "user": user_ids.to_numpy()})
    params = f"{n_users}:{n_items}:{n_ratings}:{n_groups}:{n_genres}:{n_user_features}:{noise}:{seed}"
    return Dataset(name="synthetic", ratings=ratings, user_features=user_features, item_features=item_features,
                   rating_scale=(1.0, 5.0), files_sha256={"synthetic": params}, groups=planted,
                   notes={"generator": f"planted groups: {params}"})
