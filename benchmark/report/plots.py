"""The swept-parameter figures: a metric curve over a model's numeric swept parameter (DMTL: λ), one
line per variant of its categorical one (DMTL: attention), and the variants' ablation bars.
``curve`` and ``variant`` are :class:`benchmark.core.models_meta.Swept` entries of the model's meta."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.core.models_meta import Swept
from benchmark.report.format import Provenance
from benchmark.report.tables import metric_header, y_label


def _pyplot():
    """matplotlib's pyplot on the non-interactive backend, imported when a report draws (not on import)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _footer(fig, prov: Provenance) -> None:
    fig.text(0.01, 0.005, " ".join(prov.lines()), fontsize=6, color="0.35", ha="left", va="bottom", wrap=True)


def _save(fig, prov: Provenance, path: Path) -> None:
    _footer(fig, prov)
    fig.savefig(path, dpi=120, metadata={"Description": " ".join(prov.lines())})
    _pyplot().close(fig)


def plot_curve(summary: pd.DataFrame, metrics: list[str], k: int, prov: Provenance, path: Path, name: str,
               curve: Swept, variant: Swept | None) -> bool:
    """Metric vs the curve parameter (categorical x axis), one line per variant; False: fewer than 2 values."""
    datasets = sorted(summary["dataset"].unique())
    metrics = [m for m in metrics if f"{m}_mean" in summary and summary[f"{m}_mean"].notna().any()]
    if summary[curve.key].nunique() < 2 or not metrics:
        return False
    fig, axes = _pyplot().subplots(len(datasets), len(metrics), figsize=(3.4 * len(metrics), 2.9 * len(datasets) + 0.5),
                             squeeze=False)
    handles = {}
    for row, dataset in enumerate(datasets):
        rows = summary[summary["dataset"] == dataset]
        values = sorted(rows[curve.key].dropna().unique())
        # categorical positions: λ grids usually include 0 and span decades, neither suits a linear axis
        position = {value: i for i, value in enumerate(values)}
        series = rows.groupby(variant.key, sort=False) if variant is not None else [("", rows)]
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            for level, part in series:
                part = part.sort_values(curve.key)
                handles[level] = ax.errorbar(
                    [position[value] for value in part[curve.key]], part[f"{metric}_mean"],
                    yerr=part[f"{metric}_std"].fillna(0), marker="o", capsize=3, label=level,
                    color=f"C{variant.rank(level) if variant is not None else 0}")
            ax.set_xticks(range(len(values)), [f"{value:g}" for value in values])
            ax.set_xlabel(f"{curve.short} (categorical axis, equally spaced)")
            ax.set_ylabel(y_label(metric, k), fontsize=8)
            ax.set_title(f"{dataset}: {metric_header(metric, k)}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # 0.9235, never "+1.423" and 0-0.001
    if variant is not None:  # one legend for the figure: a dataset may lack some variants
        fig.legend(list(handles.values()), [f"{variant.short}={a}" for a in handles], fontsize=9, loc="upper left",
                   ncol=len(handles), frameon=False, bbox_to_anchor=(0.005, 0.995))
    fig.suptitle(f"{name}: metric vs {curve.short} (mean ± std over seeds; {curve.short} axis categorical)", x=0.7)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    _save(fig, prov, path)
    return True


def plot_ablation(table: pd.DataFrame, metrics: list[str], k: int, prov: Provenance, path: Path, name: str,
                  curve: Swept, variant: Swept) -> bool:
    """Bars per variant, one bar colour per curve value, error bars = std over seeds."""
    metrics = [m for m in metrics if f"{m}_mean" in table and table[f"{m}_mean"].notna().any()]
    if table.empty or not metrics:
        return False
    datasets = sorted(table["dataset"].unique())
    values = sorted(table[curve.key].unique())
    width = 0.8 / len(values)
    fig, axes = _pyplot().subplots(len(datasets), len(metrics), figsize=(3.2 * len(metrics), 2.9 * len(datasets) + 0.6),
                             squeeze=False)
    for row, dataset in enumerate(datasets):
        rows = table[table["dataset"] == dataset]
        levels = [a for a in variant.levels if a in set(rows[variant.key])] + sorted(
            set(rows[variant.key]) - set(variant.levels))
        position = {a: i for i, a in enumerate(levels)}
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            for j, value in enumerate(values):
                part = rows[rows[curve.key] == value]
                if part.empty:
                    continue
                x = np.array([position[a] for a in part[variant.key]]) - 0.4 + width * (j + 0.5)
                ax.bar(x, part[f"{metric}_mean"], width=width * 0.95, yerr=part[f"{metric}_std"].fillna(0),
                       capsize=3, color=f"C{j}", label=f"{curve.short}={value:g}")
            ax.set_xticks(range(len(levels)), levels)
            ax.set_xlabel(f"{variant.short} variant")
            ax.set_ylabel(y_label(metric, k), fontsize=8)
            ax.set_title(f"{dataset}: {metric_header(metric, k)}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)
            low = np.nanmin(rows[f"{metric}_mean"] - rows[f"{metric}_std"].fillna(0))
            high = np.nanmax(rows[f"{metric}_mean"] + rows[f"{metric}_std"].fillna(0))
            if np.isfinite(low) and np.isfinite(high) and high > low:
                # zoom on the differences (bars from 0 would hide an NDCG gap of 0.01); said in the title
                ax.set_ylim(max(0.0, low - 0.3 * (high - low)), high + 0.3 * (high - low))
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.suptitle(f"{name} {variant.short} ablation (mean ± std over seeds; y axes do not start at 0)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _save(fig, prov, path)
    return True
