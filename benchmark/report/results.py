"""Which logged results the report keeps, and where it writes them.

A result is identified by its config hash AND its data's sha256: a run on corrupt or edited
data (``data.verify=false``) is not the same result as one on the pinned data, even with the
same config. The report keeps the latest FINISHED run per (config hash, data hash) and, for each
dataset, only the runs on the data of that dataset's latest run, so one table never mixes data
versions (the rest are named in a warning).
"""

from __future__ import annotations

import logging
import re

import pandas as pd

log = logging.getLogger(__name__)


def latest_results(finished: pd.DataFrame) -> pd.DataFrame:
    """``finished`` (job runs with ``config_hash``, ``dataset``, ``dataset_sha256``, ``start_time``):
    the latest run per (config hash, data hash), on each dataset's latest data version only."""
    ordered = finished.sort_values("start_time")
    kept = ordered.drop_duplicates(["config_hash", "dataset_sha256"], keep="last")
    current = ordered.groupby("dataset")["dataset_sha256"].last()
    on_current = kept["dataset_sha256"].to_numpy() == kept["dataset"].map(current).to_numpy()
    for dataset, count in kept[~on_current].groupby("dataset").size().items():
        log.warning("%d FINISHED run(s) of %s on other data (dataset_sha256 != %s, the latest run's) are left out "
                    "of the report", count, dataset, str(current[dataset])[:12])
    return kept[on_current]


def safe_name(name: str) -> str:
    """An experiment name as one folder name: no separators, no '..', nothing hidden."""
    cleaned = re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(name)).strip("._")
    return cleaned or "experiment"
