"""Aggregating runs over seeds and the tables built from them: the main table, the published numbers'
row, and the display of a summary (``mean ± std (n)`` cells, each column's best mean in bold)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from benchmark.core import models_meta
from benchmark.report.collect import Collected, order_key, swept_columns
from benchmark.report.format import Table
from benchmark.report.selection import VALIDATION_METRIC


@dataclass(frozen=True)
class Column:
    metric: str          # MLflow metric name, ``{k}`` replaced by the runs' eval.k
    header: str
    higher_is_better: bool
    decimals: int = 4
    trivial: str | None = None   # the metric of the row's own trivial reference (shown in the cell)


MAIN_COLUMNS = (
    Column("rmse", "RMSE (pooled)", False), Column("mae", "MAE (pooled)", False),
    Column("precision_at_{k}", "P@{k}", True), Column("recall_at_{k}", "R@{k}", True),
    Column("ndcg_at_{k}", "NDCG@{k}", True),
    Column("profile_accuracy", "Profiling acc.", True, trivial="profile_trivial_accuracy"),
    Column("profile_f1_macro", "Profiling macro-F1", True, trivial="profile_trivial_f1_macro"),
    Column("fit_seconds", "Fit (s)", False, 2),
)
PLOT_METRICS = ("ndcg_at_{k}", "precision_at_{k}", "recall_at_{k}", "rmse", "profile_accuracy")


def higher_is_better(metric: str) -> bool:
    return not any(word in metric for word in ("rmse", "mae", "seconds", "loss"))


def arrow(higher: bool) -> str:
    return "↑" if higher else "↓"


def reported() -> tuple[str, models_meta.Reported | None]:
    """The focus model's published numbers (``meta.reported``), if any, and its name."""
    focus = models_meta.focus()
    return (focus.name, focus.reported) if focus is not None else ("", None)


# the label of the published numbers' row (``meta.reported.label``), "" when no model has one
PAPER_LABEL = getattr(reported()[1], "label", "")


# ---------------------------------------------------------------------------------- aggregating

def summarize(runs: pd.DataFrame, metrics: Iterable[str], by: list[str]) -> pd.DataFrame:
    """mean, std (ddof=1, over seeds) and n per group, as columns ``<metric>_mean|_std|_n``."""
    metrics = [m for m in metrics if m in runs.columns]
    grouped = runs.groupby(by, sort=False, dropna=False)[metrics]
    parts = {"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()}
    table = pd.concat({stat: part for stat, part in parts.items()}, axis=1)
    table.columns = [f"{metric}_{stat}" for stat, metric in table.columns]
    order = [f"{m}_{s}" for m in metrics for s in ("mean", "std", "n")]
    return table[order].reset_index()


def main_table(col: Collected) -> pd.DataFrame:
    """One row per dataset and configuration, sorted: the focus model first (by its swept values), then the rest."""
    metrics = ([c.metric.format(k=col.k) for c in MAIN_COLUMNS] + [c.trivial for c in MAIN_COLUMNS if c.trivial]
               + [VALIDATION_METRIC])  # selection reads val_rmse
    swept = swept_columns()
    table = summarize(col.runs, metrics, ["dataset", "label", "model", *swept])
    table = table.rename(columns={"label": "configuration"})
    table["source"] = "measured"
    table["n_expected"] = col.expected_seeds
    table["_key"] = [order_key(m, values, label) for m, values, label in
                     zip(table["model"], table[swept].to_dict("records"), table["configuration"])]
    table = table.sort_values(["dataset", "_key"], kind="stable").drop(columns="_key").reset_index(drop=True)
    front = ["dataset", "configuration", "model", *swept, "source", "n_expected"]
    return table[front + [c for c in table.columns if c not in front]]


def reported_rows(datasets: Iterable[str], k: int) -> pd.DataFrame:
    """The focus model's published numbers (``meta.reported``) for these datasets, at its k only."""
    model, published = reported()
    if published is None:
        return pd.DataFrame()
    rows = [{"dataset": d, "configuration": published.label, "model": model, "source": "reported",
             **{f"{m}_mean": v for m, v in published.metrics[d].items()}}
            for d in datasets if d in published.metrics and k == published.k]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- display

def fmt_cell(mean: float, std: float, n: float, decimals: int, expected: int | None = None,
             show_n: bool = True) -> str:
    if not np.isfinite(mean):
        return "—"
    text = f"{mean:.{decimals}f}"
    if np.isfinite(n) and n > 0:
        if np.isfinite(std):
            text += f" ± {std:.{decimals}f}"
        mark = "‡" if expected and n < expected else ""
        if show_n or mark:
            text += f" ({int(n)}{mark})"
    return text


def same_n(table: pd.DataFrame, columns: Iterable[Column], k: int, expected: int | None) -> bool:
    """True when every cell has the expected number of seeds: then n is said once, not in each cell."""
    counts = [table[f"{c.metric.format(k=k)}_n"] for c in columns if f"{c.metric.format(k=k)}_n" in table]
    values = pd.concat(counts).dropna() if counts else pd.Series(dtype=float)
    values = values[values > 0]
    return bool(len(values)) and bool((values == (expected or values.iloc[0])).all())


def direction_header(column: Column, k: int) -> str:
    """The column's header with the better direction: ``RMSE (pooled) ↓``, ``P@10 ↑``."""
    return f"{column.header.format(k=k)} {arrow(column.higher_is_better)}"


MATCH_TOLERANCE = 1e-9


def no_better(value, reference, higher: bool):
    """True where ``value`` does not beat ``reference`` (a trivial reference matches or beats it)."""
    value, reference = np.asarray(value, dtype=float), np.asarray(reference, dtype=float)
    with np.errstate(invalid="ignore"):
        if higher:
            return np.isfinite(reference) & (value <= reference + MATCH_TOLERANCE)
        return np.isfinite(reference) & (value >= reference - MATCH_TOLERANCE)


def best_mask(means: pd.Series, decimals: int, higher: bool, eligible: pd.Series | None = None,
              reference: float = float("nan")) -> pd.Series:
    """Bold cells of a column: the best mean at the shown decimals (ties all bold), among ``eligible`` rows;
    none when fewer than two rows have a value, or when ``reference`` (the column's best trivial reference)
    matches or beats that best."""
    eligible = means.notna() if eligible is None else eligible & means.notna()
    if int(means.notna().sum()) < 2 or not eligible.any():
        return pd.Series(False, index=means.index)
    shown = means.round(decimals)
    best = shown[eligible].max() if higher else shown[eligible].min()
    if bool(no_better(best, round(reference, decimals) if np.isfinite(reference) else reference, higher)):
        return pd.Series(False, index=means.index)
    return eligible & shown.eq(best)


def display_table(table: pd.DataFrame, columns: Iterable[Column], k: int, expected: int | None,
                  reported: pd.DataFrame | None = None, show_n: bool = True, bold: bool = True,
                  trivial: dict[str, tuple[float, str]] | None = None) -> Table:
    """The formatted table of one dataset: 'mean ± std (n)' cells and each column's best mean (bold,
    ``best_mask``); ``reported`` (published numbers) goes on top, marked †, never bold. ``trivial``: per
    metric, the best trivial reference's (value, name), shown as the last row, never bold; a column's own
    trivial metric (``Column.trivial``, e.g. the trivial classifier's profiling accuracy) is shown in each
    cell, and a cell it matches is marked "= trivial" ("< trivial" where it is worse) and never bold."""
    trivial = trivial or {}
    cells = pd.DataFrame({"Configuration": table["configuration"]})
    best = pd.DataFrame({"Configuration": False}, index=table.index)
    floor = {"Configuration": "best trivial reference"}
    for column in columns:
        metric = column.metric.format(k=k)
        if f"{metric}_mean" not in table or table[f"{metric}_mean"].isna().all():
            continue
        means = table[f"{metric}_mean"]
        header = direction_header(column, k)
        text = [fmt_cell(m, s, n, column.decimals, expected, show_n) for m, s, n in
                zip(means, table[f"{metric}_std"], table[f"{metric}_n"])]
        eligible = means.notna()
        if column.trivial:  # a cell without its trivial reference logged is never shown as a win
            own = table.get(f"{column.trivial}_mean", pd.Series(np.nan, index=table.index))
            matched = pd.Series(no_better(means, own, column.higher_is_better), index=table.index)
            worse = "<" if column.higher_is_better else ">"  # no better, and not equal at the shown decimals

            def mark(t, o, m, mean, worse=worse):
                if not np.isfinite(o):
                    return t
                if not m:
                    return f"{t} (trivial {o:.{column.decimals}f})"
                same = round(float(mean), column.decimals) == round(float(o), column.decimals)
                return f"{t} ({'=' if same else worse} trivial {o:.{column.decimals}f})"
            text = [mark(t, o, m, mean) for t, o, m, mean in zip(text, own, matched, means)]
            eligible &= ~matched & own.notna()
        cells[header] = text
        value, name = trivial.get(metric, (float("nan"), ""))
        floor[header] = f"{value:.{column.decimals}f} ({name})" if np.isfinite(value) else "—"
        best[header] = best_mask(means, column.decimals, column.higher_is_better, eligible, value) & bold
    if any(v != "—" for c, v in floor.items() if c != "Configuration"):
        cells = pd.concat([cells, pd.DataFrame([floor])], ignore_index=True)
        best = pd.concat([best, pd.DataFrame([{c: False for c in best.columns}])], ignore_index=True)
    if reported is not None and len(reported):
        row = {"Configuration": reported.iloc[0]["configuration"] + " †"}
        for column in columns:
            header, metric = direction_header(column, k), column.metric.format(k=k)
            if header in cells:
                value = reported.iloc[0].get(f"{metric}_mean", np.nan)
                row[header] = f"{value:.4f} †" if np.isfinite(value) else "—"
        cells = pd.concat([pd.DataFrame([row]), cells], ignore_index=True)
        best = pd.concat([pd.DataFrame([{c: False for c in best.columns}]), best], ignore_index=True)
    return Table(cells, best.fillna(False).astype(bool))


def metric_header(metric: str, k: int) -> str:
    for column in MAIN_COLUMNS:
        if column.metric.format(k=k) == metric:
            return column.header.format(k=k)
    return metric


def y_label(metric: str, k: int) -> str:
    return f"{metric_header(metric, k)} ({'higher' if higher_is_better(metric) else 'lower'} is better)"


def stat_text(table: pd.DataFrame, metrics: list[str], k: int) -> pd.DataFrame:
    """'mean ± std (n)' columns of a summary, headed by the metrics' names (no bold)."""
    out = pd.DataFrame(index=table.index)
    for metric in metrics:
        if f"{metric}_mean" in table and table[f"{metric}_mean"].notna().any():
            decimals = 2 if "seconds" in metric else 4
            out[metric_header(metric, k)] = [fmt_cell(m, s, n, decimals) for m, s, n in
                                             zip(table[f"{metric}_mean"], table[f"{metric}_std"], table[f"{metric}_n"])]
    return out
