"""Table artifacts (predictions, per-user metrics, groups, ...): Parquet by default, CSV on request.

``artifacts.format`` (conf/config.yaml) picks the format a run writes; readers take either,
so runs logged before the switch (CSV) and after it (Parquet) mix in one report. Parquet is
column-typed and compressed: at 1M ratings the predictions table is several times smaller
than its CSV (docs/performance.md, "Scaling to 10M ratings").
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.core.errors import require

FORMATS = ("parquet", "csv")


def check_format(fmt: str) -> str:
    require(fmt in FORMATS, f"artifacts.format={fmt} must be one of {', '.join(FORMATS)}")
    return fmt


def table_name(stem: str, fmt: str) -> str:
    """``predictions`` -> ``predictions.parquet`` (or ``.csv``)."""
    return f"{stem}.{check_format(fmt)}"


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write by the file's suffix: ``.parquet`` (pyarrow, zstd) or anything else as CSV."""
    if Path(path).suffix == ".parquet":
        frame.to_parquet(path, index=False, engine="pyarrow", compression="zstd")
    else:
        frame.to_csv(path, index=False)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table artifact written by :func:`write_table`, Parquet or CSV, by its suffix."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path, engine="pyarrow")
    return pd.read_csv(path)


def download_table(client, run_id: str, stem: str, dst: str | Path) -> pd.DataFrame:
    """A run's table artifact ``stem`` in whichever format it was logged (Parquet first).

    Raises the client's error when the run has neither file.
    """
    names = {entry.path for entry in client.list_artifacts(run_id)}
    for fmt in FORMATS:
        if f"{stem}.{fmt}" in names:
            return read_table(client.download_artifacts(run_id, f"{stem}.{fmt}", str(dst)))
    raise FileNotFoundError(f"run {run_id} has no {stem}.parquet or {stem}.csv artifact")
