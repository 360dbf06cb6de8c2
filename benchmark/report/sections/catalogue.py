"""The full-catalogue ranking tables (``full_*`` metrics, user and group level), one per dataset."""

from __future__ import annotations

import pandas as pd

from benchmark.report.context import Context
from benchmark.report.format import Table
from benchmark.report.sections.references import REFERENCE_MODELS, present
from benchmark.report.tables import Column, display_table, summarize

FULL_METRICS = {"full_precision_at_{k}": "P@{k}", "full_recall_at_{k}": "R@{k}", "full_ndcg_at_{k}": "NDCG@{k}",
                "full_hit_rate_at_{k}": "HR@{k}", "full_mrr": "MRR", "full_map_at_{k}": "MAP@{k}",
                "full_coverage_at_{k}": "Coverage@{k}"}


def _display(ctx: Context, runs: pd.DataFrame, columns: list[tuple[str, str]], bold: bool) -> Table:
    """Summary of ``runs`` per configuration; reference predictors (``bold=False``) marked, never bold."""
    specs = [Column(metric, header.rsplit(" ", 1)[0], True) for metric, header in columns]
    table = summarize(runs, [m for m, _ in columns], ["label"]).rename(columns={"label": "configuration"})
    if not bold:
        table["configuration"] = table["configuration"] + " (reference)"
    return display_table(table, specs, ctx.k, ctx.col.expected_seeds, show_n=ctx.show_n, bold=bold)


def full_catalogue_tables(ctx: Context, dataset: str, order: list[str] | None = None) -> tuple[list[str], pd.DataFrame]:
    """Markdown lines and the summary rows for the ``full_*`` metrics of one dataset."""
    k = ctx.k
    in_dataset = ctx.col.runs[ctx.col.runs["dataset"] == dataset]
    every = ctx.col.all_runs[ctx.col.all_runs["dataset"] == dataset]  # group tables: every grouping
    user_metrics = present(in_dataset, [m.format(k=k) for m in FULL_METRICS])
    if not user_metrics:
        return [], pd.DataFrame()
    lines = [f"## Full-catalogue ranking: {dataset}", "",
             "Every test user ranks every catalogue item not in their training part; relevant = their test items "
             "rated ≥ the threshold; binary gain; averaged over users with a relevant item. ↑ = higher is better. "
             "Reference predictors come last, marked (reference), never bold; the oracle is the ceiling.", ""]
    if order:  # the main table's row order
        rank = {label: i for i, label in enumerate(order)}
        in_dataset = in_dataset.sort_values("label", key=lambda s: s.map(rank).fillna(len(rank)), kind="stable")
        every = every.sort_values("label", key=lambda s: s.map(rank).fillna(len(rank)), kind="stable")

    def split(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        refs = runs[runs["model"].isin(REFERENCE_MODELS)]
        return (runs[~runs["model"].isin(REFERENCE_MODELS)],
                refs.sort_values("model", key=lambda s: s.map(REFERENCE_MODELS.index), kind="stable"))

    real, refs = split(in_dataset)
    columns = [(m, f"{FULL_METRICS[next(t for t in FULL_METRICS if t.format(k=k) == m)].format(k=k)} ↑")
               for m in user_metrics]
    tables = [_display(ctx, part, columns, bold) for part, bold in ((real, True), (refs, False)) if len(part)]
    lines += [Table.concat(tables).markdown(), ""]
    group_metrics = sorted(c for c in every.columns if c.startswith("full_group_")
                           and (c.endswith(f"_ndcg_at_{k}") or c.endswith(f"_recall_at_{k}"))
                           and every[c].notna().any())
    if group_metrics:
        columns = [(m, m[len("full_group_"):].replace(f"_ndcg_at_{k}", f" NDCG@{k} ↑")
                    .replace(f"_recall_at_{k}", f" R@{k} ↑").replace("_", " ")) for m in group_metrics]
        real_all, refs_all = split(every)
        tables = [_display(ctx, part, columns, bold) for part, bold in ((real_all, True), (refs_all, False))
                  if len(part)]
        lines += ["Groups (full catalogue): each group ranks every item not rated in training by all its members, "
                  "scored by the aggregation of all members' predictions.", "",
                  Table.concat(tables).markdown(), ""]
    summary = pd.concat([_summary(in_dataset, user_metrics), _summary(every, group_metrics)], axis=1)
    return lines, summary.reset_index().rename(columns={"label": "configuration"}).assign(dataset=dataset)


def _summary(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    summary = runs.groupby("label", sort=False)[metrics].agg(["mean", "std", "count"])
    summary.columns = [f"{m}_{s.replace('count', 'n')}" for m, s in summary.columns]
    return summary


def section(ctx: Context) -> list[str]:
    md, parts = [], []
    for dataset in ctx.datasets:
        order = list(ctx.main.loc[ctx.main["dataset"] == dataset, "configuration"])
        lines, part = full_catalogue_tables(ctx, dataset, order)
        md += lines
        parts.append(part)
    if any(len(p) for p in parts):
        ctx.csv(pd.concat(parts, ignore_index=True), "full_catalogue.csv")
    return md
