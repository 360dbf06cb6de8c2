"""``eval.protocol=authors``: the seed paper's authors' keys, relevance rule and metric formulas
(benchmark/protocol/authors.py; docs/protocol.md, "The authors' protocol").

On the fold's test rows as the model scored them (ranked by the score before any clip), with the
threshold ``eval.authors.threshold`` (3.7, the authors' ``relevance_threshold``):

* ``authors_{precision,recall,ndcg}_at_k``: keys = groups (the run's grouping: KMeans labels, or real groups
  with users in no group as singletons; the truth is the group's rating where it has one): the authors'
  numbers. ``authors_n_keys`` and ``authors_keys_without_relevant`` (recall NaN, skipped in its mean) too.
* ``authors_user_{precision,recall,ndcg}_at_k``: the same formulas with one key per user (the protocol
  ablation's "metric formula" step, before the "keys" step).

With ``eval.protocol=clean`` (the default) it adds nothing; every other evaluator runs as before (the
clean metrics of an authors' run are the clean formulas on the authors' split).
"""

from __future__ import annotations

from benchmark.core.errors import require
from benchmark.evaluation.base import EvalContext, EvalResult, evaluator, setting
from benchmark.evaluation.metrics import ranking_scores
from benchmark.protocol.authors import AUTHORS_THRESHOLD, key_rows, per_key_metrics, summarize_keys

# clean: the harness's; authors: the authors' whole protocol (the run's split and grouping become theirs,
# benchmark/run/job.py ``authors_defaults``); authors_metrics: only their keys, rule and formulas, on the
# split and grouping the run names (the protocol ablation's steps)
PROTOCOLS = ("clean", "authors", "authors_metrics")


def protocol_of(config) -> str:
    value = setting(config, "protocol", "clean")
    require(value in PROTOCOLS, f"eval.protocol={value!r} is unknown; use eval.protocol=clean (the harness's), "
                                f"eval.protocol=authors (the seed paper's authors' whole protocol, leaks included) or "
                                f"eval.protocol=authors_metrics (their metrics on this run's split and grouping)")
    return value


def threshold_of(config) -> float:
    value = setting(setting(config, "authors", None), "threshold", AUTHORS_THRESHOLD)
    require(isinstance(value, (int, float)) and not isinstance(value, bool),
            f"eval.authors.threshold={value!r} must be a number such as 3.7 (the authors')")
    return float(value)


@evaluator("authors")
def authors_protocol(ctx: EvalContext) -> EvalResult:
    if protocol_of(ctx.config) == "clean":
        return EvalResult()
    k, threshold = ctx.k, threshold_of(ctx.config)
    test = ctx.predictions[["user", "item", "rating"]].assign(score=ranking_scores(ctx.predictions))
    users = per_key_metrics(test.rename(columns={"user": "key", "rating": "truth"}), k, threshold)
    rows = key_rows(test, ctx.groups.members, ctx.dataset.group_ratings)
    keys = per_key_metrics(rows, k, threshold)
    metrics = {**summarize_keys(keys, k, "authors_"), **summarize_keys(users, k, "authors_user_")}
    metrics["authors_threshold"] = threshold
    return EvalResult(metrics, {"authors_per_key": keys, "authors_per_user": users.rename(columns={"key": "user"})})


def tags(cfg) -> dict[str, str]:
    """The run's tags naming the authors' pieces it uses and the leaks they bring (every table shows them):
    ``protocol`` = clean | authors | mixed, ``protocol_pieces``, ``leak``."""
    split = str(setting(setting(cfg, "split", None), "_target_", ""))
    grouping = setting(cfg, "grouping", None)
    pieces, leaks = [], []
    if split.endswith("protocol.authors.authors_split"):
        pieces.append("split")
        leaks.append("scaler_all_rows" if setting(setting(cfg, "split", None), "scale", None) else "none_scaled")
    if str(setting(grouping, "_target_", "")).endswith("protocol.authors.authors_kmeans"):
        pieces.append("grouping")
        if setting(grouping, "rows", "all") == "all":
            leaks.append("kmeans_all_rows")
    if protocol_of(setting(cfg, "eval", None)) != "clean":
        pieces.append("eval")
    if not pieces:
        return {}
    protocol = "authors" if pieces == ["split", "grouping", "eval"] else "mixed"
    leaks = [leak for leak in leaks if leak != "none_scaled"]
    return {"protocol": protocol, "protocol_pieces": ",".join(pieces), "leak": ",".join(leaks) or "none"}
