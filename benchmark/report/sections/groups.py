"""The groupings' size statistics (``grouping_size_*`` metrics), and the modal grouping K per dataset."""

from __future__ import annotations

import pandas as pd

from benchmark.report.context import Context
from benchmark.report.format import markdown
from benchmark.report.sections.references import present

SIZE_METRICS = {"grouping_n_nonempty_groups": "groups", "grouping_size_mean": "mean size",
                "grouping_size_median": "median size", "grouping_size_max": "max size",
                "grouping_size_singleton_share": "singleton share",
                "grouping_real_size_mean": "real groups: mean size",
                "grouping_real_size_singleton_share": "real groups: singleton share"}


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def modal_grouping(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with their dataset's most common ``grouping.k``: the K grid's variants (conf/sweep/group_k.yaml)
    stay out of the swept-parameter sections, which compare a model's variants at one K."""
    if runs.empty or "config" not in runs:
        return runs
    k = pd.Series([c.get("grouping.k") for c in runs["config"]], index=runs.index)
    modal = k.groupby(runs["dataset"]).transform(lambda v: v.mode().iloc[0] if v.notna().any() else None)
    return runs[(k == modal) | k.isna()]


def group_size_table(runs: pd.DataFrame) -> tuple[list[str], pd.DataFrame]:
    metrics = present(runs, list(SIZE_METRICS))
    if not metrics:
        return [], pd.DataFrame()
    frame = runs.assign(grouping=[str(c.get("grouping", "?")) for c in runs["config"]],
                        k=[_number(c.get("grouping.k")) for c in runs["config"]])
    table = frame.groupby(["dataset", "grouping", "k"], sort=True)[metrics].mean().reset_index()
    table["runs"] = frame.groupby(["dataset", "grouping", "k"], sort=True).size().to_numpy()
    shown = table.rename(columns=SIZE_METRICS).assign(k=table["k"].map(lambda v: f"{v:g}"))
    for column in ("mean size", "median size", "max size", "groups", "real groups: mean size"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: f"{v:.1f}")
    for column in ("singleton share", "real groups: singleton share"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: f"{v:.1%}")
    lines = ["## Group structure", "",
             "Group sizes of each grouping (distinct members per group), averaged over runs (seeds and models "
             "share the grouping of a seed). Mostly singleton groups make group metrics close to user-level ones.",
             "", markdown(shown), ""]
    return lines, table


def section(ctx: Context) -> list[str]:
    lines, sizes = group_size_table(ctx.col.all_runs)
    if lines:
        ctx.csv(sizes, "group_sizes.csv")
    return lines
