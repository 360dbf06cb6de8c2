"""Group-level (``group_*``) and cold-start (``cold_*``) metrics, one table per kind and dataset."""

from __future__ import annotations

import pandas as pd

from benchmark.report.context import Context
from benchmark.report.sections.group_recommendation import METRIC as GROUP_ITEM_METRIC
from benchmark.report.sections.references import REFERENCE_MODELS
from benchmark.report.tables import MAIN_COLUMNS, Column, display_table, higher_is_better, summarize

SECONDARY_PREFIXES = {"group_": "Group-level metrics", "cold_": "Cold-start metrics"}
# group-item runs' metrics (group_sampled_*, group_full_*, group_heldout*, their counts and tie shares):
# the Group recommendation section shows them
GROUP_ITEM_PREFIXES = ("group_sampled_", "group_full_", "group_heldout", "group_split_", "group_ties_")


def short_header(metric: str, prefix: str, k: int) -> str:
    """``group_least_misery_precision_at_10`` -> ``least_misery P@10``: narrow columns."""
    name = metric[len(prefix):]
    for column in MAIN_COLUMNS:
        key = column.metric.format(k=k)
        if name == key or name.endswith("_" + key):
            return (name[:-len(key)].rstrip("_").replace("_", " ") + " " + column.header.format(k=k)).strip()
    return name


def secondary_table(ctx: Context) -> pd.DataFrame:
    # scores only: counts such as group_n_groups describe the evaluation, and tie shares
    # (``*_ties_at_k``: the ties section) the ranking, they are not compared
    col = ctx.col
    metrics = [m for m in col.metrics if m.startswith(tuple(SECONDARY_PREFIXES)) and not m.endswith("_std")
               and not any(m.startswith(f"{p}n_") for p in SECONDARY_PREFIXES) and "ties_at_" not in m
               and not GROUP_ITEM_METRIC.match(m) and not m.startswith(GROUP_ITEM_PREFIXES)]  # their own section
    if not metrics:
        return pd.DataFrame()
    runs = col.all_runs[col.all_runs[metrics].notna().any(axis=1) & ~col.all_runs["model"].isin(REFERENCE_MODELS)]
    return summarize(runs, metrics, ["dataset", "label"]).rename(columns={"label": "configuration"})


def section(ctx: Context) -> list[str]:
    secondary = secondary_table(ctx)
    if secondary.empty:
        return []
    ctx.csv(secondary, "secondary_metrics.csv")
    md = []
    for prefix, title in SECONDARY_PREFIXES.items():
        metrics = [c[:-5] for c in secondary.columns if c.startswith(prefix) and c.endswith("_mean")]
        if not metrics:
            continue
        columns = [Column(m, short_header(m, prefix, ctx.k), higher_is_better(m)) for m in metrics]
        for dataset in sorted(secondary["dataset"].unique()):
            rows = secondary[(secondary["dataset"] == dataset)
                             & secondary[[f"{m}_mean" for m in metrics]].notna().any(axis=1)]
            if len(rows):
                md += [f"## {title}: {dataset}", "",
                       display_table(rows.reset_index(drop=True), columns, ctx.k, ctx.col.expected_seeds,
                                     show_n=ctx.show_n).markdown(), ""]
    return md
