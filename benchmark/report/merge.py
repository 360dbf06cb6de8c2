"""Configurations that are really one: rows of the user-level tables merged (#30 item 3).

Two configurations of one model on one dataset are one row of the user-level tables (main table,
significance, references, full catalogue) when

- they differ only in ``grouping.*`` settings,
- the model's fit does not read the groups (``meta.reads_groups`` of conf/model/*.yaml false), and the
  table's metrics are ones their evaluators declare grouping-free (``@evaluator(..., grouping_free=...)``
  in benchmark/evaluation), and
- as a safety net, every such metric has the same value in every seed both ran.

The row keeps the runs of one of them (the one with the most runs, then the first by label) and the
model's name without the ``[k=…]`` suffix; the rest leave the user-level tables (and the significance
family). Group-level tables, which do depend on the grouping, keep every configuration.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

import benchmark.evaluation.full_ranking  # noqa: F401  registers the full-catalogue evaluator's declaration
import benchmark.evaluation.groups  # noqa: F401  registers the cold-start and group evaluators' declarations
from benchmark.core import models_meta
from benchmark.evaluation.base import grouping_free
from benchmark.report.collect import configuration_labels

log = logging.getLogger(__name__)

MEASUREMENTS = ("_seconds",)   # timings: measured, not a function of the configuration; never compared


def _without_grouping(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if not _grouping(k)}, sort_keys=True)


def _grouping(key: str) -> bool:
    """A grouping setting: ``grouping`` (kmeans | real: the params name the grouping so, not by import path) or ``grouping.*``."""
    return key == "grouping" or key.startswith("grouping.")


def user_level_metrics(metrics: list[str]) -> list[str]:
    """The grouping-free metrics of ``metrics`` (timings left out: they are never compared)."""
    return [m for m in metrics if grouping_free(m) and not m.endswith(MEASUREMENTS)]


def same_per_seed(runs: pd.DataFrame, metrics: list[str]) -> bool:
    """True when every metric has the same value (or is absent) in every seed the signatures share."""
    if not metrics:
        return True
    table = runs.pivot_table(index="seed", columns="signature", values=metrics, aggfunc="first", dropna=False)
    for metric in metrics:
        if metric not in table.columns.get_level_values(0):
            continue
        values = table[metric].dropna(how="any").to_numpy(float)
        if values.size and not np.allclose(values, values[:, :1], rtol=0, atol=1e-12, equal_nan=True):
            return False
    return True


def merge_configurations(runs: pd.DataFrame, metrics: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    """``runs`` with each set of configurations that are one (module doc) reduced to one; and one record
    per merge: dataset, model, label (the merged row's), the settings merged (``grouping.k``: values)."""
    compared = user_level_metrics(metrics)
    if runs.empty or "config" not in runs:
        return runs, []
    key = [_without_grouping(c) for c in runs["config"]]
    drop, merges = [], []
    frame = runs.assign(_key=key)
    for (dataset, model, _), group in frame.groupby(["dataset", "model", "_key"], sort=True):
        signatures = group["signature"].unique()
        if len(signatures) < 2 or models_meta.model_meta(model).reads_groups:
            continue
        if any(str(s).startswith("tuned:") for s in signatures):
            continue
        if not same_per_seed(group, compared):
            log.warning("%s on %s: configurations differing only in grouping.* have different user-level "
                        "metrics; not merged", model, dataset)
            continue
        sizes = group.groupby("signature").agg(runs=("run_id", "size"), label=("label", "first"))
        kept = sizes.sort_values(["runs", "label"], ascending=[False, True]).index[0]
        configs = pd.DataFrame(list(group.drop_duplicates("signature")["config"]))
        settings = {c: sorted(configs[c].dropna().astype(str).unique(), key=_natural)
                    for c in configs.columns if _grouping(c) and configs[c].nunique(dropna=False) > 1}
        drop += list(group.index[group["signature"] != kept])
        merges.append({"dataset": dataset, "model": model, "kept": kept, "labels": sorted(sizes["label"]),
                       "settings": settings})
    merged = runs.drop(index=drop)
    if merges:  # the merged rows lose the suffix that told them apart; tuned cells keep theirs
        untuned = merged["tuned_trials"].isna() if "tuned_trials" in merged else pd.Series(True, merged.index)
        merged.loc[untuned, "label"] = configuration_labels(merged[untuned])
        for merge in merges:
            merge["label"] = merged.loc[merged["signature"] == merge["kept"], "label"].iloc[0]
    return merged, merges


def _natural(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)
