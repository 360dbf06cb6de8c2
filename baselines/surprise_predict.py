"""Vectorised predictions for fitted Surprise algorithms, from the state each one exposes.
(Over 400 lines on purpose: one short function per Surprise algorithm, registered side by side so
that each can be read against Surprise's own ``estimate``.)

Surprise estimates one (user, item) pair per Python call. Evaluation needs tens of thousands
of pairs per job (the test pairs, every group member's pairs) and, for full-catalogue
ranking, every user x item pair, so each function below recomputes one algorithm's
``estimate`` (Surprise 1.1.x source) for all pairs at once from the fitted model's arrays:
biases and factors (SVD, SVD++, PMF, NMF, BaselineOnly), the similarity matrix, k, min_k
and means / sigmas / baselines (the k-NN family), the deviation and frequency matrices
(SlopeOne), the co-clusters (CoClustering), the global draw (NormalPredictor).

Around ``estimate`` it does what ``AlgoBase.predict`` does: raw ids -> inner ids (unknown
users / items), ``PredictionImpossible`` -> ``default_prediction()`` (the global mean),
clipping to the rating scale. Tests check every algorithm against Surprise's own
``predict(u, i).est`` (tests/test_surprise_predict.py). One deliberate difference: a NaN
estimate (a diverged model) stays NaN here, where Surprise's ``min``/``max`` clipping
turns it into the top of the scale, so the harness refuses it instead of scoring it.

An algorithm class not registered here (a subclass may override ``estimate``), and the
rare k-NN pairs whose neighbours have NaN similarities, are left to Surprise pair by pair.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from itertools import chain
from typing import Callable

import numpy as np
import pandas as pd
import surprise
from scipy import sparse

from benchmark.core.registry import Registry

# Pairs per block of gathered factor rows / similarity entries: bounds memory for a full catalogue.
BLOCK = 1 << 16
BLOCK_ENTRIES = 1 << 22
SLOPE_ONE_GATHER_COST = 200
# flattened rating lists per trainset (Surprise never changes a trainset once built), and the rows
# a trainset was built from where the wrapper kept them (flattened from those by a sort, on demand)
_flattened: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_rows: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class Pairs:
    """Inner ids of the pairs to predict; -1 marks a user / item the training set does not know."""

    u: np.ndarray
    i: np.ndarray

    @property
    def known_u(self) -> np.ndarray:
        return self.u >= 0

    @property
    def known_i(self) -> np.ndarray:
        return self.i >= 0

    @property
    def known(self) -> np.ndarray:
        return self.known_u & self.known_i

    def __len__(self) -> int:
        return len(self.u)


@dataclass
class Estimate:
    """``values`` as ``estimate`` returns them; ``impossible``: it raised PredictionImpossible;
    ``unresolved``: pairs left to Surprise's own predict."""

    values: np.ndarray
    impossible: np.ndarray
    unresolved: np.ndarray | None = None


Estimator = Callable[[surprise.AlgoBase, Pairs], Estimate]
ESTIMATORS: Registry[Estimator] = Registry("vectorised Surprise estimator")


def estimator(*names: str) -> Callable[[Estimator], Estimator]:
    def add(function: Estimator) -> Estimator:
        for name in names:
            ESTIMATORS.register(name)(function)
        return function
    return add


# ---------------------------------------------------------------------------- entry points

def predict_pairwise(algo: surprise.AlgoBase, users, items, clip: bool = True) -> np.ndarray:
    """Surprise's own ``predict``, pair by pair (the reference, and the fallback)."""
    users, items = list(users), list(items)
    return np.fromiter((algo.predict(u, i, clip=clip).est for u, i in zip(users, items)), dtype=float,
                       count=len(users))


def vectorised(algo: surprise.AlgoBase) -> bool:
    """Whether ``algo``'s class has a vectorised estimator (its exact class: a subclass may differ)."""
    name = type(algo).__name__
    return name in ESTIMATORS and getattr(surprise, name, None) is type(algo)


def predict(algo: surprise.AlgoBase, users, items, clip: bool = True) -> np.ndarray:
    """``[algo.predict(u, i, clip=clip).est for u, i in zip(users, items)]``, vectorised."""
    users, items = np.asarray(users), np.asarray(items)
    if not vectorised(algo):
        return predict_pairwise(algo, users.tolist(), items.tolist(), clip)
    result = ESTIMATORS[type(algo).__name__](algo, inner_ids(algo.trainset, users, items))
    values = np.where(result.impossible, algo.default_prediction(), result.values)
    if result.unresolved is not None and result.unresolved.any():
        rows = np.flatnonzero(result.unresolved)
        values[rows] = predict_pairwise(algo, users[rows].tolist(), items[rows].tolist(), clip=False)
    if clip:
        low, high = algo.trainset.rating_scale
        values = np.clip(values, low, high)
    return values


def inner_ids(trainset: surprise.Trainset, users: np.ndarray, items: np.ndarray) -> Pairs:
    """Raw ids -> Surprise's inner ids (inner id = position of first appearance), -1 if unknown."""
    raw_users = pd.Index([trainset.to_raw_uid(u) for u in range(trainset.n_users)])
    raw_items = pd.Index([trainset.to_raw_iid(i) for i in range(trainset.n_items)])
    return Pairs(raw_users.get_indexer(users), raw_items.get_indexer(items))


# ---------------------------------------------------------------------------- shared pieces

def rating_arrays(trainset: surprise.Trainset, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten ``trainset.ur`` (``side="ur"``) or ``ir``: offsets per user (item), the other ids and
    the ratings, in list order. Once per trainset: the evaluation predicts several times per model."""
    flattened = _flattened.setdefault(trainset, {})
    n = trainset.n_users if side == "ur" else trainset.n_items
    if side not in flattened and trainset in _rows:
        flattened[side] = _rows[trainset].flat(side, n)
    if side not in flattened:
        by_key = getattr(trainset, side)
        lengths = np.fromiter(map(len, (by_key[key] for key in range(n))), dtype=np.intp, count=n)
        flat = np.array(list(chain.from_iterable(by_key[key] for key in range(n))), dtype=float).reshape(-1, 2)
        flattened[side] = (np.r_[0, np.cumsum(lengths)], flat[:, 0].astype(np.intp), flat[:, 1].copy())
    return flattened[side]


@dataclass
class TrainsetRows:
    """A trainset's ratings as arrays, in the order of the frame it was built from: inner user id,
    inner item id, rating. Surprise appends each row to ``ur[u]`` and ``ir[i]`` in that order, so a
    stable sort by either id gives both sides' lists exactly (``lists``)."""

    u: np.ndarray
    i: np.ndarray
    rating: np.ndarray

    @classmethod
    def of(cls, trainset: surprise.Trainset, users, items, ratings) -> "TrainsetRows":
        """The rows of ``trainset`` built by ``Dataset.load_from_df`` from these columns (in order)."""
        as_index = lambda raw2inner: pd.Index(list(raw2inner))  # dict order = inner id order
        return cls(as_index(trainset._raw2inner_id_users).get_indexer(users).astype(np.int32),
                   as_index(trainset._raw2inner_id_items).get_indexer(items).astype(np.int32),
                   np.asarray(ratings, dtype=float))

    def flat(self, side: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rating_arrays(trainset, side)``, by one stable sort."""
        key, other = (self.u, self.i) if side == "ur" else (self.i, self.u)
        order = np.argsort(key, kind="stable")
        return np.r_[0, np.cumsum(np.bincount(key, minlength=n))], other[order].astype(np.intp), self.rating[order]

    def remember(self, trainset: surprise.Trainset) -> None:
        """Let ``rating_arrays`` flatten ``trainset`` from these rows (no pass over its Python tuples)."""
        _rows[trainset] = self

    def lists(self, side: str, n: int) -> dict[int, list[tuple[int, float]]]:
        """``trainset.ur`` or ``ir`` rebuilt: key -> [(other id, rating), ...] in the original order."""
        offsets, other, ratings = self.flat(side, n)
        pairs = list(zip(other.tolist(), ratings.tolist()))
        return {key: pairs[offsets[key]:offsets[key + 1]] for key in range(n)}


def rated_matrix(trainset: surprise.Trainset) -> sparse.csr_matrix:
    """users x items, the number of times each user rated each item (1, or more for repeats)."""
    offsets, items, _ = rating_arrays(trainset, "ur")
    users = np.repeat(np.arange(trainset.n_users), np.diff(offsets))
    return sparse.csr_matrix((np.ones(len(items)), (users, items)), shape=(trainset.n_users, trainset.n_items))


def rowwise_dot(a: np.ndarray, b: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """``[a[ra] @ b[rb] for ra, rb in zip(rows_a, rows_b)]`` in bounded memory: gathered rows for
    scattered pairs; for dense ones (a full catalogue) blocks of ``a @ b.T`` (BLAS), then a gather."""
    out = np.empty(len(rows_a))
    if len(rows_a) * 8 < len(a) * len(b):
        for start in range(0, len(rows_a), BLOCK):
            stop = start + BLOCK
            out[start:stop] = np.einsum("ij,ij->i", a[rows_a[start:stop]], b[rows_b[start:stop]])
        return out
    per_block = max(1, BLOCK_ENTRIES // max(1, len(b)))
    if per_block >= len(a):
        return (a @ b.T)[rows_a, rows_b]
    for low in range(0, len(a), per_block):
        rows = np.flatnonzero((rows_a >= low) & (rows_a < low + per_block))
        out[rows] = (a[low:low + per_block] @ b.T)[rows_a[rows] - low, rows_b[rows]]
    return out


def biases(algo: surprise.AlgoBase, pairs: Pairs, bu: np.ndarray, bi: np.ndarray) -> np.ndarray:
    """global mean + b_u (known user) + b_i (known item), in Surprise's order of additions."""
    est = np.full(len(pairs), algo.trainset.global_mean)
    est += np.where(pairs.known_u, bu[pairs.u], 0.0)
    est += np.where(pairs.known_i, bi[pairs.i], 0.0)
    return est


# ---------------------------------------------------------------------------- factor models

@estimator("SVD", "NMF")
def factor_model(algo, pairs: Pairs) -> Estimate:
    """SVD / PMF (SVD with biased=False) / NMF: [mu + b_u + b_i +] q_i . p_u."""
    both = pairs.known
    dot = np.zeros(len(pairs))
    dot[both] = rowwise_dot(algo.qi, algo.pu, pairs.i[both], pairs.u[both])
    if algo.biased:
        return Estimate(biases(algo, pairs, algo.bu, algo.bi) + dot, np.zeros(len(pairs), bool))
    return Estimate(dot, ~both)


@estimator("SVDpp")
def svd_pp(algo, pairs: Pairs) -> Estimate:
    """SVD++: mu + b_u + b_i + q_i . (p_u + |I_u|^-1/2 sum_{j in I_u} y_j)."""
    rated = rated_matrix(algo.trainset)
    counts = np.asarray(rated.sum(axis=1)).ravel()
    user_vectors = algo.pu + (rated @ algo.yj) / np.sqrt(counts)[:, None]
    both = pairs.known
    est = biases(algo, pairs, algo.bu, algo.bi)
    est[both] += rowwise_dot(algo.qi, user_vectors, pairs.i[both], pairs.u[both])
    return Estimate(est, np.zeros(len(pairs), bool))


@estimator("BaselineOnly")
def baseline_only(algo, pairs: Pairs) -> Estimate:
    return Estimate(biases(algo, pairs, algo.bu, algo.bi), np.zeros(len(pairs), bool))


@estimator("NormalPredictor")
def normal_predictor(algo, pairs: Pairs) -> Estimate:
    """One draw per pair from N(mu, sigma) on numpy's global generator, in pair order: the
    legacy generator's array draw is the same sequence as Surprise's one draw per call."""
    return Estimate(np.random.normal(algo.trainset.global_mean, algo.sigma, size=len(pairs)),
                    np.zeros(len(pairs), bool))


@estimator("CoClustering")
def co_clustering(algo, pairs: Pairs) -> Estimate:
    """avg_cocluster + (user mean - user cluster avg) + (item mean - item cluster avg); mu if unknown."""
    both = pairs.known
    est = np.full(len(pairs), algo.trainset.global_mean)
    u, i = pairs.u[both], pairs.i[both]
    uc, ic = algo.cltr_u[u], algo.cltr_i[i]
    est[both] = (algo.avg_cocltr[uc, ic] + algo.user_mean[u] - algo.avg_cltr_u[uc]
                 + algo.item_mean[i] - algo.avg_cltr_i[ic])
    return Estimate(est, np.zeros(len(pairs), bool))


@estimator("SlopeOne")
def slope_one(algo, pairs: Pairs) -> Estimate:
    """mu_u + mean of dev[i, j] over the items j the user rated that share a rater with i."""
    both = pairs.known
    linked = algo.freq > 0
    deviation = np.where(linked, algo.dev, 0.0)  # dev is undefined (NaN) where freq = 0
    rated = rated_matrix(algo.trainset)
    rows = np.flatnonzero(both)
    users, items = pairs.u[rows], pairs.i[rows]
    lengths = np.diff(rated.indptr)[users]
    # reading deviation at scattered places costs ~200x a streamed sparse-dense product per entry
    # (measured on ML-100K: 20,000 pairs 0.75 s gathered, 0.46 s dense): gather for a few pairs only
    if lengths.sum() * SLOPE_ONE_GATHER_COST <= rated[np.unique(users)].nnz * algo.trainset.n_items:
        total, count = _slope_one_gathered(rated, deviation, linked, users, items, lengths)
    else:
        total, count = _slope_one_dense(rated, deviation, linked, users, items)
    est = np.zeros(len(pairs))
    est[rows] = np.asarray(algo.user_mean, dtype=float)[users] + np.divide(
        total, count, out=np.zeros(len(total)), where=count > 0)
    return Estimate(est, ~both)


def _slope_one_gathered(rated, deviation, linked, users, items, lengths):
    """Scattered pairs: each pair's row of ``deviation`` read at its user's rated items only."""
    total, count = np.zeros(len(users)), np.zeros(len(users))
    ends = np.cumsum(lengths)
    bounds = np.unique(np.r_[0, np.searchsorted(ends, np.arange(BLOCK_ENTRIES, ends[-1] if len(ends) else 0,
                                                                  BLOCK_ENTRIES), side="right"), len(users)])
    for start, stop in zip(bounds[:-1], bounds[1:]):
        span = lengths[start:stop]
        segment = np.r_[0, np.cumsum(span)[:-1]]
        flat = np.repeat(rated.indptr[users[start:stop]] - segment, span) + np.arange(span.sum())
        rated_items, times = rated.indices[flat], rated.data[flat]
        target = np.repeat(items[start:stop], span)
        total[start:stop] = np.add.reduceat(deviation[target, rated_items] * times, segment)
        count[start:stop] = np.add.reduceat(linked[target, rated_items] * times, segment)
    return total, count


def _slope_one_dense(rated, deviation, linked, users, items):
    """Dense pairs (a full catalogue): blocks of users x all items as sparse-dense products."""
    total, count = np.zeros(len(users)), np.zeros(len(users))
    distinct = np.unique(users)
    per_block = max(1, BLOCK_ENTRIES // max(1, deviation.shape[0]))
    linked = linked.astype(float)
    for start in range(0, len(distinct), per_block):
        block = distinct[start:start + per_block]
        in_block = np.flatnonzero(np.isin(users, block))
        position = np.searchsorted(block, users[in_block])
        block_rated = rated[block]
        total[in_block] = np.asarray(block_rated @ deviation.T)[position, items[in_block]]
        count[in_block] = np.asarray(block_rated @ linked.T)[position, items[in_block]]
    return total, count


# ---------------------------------------------------------------------------- k-NN family

def top_k_mask(sims: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k largest entries; among equal values the leftmost win: exactly
    ``heapq.nlargest(k, row)`` (which keeps the earlier of equal keys)."""
    n = sims.shape[1]
    if k <= 0:
        return np.zeros(sims.shape, bool)
    if n <= k:
        return np.ones(sims.shape, bool)
    kth = np.partition(sims, n - k, axis=1)[:, n - k:n - k + 1]
    greater = sims > kth
    equal = sims == kth
    need = k - greater.sum(axis=1, keepdims=True)
    return greater | (equal & (np.cumsum(equal, axis=1) <= need))


@dataclass
class Neighbourhood:
    """Per pair: sum of the positive similarities among the k nearest neighbours that rated
    the target, sum of similarity x neighbour term, and how many neighbours that was."""

    sum_sim: np.ndarray
    weighted: np.ndarray
    actual_k: np.ndarray
    unresolved: np.ndarray


def neighbourhood(algo, pairs: Pairs, term: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
                  ) -> Neighbourhood:
    """The loop of every k-NN ``estimate``, one target (item if user-based) at a time.

    x is the side the similarity is over (users if user_based), y the other one; the
    neighbours of (x, y) are the x2 in ``yr[y]`` in their list order. ``term(x2, y, r)``
    is what a neighbour contributes (r; r - mean; z-score; r - baseline).
    """
    n = len(pairs)
    result = Neighbourhood(np.zeros(n), np.zeros(n), np.zeros(n, np.intp), np.zeros(n, bool))
    user_based = algo.sim_options["user_based"]
    x_all, y_all = (pairs.u, pairs.i) if user_based else (pairs.i, pairs.u)
    offsets, neighbours, ratings = rating_arrays(algo.trainset, "ir" if user_based else "ur")
    terms = term(neighbours, np.repeat(np.arange(algo.n_y), np.diff(offsets)), ratings)

    rows = np.flatnonzero(pairs.known)
    rows = rows[np.argsort(y_all[rows], kind="stable")]
    targets, starts = np.unique(y_all[rows], return_index=True)
    bounds = np.r_[starts, len(rows)]
    for y, start, stop in zip(targets.tolist(), bounds[:-1].tolist(), bounds[1:].tolist()):
        first, last = offsets[y], offsets[y + 1]
        others, values = neighbours[first:last], terms[first:last]
        per_chunk = max(1, BLOCK_ENTRIES // max(1, last - first))
        for chunk_start in range(start, stop, per_chunk):
            chunk = rows[chunk_start:min(stop, chunk_start + per_chunk)]
            sims = algo.sim[np.ix_(x_all[chunk], others)]
            nan = np.isnan(sims).any(axis=1)
            chosen = top_k_mask(np.where(nan[:, None], 0.0, sims), algo.k) & (sims > 0)
            result.sum_sim[chunk] = np.where(chosen, sims, 0.0).sum(axis=1)
            result.weighted[chunk] = np.where(chosen, sims * values, 0.0).sum(axis=1)
            result.actual_k[chunk] = chosen.sum(axis=1)
            result.unresolved[chunk] = nan
    return result


def neighbour_average(hood: Neighbourhood, min_k: int) -> np.ndarray:
    """sum(sim x term) / sum(sim); 0 with fewer than min_k neighbours or no positive similarity
    (Surprise zeroes the sum, or catches the ZeroDivisionError)."""
    usable = (hood.actual_k >= min_k) & (hood.sum_sim != 0)
    return np.divide(hood.weighted, hood.sum_sim, out=np.zeros(len(hood.sum_sim)), where=usable)


def x_of(algo, pairs: Pairs) -> np.ndarray:
    return pairs.u if algo.sim_options["user_based"] else pairs.i


@estimator("KNNBasic")
def knn_basic(algo, pairs: Pairs) -> Estimate:
    hood = neighbourhood(algo, pairs, lambda x2, y, r: r)
    impossible = ~pairs.known | (hood.actual_k < algo.min_k)
    # min_k <= 0 with no positive neighbour: Surprise divides by zero (it raises); leave those to it
    unresolved = hood.unresolved | (pairs.known & ~impossible & (hood.sum_sim == 0))
    est = np.divide(hood.weighted, hood.sum_sim, out=np.zeros(len(pairs)), where=~impossible & ~unresolved)
    return Estimate(est, impossible, unresolved)


@estimator("KNNWithMeans")
def knn_with_means(algo, pairs: Pairs) -> Estimate:
    means = algo.means
    hood = neighbourhood(algo, pairs, lambda x2, y, r: r - means[x2])
    known = pairs.known
    est = np.where(known, means[x_of(algo, pairs)], 0.0) + neighbour_average(hood, algo.min_k)
    return Estimate(est, ~known, hood.unresolved)


@estimator("KNNWithZScore")
def knn_with_z_score(algo, pairs: Pairs) -> Estimate:
    means, sigmas = algo.means, algo.sigmas
    hood = neighbourhood(algo, pairs, lambda x2, y, r: (r - means[x2]) / sigmas[x2])
    known = pairs.known
    x = x_of(algo, pairs)
    est = np.where(known, means[x], 0.0) + neighbour_average(hood, algo.min_k) * np.where(known, sigmas[x], 0.0)
    return Estimate(est, ~known, hood.unresolved)


@estimator("KNNBaseline")
def knn_baseline(algo, pairs: Pairs) -> Estimate:
    """Baseline b_ui (its known parts only for unknown users / items, never impossible) plus the
    neighbours' similarity-weighted deviations from their own baselines."""
    global_mean, bx, by = algo.trainset.global_mean, algo.bx, algo.by
    hood = neighbourhood(algo, pairs, lambda x2, y, r: r - (global_mean + bx[x2] + by[y]))
    est = biases(algo, pairs, algo.bu, algo.bi) + neighbour_average(hood, algo.min_k)
    return Estimate(est, np.zeros(len(pairs), bool), hood.unresolved)
