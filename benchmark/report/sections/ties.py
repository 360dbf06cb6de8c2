"""Ties at the cut-off: the configurations whose top k the tie rule completed for many queries.

Every ranking breaks equal scores by one seeded random rule (benchmark/protocol/ranking.py) and
every run logs, per candidate set, the share of queries (users, groups) whose k-th and (k+1)-th
items had equal scores: ``ties_at_<k>`` (test items), ``full_ties_at_<k>`` (catalogue),
``group_<strategy>_ties_at_<k>`` and ``full_group_<strategy>_ties_at_<k>``. Where that share is
above :data:`FLAG_SHARE`, the row's ranking metrics partly measure the tie rule, not the model:
this section lists those rows, so a reader discounts them.
"""

from __future__ import annotations

import re

import pandas as pd

from benchmark.report.context import Context
from benchmark.report.format import markdown

FLAG_SHARE = 0.05  # above this share of queries with a tie across the cut-off, a row is flagged

# metric column (with {k}) -> the candidate set it is about
TIE_METRICS = {"ties_at_{k}": "test items", "full_ties_at_{k}": "full catalogue"}
GROUP_TIES = re.compile(r"^(full_)?group_(?P<strategy>.+)_ties_at_(?P<k>\d+)$")


def tie_columns(runs: pd.DataFrame, k: int) -> dict[str, str]:
    """The tie-share columns present in ``runs``: column -> a short description of its candidate set."""
    columns = {m.format(k=k): where for m, where in TIE_METRICS.items() if m.format(k=k) in runs}
    for column in runs.columns:
        match = GROUP_TIES.match(str(column))
        if match and int(match["k"]) == k and runs[column].notna().any():
            where = "groups, full catalogue" if column.startswith("full_") else "groups, test items"
            columns[column] = f"{where} ({match['strategy'].replace('_', ' ')})"
    return columns


def flagged(runs: pd.DataFrame, k: int, share: float = FLAG_SHARE) -> pd.DataFrame:
    """One row per (dataset, configuration, candidate set) whose mean tie share over seeds is above ``share``."""
    columns = tie_columns(runs, k)
    if not columns or runs.empty:
        return pd.DataFrame(columns=["dataset", "configuration", "candidates", "metric", "share"])
    means = runs.groupby(["dataset", "label"], sort=False)[list(columns)].mean()
    long = means.stack().rename("share").reset_index()
    long.columns = ["dataset", "configuration", "metric", "share"]
    long = long[long["share"] > share]
    long.insert(2, "candidates", long["metric"].map(columns))
    return long.reset_index(drop=True)


def title(dataset: str) -> str:
    return f"Ties at the cut-off: {dataset}"


def section(ctx: Context) -> list[str]:
    k = ctx.k
    if not tie_columns(ctx.col.runs, k):
        return []  # runs made before ties were logged
    table = flagged(ctx.col.runs, k)
    ctx.csv(table, "ties.csv")
    md = ["## Ties at the cut-off", "",
          f"Equal scores are ordered by a seeded random permutation (docs/protocol.md, \"Ties\"), never by item id, "
          f"and models rank by their scores before any clipping to the rating scale. Listed here: every configuration "
          f"whose mean share of queries with a tie across position {k} (the {k}-th and {k + 1}-th items scored alike) "
          f"is above {FLAG_SHARE:.0%}, per candidate set. Their ranking metrics on those candidates partly measure the "
          f"tie rule, not the model; a reference that scores every item alike (the constants) ties everywhere by "
          f"construction.", ""]
    if table.empty:
        return md + [f"No configuration is above {FLAG_SHARE:.0%}.", ""]
    for dataset, rows in table.groupby("dataset", sort=False):
        wide = (rows.pivot_table(index="configuration", columns="candidates", values="share", sort=False)
                .map(lambda v: "" if pd.isna(v) else f"{v:.1%}").reset_index())
        wide.columns.name = None
        # users first (test items, then the catalogue), then the groups in the same order
        order = sorted(wide.columns[1:], key=lambda c: (c.startswith("groups"), "full catalogue" in c, c))
        wide = wide[["configuration", *order]]
        md += [f"### {title(dataset)}", "", markdown(wide), ""]
    return md
