"""The main results: per dataset, one row per configuration (Markdown, and LaTeX in ``main_table.tex``),
the focus model's published numbers on top (``meta.reported``, marked †), then the reference block."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.report.context import Context
from benchmark.report.sections import references
from benchmark.report.tables import MAIN_COLUMNS, display_table, reported, reported_rows


def trivial_floor(ctx: Context, dataset: str) -> dict[str, tuple[float, str]]:
    """The main table's last row: per column, the best trivial reference on ``dataset``."""
    return references.trivial_floor(ctx.col.runs, dataset, [c.metric.format(k=ctx.k) for c in MAIN_COLUMNS])


def trivial_notes(table: pd.DataFrame, k: int) -> list[str]:
    """What the trivial references under and inside the table are, and where one is missing."""
    lines = ["The last row is the best trivial reference predictor of each column (its own block below); a "
             "column whose best configuration does not beat it has no bold cell."]
    profiling = [c for c in MAIN_COLUMNS if c.trivial and f"{c.metric}_mean" in table
                 and table[f"{c.metric}_mean"].notna().any()]
    if profiling:
        lines.append(f"{' and '.join(c.header for c in profiling)}: each cell names the trivial classifier's score "
                     f"on the same run (`{'`, `'.join(c.trivial for c in profiling)}`: a seen user's training group, "
                     f"the majority group for an unseen one); \"= trivial\" marks a score it matches and \"< trivial\" one below it: neither is ever bold.")
        column = profiling[0]
        own = table.get(f"{column.trivial}_mean", pd.Series(np.nan, index=table.index))
        missing = int((table[f"{column.metric}_mean"].notna() & own.isna()).sum())
        if missing:
            lines.append(f"{missing} configuration(s) logged no trivial score (runs older than `{column.trivial}`): "
                         f"their profiling cells are not bold, since they cannot be shown to beat it.")
    return [" ".join(lines), ""]


def suffix_legend(runs: pd.DataFrame, labels) -> list[str]:
    """One line per ``[key=value]`` suffix in ``labels``: the setting it names (the parameter in which the
    configurations sharing the name differ, as ``collect.configuration_labels`` appends it)."""
    named: dict[str, set[str]] = {}
    for label in (str(x) for x in labels if " [" in str(x)):
        base = label.split(" [", 1)[0]
        siblings = runs[runs["label"].astype(str).str.startswith(base + " [")]
        configs = pd.DataFrame(list(siblings.drop_duplicates("signature")["config"]))
        differing = [c for c in configs.columns if configs[c].nunique(dropna=False) > 1]
        for part in label[label.index(" [") + 2:label.rindex("]")].split(", "):
            key = part.split("=", 1)[0]
            named.setdefault(key, set()).update(c for c in differing if c.split(".", 1)[-1] == key)
    if not named:
        return []
    params = {p for config in runs["config"] for p in config}
    lines = []
    for key, full in sorted(named.items()):
        for name in sorted(full) or [key]:
            section = name.split(".", 1)[0]
            clash = sorted(p for p in params if p != name and p.split(".", 1)[-1] == key)
            lines.append(f"`[{key}=…]` is `{name}`, a setting of the {section} config (conf/{section}/)"
                         + (f", not {', '.join(f'`{c}`' for c in clash)}" if clash else ""))
    return ["Suffixes in brackets name the settings in which configurations of one name differ: "
            + "; ".join(lines) + ".", ""]


def merge_notes(merges: list[dict], dataset: str) -> list[str]:
    """One line per row that stands for several configurations (benchmark/report/merge.py)."""
    lines = []
    for merge in (m for m in merges or [] if m["dataset"] == dataset):
        settings = "; ".join(f"`{key}` ∈ {{{', '.join(values)}}}" for key, values in merge["settings"].items())
        lines.append(f"- **{merge['label']}** is one row for {settings}: its fit does not read the groups "
                     f"(`meta.reads_groups`), the user-level metrics are declared grouping-free by their "
                     f"evaluators, and every seed's values agree. Shown once here and counted once in the "
                     f"significance family; the group-level tables keep each grouping.")
    return ["Rows that stand for several configurations:", "", *lines, ""] if lines else []


def real_rows(main: pd.DataFrame) -> pd.DataFrame:
    """The main table without the reference predictors (they have their own block)."""
    return main[~main["model"].isin(references.REFERENCE_MODELS)]


def section(ctx: Context) -> list[str]:
    col, k = ctx.col, ctx.k
    published = reported()[1]
    paper = reported_rows(ctx.main["dataset"].unique(), k)
    real_main = real_rows(ctx.main)
    md, tex = [], [f"% {line}" for line in ctx.prov.lines() + ctx.header]
    for dataset in ctx.datasets:
        table = real_main[real_main["dataset"] == dataset].reset_index(drop=True)
        ref = paper[paper["dataset"] == dataset] if len(paper) else None
        title = (f"## Main results: {dataset}" if ctx.trials is None else
                 f"## Tuned results (tuned, {ctx.trials if ctx.trials > 0 else 'unequal'} trials each): {dataset}")
        shown = display_table(table, MAIN_COLUMNS, k, col.expected_seeds, reported=ref, show_n=ctx.show_n,
                              trivial=trivial_floor(ctx, dataset))
        md += [title, "", shown.markdown(), ""]
        ctx.results.setdefault("main_titles", {})[dataset] = title[len("## "):]
        md += trivial_notes(table, k)
        md += suffix_legend(ctx.col.runs[ctx.col.runs["dataset"] == dataset], table["configuration"])
        md += merge_notes(col.merges, dataset)
        if ref is not None and len(ref):
            md += [f"† {published.label}: the numbers printed in {published.source}, reported under "
                   f"{published.protocol} ({published.detail}). They were not produced by this harness and are "
                   f"not comparable cell by cell; they are excluded from the bold best.", ""]
        caption = (f"{dataset}: mean $\\pm$ std over "
                   + ("seeds (n). " if ctx.show_n else f"n = {col.expected_seeds} seeds. ")
                   + (f"$^\\dagger$ reported in the paper under {published.protocol}."
                      if ref is not None and len(ref) else ""))
        tex += ["", shown.latex(caption=caption, label=f"tab:{dataset}")]
        md += references.reference_block(col.runs, dataset, k)
    ctx.csv(pd.concat([ctx.main, paper], ignore_index=True) if len(paper) else ctx.main, "main_table.csv")
    ctx.wrote("main_table.tex").write_text("\n".join(tex) + "\n", encoding="utf-8")
    return md
