"""The focus model's best configuration (by validation, ``selection``) against every baseline, paired per
user: Wilcoxon and t tests with Holm's correction, bootstrap CIs, and the model x metric matrix."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from benchmark.core import models_meta
from benchmark.report.context import Context
from benchmark.report.format import markdown
from benchmark.report.sections.references import REFERENCE_MODELS
from benchmark.report.selection import best_by_validation, selection_rule
from benchmark.report.stats import ALPHA, BOOTSTRAP_RESAMPLES, bootstrap_ci, holm, paired_test, per_unit_means, verdict
from benchmark.report.tables import arrow
from benchmark.tracking.artifacts import download_table
from benchmark.tracking.queries import retry_locked

# per-user columns compared in the significance tests -> display name (per-user tables' names)
SIGNIFICANCE_METRICS = {"precision": "P@{k}", "recall": "R@{k}", "ndcg": "NDCG@{k}", "user_rmse": "RMSE (per user)",
                        "full_recall": "full R@{k}", "full_ndcg": "full NDCG@{k}"}
LOWER_IS_BETTER = ("user_rmse", "user_mae")


def best_configuration(main: pd.DataFrame, dataset: str, k: int, model: str | None = None) -> pd.Series | None:
    """``model``'s (default: the focus model's) best configuration on a dataset, by the validation metric
    (benchmark.report.selection), never test."""
    if model is None:
        focus = models_meta.focus()
        if focus is None:
            return None
        model = focus.name
    rows = main[(main["dataset"] == dataset) & (main["model"] == model) & (main["source"] == "measured")]
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


def significance(ctx: Context, model: str) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """``model``'s best configuration per dataset against every other real configuration."""
    col, rows, chosen, missing = ctx.col, [], {}, []
    for dataset in sorted(col.runs["dataset"].unique()):
        best = best_configuration(ctx.main, dataset, col.k, model)
        if best is None:
            continue
        chosen[dataset] = best["configuration"]
        in_dataset = col.runs[col.runs["dataset"] == dataset]
        reference = per_user_table(ctx.client, in_dataset[in_dataset["label"] == best["configuration"]], missing)
        if reference.empty:
            continue
        baselines = [lbl for lbl, other in in_dataset.drop_duplicates("label")[["label", "model"]].values
                     if other != model and other not in REFERENCE_MODELS]
        for baseline in sorted(baselines):
            other = per_user_table(ctx.client, in_dataset[in_dataset["label"] == baseline], missing)
            if other.empty:
                continue
            # the unit is the user: each user's values averaged over the seeds both ran (and folds) first
            seeds = sorted(set(reference["seed"]) & set(other["seed"]))
            joined = per_unit_means(reference[reference["seed"].isin(seeds)], SIGNIFICANCE_METRICS).join(
                per_unit_means(other[other["seed"].isin(seeds)], SIGNIFICANCE_METRICS),
                how="inner", lsuffix="_a", rsuffix="_b")
            for metric in SIGNIFICANCE_METRICS:
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
    table["verdict"] = [verdict(d, p, metric not in LOWER_IS_BETTER, ALPHA) for d, p, metric in
                        zip(table["mean_diff"], table["wilcoxon_p_holm"], table["metric"])]
    return table, chosen, missing


def significance_text(name: str) -> list[str]:
    return [f"Test: two-sided Wilcoxon signed-rank (verdict) and paired t-test (in significance.csv). Unit: the "
            f"user — each user's per-user metric is first averaged over seeds (and folds), so each comparison has "
            f"one pair per user. Correction: Holm across all baselines × metrics of a dataset (one family per "
            f"dataset and test). CI: paired bootstrap 95% (BCa, scipy.stats.bootstrap, {BOOTSTRAP_RESAMPLES} "
            f"resamples of users, seeded) of the mean difference. ▲ / ▼: {name} significantly better / worse "
            f"(Holm-adjusted Wilcoxon p < {ALPHA}); no marker: no significant difference. The markers follow the "
            f"Holm-corrected Wilcoxon test, not the CI: a CI that excludes 0 without a marker is a difference the "
            f"bootstrap sees in the mean but the corrected rank test does not confirm. RMSE here is the "
            f"per-user RMSE (`user_rmse`, each user weighs the same; lower is better), not the pooled RMSE of the "
            f"main table; every other column: higher is better. Reference predictors are not tested."]


def significance_matrix(sig: pd.DataFrame, dataset: str, k: int) -> pd.DataFrame:
    """Rows = baselines, columns = metrics; cell ``+0.0123 [+0.0101, +0.0145] ▲`` (focus − baseline)."""
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
    return pd.DataFrame([{"Baseline": b, **{c: v.get(c, "—") for c in order}} for b, v in cells.items()])


def section(ctx: Context) -> list[str]:
    focus = ctx.focus
    if focus is None:
        return []
    name = focus.display_name
    sig, chosen, missing = significance(ctx, focus.name)
    ctx.results["significance"] = sig
    md = [f"## Significance: best {name} configuration vs every baseline", "",
          f"Best configuration per dataset = {selection_rule(name)}: "
          + (", ".join(f"{d}: {c}" for d, c in chosen.items()) or "none") + ".",
          *significance_text(name), ""]
    if sig.empty:
        md += [f"No pair of {name} and baseline runs with per-user metrics: no tests.", ""]
    else:
        ctx.csv(sig, "significance.csv")
        for dataset in sorted(sig["dataset"].unique()):
            pairs = sig.loc[sig["dataset"] == dataset, "n"]
            md += [f"### Significance: {dataset}", "",
                   f"{name} − baseline, 95% CI; {int(pairs.min())}"
                   + (f"–{int(pairs.max())}" if pairs.max() != pairs.min() else "") + " users (pairs).", "",
                   markdown(significance_matrix(sig, dataset, ctx.k)), ""]
    if missing:
        md += ["Runs without a per_user_metrics.csv artifact (left out of the tests): " + ", ".join(missing), ""]
    return md
