"""Train/test splits, per user and seeded (docs/protocol.md, "Split").

Both splits are stratified by user: each user's ratings are shuffled with the run's seed
and dealt to test (hold-out) or to folds (k-fold), so every user with at least two
ratings keeps a training rating in every split. Validation for early stopping is carved
from a training frame with the same hold-out function, never from test.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.errors import require


@dataclass(frozen=True)
class Split:
    fold: int
    train: pd.DataFrame
    test: pd.DataFrame
    group: Any = None  # a group-item dataset's group stream (benchmark/protocol/group_split.GroupFold), else None


def stable_argsort(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """``np.argsort(codes, kind="stable")`` for integer codes in ``[0, n_codes)``, in linear time.

    An LSD radix sort by 16-bit digits: numpy's stable sort of a 16-bit array is a counting sort,
    one pass per digit (one up to 65,536 codes, two up to 2**32). The comparison sort it replaces
    was n log n and most of the split's time at 10M ratings (docs/performance.md).
    """
    order = np.arange(len(codes))
    shift = 0
    while True:
        digit = ((codes[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
        if max(n_codes - 1, 0) >> shift == 0:
            return order


def _shuffled_runs(ratings: pd.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row numbers user by user, each user's rows in a random order; each user's row count; user ids.

    Users come in their order of first appearance (``pd.factorize``: hashing, no sort); only the
    order WITHIN a user is random, and it is the random permutation's, so the split is the one the
    seed has always given.
    """
    order = rng.permutation(len(ratings))
    codes, users = pd.factorize(ratings["user"].to_numpy())
    by_user = order[stable_argsort(codes[order], len(users))]
    return by_user, np.bincount(codes, minlength=len(users)), users


def make_splits(split_fn, dataset, seed: int) -> list[Split]:
    """Call a split function of ``conf/split``: on the dataset's user ratings, and with the dataset itself
    when the function takes it (the group splits of benchmark/protocol/group_split.py)."""
    takes_dataset = "dataset" in inspect.signature(split_fn).parameters
    return split_fn(dataset.ratings, seed=seed, **({"dataset": dataset} if takes_dataset else {}))


def are_splits(value) -> bool:
    """Whether ``value`` is what a split function returns (a non-empty list of :class:`Split`)."""
    return isinstance(value, list) and bool(value) and all(isinstance(split, Split) for split in value)


def holdout_mask(ratings: pd.DataFrame, test_size: float, seed: int) -> np.ndarray:
    """Boolean mask of test rows: round(test_size * n) of each user's n ratings, at most n - 1."""
    require(0.0 < test_size < 1.0, f"split.test_size={test_size} must be in (0, 1)")
    by_user, counts, _ = _shuffled_runs(ratings, np.random.default_rng(seed))
    n_test = np.minimum(np.rint(test_size * counts), counts - 1).astype(np.int64)
    # each user's run: n_test True (its first shuffled rows) then False; built from per-user counts
    # with one boolean repeat (no per-row integer temporaries: 10M rows are 80 MB apiece)
    in_test = np.repeat(np.tile([True, False], len(counts)), np.column_stack([n_test, counts - n_test]).ravel())
    mask = np.zeros(len(ratings), dtype=bool)
    mask[by_user] = in_test
    return mask


def cold_user_mask(ratings: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows of round(fraction * n_users) users drawn at random (seeded).

    All ratings of these users go to test (docs/protocol.md, "Group-level evaluation and cold
    start"). The draw uses its own random stream, so the other users' split is the same as
    with ``split.cold_users=0``.
    """
    require(0.0 <= fraction < 1.0, f"split.cold_users={fraction} must be in [0, 1) (a fraction of users)")
    if fraction == 0.0:  # the default: no sort of every row's user id (0.1 s at 10M ratings) to draw no one
        return np.zeros(len(ratings), dtype=bool)
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
    by_user, counts, users = _shuffled_runs(ratings, rng)
    rank = np.arange(len(by_user)) - np.repeat(np.cumsum(counts) - counts, counts)
    # one random start fold per user, drawn in sorted user-id order
    offset = rng.integers(0, n_folds, size=len(users))[np.argsort(np.argsort(users))]
    fold = np.empty(len(ratings), dtype=np.int64)
    fold[by_user] = (rank + np.repeat(offset, counts)) % n_folds
    return [Split(f, ratings[(fold != f) & ~cold].reset_index(drop=True),
                  ratings[fold == f].reset_index(drop=True))
            for f in range(n_folds)]
