"""How a query's candidates are ordered: score descending, equal scores by ONE tie rule.

Every ranking in the harness goes through this module: the test-items metrics (a sort of a long
``query, item, score`` frame), the full-catalogue metrics (top k of a score matrix without a full
sort), ``Recommender.rank`` and ``python -m benchmark.recommend``. The tie rule is :func:`tie_key`
and nothing else: the orderings below and the matrix ranking (benchmark/evaluation/metrics.py) ask
it for their secondary key each time they run.

The rule (docs/protocol.md, "Ties"): equal scores are ordered by a seeded pseudo-random key of
(seed, query, item), a random permutation that is the same in every path and for every model with
the same seed, and knows nothing of the scores or of relevance. A rule by item id would favour
whichever model ties most often when the relevant items happen to have small ids (LensKit's clipped
item-kNN scores tie at the 10th position for 933 of 943 ML-100K users: by item id its full P@10 was
0.0078, by random order 0.0030). Models rank on their scores before any clipping to the rating scale
(models.base.RawScores), so most ties never arise; the share of queries whose ranking still has a tie
across the cut-off is logged as ``ties_at_<k>`` beside the metrics.

It sits in the protocol layer, not in evaluation, because models (``Recommender.rank``) rank too and
a model may not import the evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scatters nearby inputs."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _ids(values) -> np.ndarray:
    """A uint64 per id (ints, strings, ...), the same for the same id in every call."""
    values = np.asarray(values)
    flat = values.ravel()
    if flat.dtype.kind in "iub":
        hashed = flat.astype(np.int64).view(np.uint64)
    else:
        hashed = pd.util.hash_array(flat.astype(object) if flat.dtype.kind in "UO" else flat)
    return _mix(hashed + _GOLDEN).reshape(values.shape)


def tie_key(queries, items, seed: int = 0) -> np.ndarray:
    """THE tie rule: among one query's candidates with equal scores, the smaller key ranks first.

    ``queries`` and ``items`` broadcast against each other (aligned 1-D rows of a long frame, or a
    column of queries against a row of catalogue items); the result (uint64) has their broadcast
    shape. The key is a hash of (seed, query, item): a seeded random permutation of each query's
    tied items, independent of the model and of relevance; the same (seed, query, item) always gets
    the same key, whichever path ranks it.
    """
    with np.errstate(over="ignore"):
        salt = _mix(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF) + _GOLDEN)
        q, i = _ids(queries), _ids(items)
        return _mix((q * _GOLDEN) ^ i ^ salt)


def order_rows(queries, scores, items, seed: int = 0) -> np.ndarray:
    """The permutation that sorts rows by query, then score descending, then :func:`tie_key`."""
    queries, items = np.asarray(queries), np.asarray(items)
    return np.lexsort((tie_key(queries, items, seed), -np.asarray(scores, dtype=float),
                       np.broadcast_to(queries, items.shape)))
