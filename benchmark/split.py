"""Train/test splits, per user and seeded (docs/protocol.md, "Split").

Both splits are stratified by user: each user's ratings are shuffled with the run's seed
and dealt to test (hold-out) or to folds (k-fold), so every user with at least two
ratings keeps a training rating in every split. Validation for early stopping is carved
from a training frame with the same hold-out function, never from test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.errors import require


@dataclass(frozen=True)
class Split:
    fold: int
    train: pd.DataFrame
    test: pd.DataFrame


def _shuffled_rank(ratings: pd.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row: its random rank within its user's rows, and that user's row count."""
    order = rng.permutation(len(ratings))
    users = ratings["user"].to_numpy()[order]
    # stable sort by user keeps the random order within each user
    by_user = order[np.argsort(users, kind="stable")]
    sorted_users = ratings["user"].to_numpy()[by_user]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, len(by_user)])
    rank = np.arange(len(by_user)) - np.repeat(starts, counts)
    return by_user, rank, np.repeat(counts, counts)


def holdout_mask(ratings: pd.DataFrame, test_size: float, seed: int) -> np.ndarray:
    """Boolean mask of test rows: round(test_size * n) of each user's n ratings, at most n - 1."""
    require(0.0 < test_size < 1.0, f"split.test_size={test_size} must be in (0, 1)")
    by_user, rank, count = _shuffled_rank(ratings, np.random.default_rng(seed))
    n_test = np.minimum(np.rint(test_size * count), count - 1)
    mask = np.zeros(len(ratings), dtype=bool)
    mask[by_user] = rank < n_test
    return mask


def cold_user_mask(ratings: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows of round(fraction * n_users) users drawn at random (seeded).

    All ratings of these users go to test (docs/protocol.md, "Group-level evaluation and cold
    start"). The draw uses its own random stream, so the other users' split is the same as
    with ``split.cold_users=0``.
    """
    require(0.0 <= fraction < 1.0, f"split.cold_users={fraction} must be in [0, 1) (a fraction of users)")
    users = np.unique(ratings["user"].to_numpy())
    n_cold = int(np.rint(fraction * len(users)))
    require(n_cold < len(users), f"split.cold_users={fraction} leaves no user with training ratings; lower it")
    cold = np.random.default_rng([seed, 0xC01D]).choice(users, size=n_cold, replace=False)
    return ratings["user"].isin(cold).to_numpy()


def holdout(ratings: pd.DataFrame, test_size: float = 0.2, seed: int = 0, cold_users: float = 0.0) -> list[Split]:
    mask = holdout_mask(ratings, test_size, seed) | cold_user_mask(ratings, cold_users, seed)
    return [Split(0, ratings[~mask].reset_index(drop=True), ratings[mask].reset_index(drop=True))]


def kfold(ratings: pd.DataFrame, n_folds: int = 5, seed: int = 0, cold_users: float = 0.0) -> list[Split]:
    """Deal each user's shuffled ratings round-robin over the folds, from a random start fold.

    Cold users' ratings are dealt to test folds as usual but never appear in a training fold.
    """
    cold = cold_user_mask(ratings, cold_users, seed)
    require(n_folds >= 2, f"split.n_folds={n_folds} must be >= 2")
    rng = np.random.default_rng(seed)
    by_user, rank, _ = _shuffled_rank(ratings, rng)
    users, user_of_row = np.unique(ratings["user"].to_numpy()[by_user], return_inverse=True)
    offset = rng.integers(0, n_folds, size=len(users))
    fold = np.empty(len(ratings), dtype=np.int64)
    fold[by_user] = (rank + offset[user_of_row]) % n_folds
    return [Split(f, ratings[(fold != f) & ~cold].reset_index(drop=True),
                  ratings[fold == f].reset_index(drop=True))
            for f in range(n_folds)]
