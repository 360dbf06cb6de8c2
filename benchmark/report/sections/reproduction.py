"""Reproducing the paper (issue #26): the focus model's published row, the models under the authors' own
protocol (experiment ``paper_protocol``, ``+sweep=paper_protocol``; leaks included and labelled), the same
models under the clean protocol, and the protocol ablation: one change at a time from the clean protocol to
the authors', so a reader sees which choice produces the published numbers (docs/protocol.md, "The
authors' protocol").

It reads the ``paper_protocol`` experiment from the report's own store and is shown, first after the
header, in the report of ``paper`` (and of ``paper_protocol`` itself) when that experiment has runs.

The ablation's steps and the metric each reads (runs of the same model configuration and seeds):

1. clean: split=holdout, the clean grouping, the clean formulas (``precision_at_k``, ``recall_at_k``);
2. + split: split=authors (global random row split), clean grouping and formulas;
3. + scaling: the authors' MinMaxScaler on all rows touches side features only, which these models never
   read: 0 by construction (shown as such, not measured);
4. + grouping leak: grouping=authors (KMeans on all rows, unscaled): moves only a model that reads the
   groups (DMTL's profiling head); clean formulas;
5. + metric formula: the authors' rule (true rating >= 3.7), P = hits / k, R = hits / |relevant| (NaN
   skipped), their NDCG, one key per user (``authors_user_*``);
6. + keys: the authors' keys (groups; ITM-Rec: real groups, users in no group alone; ``authors_*``):
   the authors' whole protocol.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.core import models_meta
from benchmark.core.errors import TrackingError
from benchmark.report.collect import JOBS, collect, configuration_label
from benchmark.report.context import Context
from benchmark.report.format import markdown
from benchmark.report.tables import fmt_cell, reported
from benchmark.tracking.queries import retry_locked, runs_frame

EXPERIMENT = "paper_protocol"
AUTHORS_SEED = 42
SHOWN_IN = ("paper", EXPERIMENT)
LEAK_NOTE = ("**Leaky protocol, reproduced on purpose**: the authors' split is a global random row split "
             "after a MinMaxScaler fitted on all rows, and their KMeans groups are fitted on profiles built "
             "from all ratings, test ratings included (run tags `protocol=authors`, `leak={leak}`).")

# (step, the runs it reads, the P and R metrics it reads; None: not measured, 0 by construction)
STEPS = (("clean protocol", "clean", "precision_at_{k}", "recall_at_{k}"),
         ("+ split (global random rows)", "split", "precision_at_{k}", "recall_at_{k}"),
         ("+ scaling (scaler on all rows)", None, None, None),
         ("+ grouping leak (KMeans on all rows)", "authors", "precision_at_{k}", "recall_at_{k}"),
         ("+ metric formula (≥ 3.7, hits/k, NaN skipped)", "authors", "authors_user_precision_at_{k}",
          "authors_user_recall_at_{k}"),
         ("+ keys (groups) = the authors' protocol", "authors", "authors_precision_at_{k}", "authors_recall_at_{k}"))


def kind_of(config: dict) -> str:
    """authors (their whole protocol) | split (their split, the clean grouping, their metrics added) |
    clean (the clean protocol, their metrics added) | other."""
    protocol, split = config.get("eval.protocol"), str(config.get("split", ""))
    if protocol == "authors":
        return "authors"
    if protocol == "authors_metrics":
        return "split" if split.startswith("authors") else "clean" if split == "holdout" else "other"
    return "other"


def load(ctx: Context) -> tuple[pd.DataFrame, str] | None:
    """The paper_protocol experiment's kept runs with a ``kind`` column, and its runs' leak tags; None
    when the store has no such experiment or no job run in it."""
    if ctx.experiment not in SHOWN_IN:
        return None
    found = retry_locked(ctx.client.get_experiment_by_name, EXPERIMENT)
    if found is None:
        return None
    try:
        col = collect(ctx.client, EXPERIMENT, ctx.uri)
    except TrackingError:
        return None
    runs = col.runs.copy()
    runs["kind"] = [kind_of(c) for c in runs["config"]]
    # the model and its swept values only: the protocol pieces are this section's rows and columns
    swept = [s.key for s in models_meta.swept_params() if s.key in runs]
    runs["label"] = [configuration_label(model, values)
                     for model, values in zip(runs["model"], runs[swept].to_dict("records"))]
    jobs = runs_frame(ctx.uri, found.experiment_id, JOBS)
    leaks = jobs.loc[jobs["run_id"].isin(runs.loc[runs["kind"] == "authors", "run_id"]), "tags.leak"] \
        if "tags.leak" in jobs else pd.Series(dtype=object)
    return runs, ", ".join(sorted(set(leaks.dropna()))) or "none recorded"


def cell(values: pd.Series, decimals: int = 4) -> str:
    values = values.dropna()
    if values.empty:
        return "—"
    return fmt_cell(float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else np.nan,
                    len(values), decimals)


def seed42(frame: pd.DataFrame, metric: str) -> str:
    values = frame.loc[frame["seed"] == AUTHORS_SEED, metric].dropna() if metric in frame else pd.Series(dtype=float)
    return f"{values.iloc[0]:.4f}" if len(values) else "—"


def ordered(frame: pd.DataFrame) -> list[str]:
    """Configuration labels: the focus model's first, then the other models, the references last."""
    refs = set(models_meta.reference_predictors())
    focus = getattr(models_meta.focus(), "name", None)
    labels = frame.drop_duplicates("label")[["label", "model"]]
    rank = [(0 if m == focus else 2 if m in refs else 1, label) for label, m in zip(labels["label"], labels["model"])]
    return [label for _, label in sorted(rank)]


def protocol_table(runs: pd.DataFrame, dataset: str, k: int, p: str, r: str) -> pd.DataFrame:
    part = runs[runs["dataset"] == dataset]
    rows = []
    for label in ordered(part):
        frame = part[part["label"] == label]
        rows.append({"configuration": label,
                     f"P@{k} (mean ± std, n)": cell(frame[p]) if p in frame else "—",
                     f"R@{k} (mean ± std, n)": cell(frame[r]) if r in frame else "—",
                     f"P@{k} seed 42": seed42(frame, p), f"R@{k} seed 42": seed42(frame, r)})
    return pd.DataFrame(rows)


def same_configuration(runs: pd.DataFrame, model: str, swept: dict) -> pd.Series:
    mask = runs["model"] == model
    for key, value in swept.items():
        if key in runs:
            mask &= runs[key].astype(str) == str(value)
    return mask


def ablation_table(runs: pd.DataFrame, dataset: str, k: int) -> pd.DataFrame:
    """One row per (model configuration of the ablation runs, step): P and R (mean over seeds) and their change."""
    part = runs[runs["dataset"] == dataset]
    swept_keys = [s.key for s in models_meta.swept_params()]
    rows = []
    for label in ordered(part[part["kind"] == "clean"]):
        first = part[(part["kind"] == "clean") & (part["label"] == label)].iloc[0]
        swept = {key: first[key] for key in swept_keys if key in part and pd.notna(first[key])}
        same = same_configuration(part, first["model"], swept)
        # the seeds every step ran: each step's mean is over the same seeds
        seeds = set.intersection(*(set(part.loc[same & (part["kind"] == kind), "seed"])
                                   for kind in ("clean", "split", "authors")))
        same &= part["seed"].isin(seeds)
        previous = (np.nan, np.nan)
        for step, kind, p, r in STEPS:
            if kind is None:
                rows.append({"configuration": label, "step": step, f"P@{k}": previous[0], f"R@{k}": previous[1],
                             "ΔP": 0.0, "ΔR": 0.0, "note": "0 by construction: no column these models read"})
                continue
            frame = part[same & (part["kind"] == kind)]
            p_name, r_name = p.format(k=k), r.format(k=k)
            now = (float(frame[p_name].mean()) if p_name in frame and len(frame) else np.nan,
                   float(frame[r_name].mean()) if r_name in frame and len(frame) else np.nan)
            rows.append({"configuration": label, "step": step, f"P@{k}": now[0], f"R@{k}": now[1],
                         "ΔP": now[0] - previous[0], "ΔR": now[1] - previous[1],
                         "note": f"seeds {', '.join(map(str, sorted(seeds)))}"})
            previous = now
    return pd.DataFrame(rows)


def verdict(runs: pd.DataFrame, dataset: str, k: int, paper: dict[str, float], focus: str | None,
            ablation: pd.DataFrame | None = None) -> list[str]:
    """Whether the focus model, any model, or a reference reaches the published P and R under the authors'
    protocol (means over seeds and seed 42 alone)."""
    p_name, r_name = f"authors_precision_at_{k}", f"authors_recall_at_{k}"
    part = runs[(runs["dataset"] == dataset) & (runs["kind"] == "authors")]
    if part.empty or p_name not in part or not paper:
        return []
    p_pub, r_pub = paper.get(f"precision_at_{k}"), paper.get(f"recall_at_{k}")
    means = part.groupby(["label", "model"])[[p_name, r_name]].mean().reset_index()
    lines = []
    own = means[means["model"] == focus]
    if len(own) and p_pub is not None and r_pub is not None:
        best = own.sort_values(p_name, ascending=False).iloc[0]
        lines.append(f"- {best['label']} (its best P@{k} under the authors' protocol, mean over seeds): "
                     f"P@{k} {best[p_name]:.4f} vs the paper's {p_pub:.4f} ({best[p_name] - p_pub:+.4f}), "
                     f"R@{k} {best[r_name]:.4f} vs {r_pub:.4f} ({best[r_name] - r_pub:+.4f}).")
    if p_pub is not None and r_pub is not None:
        both = means[(means[p_name] >= p_pub) & (means[r_name] >= r_pub)]
        either_p, either_r = means[means[p_name] >= p_pub], means[means[r_name] >= r_pub]
        seeds = part[part["seed"] == AUTHORS_SEED]
        both42 = seeds[(seeds[p_name] >= p_pub) & (seeds[r_name] >= r_pub)]
        if len(both):
            lines.append(f"- Reaching both published numbers (mean over seeds): {', '.join(both['label'])}.")
        else:
            lines.append(f"- No configuration, references included, reaches both published numbers on the mean "
                         f"over seeds{'' if len(both42) else ' nor on seed 42 alone'}"
                         + (f" (seed 42 alone: {', '.join(both42['label'])})" if len(both42) else "") + ".")
        top_p, top_r = means.sort_values(p_name).iloc[-1], means.sort_values(r_name).iloc[-1]
        if ablation is not None and not ablation.empty:
            steps = ablation.dropna(subset=[f"P@{k}", f"R@{k}"])
            distance = np.hypot(steps[f"P@{k}"] - p_pub, steps[f"R@{k}"] - r_pub)
            near = steps.loc[distance.idxmin()]
            lines.append(f"- Closest to the published pair among the ablation's rows: {near['configuration']} at step "
                         f"\"{near['step']}\": P@{k} {near[f'P@{k}']:.4f}, R@{k} {near[f'R@{k}']:.4f} "
                         f"(distance {distance.min():.4f}).")
        lines.append(f"- Highest P@{k}: {top_p['label']} {top_p[p_name]:.4f}"
                     f" ({'reaches' if len(either_p) else 'below'} {p_pub:.4f}); highest R@{k}: {top_r['label']} "
                     f"{top_r[r_name]:.4f} ({'reaches' if len(either_r) else 'below'} {r_pub:.4f}).")
    return lines


def section(ctx: Context) -> list[str]:
    loaded = load(ctx)
    if loaded is None:
        return []
    runs, leak = loaded
    k = ctx.k
    focus_name, published = reported()
    md = ["## Reproducing the paper", "",
          f"The paper's table under its authors' own protocol (experiment `{EXPERIMENT}`, "
          f"`python -m benchmark +sweep={EXPERIMENT}`), side by side with the clean protocol, and the protocol "
          "ablation (one change at a time from the clean protocol to the authors'). The authors' protocol is read "
          "off their public code (lengocluyen/mhamodel; docs/protocol.md, \"The authors' protocol\", cites every "
          "rule's file and line and every ambiguity).", "", LEAK_NOTE.format(leak=leak), ""]
    tables = []
    for dataset in sorted(runs["dataset"].unique()):
        paper = dict(published.metrics.get(dataset, {})) if published is not None and published.k == k else {}
        md += [f"### {dataset}", ""]
        if paper:
            md += [f"Published ({published.label}, {published.source}): "
                   + ", ".join(f"{name.replace('precision_at_', 'P@').replace('recall_at_', 'R@')} {value:.4f}"
                               for name, value in paper.items()) + ".", ""]
        authors = runs[runs["kind"] == "authors"]
        table = protocol_table(authors, dataset, k, f"authors_precision_at_{k}", f"authors_recall_at_{k}")
        if not table.empty:
            md += [f"Under the authors' protocol (LEAKY, leak: {leak}; their keys, rule and formulas):", "",
                   markdown(table), ""]
            tables.append(table.assign(dataset=dataset, protocol="authors (leaky)"))
        clean = runs[runs["kind"] == "clean"]
        table = protocol_table(clean, dataset, k, f"precision_at_{k}", f"recall_at_{k}")
        if not table.empty:
            md += ["The same configurations under the clean protocol (per-user hold-out, KMeans on training "
                   "ratings, the clean formulas; every other model is in the main table below):", "",
                   markdown(table), ""]
            tables.append(table.assign(dataset=dataset, protocol="clean"))
        ablation = ablation_table(runs, dataset, k)
        if not ablation.empty:
            shown = ablation.copy()
            for column in (f"P@{k}", f"R@{k}", "ΔP", "ΔR"):
                shown[column] = [("—" if not np.isfinite(v) else f"{v:+.4f}" if column.startswith("Δ") else f"{v:.4f}")
                                 for v in shown[column]]
            md += ["Protocol ablation (means over seeds; each step adds one of the authors' choices to the one "
                   "above; the last row is the authors' protocol, LEAKY):", "", markdown(shown), ""]
            ctx.csv(ablation.assign(dataset=dataset), f"protocol_ablation_{dataset}.csv")
        md += verdict(runs, dataset, k, paper, focus_name, ablation) + [""]
    if tables:
        ctx.csv(pd.concat(tables, ignore_index=True), "paper_protocol.csv")
    ctx.results["reproduction"] = {"experiment": EXPERIMENT, "leak": leak}
    return md
