"""Completeness: every cell (configuration x dataset) whose seeds lack a FINISHED run."""

from __future__ import annotations

from benchmark.report.context import Context
from benchmark.report.format import markdown


def section(ctx: Context) -> list[str]:
    col = ctx.col
    md = ["## Completeness", "", f"Expected seeds per cell: {col.expected_seeds} ({col.expected_source})."]
    ctx.csv(col.incomplete, "completeness.csv")
    if col.incomplete.empty:
        return md + ["Every cell (configuration × dataset) has a FINISHED run for every seed.", ""]
    return md + ["These cells lack a FINISHED run for some seeds; their means above use only the finished seeds "
                 "(marked ‡).", "", markdown(col.incomplete.fillna("")), ""]
