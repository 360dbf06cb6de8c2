"""``python -m benchmark.report``: MLflow runs of one sweep -> tables, plots, significance tests.

It never trains: it reads the experiment's job runs (tag ``groupbench.role=job``), their
params, metrics and ``per_user_metrics.csv`` artifacts, and writes into ``--out``
(default ``reports/<experiment>/``):

- ``report.md``           every section below, with the provenance line on top;
- ``main_table.csv|.tex`` one row per model configuration and dataset, mean / std / n over seeds;
- ``lambda_sweep.csv|.png``, ``attention_ablation.csv|.png`` for DMTL's λ and attention variants;
- ``significance.csv``    the best DMTL configuration against every baseline, paired per user;
- ``secondary_metrics.csv`` group-level (``group_*``) and cold-start (``cold_*``) metrics, if logged;
- ``completeness.csv``    every cell whose seeds lack a FINISHED run.

Resumed sweeps keep results in runs of earlier invocations, so runs are collected by
experiment and the latest FINISHED run per ``config_hash`` is kept. Every file states the
command, the date, the tracking store and the experiment it came from; the files are also
logged under ``report/`` in the latest sweep parent run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from benchmark.core.errors import GroupbenchError, TrackingError
from benchmark.report import sections
from benchmark.report.commits import commit_lines
from benchmark.report.format import Provenance, latex, markdown, read_csv, tex, write_csv  # noqa: F401 (read_csv: the report's API)
from benchmark.report.results import latest_results, safe_name
from benchmark.report.selection import (
    SELECTION_RULE,
    VALIDATION_METRIC,
    best_by_validation,
    fill_val_rmse,
    tuned_sections,
    tuned_trials,
)
from benchmark.report.stats import ALPHA, bootstrap_ci, holm, paired_test, per_unit_means, verdict
from benchmark.tracking.artifacts import download_table
from benchmark.tracking.queries import retry_locked, search_all
from benchmark.tracking.store import prepare_store
from benchmark.tracking.tracker import git_commit, resolve_uri

log = logging.getLogger("benchmark.report")

REFERENCE_MODEL = "dmtl"
# Params that define a model configuration (config_hash's keys without seed and dataset).
CONFIG_PREFIXES = ("model.", "split.", "grouping.", "eval.")
ATTENTION_ORDER = ("softmax", "none", "uniform")
SECONDARY_PREFIXES = {"group_": "Group-level metrics", "cold_": "Cold-start metrics"}
PER_USER_METRICS = sections.SIGNIFICANCE_METRICS

# The paper's numbers (arXiv 2504.06274), obtained under a protocol the authors did not publish.
PAPER_REPORTED = {
    "ml100k": {"precision_at_10": 0.6867, "recall_at_10": 0.8063},
    "itmrec": {"precision_at_10": 0.3182, "recall_at_10": 0.9306},
}
PAPER_LABEL = "DMTL (paper, reported)"

DISPLAY_NAMES = {
    "dmtl": "DMTL", "svd": "SVD", "svdpp": "SVD++", "pmf": "PMF", "nmf": "NMF", "slope_one": "SlopeOne",
    "co_clustering": "CoClustering", "baseline_only": "BaselineOnly", "normal_predictor": "NormalPredictor",
    "knn_basic": "KNNBasic", "knn_with_means": "KNNWithMeans", "knn_with_zscore": "KNNWithZScore",
    "knn_baseline": "KNNBaseline", "neural_mf": "NeuralMF", "lenskit_item_knn": "LensKit ItemKNN",
    "lenskit_user_knn": "LensKit UserKNN", "lenskit_biased_mf": "LensKit BiasedMF (ALS)", "lenskit_bias": "LensKit Bias",
    "oracle": "Oracle", "constant": "ConstantTop", "global_mean": "GlobalMean", "random": "Random",
    "item_mean": "ItemMean", "popularity": "Popularity",
}


@dataclass(frozen=True)
class Column:
    metric: str          # MLflow metric name, ``{k}`` replaced by the runs' eval.k
    header: str
    higher_is_better: bool
    decimals: int = 4


MAIN_COLUMNS = (
    Column("rmse", "RMSE (pooled)", False), Column("mae", "MAE (pooled)", False),
    Column("precision_at_{k}", "P@{k}", True), Column("recall_at_{k}", "R@{k}", True),
    Column("ndcg_at_{k}", "NDCG@{k}", True),
    Column("profile_accuracy", "Profiling acc.", True), Column("profile_f1_macro", "Profiling macro-F1", True),
    Column("fit_seconds", "Fit (s)", False, 2),
)
PLOT_METRICS = ("ndcg_at_{k}", "precision_at_{k}", "recall_at_{k}", "rmse", "profile_accuracy")


def higher_is_better(metric: str) -> bool:
    return not any(word in metric for word in ("rmse", "mae", "seconds", "loss"))


@dataclass
class Collected:
    """Job runs of one experiment: the kept (latest FINISHED per config_hash) and the rest."""
    runs: pd.DataFrame                   # kept runs: meta columns + one column per metric
    metrics: list[str]
    incomplete: pd.DataFrame             # one row per (cell, seed) without a FINISHED run
    expected_seeds: int
    expected_source: str
    parent_run_id: str | None
    k: int


# ---------------------------------------------------------------------------------- collecting

def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _seed(value) -> int:
    number = _float(value)
    return int(number) if np.isfinite(number) else -1


def configuration_label(model: str, lam: float, attention: str | None) -> str:
    name = DISPLAY_NAMES.get(model, model)
    if model == REFERENCE_MODEL or (np.isfinite(lam) and attention):
        parts = ([f"λ={lam:g}"] if np.isfinite(lam) else []) + ([attention] if attention else [])
        return f"{name} ({', '.join(parts)})" if parts else name
    return name


def count_values(value) -> int:
    """How many values a sweep override gives: ``0,1,2``, ``range(0,5)``, a list, or one value."""
    if isinstance(value, (list, tuple)):
        return len(value)
    text = str(value).strip()
    found = re.fullmatch(r"range\((-?\d+)\s*(?:,\s*(-?\d+))?\s*(?:,\s*(-?\d+))?\)", text)
    if found:
        a, b, step = (int(x) if x is not None else None for x in found.groups())
        return len(range(a, b, step or 1)) if b is not None else len(range(a))
    return len([part for part in text.split(",") if part.strip()])


def sweep_seed_count(parent) -> int | None:
    """Seeds per cell of a sweep invocation: its command-line ``seed=`` override, else its grids'."""
    params = parent.data.params
    for token in str(params.get("overrides", "")).split():
        if token.lstrip("+").startswith("seed="):
            return count_values(token.split("=", 1)[1])
    try:
        grids = json.loads(params.get("grids", "null"))
    except ValueError:
        return None
    if not isinstance(grids, dict) or not grids:
        return None
    counts = [count_values(grid["seed"]) if isinstance(grid, dict) and "seed" in grid else 1
              for grid in grids.values()]
    return max(counts)


def _expected_seeds(parents: list, cell_seeds: pd.Series) -> tuple[int, str]:
    """max(the latest sweep invocation's seed count, the most seeds any cell has)."""
    most = int(cell_seeds.max()) if len(cell_seeds) else 0
    for parent in parents:  # newest first
        count = sweep_seed_count(parent)
        if count is not None:
            if count >= most:
                return count, f"seed values of sweep run {parent.info.run_id}"
            return most, f"the most seeds of any cell; the latest sweep run asked for {count}"
    return most, "the most seeds of any cell; no sweep run logged its grid"


def collect(client, experiment: str, uri: str) -> Collected:
    found = retry_locked(client.get_experiment_by_name, experiment)
    if found is None:
        raise TrackingError(f"experiment {experiment!r} not found in tracking store {uri}; run "
                            f"`python -m benchmark +sweep={experiment}` first, or pass --experiment / --tracking-uri")
    jobs = search_all(client, found.experiment_id, "tags.`groupbench.role` = 'job'")
    if not jobs:
        raise TrackingError(f"experiment {experiment!r} in {uri} has no job runs (tag groupbench.role=job); "
                            f"run the sweep first")
    parents = sorted(search_all(client, found.experiment_id, "tags.`groupbench.role` = 'sweep'"),
                     key=lambda r: r.info.start_time or 0, reverse=True)

    rows = []
    for run in jobs:
        params, tags = run.data.params, run.data.tags
        config = {k: v for k, v in params.items() if k.startswith(CONFIG_PREFIXES)}
        model = tags.get("model") or params.get("model.name", "?")
        rows.append({
            "run_id": run.info.run_id, "status": run.info.status, "start_time": run.info.start_time or 0,
            "config_hash": tags.get("config_hash", run.info.run_id), "model": model,
            "dataset": tags.get("dataset") or params.get("dataset.name", "?"),
            "seed": _seed(tags.get("seed", params.get("seed"))),
            # a tuned sweep's final runs of one model are one cell, whatever each seed's study chose
            "signature": f"tuned:{model}" if "tuned.trials" in tags else json.dumps(config, sort_keys=True),
            "config": config, "tuned_trials": tags.get("tuned.trials"), "tuned_chosen": tags.get("tuned.chosen", ""),
            "lambda_profile": _float(params.get("model.lambda_profile")),
            "attention": params.get("model.attention") or None,
            "error": tags.get("error", ""), "eval_k": params.get("eval.k"),
            "dataset_sha256": tags.get("dataset_sha256", ""), "git_commit": tags.get("git_commit", ""),
            **run.data.metrics,
        })
    frame = pd.DataFrame(rows)
    meta = ["run_id", "status", "start_time", "config_hash", "model", "dataset", "seed", "signature", "config",
            "lambda_profile", "attention", "error", "eval_k", "tuned_trials", "tuned_chosen", "dataset_sha256",
            "git_commit"]
    metrics = sorted(c for c in frame.columns if c not in meta)
    frame["label"] = _labels(frame)
    tuned = frame["tuned_trials"].notna()  # tuned final runs: one cell per model, whatever each seed chose
    frame.loc[tuned, "label"] = [DISPLAY_NAMES.get(m, m) + (" (tuned)" if str(t) != "0" else "")
                                 for m, t in zip(frame.loc[tuned, "model"], frame.loc[tuned, "tuned_trials"])]
    frame.loc[tuned, ["lambda_profile", "attention"]] = [np.nan, None]

    finished = frame[frame["status"] == "FINISHED"].sort_values("start_time")
    kept = latest_results(finished)  # per (config hash, data hash); one data version per dataset
    # the newest non-FINISHED run of each config_hash that never finished: its cell misses that seed
    unfinished = (frame[~frame["config_hash"].isin(kept["config_hash"])].sort_values("start_time")
                  .drop_duplicates("config_hash", keep="last"))

    cell_seeds = kept.groupby(["dataset", "signature"])["seed"].nunique()
    expected, source = _expected_seeds(parents, cell_seeds)
    all_seeds = sorted(frame["seed"].unique())

    cells = frame.drop_duplicates(["dataset", "signature"])[["dataset", "signature", "label", "model"]]
    incomplete = []
    for cell in cells.itertuples(index=False):
        in_cell = (frame["dataset"] == cell.dataset) & (frame["signature"] == cell.signature)
        done = set(kept.loc[in_cell.loc[kept.index], "seed"])
        failed = unfinished[in_cell.loc[unfinished.index]]
        for run in failed.itertuples(index=False):
            if run.seed not in done:
                incomplete.append({"dataset": cell.dataset, "configuration": cell.label, "seed": run.seed,
                                   "status": run.status, "run_id": run.run_id, "error": run.error})
        listed = done | set(failed["seed"])
        never_run = [seed for seed in all_seeds if seed not in listed][:max(0, expected - len(listed))]
        for seed in never_run:
            incomplete.append({"dataset": cell.dataset, "configuration": cell.label, "seed": seed,
                               "status": "MISSING (no run)", "run_id": "", "error": ""})
        if len(listed) + len(never_run) < expected:  # seeds no cell ever ran: their values are unknown here
            incomplete.append({"dataset": cell.dataset, "configuration": cell.label, "seed": -1,
                               "status": f"MISSING ({expected - len(listed) - len(never_run)} more seed(s), no run)",
                               "run_id": "", "error": ""})
    incomplete_frame = pd.DataFrame(incomplete, columns=["dataset", "configuration", "seed", "status",
                                                         "run_id", "error"])
    ks = kept["eval_k"].dropna()
    k = int(ks.mode().iloc[0]) if len(ks) else 10
    return Collected(kept.reset_index(drop=True), metrics, incomplete_frame, expected, source,
                     parents[0].info.run_id if parents else None, k)


def _labels(frame: pd.DataFrame) -> pd.Series:
    """Readable configuration names; configurations sharing a name get their differing params appended."""
    base = pd.Series([configuration_label(m, lam, att) for m, lam, att in
                      zip(frame["model"], frame["lambda_profile"], frame["attention"])], index=frame.index)
    labels = base.copy()
    for (dataset, label), group in frame.groupby([frame["dataset"], base]):
        signatures = group.drop_duplicates("signature")
        if len(signatures) < 2:
            continue
        configs = pd.DataFrame(list(signatures["config"]), index=signatures["signature"])
        differing = [c for c in configs.columns if configs[c].nunique(dropna=False) > 1]
        for signature, config in configs[differing].iterrows():
            extra = ", ".join(f"{c.split('.', 1)[-1]}={config[c]}" for c in differing)
            labels[group.index[group["signature"] == signature]] = f"{label} [{extra}]"
    return labels


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


def _order_key(model: str, lam: float, attention: str | None, label: str) -> tuple:
    is_ref = model == REFERENCE_MODEL
    att = ATTENTION_ORDER.index(attention) if attention in ATTENTION_ORDER else len(ATTENTION_ORDER)
    return (0 if is_ref else 1, att if is_ref else 0, lam if np.isfinite(lam) else -1.0, label)


def main_table(col: Collected) -> pd.DataFrame:
    """One row per dataset and configuration, sorted DMTL first (by attention, λ), then baselines."""
    metrics = [c.metric.format(k=col.k) for c in MAIN_COLUMNS] + [VALIDATION_METRIC]  # selection reads val_rmse
    table = summarize(col.runs, metrics, ["dataset", "label", "model", "lambda_profile", "attention"])
    table = table.rename(columns={"label": "configuration"})
    table["source"] = "measured"
    table["n_expected"] = col.expected_seeds
    table["_key"] = [_order_key(m, lam, a, lbl) for m, lam, a, lbl in
                     zip(table["model"], table["lambda_profile"], table["attention"], table["configuration"])]
    table = table.sort_values(["dataset", "_key"], kind="stable").drop(columns="_key").reset_index(drop=True)
    front = ["dataset", "configuration", "model", "lambda_profile", "attention", "source", "n_expected"]
    return table[front + [c for c in table.columns if c not in front]]


def reported_rows(datasets: Iterable[str], k: int) -> pd.DataFrame:
    rows = [{"dataset": d, "configuration": PAPER_LABEL, "model": REFERENCE_MODEL, "source": "reported",
             **{f"{m}_mean": v for m, v in PAPER_REPORTED[d].items()}}
            for d in datasets if d in PAPER_REPORTED and k == 10]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- formatting

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


def display_table(table: pd.DataFrame, columns: Iterable[Column], k: int, expected: int | None,
                  bold: str = "**{}**", reported: pd.DataFrame | None = None,
                  escape: Callable[[str], str] = str, show_n: bool = True) -> pd.DataFrame:
    """The formatted table of one dataset: 'mean ± std (n)' cells, the best mean per column bolded.

    ``escape`` turns each cell's text into the target format before ``bold`` wraps it (LaTeX).
    """
    out = pd.DataFrame({"Configuration": table["configuration"]})
    for column in columns:
        metric = column.metric.format(k=k)
        if f"{metric}_mean" not in table or table[f"{metric}_mean"].isna().all():
            continue
        means = table[f"{metric}_mean"]
        best = means.max() if column.higher_is_better else means.min()
        cells = [escape(fmt_cell(m, s, n, column.decimals, expected, show_n)) for m, s, n in
                 zip(means, table[f"{metric}_std"], table[f"{metric}_n"])]
        out[direction_header(column, k)] = [bold.format(c) if m == best else c for c, m in zip(cells, means)]
    if reported is not None and len(reported):
        row = {"Configuration": PAPER_LABEL + " †"}
        for column in columns:
            header, metric = direction_header(column, k), column.metric.format(k=k)
            if header in out:
                value = reported.iloc[0].get(f"{metric}_mean", np.nan)
                row[header] = escape(f"{value:.4f} †" if np.isfinite(value) else "—")
        out = pd.concat([pd.DataFrame([row]), out], ignore_index=True)
    out["Configuration"] = out["Configuration"].map(escape)
    out.columns = [escape(c) for c in out.columns]
    return out


def direction_header(column: Column, k: int) -> str:
    """The column's header with the better direction: ``RMSE (pooled) ↓``, ``P@10 ↑``."""
    return f"{column.header.format(k=k)} {sections.arrow(column.higher_is_better)}"


# ---------------------------------------------------------------------------------- DMTL sections

def dmtl_summary(col: Collected) -> pd.DataFrame:
    runs = sections.modal_grouping(col.runs[col.runs["model"] == REFERENCE_MODEL])
    metrics = [m.format(k=col.k) for m in PLOT_METRICS]
    if runs.empty:
        return pd.DataFrame()
    runs = runs.assign(attention=runs["attention"].fillna("softmax"))
    table = summarize(runs, metrics, ["dataset", "attention", "lambda_profile"])
    order = table["attention"].map(lambda a: ATTENTION_ORDER.index(a) if a in ATTENTION_ORDER else 9)
    return (table.assign(_o=order).sort_values(["dataset", "_o", "attention", "lambda_profile"])
            .drop(columns="_o").reset_index(drop=True))


def ablation_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The λ values at which at least two attention variants ran, per dataset (all their variants)."""
    variants = summary.groupby(["dataset", "lambda_profile"])["attention"].transform("nunique")
    rows = summary[variants >= 2]
    order = rows["attention"].map(lambda a: ATTENTION_ORDER.index(a) if a in ATTENTION_ORDER else 9)
    return (rows.assign(_o=order).sort_values(["dataset", "lambda_profile", "_o"]).drop(columns="_o")
            .reset_index(drop=True))


def _header(metric: str, k: int) -> str:
    for column in MAIN_COLUMNS:
        if column.metric.format(k=k) == metric:
            return column.header.format(k=k)
    return metric


def y_label(metric: str, k: int) -> str:
    return f"{_header(metric, k)} ({'higher' if higher_is_better(metric) else 'lower'} is better)"


def _stat_text(table: pd.DataFrame, metrics: list[str], k: int) -> pd.DataFrame:
    out = pd.DataFrame(index=table.index)
    for metric in metrics:
        if f"{metric}_mean" in table and table[f"{metric}_mean"].notna().any():
            decimals = 2 if "seconds" in metric else 4
            out[_header(metric, k)] = [fmt_cell(m, s, n, decimals) for m, s, n in
                           zip(table[f"{metric}_mean"], table[f"{metric}_std"], table[f"{metric}_n"])]
    return out


def _footer(fig, prov: Provenance) -> None:
    fig.text(0.01, 0.005, " ".join(prov.lines()), fontsize=6, color="0.35", ha="left", va="bottom", wrap=True)


def _attention_colour(attention: str) -> str:
    index = ATTENTION_ORDER.index(attention) if attention in ATTENTION_ORDER else len(ATTENTION_ORDER)
    return f"C{index}"


def plot_lambda(summary: pd.DataFrame, metrics: list[str], k: int, prov: Provenance, path: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted(summary["dataset"].unique())
    metrics = [m for m in metrics if f"{m}_mean" in summary and summary[f"{m}_mean"].notna().any()]
    if summary["lambda_profile"].nunique() < 2 or not metrics:
        return False
    fig, axes = plt.subplots(len(datasets), len(metrics), figsize=(3.4 * len(metrics), 2.9 * len(datasets) + 0.5),
                             squeeze=False)
    handles = {}
    for row, dataset in enumerate(datasets):
        rows = summary[summary["dataset"] == dataset]
        lambdas = sorted(rows["lambda_profile"].dropna().unique())
        # categorical positions: λ grids usually include 0 and span decades, neither suits a linear axis
        position = {lam: i for i, lam in enumerate(lambdas)}
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            for attention, part in rows.groupby("attention", sort=False):
                part = part.sort_values("lambda_profile")
                handles[attention] = ax.errorbar(
                    [position[lam] for lam in part["lambda_profile"]], part[f"{metric}_mean"],
                    yerr=part[f"{metric}_std"].fillna(0), marker="o", capsize=3, label=attention,
                    color=_attention_colour(attention))
            ax.set_xticks(range(len(lambdas)), [f"{lam:g}" for lam in lambdas])
            ax.set_xlabel("λ (categorical axis, equally spaced)")
            ax.set_ylabel(y_label(metric, k), fontsize=8)
            ax.set_title(f"{dataset}: {_header(metric, k)}", fontsize=10)
            ax.grid(alpha=0.3)
    # one legend for the figure: a dataset may lack some attention variants
    fig.legend(list(handles.values()), [f"attention={a}" for a in handles], fontsize=9, loc="upper left",
               ncol=len(handles), frameon=False, bbox_to_anchor=(0.005, 0.995))
    fig.suptitle("DMTL: metric vs λ (mean ± std over seeds; λ axis categorical)", x=0.7)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    _footer(fig, prov)
    fig.savefig(path, dpi=120, metadata={"Description": " ".join(prov.lines())})
    plt.close(fig)
    return True


def plot_ablation(table: pd.DataFrame, metrics: list[str], k: int, prov: Provenance, path: Path) -> bool:
    """Bars per attention variant, one bar colour per λ, error bars = std over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if f"{m}_mean" in table and table[f"{m}_mean"].notna().any()]
    if table.empty or not metrics:
        return False
    datasets = sorted(table["dataset"].unique())
    lambdas = sorted(table["lambda_profile"].unique())
    width = 0.8 / len(lambdas)
    fig, axes = plt.subplots(len(datasets), len(metrics), figsize=(3.2 * len(metrics), 2.9 * len(datasets) + 0.6),
                             squeeze=False)
    for row, dataset in enumerate(datasets):
        rows = table[table["dataset"] == dataset]
        attentions = [a for a in ATTENTION_ORDER if a in set(rows["attention"])] + sorted(
            set(rows["attention"]) - set(ATTENTION_ORDER))
        position = {a: i for i, a in enumerate(attentions)}
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            for j, lam in enumerate(lambdas):
                part = rows[rows["lambda_profile"] == lam]
                if part.empty:
                    continue
                x = np.array([position[a] for a in part["attention"]]) - 0.4 + width * (j + 0.5)
                ax.bar(x, part[f"{metric}_mean"], width=width * 0.95, yerr=part[f"{metric}_std"].fillna(0),
                       capsize=3, color=f"C{j}", label=f"λ={lam:g}")
            ax.set_xticks(range(len(attentions)), attentions)
            ax.set_xlabel("attention variant")
            ax.set_ylabel(y_label(metric, k), fontsize=8)
            ax.set_title(f"{dataset}: {_header(metric, k)}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            low = np.nanmin(rows[f"{metric}_mean"] - rows[f"{metric}_std"].fillna(0))
            high = np.nanmax(rows[f"{metric}_mean"] + rows[f"{metric}_std"].fillna(0))
            if np.isfinite(low) and np.isfinite(high) and high > low:
                # zoom on the differences (bars from 0 would hide an NDCG gap of 0.01); said in the title
                ax.set_ylim(max(0.0, low - 0.3 * (high - low)), high + 0.3 * (high - low))
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.suptitle("DMTL attention ablation (mean ± std over seeds; y axes do not start at 0)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _footer(fig, prov)
    fig.savefig(path, dpi=120, metadata={"Description": " ".join(prov.lines())})
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------- significance

def best_configuration(main: pd.DataFrame, dataset: str, k: int) -> pd.Series | None:
    """DMTL's best configuration on a dataset, by the validation metric (benchmark.report.selection), never test."""
    rows = main[(main["dataset"] == dataset) & (main["model"] == REFERENCE_MODEL) & (main["source"] == "measured")]
    return best_by_validation(rows)


def per_user_table(client, runs: pd.DataFrame, missing: list[str]) -> pd.DataFrame:
    """The per_user_metrics table (.parquet or .csv) of every run (joined with its per_user_full_metrics
    table, columns ``full_<metric>``, when logged), with its seed (and fold when k-fold)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file is noise
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs.itertuples(index=False):
            try:
                # Parquet or CSV, whichever the run logged (artifacts.format)
                table = retry_locked(download_table, client, run.run_id, "per_user_metrics", Path(tmp) / run.run_id)
            except Exception:  # absent artifact: listed in the report, never silently dropped
                missing.append(run.run_id)
                continue
            # runs logged before the per-user errors were named for their unit
            table = table.rename(columns={"rmse": "user_rmse", "mae": "user_mae"})
            try:
                full = retry_locked(download_table, client, run.run_id, "per_user_full_metrics",
                                     Path(tmp) / run.run_id)
                keys = [c for c in ("user", "fold") if c in table and c in full]
                full = full.drop(columns=["n_relevant", "n_candidates"], errors="ignore")
                table = table.merge(full.rename(columns={c: f"full_{c}" for c in full if c not in keys}),
                                    on=keys, how="left")
            except Exception:  # runs without full-catalogue metrics: the test-items-only columns only
                pass
            parts.append(table.assign(seed=run.seed))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def significance(client, col: Collected, main: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    rows, chosen, missing = [], {}, []
    for dataset in sorted(col.runs["dataset"].unique()):
        best = best_configuration(main, dataset, col.k)
        if best is None:
            continue
        chosen[dataset] = best["configuration"]
        in_dataset = col.runs[col.runs["dataset"] == dataset]
        reference = per_user_table(client, in_dataset[in_dataset["label"] == best["configuration"]], missing)
        if reference.empty:
            continue
        baselines = [lbl for lbl, model in in_dataset.drop_duplicates("label")[["label", "model"]].values
                     if model != REFERENCE_MODEL and model not in sections.REFERENCE_MODELS]
        for baseline in sorted(baselines):
            other = per_user_table(client, in_dataset[in_dataset["label"] == baseline], missing)
            if other.empty:
                continue
            # the unit is the user: each user's values averaged over the seeds both ran (and folds) first
            seeds = sorted(set(reference["seed"]) & set(other["seed"]))
            joined = per_unit_means(reference[reference["seed"].isin(seeds)], PER_USER_METRICS).join(
                per_unit_means(other[other["seed"].isin(seeds)], PER_USER_METRICS),
                how="inner", lsuffix="_a", rsuffix="_b")
            for metric in PER_USER_METRICS:
                if f"{metric}_a" not in joined or f"{metric}_b" not in joined:
                    continue
                pair = joined[[f"{metric}_a", f"{metric}_b"]].dropna()
                if pair.empty:
                    continue
                result = paired_test(pair[f"{metric}_a"], pair[f"{metric}_b"])
                low, high = bootstrap_ci(pair[f"{metric}_a"] - pair[f"{metric}_b"], seed=0)
                rows.append({"dataset": dataset, "reference": best["configuration"], "baseline": baseline,
                             "metric": metric, "n_seeds": len(seeds), **result.as_dict(),
                             "ci_low": low, "ci_high": high})
    table = pd.DataFrame(rows)
    if table.empty:
        return table, chosen, missing
    # Holm across every baseline x metric of a dataset (one family per dataset and test)
    for test in ("wilcoxon", "t"):
        table[f"{test}_p_holm"] = table.groupby("dataset")[f"{test}_p"].transform(
            lambda p: pd.Series(holm(p.to_numpy()), index=p.index))
    table["verdict"] = [verdict(d, p, metric not in sections.LOWER_IS_BETTER, ALPHA) for d, p, metric in
                        zip(table["mean_diff"], table["wilcoxon_p_holm"], table["metric"])]
    return table, chosen, missing


# ---------------------------------------------------------------------------------- the report

def short_header(metric: str, prefix: str, k: int) -> str:
    """``group_least_misery_precision_at_10`` -> ``least_misery P@10``: narrow columns."""
    name = metric[len(prefix):]
    for column in MAIN_COLUMNS:
        key = column.metric.format(k=k)
        if name == key or name.endswith("_" + key):
            return (name[:-len(key)].rstrip("_").replace("_", " ") + " " + column.header.format(k=k)).strip()
    return name


def secondary_table(col: Collected) -> pd.DataFrame:
    # scores only: counts such as group_n_groups describe the evaluation, they are not compared
    metrics = [m for m in col.metrics if m.startswith(tuple(SECONDARY_PREFIXES)) and not m.endswith("_std")
               and not any(m.startswith(f"{p}n_") for p in SECONDARY_PREFIXES)]
    if not metrics:
        return pd.DataFrame()
    runs = col.runs[col.runs[metrics].notna().any(axis=1) & ~col.runs["model"].isin(sections.REFERENCE_MODELS)]
    return summarize(runs, metrics, ["dataset", "label"]).rename(columns={"label": "configuration"})


def build_report(client, experiment: str, uri: str, out: Path, prov: Provenance,
                 log_to_parent: bool = True) -> list[Path]:
    col = collect(client, experiment, uri)
    col.runs = fill_val_rmse(client, col.runs)
    trials = tuned_trials(col.runs)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    k = col.k
    main = main_table(col)
    reported = reported_rows(main["dataset"].unique(), k)

    real_main = main[~main["model"].isin(sections.REFERENCE_MODELS)]
    show_n = not same_n(real_main, MAIN_COLUMNS, k, col.expected_seeds)
    header = sections.header_lines(client, col.parent_run_id) + commit_lines(col.runs)  # the runs' code versions
    md = [f"# Benchmark report: experiment `{experiment}`", "", *prov.lines(), "", *header, "",
          ("Cells are mean ± sample std (ddof=1) over seeds, with the number of seeds n in brackets; "
           if show_n else f"Cells are mean ± sample std (ddof=1) over n = {col.expected_seeds} seed(s) each; ")
          + f"‡ marks n below the expected {col.expected_seeds} seed(s) ({col.expected_source}). The best mean per "
          "column is in bold; ↑ = higher is better, ↓ = lower is better. RMSE and MAE are pooled over all test "
          f"pairs (`rmse`); the per-user RMSE (`user_rmse`) is named as such. Runs: the latest FINISHED "
          f"run per config_hash among the experiment's job runs. Reference predictors (oracle, constant, random, "
          f"item mean, popularity) are in their own block per dataset, never in bold.", ""]
    tex_parts = [f"% {line}" for line in prov.lines() + header]

    for dataset in sorted(main["dataset"].unique()):
        table = real_main[real_main["dataset"] == dataset].reset_index(drop=True)
        ref = reported[reported["dataset"] == dataset] if len(reported) else None
        title = (f"## Main results: {dataset}" if trials is None else
                 f"## Tuned results (tuned, {trials if trials > 0 else 'unequal'} trials each): {dataset}")
        md += [title, "", markdown(display_table(table, MAIN_COLUMNS, k, col.expected_seeds,
                                                                         reported=ref, show_n=show_n)), ""]
        if ref is not None and len(ref):
            md += [f"† {PAPER_LABEL}: the numbers printed in arXiv 2504.06274, reported under an unpublished "
                   f"protocol (the authors' split, relevance threshold and candidate set are unknown). They were "
                   f"not produced by this harness and are not comparable cell by cell; they are excluded from "
                   f"the bold best.", ""]
        tex_parts += ["", latex(display_table(table, MAIN_COLUMNS, k, col.expected_seeds, bold=r"\textbf{{{}}}",
                                              reported=ref, escape=tex, show_n=show_n),
                                caption=f"{dataset}: mean $\\pm$ std over "
                                        + ("seeds (n). " if show_n else f"n = {col.expected_seeds} seeds. ")
                                        + ("$^\\dagger$ reported in the paper under an unpublished protocol."
                                           if ref is not None and len(ref) else ""),
                                label=f"tab:{dataset}")]
        md += sections.reference_block(col.runs, dataset, k, markdown)
    csv_main = pd.concat([main, reported], ignore_index=True) if len(reported) else main
    write_csv(csv_main, out / "main_table.csv", prov)
    (out / "main_table.tex").write_text("\n".join(tex_parts) + "\n", encoding="utf-8")
    written += [out / "main_table.csv", out / "main_table.tex"]

    # DMTL's λ sweep and attention ablation
    summary = dmtl_summary(col) if trials is None else pd.DataFrame()  # tuned: λ, attention chosen per seed
    plot_metrics = [m.format(k=k) for m in PLOT_METRICS]
    md += ["## DMTL: λ sweep", ""]
    if summary.empty:
        md += [f"No {DISPLAY_NAMES[REFERENCE_MODEL]} runs in this experiment." if trials is None else
               "Tuned experiment: λ and the attention are tuned per seed (chosen_configurations.csv), not swept.", ""]
    else:
        write_csv(summary, out / "lambda_sweep.csv", prov)
        written.append(out / "lambda_sweep.csv")
        if plot_lambda(summary, plot_metrics, k, prov, out / "lambda_sweep.png"):
            written.append(out / "lambda_sweep.png")
            md += ["![metric vs λ](lambda_sweep.png)", ""]
        else:
            md += ["(one λ value only: no plot)", ""]
        shown = pd.concat([summary[["dataset", "attention", "lambda_profile"]].rename(
            columns={"lambda_profile": "λ"}), _stat_text(summary, plot_metrics, k)], axis=1)
        md += [markdown(shown), ""]

    md += ["## DMTL: attention ablation", ""]
    ablation = ablation_rows(summary) if not summary.empty else pd.DataFrame()
    if ablation.empty:
        md += ["No λ value with more than one attention variant in this experiment.", ""]
    else:
        write_csv(ablation, out / "attention_ablation.csv", prov)
        written.append(out / "attention_ablation.csv")
        if plot_ablation(ablation, plot_metrics, k, prov, out / "attention_ablation.png"):
            written.append(out / "attention_ablation.png")
            md += ["![attention ablation](attention_ablation.png)", ""]
        md += ["softmax = the paper's attention; none = α = 1 (no attention); uniform = α = 1/d. Every λ at "
               "which at least two variants ran.", "",
               markdown(pd.concat([ablation[["dataset", "lambda_profile", "attention"]].rename(
                   columns={"lambda_profile": "λ"}), _stat_text(ablation, plot_metrics, k)], axis=1)), ""]

    # significance
    sig, chosen, missing = significance(client, col, main)
    md += ["## Significance: best DMTL configuration vs every baseline", "",
           f"Best configuration per dataset = {SELECTION_RULE}: "
           + (", ".join(f"{d}: {c}" for d, c in chosen.items()) or "none") + ".",
           *sections.significance_text(k), ""]
    if sig.empty:
        md += ["No pair of DMTL and baseline runs with per-user metrics: no tests.", ""]
    else:
        write_csv(sig, out / "significance.csv", prov)
        written.append(out / "significance.csv")
        for dataset in sorted(sig["dataset"].unique()):
            pairs = sig.loc[sig["dataset"] == dataset, "n"]
            md += [f"**{dataset}**: DMTL − baseline, 95% CI; {int(pairs.min())}"
                   + (f"–{int(pairs.max())}" if pairs.max() != pairs.min() else "") + " users (pairs).", "",
                   markdown(sections.significance_matrix(sig, dataset, k)), ""]
    if missing:
        md += ["Runs without a per_user_metrics.csv artifact (left out of the tests): " + ", ".join(missing), ""]

    if trials is not None:

        md += tuned_sections(client, col, out, prov, trials, written)

    secondary = secondary_table(col)
    if not secondary.empty:
        write_csv(secondary, out / "secondary_metrics.csv", prov)
        written.append(out / "secondary_metrics.csv")
        for prefix, title in SECONDARY_PREFIXES.items():
            metrics = [c[:-5] for c in secondary.columns if c.startswith(prefix) and c.endswith("_mean")]
            if not metrics:
                continue
            columns = [Column(m, short_header(m, prefix, k), higher_is_better(m)) for m in metrics]
            for dataset in sorted(secondary["dataset"].unique()):
                rows = secondary[(secondary["dataset"] == dataset)
                                 & secondary[[f"{m}_mean" for m in metrics]].notna().any(axis=1)]
                if len(rows):
                    md += [f"## {title}: {dataset}", "",
                           markdown(display_table(rows.reset_index(drop=True), columns, k, col.expected_seeds,
                                                  show_n=show_n)), ""]

    def display_full(runs: pd.DataFrame, columns: list[tuple[str, str]], bold: bool) -> pd.DataFrame:
        specs = [Column(metric, header.rsplit(" ", 1)[0], True) for metric, header in columns]
        table = summarize(runs, [m for m, _ in columns], ["label"]).rename(columns={"label": "configuration"})
        if not bold:
            table["configuration"] = table["configuration"] + " (reference)"
        return display_table(table, specs, k, col.expected_seeds, bold="**{}**" if bold else "{}", show_n=show_n)

    full_parts = []
    for dataset in sorted(main["dataset"].unique()):
        order = list(main.loc[main["dataset"] == dataset, "configuration"])
        lines, part = sections.full_catalogue_tables(col.runs, dataset, k, display_full, markdown, order)
        md += lines
        full_parts.append(part)
    if any(len(p) for p in full_parts):
        write_csv(pd.concat(full_parts, ignore_index=True), out / "full_catalogue.csv", prov)
        written.append(out / "full_catalogue.csv")
    lines, sizes = sections.group_size_table(col.runs, markdown)
    if lines:
        md += lines
        write_csv(sizes, out / "group_sizes.csv", prov)
        written.append(out / "group_sizes.csv")

    md += ["## Completeness", "",
           f"Expected seeds per cell: {col.expected_seeds} ({col.expected_source})."]
    write_csv(col.incomplete, out / "completeness.csv", prov)
    written.append(out / "completeness.csv")
    if col.incomplete.empty:
        md += ["Every cell (configuration × dataset) has a FINISHED run for every seed.", ""]
    else:
        md += ["These cells lack a FINISHED run for some seeds; their means above use only the finished seeds "
               "(marked ‡).", "", markdown(col.incomplete.fillna("")), ""]

    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    written.insert(0, out / "report.md")

    if log_to_parent and col.parent_run_id:
        retry_locked(client.log_artifacts, col.parent_run_id, str(out), "report")
        log.info("report logged as artifacts report/ of sweep run %s", col.parent_run_id)
    elif log_to_parent:
        log.warning("no sweep parent run (tag groupbench.role=sweep) in %r: report not logged to MLflow", experiment)
    return written


def default_experiment(client) -> str:
    """``paper`` when that sweep has run; else the experiment of the most recent sweep parent run
    (so ``+sweep=smoke`` then ``python -m benchmark.report`` reports the smoke sweep)."""
    if retry_locked(client.get_experiment_by_name, DEFAULT_EXPERIMENT) is not None:
        return DEFAULT_EXPERIMENT
    experiments = [e.experiment_id for e in retry_locked(client.search_experiments)]
    latest = retry_locked(client.search_runs, experiments, filter_string="tags.`groupbench.role` = 'sweep'",
                           order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
    if not latest:
        return DEFAULT_EXPERIMENT  # collect() then says it is missing and how to make it
    name = client.get_experiment(latest[0].info.experiment_id).name
    log.info("no %r experiment: reporting the latest sweep's, %r", DEFAULT_EXPERIMENT, name)
    return name


DEFAULT_EXPERIMENT = "paper"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmark.report", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=None,
                        help="MLflow experiment (= sweep name); default: paper, or the latest sweep's when no "
                             "paper sweep has run")
    parser.add_argument("--tracking-uri", default=None,
                        help="tracking store; default: $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--out", default=None, help="output folder; default: reports/<experiment>/")
    parser.add_argument("--no-log", action="store_true", help="do not log the report into the sweep's parent run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        from mlflow.tracking import MlflowClient

        uri = resolve_uri(args.tracking_uri)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
            raise TrackingError(f"tracking store {uri} does not exist; run the sweep first or pass --tracking-uri")
        prepare_store(uri)  # a store a killed first use left half-made is repaired, not a traceback
        client = MlflowClient(tracking_uri=uri)
        args.experiment = args.experiment or default_experiment(client)
        prov = Provenance(command=shlex.join(["python", "-m", "benchmark.report", *argv]),
                          date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), uri=uri,
                          experiment=args.experiment, commit=git_commit())
        out = Path(args.out or Path("reports") / safe_name(args.experiment))  # a name is never a path
        written = build_report(client, args.experiment, uri, out, prov,
                               log_to_parent=not args.no_log)
    except GroupbenchError as exc:
        log.error("error: %s", exc)
        return 2
    for path in written:
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
