"""The report's first section: what the tables below it found, each finding citing the cell it comes from.

Nothing here is written per run or names a model: the roles come from the models' ``meta`` (``focus``,
``control``, ``reference``), the numbers from the tables the other sections wrote (``ctx.main``, the
significance table, the reference predictors). Each citation has the form
``(cell: «<table heading>» / «<row>» / «<column>»)`` and the value a finding quotes is that cell's text
(its mean, or a significance cell's difference and CI), so a reader — and tests/test_report.py — can check
it. Four parts: the best configuration per dataset and metric family (mean, with a 95% t-interval over
seeds); the focus model against the strongest baseline and against its declared control (paired per-user
difference, bootstrap CI, Holm-corrected Wilcoxon p); the trivial references that beat real models; and the
caveats that change a reading (a metric a trivial rule attains, ties at the cut-off, published numbers).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.core import models_meta
from benchmark.report.context import Context
from benchmark.report.sections import group_recommendation, references, ties
from benchmark.report.sections.main import real_rows, trivial_floor
from benchmark.report.sections.significance import LOWER_IS_BETTER, SIGNIFICANCE_METRICS
from benchmark.report.stats import ALPHA
from benchmark.report.tables import MAIN_COLUMNS, arrow, best_mask, direction_header, no_better

# metric family -> the main table's column that heads it
FAMILIES = (("rating error", "rmse"), ("ranking", "ndcg_at_{k}"), ("profiling", "profile_accuracy"))


def cite(table: str, row: str, column: str) -> str:
    return f"(cell: «{table}» / «{row}» / «{column}»)"


def seed_interval(mean: float, std: float, n: float) -> str:
    """The 95% t-interval of a mean over n seeds, or the reason there is none."""
    if not (np.isfinite(n) and n >= 2 and np.isfinite(std)):
        return "one seed, no interval"
    half = stats.t.ppf(0.975, int(n) - 1) * std / np.sqrt(n)
    return f"95% CI over {int(n)} seeds {mean - half:.4f} to {mean + half:.4f}"


def best_lines(ctx: Context, dataset: str, title: str) -> list[str]:
    """Per metric family: the table's best configuration(s) (its bold cells), or why there is none."""
    table = real_rows(ctx.main[ctx.main["dataset"] == dataset]).reset_index(drop=True)
    floor = trivial_floor(ctx, dataset)
    lines = []
    for family, template in FAMILIES:
        column = next(c for c in MAIN_COLUMNS if c.metric == template)
        metric, header = column.metric.format(k=ctx.k), direction_header(column, ctx.k)
        if f"{metric}_mean" not in table or table[f"{metric}_mean"].isna().all():
            continue
        means = table[f"{metric}_mean"]
        eligible = means.notna()
        if column.trivial:
            own = table.get(f"{column.trivial}_mean", pd.Series(np.nan, index=table.index))
            eligible &= own.notna() & ~pd.Series(no_better(means, own, column.higher_is_better), index=table.index)
        value, name = floor.get(metric, (float("nan"), ""))
        bold = best_mask(means, column.decimals, column.higher_is_better, eligible, value)
        if bold.any():
            parts = [f"{table.at[i, 'configuration']}, {means[i]:.{column.decimals}f} "
                     f"({seed_interval(means[i], table.at[i, f'{metric}_std'], table.at[i, f'{metric}_n'])}) "
                     + cite(title, table.at[i, "configuration"], header) for i in table.index[bold]]
            lines.append(f"- {dataset}, {family} ({header}): best " + "; tied with ".join(parts) + ".")
        elif np.isfinite(value):
            lines.append(f"- {dataset}, {family} ({header}): no configuration beats the best trivial reference, "
                         f"{name} at {value:.{column.decimals}f} " + cite(title, "best trivial reference", header)
                         + ".")
        elif column.trivial and f"{column.trivial}_mean" in table and table[f"{column.trivial}_mean"].notna().any():
            lines.append(f"- {dataset}, {family} ({header}): no configuration beats its trivial classifier "
                         f"(`{column.trivial}`): no best.")
        elif column.trivial:
            lines.append(f"- {dataset}, {family} ({header}): no run logged its trivial classifier "
                         f"(`{column.trivial}`; runs older than it), so no score can be shown to beat it: no best.")
        elif int(means.notna().sum()) < 2:
            lines.append(f"- {dataset}, {family} ({header}): one configuration only, nothing to compare.")
    return lines


def sig_header(metric: str, k: int) -> str:
    return f"{SIGNIFICANCE_METRICS[metric].format(k=k)} {arrow(metric not in LOWER_IS_BETTER)}"


def strongest(rows: pd.DataFrame) -> str | None:
    """The baseline with the best mean rank over the tested metrics (its own per-user means, ``mean_b``)."""
    ranks = []
    for metric, part in rows.groupby("metric"):
        ascending = metric in LOWER_IS_BETTER
        ranks.append(part.set_index("baseline")["mean_b"].rank(ascending=ascending))
    if not ranks:
        return None
    mean_rank = pd.concat(ranks, axis=1).mean(axis=1)
    return str(mean_rank.sort_values(kind="stable").index[0])


def comparison_line(rows: pd.DataFrame, baseline: str, role: str, name: str, dataset: str, k: int) -> str:
    """One bullet: the verdict counts, the ranking headline (NDCG) and every significant metric, each cited."""
    title = f"Significance: {dataset}"
    marks = {"better": " ▲", "worse": " ▼"}
    mine = rows[rows["baseline"] == baseline]
    parts = []
    for metric in (m for m in SIGNIFICANCE_METRICS if m in set(mine["metric"])):
        r = mine[mine["metric"] == metric].iloc[0]
        if metric != "ndcg" and r.verdict not in marks:
            continue
        header = sig_header(metric, k)
        parts.append(f"{header} {r.mean_diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]{marks.get(r.verdict, '')} "
                     f"(Holm p {r.wilcoxon_p_holm:.2g}) " + cite(title, baseline, header))
    better, worse = int((mine["verdict"] == "better").sum()), int((mine["verdict"] == "worse").sum())
    return (f"- {dataset}: {name} − {baseline} ({role}), paired per user: better on {better}, worse on {worse}, "
            f"no significant difference on {len(mine) - better - worse} of {len(mine)} metrics (Holm-corrected "
            f"Wilcoxon p < {ALPHA}): " + "; ".join(parts) + ".")


def focus_lines(ctx: Context) -> list[str]:
    focus = ctx.focus
    sig = ctx.results.get("significance")
    if focus is None or sig is None or sig.empty:
        return []
    controls = set(models_meta.controls())
    models = dict(ctx.col.runs.drop_duplicates("label")[["label", "model"]].values)
    lines = []
    for dataset in sorted(sig["dataset"].unique()):
        rows = sig[sig["dataset"] == dataset]
        reference = rows["reference"].iloc[0]
        name = f"{reference}"
        top = strongest(rows[~rows["baseline"].map(models).isin(controls)])
        if top is not None:
            lines.append(comparison_line(rows, top, "the strongest baseline: best mean rank over these metrics",
                                         name, dataset, ctx.k))
        for control in sorted(b for b in rows["baseline"].unique() if models.get(b) in controls):
            lines.append(comparison_line(rows, control, "its declared control, `meta.control`", name, dataset, ctx.k))
    return lines


def reference_lines(ctx: Context, dataset: str) -> list[str]:
    """One bullet per dataset: each metric on which a trivial reference beats at least half of the real
    configurations, with the reference that beats the most (the full list: the reference block's notes)."""
    runs = ctx.col.runs[ctx.col.runs["dataset"] == dataset]
    refs = runs[runs["model"].isin(references.TRIVIAL_MODELS)]
    real = runs[~runs["model"].isin(references.REFERENCE_MODELS)]
    if refs.empty or real.empty:
        return []
    metrics = references.present(runs, [m.format(k=ctx.k) for m in references.REFERENCE_METRICS])
    ref_means = refs.groupby("model")[metrics].mean()
    real_means = real.groupby("label")[metrics].mean()
    title = f"Reference predictors: {dataset}"
    parts = []
    for metric in metrics:
        header_text, higher = next((h, hb) for m, (h, hb) in references.REFERENCE_METRICS.items()
                                   if m.format(k=ctx.k) == metric)
        header = f"{header_text.format(k=ctx.k)} {arrow(higher)}"
        values = real_means[metric].dropna()
        counts = {model: int((values < value).sum() if higher else (values > value).sum())
                  for model, value in ref_means[metric].dropna().items()}
        model = max(counts, key=counts.get, default=None)
        if model is None or not values.size or 2 * counts[model] < len(values):
            continue
        label = references.REFERENCE_NAMES[model]
        parts.append(f"{header}: {label} ({ref_means.at[model, metric]:.4f}) beats {counts[model]} of {len(values)} "
                     + cite(title, label, header))
    if not parts:
        return []
    return [f"- {dataset}, where a reference that learns nothing about users beats at least half of the real "
            f"configurations: " + "; ".join(parts) + "."]


def caveat_lines(ctx: Context, dataset: str, title: str) -> list[str]:
    table = real_rows(ctx.main[ctx.main["dataset"] == dataset]).reset_index(drop=True)
    floor = trivial_floor(ctx, dataset)
    lines = []
    for column in MAIN_COLUMNS:
        metric, header = column.metric.format(k=ctx.k), direction_header(column, ctx.k)
        if f"{metric}_mean" not in table or table[f"{metric}_mean"].isna().all():
            continue
        means = table[f"{metric}_mean"]
        if column.trivial and f"{column.trivial}_mean" in table:
            own = table[f"{column.trivial}_mean"]
            matched = table.index[pd.Series(no_better(means, own, column.higher_is_better), index=table.index)]
            if len(matched):
                row = table.at[matched[0], "configuration"]
                lines.append(f"- {dataset}, {header}: {len(matched)} of {int(means.notna().sum())} configurations "
                             f"score no better than the trivial classifier, e.g. {row} at "
                             f"{means[matched[0]]:.{column.decimals}f} " + cite(title, row, header)
                             + ": a trivial rule attains this score, so it is no result.")
        value, name = floor.get(metric, (float("nan"), ""))
        shown = means.round(column.decimals)
        best = shown.max() if column.higher_is_better else shown.min()
        if np.isfinite(value) and bool(no_better(best, round(value, column.decimals), column.higher_is_better)):
            lines.append(f"- {dataset}, {header}: the trivial reference {name} attains {value:.{column.decimals}f}, "
                         f"at least the best configuration " + cite(title, "best trivial reference", header)
                         + ": this column does not separate the models.")
    real = ctx.col.runs[(ctx.col.runs["dataset"] == dataset)
                        & ~ctx.col.runs["model"].isin(references.REFERENCE_MODELS)]
    tied = ties.flagged(real, ctx.k)
    if len(tied):
        worst = tied.loc[tied["share"].idxmax()]
        lines.append(f"- {dataset}: {tied['configuration'].nunique()} configuration(s) have a tie across the "
                     f"{ctx.k}-th position for more than {ties.FLAG_SHARE:.0%} of their queries, up to "
                     f"{worst['share']:.1%} ({worst['configuration']}, {worst['candidates']}) "
                     + cite(ties.title(dataset), worst["configuration"], worst["candidates"])
                     + f": those @{ctx.k} metrics partly measure the tie rule.")
    published = ctx.focus.reported if ctx.focus is not None else None
    if published is not None and dataset in published.metrics and ctx.k == published.k:
        metric = next(iter(published.metrics[dataset]))
        column = next((c for c in MAIN_COLUMNS if c.metric.format(k=ctx.k) == metric), None)
        if column is not None:
            header = direction_header(column, ctx.k)
            lines.append(f"- {dataset}: the published numbers ({published.label}, e.g. {header} "
                         f"{published.metrics[dataset][metric]:.4f}) were obtained under {published.protocol} "
                         f"({published.detail}) " + cite(title, f"{published.label} †", header)
                         + ": they are not comparable with this harness's cells.")
    return lines


def group_lines(ctx: Context) -> list[str]:
    """One bullet per dataset of group-item runs: per group split and protocol, the best real configuration
    against the best reference on NDCG at the largest cut-off (section group_recommendation)."""
    found = group_recommendation.headline(ctx.results.get("group_recommendation"))
    lines = []
    for dataset, rows in (found.groupby("dataset", sort=True) if len(found) else ()):
        parts = []
        for r in rows.itertuples(index=False):
            where = f"{r.split} split, {r.protocol}"
            if r.best is None or r.reference is None:
                parts.append(f"{where}: {r.best or r.reference} only")
                continue
            verdict = "beats it" if r.beats else "no real model beats it"
            parts.append(f"{where}: {r.best} {r.best_mean:.4f} {cite(r.table, r.best, r.metric)} vs {r.reference} "
                         f"{r.reference_mean:.4f} {cite(r.table, r.reference, r.metric)}, {verdict}")
        lines.append(f"- {dataset}, group recommendation ({rows['metric'].iloc[0]}), best real configuration vs "
                     f"best reference: " + "; ".join(parts) + ".")
    return lines


def section(ctx: Context) -> list[str]:
    titles = ctx.results.get("main_titles", {})
    best, refs, caveats = [], [], []
    for dataset in ctx.datasets:
        if dataset not in titles:
            continue
        best += best_lines(ctx, dataset, titles[dataset])
        refs += reference_lines(ctx, dataset)
        caveats += caveat_lines(ctx, dataset, titles[dataset])
    versus = focus_lines(ctx)
    groups = group_lines(ctx)
    md = ["## Findings", "",
          "Computed from the tables below; each finding cites its cell as «table» / «row» / «column».", ""]
    for heading, lines in (("Best configuration per dataset and metric family (mean over seeds)", best),
                           ("The focus model against the strongest baseline and its control", versus),
                           ("Group recommendation: the best configuration against the best reference", groups),
                           ("Trivial references that beat real models", refs),
                           ("Caveats that change a reading", caveats)):
        if lines:
            md += [f"**{heading}**", "", *lines, ""]
    return md
