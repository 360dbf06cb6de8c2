"""The main results: per dataset, one row per configuration (Markdown, and LaTeX in ``main_table.tex``),
the focus model's published numbers on top (``meta.reported``, marked †), then the reference block."""

from __future__ import annotations

import pandas as pd

from benchmark.report.context import Context
from benchmark.report.sections import references
from benchmark.report.tables import MAIN_COLUMNS, display_table, reported, reported_rows


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
        shown = display_table(table, MAIN_COLUMNS, k, col.expected_seeds, reported=ref, show_n=ctx.show_n)
        md += [title, "", shown.markdown(), ""]
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
