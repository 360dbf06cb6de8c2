"""What every report section reads (the collected runs, the main table, the output folder) and where
it records the files it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.core import models_meta
from benchmark.report.collect import Collected
from benchmark.report.format import Provenance, write_csv


@dataclass
class Context:
    client: object                       # MlflowClient of the store
    uri: str                             # the store's tracking URI
    experiment: str
    col: Collected
    main: pd.DataFrame                   # tables.main_table(col): one row per dataset and configuration
    out: Path
    prov: Provenance
    trials: int | None                   # tuned experiment: trials per study (-1: unequal); None: untuned
    show_n: bool                         # False: every cell has the expected seeds, n is said once
    header: list[str]                    # the sweep's overrides and the package versions (Markdown and LaTeX)
    written: list[Path] = field(default_factory=list)
    results: dict = field(default_factory=dict)  # what a section computed that the findings cite

    @property
    def k(self) -> int:
        return self.col.k

    @property
    def focus(self) -> models_meta.ModelMeta | None:
        """The model the report centres on (``meta.focus``)."""
        return models_meta.focus()

    @property
    def datasets(self) -> list[str]:
        return sorted(self.main["dataset"].unique())

    def csv(self, frame: pd.DataFrame, name: str) -> Path:
        """Write ``frame`` as ``<out>/<name>`` with the provenance lines, and record it."""
        path = self.out / name
        write_csv(frame, path, self.prov)
        self.written.append(path)
        return path

    def wrote(self, name: str) -> Path:
        """Record a file a section wrote itself (a plot, the LaTeX table)."""
        path = self.out / name
        self.written.append(path)
        return path
