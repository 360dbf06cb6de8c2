"""A model's swept parameters (``meta.swept`` of conf/model/<name>.yaml): the metric curve over its
numeric parameter per variant of its categorical one (DMTL: ``lambda_sweep.csv|.png``, metric vs λ
per attention), and the ablation of the variants at every value where two or more ran
(DMTL: ``attention_ablation.csv|.png``). The focus model's files carry the parameters' ``file``
names; another model's are prefixed with its name."""

from __future__ import annotations

import pandas as pd

from benchmark.core import models_meta
from benchmark.core.models_meta import ModelMeta
from benchmark.report.context import Context
from benchmark.report.format import markdown
from benchmark.report.plots import plot_ablation, plot_curve
from benchmark.report.sections.groups import modal_grouping
from benchmark.report.tables import PLOT_METRICS, stat_text, summarize


def curve_summary(runs: pd.DataFrame, meta: ModelMeta, k: int) -> pd.DataFrame:
    """mean/std/n per dataset, variant and curve value of the model's runs (at the modal grouping K)."""
    curve, variant = meta.curve, meta.variant
    runs = modal_grouping(runs[runs["model"] == meta.name])
    if runs.empty:
        return pd.DataFrame()
    by = ["dataset", *([variant.key] if variant else []), curve.key]
    if variant is not None and variant.default is not None:
        runs = runs.assign(**{variant.key: runs[variant.key].fillna(variant.default)})
    table = summarize(runs, [m.format(k=k) for m in PLOT_METRICS], by)
    if variant is None:
        return table.sort_values(["dataset", curve.key]).reset_index(drop=True)
    return (table.assign(_o=table[variant.key].map(variant.rank))
            .sort_values(["dataset", "_o", variant.key, curve.key]).drop(columns="_o").reset_index(drop=True))


def ablation_rows(summary: pd.DataFrame, curve: models_meta.Swept, variant: models_meta.Swept) -> pd.DataFrame:
    """The curve values at which at least two variants ran, per dataset (all their variants)."""
    variants = summary.groupby(["dataset", curve.key])[variant.key].transform("nunique")
    rows = summary[variants >= 2]
    return (rows.assign(_o=rows[variant.key].map(variant.rank)).sort_values(["dataset", curve.key, "_o"])
            .drop(columns="_o").reset_index(drop=True))


def _shown(table: pd.DataFrame, keys: list[str], meta: ModelMeta, metrics: list[str], k: int) -> str:
    short = {s.key: s.short for s in meta.swept}
    return markdown(pd.concat([table[keys].rename(columns=short), stat_text(table, metrics, k)], axis=1))


def model_section(ctx: Context, meta: ModelMeta) -> list[str]:
    curve, variant, name = meta.curve, meta.variant, meta.display_name
    prefix = "" if meta.focus else f"{meta.name}_"
    metrics = [m.format(k=ctx.k) for m in PLOT_METRICS]
    summary = curve_summary(ctx.col.runs, meta, ctx.k) if ctx.trials is None else pd.DataFrame()
    md = [f"## {name}: {curve.short} sweep", ""]
    if summary.empty:
        tuned = " and the ".join(s.short for s in (curve, variant) if s is not None)
        md += [f"No {name} runs in this experiment." if ctx.trials is None else
               f"Tuned experiment: {tuned} are tuned per seed (chosen_configurations.csv), not swept.", ""]
    else:
        ctx.csv(summary, f"{prefix}{curve.file}_sweep.csv")
        png = f"{prefix}{curve.file}_sweep.png"
        if plot_curve(summary, metrics, ctx.k, ctx.prov, ctx.out / png, name, curve, variant):
            ctx.wrote(png)
            md += [f"![metric vs {curve.short}]({png})", ""]
        else:
            md += [f"(one {curve.short} value only: no plot)", ""]
        keys = ["dataset", *([variant.key] if variant else []), curve.key]
        md += [_shown(summary, keys, meta, metrics, ctx.k), ""]
    if variant is None:
        return md

    md += [f"## {name}: {variant.short} ablation", ""]
    ablation = ablation_rows(summary, curve, variant) if not summary.empty else pd.DataFrame()
    if ablation.empty:
        return md + [f"No {curve.short} value with more than one {variant.short} variant in this experiment.", ""]
    ctx.csv(ablation, f"{prefix}{variant.file}_ablation.csv")
    png = f"{prefix}{variant.file}_ablation.png"
    if plot_ablation(ablation, metrics, ctx.k, ctx.prov, ctx.out / png, name, curve, variant):
        ctx.wrote(png)
        md += [f"![{variant.short} ablation]({png})", ""]
    notes = "; ".join(f"{level} = {note}" for level, note in variant.notes)
    md += [(f"{notes}. " if notes else "") + f"Every {curve.short} at which at least two variants ran.", "",
           _shown(ablation, ["dataset", curve.key, variant.key], meta, metrics, ctx.k), ""]
    return md


def section(ctx: Context) -> list[str]:
    """The focus model's sweep sections (always, saying so when it did not run), then any other model's
    with a numeric swept parameter that ran in this experiment."""
    md = []
    focus = ctx.focus
    if focus is not None and focus.curve is not None:
        md += model_section(ctx, focus)
    ran = set(ctx.col.runs["model"])
    for meta in models_meta.catalogue().values():
        if not meta.focus and meta.curve is not None and meta.name in ran:
            md += model_section(ctx, meta)
    return md
