"""The one evaluation path: candidates -> scores -> ranking -> metrics, for users and groups alike.

A query (a user or a group) gets candidates from the protocol (benchmark/protocol/candidates.py),
scores from the model through the evaluation's scorer (a user's: ``Scorer``; a group's: the
``GroupScores`` of benchmark/evaluation/scoring.py, the model's own or its members' aggregated),
and those scores go through the same ranking and metrics (benchmark/evaluation/metrics.py) whatever
produced them. Two candidate shapes, each with one function:

* :func:`listed_group_metrics` / :func:`score_group_items`: each group's listed items (test items),
  scored a run of groups at a time: at most ~``GROUP_CHUNK_PAIRS`` member x item pairs exist at
  once, at any data size (users' test items are scored by the runner: its predictions frame);
* :func:`rank_catalogue`: every query x the catalogue, scored and ranked ``CHUNK_PAIRS`` matrix
  elements at a time; users and groups are two candidate sets through the same loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from benchmark.evaluation.base import EvalContext, EvalResult, Scorer
from benchmark.evaluation.metrics import per_user_metrics, rank_metrics, summarize_full
from benchmark.evaluation.scoring import (
    GroupScores,
    MatrixScores,
    MemberAggregation,
    group_scores_of,
    sorted_members_items,
)
from benchmark.protocol import ranking
from benchmark.protocol.candidates import (
    CatalogueCandidates,
    ListedCandidates,
    catalogue,
    group_catalogue,
    unique_members,
    user_catalogue,
)
from models.base import Recommender

log = logging.getLogger(__name__)

GROUP_CHUNK_PAIRS = 1 << 21    # member x item pairs scored at once (~2M: ~100 MB of frames)
CHUNK_PAIRS = 1 << 20          # catalogue scores per chunk and per predict call (about 8 MB of float64)
MAX_GROUP_MATRIX = 50_000_000  # users x items above which the member-aggregated catalogue ranking is skipped


def runs_within(sizes: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """``(first, last)`` ranges of consecutive entries whose ``sizes`` add up to about ``limit`` (at
    least one entry per range): runs of groups holding a bounded number of rows or pairs."""
    cumulative, runs, first = np.cumsum(sizes), [], 0
    while first < len(sizes):
        before = cumulative[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(cumulative, before + limit, side="right")))
        runs.append((first, last))
        first = last
    return runs


def row_chunks(n_rows: int, n_items: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of about ``CHUNK_PAIRS`` matrix elements each (at least one row)."""
    step = max(1, CHUNK_PAIRS // max(1, n_items))
    return [(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


# ---------------------------------------------------------------------------- listed candidates

def score_group_items(scores: GroupScores, members: pd.DataFrame, group_items: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each strategy's ``group, item, prediction[, score]`` (sorted by group and item; groups without
    members left out; ``score``: the ranking score of a model that clips), scored a run of groups at a time (at most ~``GROUP_CHUNK_PAIRS`` member x item pairs)."""
    members, items = sorted_members_items(members, group_items)
    groups = np.unique(items["group"].to_numpy())
    n_pairs = (items["group"].value_counts().reindex(groups, fill_value=0).to_numpy()
               * members["group"].value_counts().reindex(groups, fill_value=0).to_numpy())
    member_groups, item_groups = members["group"].to_numpy(), items["group"].to_numpy()
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in scores.strategies}
    for first, last in runs_within(n_pairs, GROUP_CHUNK_PAIRS):
        low, high = groups[first], groups[last - 1]
        chunk_members = members.iloc[np.searchsorted(member_groups, low):np.searchsorted(member_groups, high, "right")]
        chunk_items = items.iloc[np.searchsorted(item_groups, low):np.searchsorted(item_groups, high, "right")]
        chunk_items = chunk_items[chunk_items["group"].isin(chunk_members["group"]).to_numpy()]
        if chunk_items.empty:
            continue
        keys = {"group": chunk_items["group"].to_numpy(), "item": chunk_items["item"].to_numpy()}
        for name, (rating, score) in scores.pairs(chunk_members, chunk_items).items():
            # ``score`` (what the ranking reads) only where it differs from the rating: a clipping model
            parts[name].append(pd.DataFrame({**keys, "prediction": rating,
                                             **({} if score is rating else {"score": score})}))
    empty = pd.DataFrame({"group": [], "item": [], "prediction": []})
    return {name: pd.concat(frames, ignore_index=True) if frames else empty for name, frames in parts.items()}


def group_scores(model: Recommender, members: pd.DataFrame, group_items: pd.DataFrame, aggregations: list[str],
                 truth: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """:func:`score_group_items` for a bare model (its own Scorer): its group scores of each group's items."""
    return score_group_items(group_scores_of(Scorer(model, truth=truth), aggregations), members, group_items)


def listed_group_metrics(candidates: ListedCandidates, scores: dict[str, pd.DataFrame], k: int,
                         threshold: float, seed: int = 0) -> pd.DataFrame:
    """Per-group metrics of each strategy's ``group, item, prediction[, score]`` scores of the listed
    candidates (ties by the tie rule seeded by ``seed``): ``aggregation, group, n_test, <ranking
    metrics>[, group_rmse, group_mae], tie_at_cutoff``."""
    tables = []
    truth = candidates.frame[["group", "item", "rating"]]
    for name, scored in scores.items():
        same_rows = (len(scored) == len(truth) and np.array_equal(scored["group"].to_numpy(), truth["group"].to_numpy())
                     and np.array_equal(scored["item"].to_numpy(), truth["item"].to_numpy()))
        # KMeans groups: every truth row was scored, in the same (group, item) order: no merge needed
        frame = (truth.assign(**{c: scored[c].to_numpy() for c in scored.columns if c not in ("group", "item")})
                 if same_rows else truth.merge(scored, on=["group", "item"]))
        tables.append(per_user_metrics(frame, k, threshold, key="group", rated=candidates.rated, seed=seed)
                      .reset_index()
                      .assign(aggregation=name))
    table = pd.concat(tables, ignore_index=True)
    return table[["aggregation", *[c for c in table.columns if c != "aggregation"]]]


# ---------------------------------------------------------------------------- catalogue candidates

def rank_catalogue(candidates: CatalogueCandidates, chunks, k: int,
                   seed: int = 0) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """Each strategy's per-query metrics table and top-k positions, from score chunks that cover the
    queries in order (ties by the tie rule seeded by ``seed``); the excluded and relevant masks and
    the tie keys are built for each chunk only."""
    parts: dict[str, list] = {}
    for start, stop, scores in chunks:
        excluded, relevant = candidates.matrices(start, stop)
        tie = ranking.tie_key(candidates.queries[start:stop].to_numpy()[:, None], candidates.items.to_numpy()[None, :],
                              seed)
        for name, matrix in scores.items():
            parts.setdefault(name, []).append(rank_metrics(matrix, excluded, relevant, k, tie))
    if not parts:
        return {}
    return {name: (pd.concat([t for t, _ in p], ignore_index=True), np.concatenate([top for _, top in p]))
            for name, p in parts.items()}


def user_chunks(candidates: CatalogueCandidates, score_rows: Callable[[np.ndarray], np.ndarray]):
    """Score chunks of users: ``score_rows(users)`` gives their rows (one empty chunk without users)."""
    users = candidates.queries.to_numpy()
    for start, stop in row_chunks(len(users), len(candidates.items)) or [(0, 0)]:
        yield start, stop, {"user": score_rows(users[start:stop])}


def group_chunks(candidates: CatalogueCandidates, members: pd.DataFrame, scores: GroupScores):
    """Score chunks of groups: runs of groups whose members' score rows stay ~``CHUNK_PAIRS``."""
    members = unique_members(members).sort_values("group", kind="stable", ignore_index=True)
    member_groups = members["group"].to_numpy()
    ends = np.searchsorted(member_groups, candidates.queries.to_numpy(), side="right")
    starts = np.searchsorted(member_groups, candidates.queries.to_numpy(), side="left")
    items = candidates.items.to_numpy()
    for first, last in runs_within(ends - starts, max(1, CHUNK_PAIRS // max(1, len(items)))):
        yield first, last, scores.matrix(members.iloc[starts[first]:ends[last - 1]], items)


def catalogue_metrics(ctx: EvalContext, truth: Callable[[], pd.DataFrame], strategies: list[str]) -> EvalResult:
    """The full-catalogue metrics of users (``full_*``) and groups (``full_group_<strategy>_*``).

    ``truth()`` gives the groups' ``group, item, rating`` truth (asked only when groups are ranked).
    When the groups are member-aggregated and users x items fits ``MAX_GROUP_MATRIX``, every test
    user and member is scored once and both levels read those rows (:class:`MatrixScores`); above
    it, users are scored a chunk at a time and the member-aggregated group ranking is skipped. A
    group model's own scores need no member rows: its groups are ranked at any size.
    """
    scorer, k, items = ctx.scorer, ctx.k, catalogue(ctx.dataset)
    test_users = np.unique(ctx.predictions["user"].to_numpy())
    users = user_catalogue(items, test_users, ctx.train, ctx.predictions, ctx.threshold)
    members = unique_members(ctx.groups.members) if ctx.groups.members is not None else None
    groups_by = group_scores_of(scorer, strategies) if members is not None else None
    everyone = pd.Index(np.union1d(test_users, members["user"].to_numpy())) if members is not None else users.queries

    source = scorer  # where the users' score rows come from
    if isinstance(groups_by, MemberAggregation):
        if len(everyone) * len(items) <= MAX_GROUP_MATRIX:
            # groups aggregate their members' rows: every member's scores are kept for both levels
            source = MatrixScores(everyone, items.to_numpy(),
                                  scorer.score_matrix(everyone.to_numpy(), items.to_numpy(), chunk_pairs=CHUNK_PAIRS))
            groups_by = MemberAggregation(source, strategies)
        else:
            log.warning("full-catalogue group ranking skipped: %d users x %d items is above %d scores",
                        len(everyone), len(items), MAX_GROUP_MATRIX)
            groups_by = None
    def score_rows(chunk: np.ndarray) -> np.ndarray:
        return source.score_matrix(chunk, items.to_numpy(), chunk_pairs=CHUNK_PAIRS)

    table, top_items = rank_catalogue(users, user_chunks(users, score_rows), k, ctx.seed)["user"]
    result = EvalResult(summarize_full(table, top_items, len(items), k),
                        {"per_user_full_metrics": table.assign(user=test_users)[["user", *table.columns]]})
    if groups_by is None or members.empty:
        return result
    groups = group_catalogue(items, members, ctx.train, truth(), ctx.threshold)
    tables = []
    for name, (table, top_items) in rank_catalogue(groups, group_chunks(groups, members, groups_by), k,
                                                   ctx.seed).items():
        result.metrics.update(summarize_full(table, top_items, len(items), k, prefix=f"full_group_{name}_"))
        tables.append(table.assign(group=groups.queries.to_numpy(), aggregation=name))
    per_group = pd.concat(tables, ignore_index=True)
    front = ["aggregation", "group"]
    result.tables["per_group_full_metrics"] = per_group[front + [c for c in per_group if c not in front]]
    return result
