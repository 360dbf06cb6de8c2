"""Full-catalogue top-N evaluation (docs/protocol.md, "Metrics"), beside the test-items-only metrics.

Per test user, every catalogue item (``dataset.item_features``) that is not in the user's
training part is ranked by the model's score (before any clipping to the rating scale; ties by the
seeded random rule of benchmark/protocol/ranking.py; ``full_ties_at_k`` = the share of users whose
top k the tie rule completed). Relevant = the user's
test items rated >= ``eval.threshold``. Per user, with binary relevance and k = ``eval.k``:

- ``precision`` = hits in the top k / k; ``recall`` = hits / |relevant|;
- ``ndcg`` = DCG / ideal DCG, gain 1 per hit, discount 1 / log2(rank + 1);
- ``hit_rate`` = 1 if any hit in the top k; ``map`` = sum over hits of P@rank / min(k, |relevant|);
- ``mrr`` = 1 / rank of the first relevant item in the whole ranking (no cut-off).

Metrics are averaged over the test users with at least one relevant item (``full_n_users``);
``full_coverage_at_k`` is the share of the catalogue in at least one test user's top k. Run
metrics are ``full_<metric>_at_<k>`` (``full_mrr`` has no k).

Groups: each group ranks every item that not every member rated in training by its group score
(benchmark/evaluation/scoring.py: a GroupScorer's own, else ALL its members' predictions
aggregated) and is scored against its own relevant items (the group truth of the test-items group
evaluation rated >= threshold: KMeans, the items whose raters' mean test rating >= threshold, rated
by >= ``eval.group.min_raters`` members; real groups, the group's own ratings):
``full_group_<aggregation>_<metric>_at_<k>``.

This module only registers the evaluator: candidates come from benchmark/protocol/candidates.py,
scoring, chunking and ranking from the one path of benchmark/evaluation/pipeline.py (user scores:
the model's ``score_all`` when it has one, models.base.ScoresAll, else ``predict`` on the pairs,
a chunk of users at a time; ranking is numpy over a chunk's score matrix, metrics.py).
"""

from __future__ import annotations

import time

from benchmark.evaluation.base import EvalContext, EvalResult, evaluator, setting
from benchmark.evaluation.groups import aggregations_of, group_candidates
from benchmark.evaluation.pipeline import catalogue_metrics


@evaluator("full_catalogue", grouping_free=(r"full_(?!group_).*",))
def full_catalogue(ctx: EvalContext) -> EvalResult:
    """``full_*`` metrics: every test user ranks the whole catalogue minus their training items; every
    group with members ranks it minus the items all its members trained on (``full_group_*``)."""
    if not bool(setting(ctx.config, "full_catalogue", True)):
        return EvalResult()
    started = time.perf_counter()
    result = catalogue_metrics(ctx, lambda: group_candidates(ctx).frame, aggregations_of(ctx.config))
    result.metrics["full_seconds"] = time.perf_counter() - started
    return result
