"""Report sections beside the main tables (benchmark/report/build.py calls them; docs/protocol.md, "Metrics").

- the header's provenance: the sweep's overrides and the package versions;
- the reference block per dataset (oracle, constant, random, item-mean, popularity) and the
  notes where a trivial predictor beats a real model on a metric;
- the full-catalogue tables (``full_*`` metrics, user and group level);
- the group-size statistics (``grouping_size_*``);
- the significance matrix (model x metric: difference, bootstrap CI, marker).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from benchmark.report.stats import ALPHA, BOOTSTRAP_RESAMPLES
from benchmark.tracking import provenance

# Reference predictors (models/reference.py): shown in their own block, never bold, never "best",
# never a baseline of the significance tests.
REFERENCE_MODELS = ("oracle", "constant", "global_mean", "random", "item_mean", "popularity")
TRIVIAL_MODELS = tuple(m for m in REFERENCE_MODELS if m != "oracle")
REFERENCE_NAMES = {"oracle": "Oracle (true rating)", "constant": "Constant (top of scale)",
                   "global_mean": "Constant (global mean)", "random": "Random (uniform)",
                   "item_mean": "Item mean", "popularity": "Popularity"}
PACKAGES = ("torch", "scikit-surprise", "mlflow", "numpy", "pandas", "scipy", "scikit-learn", "hydra-core")

# metric -> (header, higher is better); {k} is the runs' eval.k
REFERENCE_METRICS = {"rmse": ("RMSE (pooled)", False), "user_rmse": ("RMSE (per user)", False),
                     "precision_at_{k}": ("P@{k}", True), "recall_at_{k}": ("R@{k}", True),
                     "ndcg_at_{k}": ("NDCG@{k}", True), "full_recall_at_{k}": ("full R@{k}", True),
                     "full_ndcg_at_{k}": ("full NDCG@{k}", True)}
FULL_METRICS = {"full_precision_at_{k}": "P@{k}", "full_recall_at_{k}": "R@{k}", "full_ndcg_at_{k}": "NDCG@{k}",
                "full_hit_rate_at_{k}": "HR@{k}", "full_mrr": "MRR", "full_map_at_{k}": "MAP@{k}",
                "full_coverage_at_{k}": "Coverage@{k}"}
SIZE_METRICS = {"grouping_n_nonempty_groups": "groups", "grouping_size_mean": "mean size",
                "grouping_size_median": "median size", "grouping_size_max": "max size",
                "grouping_size_singleton_share": "singleton share",
                "grouping_real_size_mean": "real groups: mean size",
                "grouping_real_size_singleton_share": "real groups: singleton share"}
# per-user columns compared in the significance tests -> display name (per-user tables' names)
SIGNIFICANCE_METRICS = {"precision": "P@{k}", "recall": "R@{k}", "ndcg": "NDCG@{k}", "user_rmse": "RMSE (per user)",
                        "full_recall": "full R@{k}", "full_ndcg": "full NDCG@{k}"}
LOWER_IS_BETTER = ("user_rmse", "user_mae")


def arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


# ---------------------------------------------------------------------------------- header

def package_versions() -> str:
    """The report's header line: the versions of the report's packages installed (those missing left out)."""
    found = provenance.package_versions(PACKAGES)
    return ", ".join([f"Python {found['version.python']}"] + [f"{name} {found[f'version.{name}']}" for name in PACKAGES
                                                              if found[f"version.{name}"] != "not installed"])


def sweep_overrides(client, parent_run_id: str | None) -> str:
    """The command-line overrides of the latest sweep invocation (its parent run's ``overrides`` param)."""
    if not parent_run_id:
        return "(no sweep parent run)"
    data = client.get_run(parent_run_id).data
    # a param today; a tag if sweep bookkeeping moves to tags
    text = str(data.params.get("overrides") or data.tags.get("overrides") or data.tags.get("sweep.overrides")
               or "").strip()
    return f"`{text}`" if text and text != "(none)" else "none"


def header_lines(client, parent_run_id: str | None) -> list[str]:
    return [f"Sweep overrides (latest sweep run): {sweep_overrides(client, parent_run_id)}.",
            f"Package versions (environment that wrote this report): {package_versions()}."]


# ---------------------------------------------------------------------------------- helpers

def _present(runs: pd.DataFrame, metrics: list[str]) -> list[str]:
    return [m for m in metrics if m in runs and runs[m].notna().any()]


def _means(runs: pd.DataFrame, metrics: list[str], by: str = "label") -> pd.DataFrame:
    return runs.groupby(by, sort=False)[metrics].mean()


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(value: float, decimals: int = 4) -> str:
    return f"{value:.{decimals}f}" if np.isfinite(value) else "—"


# ---------------------------------------------------------------------------------- reference block

def reference_block(runs: pd.DataFrame, dataset: str, k: int, markdown: Callable[[pd.DataFrame], str]) -> list[str]:
    """Markdown lines: the reference predictors' means, the real models' range, and the calibration notes."""
    in_dataset = runs[runs["dataset"] == dataset]
    refs = in_dataset[in_dataset["model"].isin(REFERENCE_MODELS)]
    real = in_dataset[~in_dataset["model"].isin(REFERENCE_MODELS)]
    lines = [f"## Reference predictors: {dataset}", ""]
    if refs.empty:
        return lines + ["No reference predictor ran on this dataset (add `model=oracle,constant,global_mean,random,"
                        "item_mean,popularity` to the sweep).", ""]
    metrics = _present(in_dataset, [m.format(k=k) for m in REFERENCE_METRICS])
    names = {m.format(k=k): h.format(k=k) for m, (h, _) in REFERENCE_METRICS.items()}
    headers = {m.format(k=k): f"{h.format(k=k)} {arrow(hb)}" for m, (h, hb) in REFERENCE_METRICS.items()}
    ref_means = _means(refs, metrics, "model")
    order = [m for m in REFERENCE_MODELS if m in ref_means.index]
    rows = [{"Predictor": REFERENCE_NAMES[m], **{headers[c]: _fmt(ref_means.loc[m, c]) for c in metrics}}
            for m in order]
    real_means = _means(real, metrics) if len(real) else pd.DataFrame(columns=metrics)
    if len(real_means):
        for name, pick in (("real models: best", True), ("real models: worst", False)):
            row = {"Predictor": name}
            for c in metrics:
                values = real_means[c].dropna()
                higher = REFERENCE_METRICS[next(m for m in REFERENCE_METRICS if m.format(k=k) == c)][1]
                best = values.max() if higher == pick else values.min()
                row[headers[c]] = _fmt(best) if len(values) else "—"
            rows.append(row)
    lines += ["Means over seeds. The oracle (true test rating) is each metric's ceiling under its protocol; the "
              "others learn nothing about the user. References are never bold and never a baseline of the tests.",
              "", markdown(pd.DataFrame(rows)), ""]
    lines += calibration_notes(ref_means, real_means, metrics, names, k)
    return lines


def calibration_notes(ref_means: pd.DataFrame, real_means: pd.DataFrame, metrics: list[str],
                      names: dict[str, str], k: int) -> list[str]:
    """One line per metric on which a trivial predictor beats at least one real configuration."""
    notes = []
    for metric in metrics:
        higher = REFERENCE_METRICS[next(m for m in REFERENCE_METRICS if m.format(k=k) == metric)][1]
        values = real_means[metric].dropna() if metric in real_means else pd.Series(dtype=float)
        if values.empty:
            continue
        winners = []
        for model in (m for m in TRIVIAL_MODELS if m in ref_means.index):
            ref = ref_means.loc[model, metric]
            beaten = int((values < ref).sum() if higher else (values > ref).sum()) if np.isfinite(ref) else 0
            if beaten:
                winners.append(f"{REFERENCE_NAMES[model]} ({_fmt(ref)}) beats {beaten}")
        if not winners:
            continue
        if metric.startswith("full_"):
            what = "a ranking that knows nothing about the user does as well (popularity and item-mean bias)"
        elif higher:
            what = "it measures calibration (which predictions reach the relevance threshold), not ranking"
        else:
            what = "a predictor that learns nothing about users does as well"
        notes.append(f"- **{names[metric]}**: {'; '.join(winners)} of {len(values)} real configurations — {what}.")
    if not notes:
        return ["No trivial predictor beats a real configuration on these metrics.", ""]
    return ["Where a trivial predictor beats real models (means over seeds):", "", *notes, ""]


# ---------------------------------------------------------------------------------- full catalogue

def full_catalogue_tables(runs: pd.DataFrame, dataset: str, k: int, display, markdown,
                          order: list[str] | None = None) -> tuple[list[str], pd.DataFrame]:
    """Markdown lines and the summary rows for the ``full_*`` metrics of one dataset.

    ``display(table, columns)`` formats a summary (report.display_table with its Column type bound).
    """
    in_dataset = runs[runs["dataset"] == dataset]
    user_metrics = _present(in_dataset, [m.format(k=k) for m in FULL_METRICS])
    if not user_metrics:
        return [], pd.DataFrame()
    lines = [f"## Full-catalogue ranking: {dataset}", "",
             "Every test user ranks every catalogue item not in their training part; relevant = their test items "
             "rated ≥ the threshold; binary gain; averaged over users with a relevant item. ↑ = higher is better. "
             "Reference predictors come last, marked (reference), never bold; the oracle is the ceiling.", ""]
    if order:  # the main table's row order
        rank = {label: i for i, label in enumerate(order)}
        in_dataset = in_dataset.sort_values("label", key=lambda s: s.map(rank).fillna(len(rank)), kind="stable")
    real = in_dataset[~in_dataset["model"].isin(REFERENCE_MODELS)]
    refs = in_dataset[in_dataset["model"].isin(REFERENCE_MODELS)]
    refs = refs.sort_values("model", key=lambda s: s.map(REFERENCE_MODELS.index), kind="stable")
    columns = [(m, f"{FULL_METRICS[next(t for t in FULL_METRICS if t.format(k=k) == m)].format(k=k)} ↑")
               for m in user_metrics]
    tables = []
    for part, bold in ((real, True), (refs, False)):
        if len(part):
            tables.append(display(part, columns, bold))
    lines += [markdown(pd.concat(tables, ignore_index=True)), ""]
    group_metrics = sorted(c for c in in_dataset.columns if c.startswith("full_group_")
                           and (c.endswith(f"_ndcg_at_{k}") or c.endswith(f"_recall_at_{k}"))
                           and in_dataset[c].notna().any())
    if group_metrics:
        columns = [(m, m[len("full_group_"):].replace(f"_ndcg_at_{k}", f" NDCG@{k} ↑")
                    .replace(f"_recall_at_{k}", f" R@{k} ↑").replace("_", " ")) for m in group_metrics]
        tables = [display(part, columns, bold) for part, bold in ((real, True), (refs, False)) if len(part)]
        lines += ["Groups (full catalogue): each group ranks every item not rated in training by all its members, "
                  "scored by the aggregation of all members' predictions.", "",
                  markdown(pd.concat(tables, ignore_index=True)), ""]
    summary_metrics = user_metrics + group_metrics
    summary = in_dataset.groupby("label", sort=False)[summary_metrics].agg(["mean", "std", "count"])
    summary.columns = [f"{m}_{s.replace('count', 'n')}" for m, s in summary.columns]
    return lines, summary.reset_index().rename(columns={"label": "configuration"}).assign(dataset=dataset)


# ---------------------------------------------------------------------------------- group sizes

def modal_grouping(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with their dataset's most common ``grouping.k``: the K grid's variants (conf/sweep/group_k.yaml)
    stay out of the λ sweep and attention ablation, which compare λ and attention at one K."""
    if runs.empty or "config" not in runs:
        return runs
    k = pd.Series([c.get("grouping.k") for c in runs["config"]], index=runs.index)
    modal = k.groupby(runs["dataset"]).transform(lambda v: v.mode().iloc[0] if v.notna().any() else None)
    return runs[(k == modal) | k.isna()]


def group_size_table(runs: pd.DataFrame, markdown) -> tuple[list[str], pd.DataFrame]:
    metrics = _present(runs, list(SIZE_METRICS))
    if not metrics:
        return [], pd.DataFrame()
    frame = runs.assign(grouping=[str(c.get("grouping._target_", "?")).rsplit(".", 1)[-1] for c in runs["config"]],
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


# ---------------------------------------------------------------------------------- significance

def significance_text(k: int) -> list[str]:
    return [f"Test: two-sided Wilcoxon signed-rank (verdict) and paired t-test (in significance.csv). Unit: the "
            f"user — each user's per-user metric is first averaged over seeds (and folds), so each comparison has "
            f"one pair per user. Correction: Holm across all baselines × metrics of a dataset (one family per "
            f"dataset and test). CI: paired bootstrap 95% (BCa, scipy.stats.bootstrap, {BOOTSTRAP_RESAMPLES} "
            f"resamples of users, seeded) of the mean difference. ▲ / ▼: DMTL significantly better / worse "
            f"(Holm-adjusted Wilcoxon p < {ALPHA}); no marker: no significant difference. RMSE here is the "
            f"per-user RMSE (`user_rmse`, each user weighs the same; lower is better), not the pooled RMSE of the "
            f"main table; every other column: higher is better. Reference predictors are not tested."]


def significance_matrix(sig: pd.DataFrame, dataset: str, k: int) -> pd.DataFrame:
    """Rows = baselines, columns = metrics; cell ``+0.0123 [+0.0101, +0.0145] ▲`` (DMTL − baseline)."""
    rows = sig[sig["dataset"] == dataset]
    marks = {"better": " ▲", "worse": " ▼"}
    cells = {}

    def header(metric: str) -> str:
        return f"{SIGNIFICANCE_METRICS.get(metric, metric).format(k=k)} {arrow(metric not in LOWER_IS_BETTER)}"

    for r in rows.itertuples(index=False):
        name = header(r.metric)
        cells.setdefault(r.baseline, {})[name] = (f"{r.mean_diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
                                                  f"{marks.get(r.verdict, '')}")
    present = {c for v in cells.values() for c in v}
    order = [header(m) for m in SIGNIFICANCE_METRICS if header(m) in present]
    frame = pd.DataFrame([{"Baseline": b, **{c: v.get(c, "—") for c in order}} for b, v in cells.items()])
    return frame
