"""What the report selects by (used by ``benchmark.report``).

Every "best" that feeds a comparison is chosen by a validation metric, never by a test metric:

- The focus model's best configuration (``meta.focus`` of conf/model/*.yaml, e.g. DMTL; the
  reference of the significance tests) = the lowest mean validation RMSE over seeds, ``val_rmse``:
  its rating RMSE on its early-stopping part (carved per user from the training part,
  ``trainer.val_size``) at the restored best epoch. Runs logged before a model reported
  ``val_rmse`` get it from their ``val_rating_loss`` history at ``best_epoch``.
- In a tuned sweep each (model, dataset, seed) was tuned on its own validation part
  (``benchmark/sweeps/tune.py``); the report only groups the final runs per model.
"""

from __future__ import annotations

import math

import pandas as pd

from benchmark.core import models_meta
from benchmark.tracking.queries import retry_locked

VALIDATION_METRIC = "val_rmse"


def selection_rule(name: str) -> str:
    """How the best configuration of the model called ``name`` (its display name) is chosen."""
    return (f"the lowest mean validation RMSE over seeds (`val_rmse`: {name}'s rating RMSE on the per-user "
            f"validation part it carves from the training data for early stopping, at the restored best "
            f"epoch); the test part plays no role in the choice")


def fill_val_rmse(client, runs: pd.DataFrame, model: str | None = None) -> pd.DataFrame:
    """``val_rmse`` for ``model``'s runs (default: the focus model's) that did not log it:
    sqrt(val_rating_loss at best_epoch)."""
    runs = runs.copy()
    if VALIDATION_METRIC not in runs:
        runs[VALIDATION_METRIC] = float("nan")
    focus = models_meta.focus()
    model = model or (focus.name if focus is not None else None)
    if "best_epoch" not in runs or model is None:
        return runs
    todo = runs.index[(runs["model"] == model) & runs[VALIDATION_METRIC].isna() & runs["best_epoch"].notna()]
    for index in todo:
        history = retry_locked(client.get_metric_history, runs.at[index, "run_id"], "val_rating_loss")
        at_best = [m.value for m in history if m.step == int(runs.at[index, "best_epoch"])]
        if at_best:
            runs.at[index, VALIDATION_METRIC] = math.sqrt(at_best[-1])
    return runs


def best_by_validation(rows: pd.DataFrame) -> pd.Series | None:
    """The row with the lowest ``val_rmse_mean``; None when no row has one."""
    column = f"{VALIDATION_METRIC}_mean"
    if column not in rows or rows[column].isna().all():
        return None
    return rows.sort_values([column, "configuration"], ascending=True, kind="stable").iloc[0]


def tuned_trials(runs: pd.DataFrame) -> int | None:
    """N of "tuned, N trials each" (the same for every tuned model), or None for an untuned experiment."""
    if "tuned_trials" not in runs:
        return None
    counts = pd.to_numeric(runs["tuned_trials"], errors="coerce").dropna()
    counts = counts[counts > 0]
    if counts.empty:
        return None
    return int(counts.max()) if counts.nunique() == 1 else -1
