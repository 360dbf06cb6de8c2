"""Group-item evaluation (docs/protocol.md, "Group recommendation: sampled and full ranking").

On a group split (benchmark/protocol/group_split.py, ``EvalContext.group_fold``) each test case is
one group and one held-out item. Two protocols rank it:

* **sampled** (``group_sampled_*``): against its 100 sampled negatives (the split's, shipped or
  re-drawn): a (cases x 101) score matrix;
* **full** (``group_full_*``): against every item of the group-item catalogue except the group's
  training positives (cases x catalogue, a chunk of cases at a time).

Scores come through the one group path (benchmark/evaluation/scoring.py): a GroupScorer's own
``score_groups`` (metrics ``group_sampled_hr_at_5``), else its members' predictions aggregated
(``group_sampled_<aggregation>_hr_at_5``). Ranks: metrics.single_positive_ranks; ties by the
harness's tie rule (``eval.ties=random``, the default) or, labelled legacy, the positive first among
its ties (``eval.ties=positive_first``); ``group_sampled_pos_ties`` is the share of cases whose
positive ties with at least one candidate. HR@k and NDCG@k for k = 5 and 10.

A split whose test groups hold several held-out items and no negatives (``GroupFold.heldout``:
Weeplaces, ``split=ephemeral``) is ranked by a third protocol, GroupIM's:

* **held-out** (``group_heldout_*``): each test group's scores over the whole catalogue (a chunk of
  groups x every item as one dense matrix at a time), minus the group's training positives (none:
  test groups never occur in training) and, with ``eval.mask_member_items=true``
  (``group_heldout_masked_*``), minus every item a member has among its visible interactions
  (``group_split.visible_user_items``). Recall@k = hits / min(k, |held-out|) and NDCG@k with the
  ideal DCG of min(k, |held-out|) hits, GroupIM's definitions, k = 20 and 50, averaged over the groups
  with at least one held-out item left as a candidate. The sampled and the single-positive full
  protocols are skipped there, with the reason in the log.

Where the group test cases carry the group's rating (CAMRa2011: ``GroupFold.test.rating``, kept by
every split of it), a fourth evaluator measures **group-level rating prediction**
(``group_rating_<aggregation>_rmse`` / ``_mae``): each case's members' predicted ratings (the model's
clipped predictions) aggregated by each strategy, against the held-out group rating; cases rated 0 (the
files' "no interaction") are left out; ``group_rating_n_cases`` counts the rest. Only user-level models
that predict ratings are measured: a group scorer's scores and an implicit-feedback model's
(``meta.feedback: implicit``) are preferences, not ratings.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from benchmark.core import models_meta
from benchmark.core.errors import require
from benchmark.evaluation.base import EvalContext, EvalResult, evaluator, setting
from benchmark.evaluation.groups import aggregations_of
from benchmark.evaluation.metrics import hit_rate_ndcg, ranking_key, single_positive_ranks, top_k_positions
from benchmark.evaluation.scoring import DIRECT, MemberAggregation, group_scores_of
from benchmark.protocol import ranking
from benchmark.protocol.candidates import unique_members
from benchmark.protocol.group_split import member_item_codes, pair_codes, positives, visible_user_items
from models.base import GroupValidation

log = logging.getLogger(__name__)

CUTOFFS = (5, 10)
HELDOUT_CUTOFFS = (20, 50)  # GroupIM's
TIE_RULES = ("random", "positive_first")
CHUNK_CELLS = 1 << 22  # cases x catalogue scores ranked at a time


def tie_rule(config) -> str:
    rule = setting(config, "ties", "random")
    require(rule in TIE_RULES, f"eval.ties={rule} is unknown; use random (the default: the harness's tie rule) "
                               f"or positive_first (legacy: the positive first among its ties)")
    return rule


def _members(ctx: EvalContext, groups: np.ndarray) -> pd.DataFrame:
    members = unique_members(ctx.groups.members)
    return members[members["group"].isin(groups)].sort_values("group", kind="stable", ignore_index=True)


def _prefix(protocol: str, strategy: str) -> str:
    return f"group_{protocol}_" if strategy == DIRECT else f"group_{protocol}_{strategy}_"


def _summary(prefix: str, ranks: np.ndarray, tied: np.ndarray) -> dict[str, float]:
    metrics = {}
    for k in CUTOFFS:
        hit, ndcg = hit_rate_ndcg(ranks, k)
        metrics[f"{prefix}hr_at_{k}"] = float(hit.mean())
        metrics[f"{prefix}ndcg_at_{k}"] = float(ndcg.mean())
    metrics[f"{prefix}pos_ties"] = float(tied.mean())
    metrics[f"{prefix}n_cases"] = float(len(ranks))
    return metrics


def listed_scores(ctx: EvalContext, groups: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
    """Each strategy's score of every (groups[r], items[r, c]): the distinct pairs scored once."""
    n_items = int(max(ctx.group_fold.n_items, items.max(initial=0) + 1))
    rows = np.broadcast_to(groups[:, None], items.shape)
    codes = pair_codes(rows, items, n_items)
    distinct = np.unique(codes.ravel())
    pairs = pd.DataFrame({"group": distinct // n_items, "item": distinct % n_items})
    scored = group_scores_of(ctx.scorer, aggregations_of(ctx.config)).pairs(_members(ctx, groups), pairs)
    where = np.searchsorted(distinct, codes)
    return {name: score[where] for name, (_, score) in scored.items()}


@evaluator("group_sampled", group_item=True)
def sampled(ctx: EvalContext) -> EvalResult:
    """Each test case's positive ranked against its 100 sampled negatives."""
    if ctx.group_fold.negatives is None:
        log.info("group_sampled: skipped: the %s split has no sampled negatives (only the full-ranking "
                 "protocol, group_heldout_*, applies)", ctx.group_fold.label)
        return EvalResult()
    fold, positive_first = ctx.group_fold, tie_rule(ctx.config) == "positive_first"
    groups = fold.test["group"].to_numpy(np.int64)
    items = np.column_stack([fold.test["item"].to_numpy(np.int64), fold.negatives])
    keys = ranking.tie_key(groups[:, None], items, ctx.seed)
    metrics: dict[str, float] = {"group_ties_positive_first": float(positive_first)}
    tables = []
    for name, scores in listed_scores(ctx, groups, items).items():
        ranks, tied = single_positive_ranks(scores[:, 0], scores[:, 1:], keys[:, 0], keys[:, 1:],
                                            positive_first=positive_first)
        metrics.update(_summary(_prefix("sampled", name), ranks, tied))
        tables.append(pd.DataFrame({"strategy": name, "group": groups, "item": items[:, 0], "rank": ranks,
                                    "tied": tied}))
    return EvalResult(metrics, {"per_case_sampled": pd.concat(tables, ignore_index=True)})


@evaluator("group_full", group_item=True)
def full(ctx: EvalContext) -> EvalResult:
    """Each test case's positive ranked against the whole group-item catalogue minus the group's
    training positives (``eval.full_catalogue=false``: skipped)."""
    if not bool(setting(ctx.config, "full_catalogue", True)):
        return EvalResult()
    if ctx.group_fold.heldout:
        log.info("group_full: skipped: the %s split holds several items per test group (ranked by "
                 "group_heldout_*)", ctx.group_fold.label)
        return EvalResult()
    fold, positive_first = ctx.group_fold, tie_rule(ctx.config) == "positive_first"
    catalogue = np.arange(fold.n_items)
    test_groups = fold.test["group"].to_numpy(np.int64)
    test_items = fold.test["item"].to_numpy(np.int64)
    groups = np.unique(test_groups)
    row_of = np.searchsorted(groups, test_groups)
    scores = group_scores_of(ctx.scorer, aggregations_of(ctx.config)).matrix(_members(ctx, groups), catalogue)
    train = positives(fold.train)
    known = pair_codes(train["group"], train["item"], fold.n_items)
    ranks: dict[str, list[np.ndarray]] = {name: [] for name in scores}
    tied: dict[str, list[np.ndarray]] = {name: [] for name in scores}
    step = max(1, CHUNK_CELLS // max(1, fold.n_items))
    for start in range(0, len(test_groups), step):
        g, i = test_groups[start:start + step], test_items[start:start + step]
        valid = ~np.isin(pair_codes(g[:, None], catalogue[None, :], fold.n_items), known)
        valid &= catalogue[None, :] != i[:, None]  # the positive itself is not one of its rivals
        keys = ranking.tie_key(g[:, None], catalogue[None, :], ctx.seed)
        positive_keys = ranking.tie_key(g, i, ctx.seed)
        for name, matrix in scores.items():
            rows = matrix[row_of[start:start + step]]
            r, t = single_positive_ranks(rows[np.arange(len(i)), i], rows, positive_keys, keys, valid=valid,
                                         positive_first=positive_first)
            ranks[name].append(r)
            tied[name].append(t)
    metrics: dict[str, float] = {}
    tables = []
    for name in scores:
        all_ranks, all_tied = np.concatenate(ranks[name]), np.concatenate(tied[name])
        metrics.update(_summary(_prefix("full", name), all_ranks, all_tied))
        tables.append(pd.DataFrame({"strategy": name, "group": test_groups, "item": test_items, "rank": all_ranks,
                                    "tied": all_tied}))
    return EvalResult(metrics, {"per_case_full": pd.concat(tables, ignore_index=True)})


def heldout_metrics(scores: np.ndarray, relevant: np.ndarray, excluded: np.ndarray, k: int,
                    tie) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row (group): Recall@k = hits / min(k, n), NDCG@k = DCG / ideal DCG of min(k, n) hits, n the
    row's relevant candidates (GroupIM's definitions; NaN where n = 0), and whether the tie rule
    completed the top k. ``excluded`` cells are not candidates (a relevant excluded cell does not
    count); ``tie``: metrics.TieKey."""
    candidates = relevant & ~excluded
    top, cut_tie = top_k_positions(ranking_key(scores, excluded), k, tie)
    hits = np.take_along_axis(candidates, top, axis=1)
    n = candidates.sum(axis=1)
    discount = 1.0 / np.log2(np.arange(top.shape[1]) + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n, top.shape[1])]
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(n > 0, hits.sum(axis=1) / np.minimum(n, k), np.nan)
        ndcg = np.where(n > 0, (hits * discount).sum(axis=1) / ideal, np.nan)
    return recall, ndcg, cut_tie


@evaluator("group_heldout", group_item=True)
def heldout(ctx: EvalContext) -> EvalResult:
    """Each test group's held-out items ranked among the whole catalogue (GroupIM's protocol, Weeplaces);
    ``eval.mask_member_items=true`` removes the members' visible items from the candidates."""
    fold = ctx.group_fold
    if not fold.heldout:
        return EvalResult()
    mask = bool(setting(ctx.config, "mask_member_items", False))
    catalogue = np.arange(fold.n_items)
    test = fold.test
    groups = np.unique(test["group"].to_numpy(np.int64))
    members = _members(ctx, groups)
    strategies = group_scores_of(ctx.scorer, aggregations_of(ctx.config))
    train = positives(fold.train)
    known = [pair_codes(train["group"], train["item"], fold.n_items)]
    if mask:
        known.append(member_item_codes(members, visible_user_items(ctx.train, fold), fold.n_items))
    known = np.unique(np.concatenate(known))
    cells = {name: {f"{m}_{k}": [] for m in ("recall", "ndcg", "ties") for k in HELDOUT_CUTOFFS}
             for name in strategies.strategies}
    chunks = []
    step = max(1, CHUNK_CELLS // max(1, fold.n_items))
    for start in range(0, len(groups), step):
        chunk = groups[start:start + step]
        chunks.append(chunk)
        relevant = np.zeros((len(chunk), fold.n_items), dtype=bool)
        here = test[test["group"].isin(chunk)]
        relevant[np.searchsorted(chunk, here["group"].to_numpy(np.int64)), here["item"].to_numpy(np.int64)] = True
        excluded = np.zeros_like(relevant)
        codes = known[(known >= chunk[0] * fold.n_items) & (known < (chunk[-1] + 1) * fold.n_items)]
        rows = np.searchsorted(chunk, codes // fold.n_items)
        inside = (rows < len(chunk)) & (chunk[np.minimum(rows, len(chunk) - 1)] == codes // fold.n_items)
        excluded[rows[inside], (codes % fold.n_items)[inside]] = True

        def tie(r, c, chunk=chunk):
            return ranking.tie_key(chunk[r], catalogue[c], ctx.seed)

        chunk_members = members[members["group"].isin(chunk)]
        for name, matrix in strategies.matrix(chunk_members, catalogue).items():
            for k in HELDOUT_CUTOFFS:
                recall, ndcg, cut_tie = heldout_metrics(matrix, relevant, excluded, k, tie)
                cells[name][f"recall_{k}"].append(recall)
                cells[name][f"ndcg_{k}"].append(ndcg)
                cells[name][f"ties_{k}"].append(cut_tie)
    metrics: dict[str, float] = {}
    order = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    tables = []
    for name, parts in cells.items():
        prefix = _prefix("heldout_masked" if mask else "heldout", name)
        per_group = {f"{m}_at_{k}": np.concatenate(parts[f"{m}_{k}"]) for m in ("recall", "ndcg") for k in HELDOUT_CUTOFFS}
        kept = ~np.isnan(per_group[f"recall_at_{HELDOUT_CUTOFFS[0]}"])  # groups with a held-out candidate
        tables.append(pd.DataFrame({"strategy": name, "group": order[kept],
                                    **{key: value[kept] for key, value in per_group.items()}}))
        scored = ~np.isnan(np.concatenate(parts[f"recall_{HELDOUT_CUTOFFS[0]}"]))
        for k in HELDOUT_CUTOFFS:
            for m in ("recall", "ndcg"):
                values = np.concatenate(parts[f"{m}_{k}"])[scored]
                metrics[f"{prefix}{m}_at_{k}"] = float(values.mean()) if len(values) else 0.0
            metrics[f"{prefix}ties_at_{k}"] = float(np.concatenate(parts[f"ties_{k}"])[scored].mean()) if scored.any() else 0.0
        metrics[f"{prefix}n_groups"] = float(scored.sum())
        metrics[f"{prefix}n_groups_without_candidate"] = float((~scored).sum())
    return EvalResult(metrics, {f"per_group_heldout{'_masked' if mask else ''}": pd.concat(tables, ignore_index=True)})


VALIDATION_CUTOFF = 10           # sampled validation: NDCG@10 of each held-out training positive
HELDOUT_VALIDATION_CUTOFF = 20   # ephemeral groups (Weeplaces): Recall@20 of the validation groups' items


def group_validation(fold, members: pd.DataFrame, seed: int) -> GroupValidation | None:
    """The group validation cases of ``fold`` (a ``GroupFold``) as a :class:`models.base.GroupValidation`:
    what a model that scores groups early-stops and is tuned on (docs/protocol.md, "Validation on group
    splits"). ``members``: ``group, user`` of every group. None when the fold has no validation case.

    * sampled (``fold.val_negatives``): each validation case's held-out training positive against its
      sampled negatives, ranked under the harness's tie rule (never positive-first); NDCG@10.
    * ephemeral groups (``fold.heldout``): each validation group's items among the whole catalogue minus
      the group's training positives (none: validation groups are not training groups); Recall@20
      (GroupIM's definition, as ``group_heldout_*``)."""
    if fold is None or len(fold.val) == 0:
        return None
    groups = fold.val["group"].to_numpy(np.int64)
    members = unique_members(members)
    members = members[members["group"].isin(np.unique(groups))].sort_values("group", kind="stable", ignore_index=True)
    if not fold.heldout:
        items = np.column_stack([fold.val["item"].to_numpy(np.int64), fold.val_negatives])
        keys = ranking.tie_key(groups[:, None], items, seed)
        n_items = int(max(fold.n_items, items.max(initial=0) + 1))
        codes = pair_codes(np.broadcast_to(groups[:, None], items.shape), items, n_items)
        distinct = np.unique(codes.ravel())
        pairs = pd.DataFrame({"group": distinct // n_items, "item": distinct % n_items})
        where = np.searchsorted(distinct, codes)

        def sampled_score(score_fn) -> float:
            scores = np.asarray(score_fn(members, pairs), dtype=float)[where]
            ranks, _ = single_positive_ranks(scores[:, 0], scores[:, 1:], keys[:, 0], keys[:, 1:])
            return float(hit_rate_ndcg(ranks, VALIDATION_CUTOFF)[1].mean())

        return GroupValidation(f"group_ndcg_at_{VALIDATION_CUTOFF}", sampled_score, len(groups))

    chunk_groups = np.unique(groups)
    catalogue = np.arange(fold.n_items)
    train = positives(fold.train)
    known = np.unique(pair_codes(train["group"], train["item"], fold.n_items))
    k = HELDOUT_VALIDATION_CUTOFF

    def heldout_score(score_fn) -> float:
        recalls = []
        step = max(1, CHUNK_CELLS // max(1, fold.n_items))
        for start in range(0, len(chunk_groups), step):
            chunk = chunk_groups[start:start + step]
            pairs = pd.DataFrame({"group": np.repeat(chunk, len(catalogue)), "item": np.tile(catalogue, len(chunk))})
            matrix = np.asarray(score_fn(members[members["group"].isin(chunk)], pairs), dtype=float)
            matrix = matrix.reshape(len(chunk), len(catalogue))
            relevant = np.zeros(matrix.shape, dtype=bool)
            here = fold.val[fold.val["group"].isin(chunk)]
            relevant[np.searchsorted(chunk, here["group"].to_numpy(np.int64)), here["item"].to_numpy(np.int64)] = True
            excluded = np.isin(pair_codes(chunk[:, None], catalogue[None, :], fold.n_items), known)

            def tie(r, c, chunk=chunk):
                return ranking.tie_key(chunk[r], catalogue[c], seed)

            recall, _, _ = heldout_metrics(matrix, relevant, excluded, k, tie)
            recalls.append(recall)
        values = np.concatenate(recalls)
        values = values[~np.isnan(values)]
        return float(values.mean()) if len(values) else 0.0

    return GroupValidation(f"group_recall_at_{k}", heldout_score, len(chunk_groups))


@evaluator("group_rating", group_item=True)
def group_rating(ctx: EvalContext) -> EvalResult:
    """RMSE and MAE of the members' aggregated predicted ratings against each group test case's rating
    (module docstring); nothing where the test cases have no rating (implicit data, Weeplaces)."""
    fold = ctx.group_fold
    if fold.heldout or "rating" not in fold.test:
        return EvalResult()
    strategies = group_scores_of(ctx.scorer, aggregations_of(ctx.config))
    if not isinstance(strategies, MemberAggregation) or models_meta.model_meta(ctx.model.name).feedback == "implicit":
        log.info("group_rating: skipped: %s scores groups by preferences, not ratings", ctx.model.name)
        return EvalResult()
    test = fold.test[fold.test["rating"] > 0]
    if test.empty:
        return EvalResult()
    groups, items = test["group"].to_numpy(np.int64), test["item"].to_numpy(np.int64)
    codes = pair_codes(groups, items, fold.n_items)
    distinct = np.unique(codes)  # sorted by group, then item: what ``pairs`` expects
    pairs = pd.DataFrame({"group": distinct // fold.n_items, "item": distinct % fold.n_items})
    where = np.searchsorted(distinct, codes)
    truth = test["rating"].to_numpy(float)
    metrics: dict[str, float] = {"group_rating_n_cases": float(len(test))}
    for name, (rating, _) in strategies.pairs(_members(ctx, np.unique(groups)), pairs).items():
        error = rating[where] - truth
        metrics[f"group_rating_{name}_rmse"] = float(np.sqrt(np.mean(error ** 2)))
        metrics[f"group_rating_{name}_mae"] = float(np.mean(np.abs(error)))
    return EvalResult(metrics)
