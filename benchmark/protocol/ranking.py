"""How a query's candidates are ordered: score descending, equal scores by ONE tie rule.

Every ranking in the harness goes through this module: the test-items metrics (a sort of a long
``query, item, score`` frame), the full-catalogue metrics (top k of a score matrix without a full
sort), ``Recommender.rank`` and ``python -m benchmark.recommend``. The tie rule is :func:`tie_break`
and nothing else, so changing the rule (random ties, pessimistic ties, ...) is a change of that one
function: the two orderings below ask it for their secondary key each time they run.

It sits in the protocol layer, not in evaluation, because models (``Recommender.rank``) rank too and
a model may not import the evaluation.
"""

from __future__ import annotations

import numpy as np


def tie_break(queries, items) -> np.ndarray:
    """THE tie rule: among one query's candidates with equal scores, the smaller key ranks first.

    ``queries`` and ``items`` broadcast against each other (aligned 1-D rows of a long frame, or a
    column of queries against a row of catalogue items); the result has their broadcast shape.
    The rule now: the lower item id first (deterministic, and the same in every path).
    """
    _, items = np.broadcast_arrays(np.asarray(queries), np.asarray(items))
    return items


def order_rows(queries, scores, items) -> np.ndarray:
    """The permutation that sorts rows by query, then score descending, then :func:`tie_break`."""
    queries, items = np.asarray(queries), np.asarray(items)
    return np.lexsort((tie_break(queries, items), -np.asarray(scores, dtype=float),
                       np.broadcast_to(queries, items.shape)))


def tie_columns(queries, items) -> np.ndarray | None:
    """Column order of a ``(len(queries), len(items))`` score matrix in which ties fall by position.

    The matrix ranking (benchmark/evaluation/metrics.py) breaks ties by column position, which is
    :func:`tie_break` once the columns are in this order: ``None`` when they already are (the item
    ids are sorted and the rule is the item id: no copy), else one permutation per row.
    """
    key = tie_break(np.asarray(queries)[:, None], np.asarray(items)[None, :])
    if key.shape[1] < 2 or (np.diff(key, axis=1) > 0).all():
        return None
    return np.argsort(key, axis=1, kind="stable")
