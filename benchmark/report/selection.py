"""What the report selects by, and the tuned sweep's tables (used by ``benchmark.report``).

Every "best" that feeds a comparison is chosen by a validation metric, never by a test metric:

- DMTL's best configuration (the reference of the significance tests) = the lowest mean
  validation RMSE over seeds, ``val_rmse``: DMTL's rating RMSE on its early-stopping part (carved
  per user from the training part, ``trainer.val_size``) at the restored best epoch. Runs logged
  before DMTL reported ``val_rmse`` get it from their ``val_rating_loss`` history at ``best_epoch``.
- In a tuned sweep each (model, dataset, seed) was tuned on its own validation part
  (``benchmark/sweeps/tune.py``); the report only groups the final runs per model.
"""

from __future__ import annotations

import math

import pandas as pd

from benchmark.report.format import markdown, write_csv
from benchmark.tracking.queries import retry_locked, search_all

VALIDATION_METRIC = "val_rmse"
SELECTION_RULE = ("the lowest mean validation RMSE over seeds (`val_rmse`: DMTL's rating RMSE on the per-user "
                  "validation part it carves from the training data for early stopping, at the restored best "
                  "epoch); the test part plays no role in the choice")


def fill_val_rmse(client, runs: pd.DataFrame, model: str = "dmtl") -> pd.DataFrame:
    """``val_rmse`` for ``model``'s runs that did not log it: sqrt(val_rating_loss at best_epoch)."""
    runs = runs.copy()
    if VALIDATION_METRIC not in runs:
        runs[VALIDATION_METRIC] = float("nan")
    if "best_epoch" not in runs:
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


def tuning_table(client, experiment_id: str) -> pd.DataFrame:
    """One row per (dataset, model): studies, trials, seconds of tuning (sum and per trial) — the budget."""

    studies = search_all(client, experiment_id, "tags.`groupbench.role` = 'study' and attributes.status = 'FINISHED'")
    rows = [{"dataset": s.data.tags.get("dataset"), "model": s.data.tags.get("model"),
             "seed": s.data.tags.get("seed"), "start": s.info.start_time or 0,
             "trials": s.data.metrics.get("n_trials", float("nan")),
             "failed": s.data.metrics.get("n_trials_failed", 0.0),
             "tuning_s": s.data.metrics.get("tuning_seconds", float("nan")),
             "chosen": s.data.tags.get("tuned.chosen", "")} for s in studies]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).sort_values("start").drop_duplicates(["dataset", "model", "seed"], keep="last")
    table = frame.groupby(["dataset", "model"], sort=True).agg(
        studies=("seed", "nunique"), trials_per_study=("trials", "max"), failed_trials=("failed", "sum"),
        tuning_s_total=("tuning_s", "sum"), tuning_s_per_study=("tuning_s", "mean")).reset_index()
    table["s_per_trial"] = table["tuning_s_total"] / (table["studies"] * table["trials_per_study"])
    table[["trials_per_study", "failed_trials"]] = table[["trials_per_study", "failed_trials"]].astype(int)
    return table.round(2)


def chosen_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The configuration each final run refit (one row per dataset, model, seed)."""
    if "tuned_chosen" not in runs:
        return pd.DataFrame()
    chosen = runs[runs["tuned_chosen"].fillna("") != ""]
    return (chosen[["dataset", "model", "seed", "tuned_chosen"]].rename(columns={"tuned_chosen": "chosen"})
            .sort_values(["dataset", "model", "seed"]).reset_index(drop=True))


def tuned_sections(client, col, out, prov, trials: int, written: list) -> list[str]:
    """The tuned sweep's selection rule, budget (tuning seconds per model) and chosen configurations."""

    experiment = retry_locked(client.get_experiment_by_name, prov.experiment)
    md = ["## Tuning: selection rule and budget", "",
          f"Each (model, dataset, seed) with a search space (`conf/search/<model>.yaml`) ran its own study of "
          f"{trials if trials > 0 else 'UNEQUAL'} seeded Optuna TPE trials on that seed's training part: a trial "
          f"fits on the training part minus a per-user validation part (`tune.val_size` of each user's training "
          f"ratings, the hold-out rule of the split) and is scored on the validation part by this project's "
          f"metric code; the configuration with the best validation metric (`tune.metric`) is refit on the whole "
          f"training part and evaluated once on test. The test part plays no role in any choice. Models without "
          f"hyperparameters ran once. The tables above are final runs only (trial runs, tag "
          f"`groupbench.role=trial`, are never results).", ""]
    timing = tuning_table(client, experiment.experiment_id) if experiment else pd.DataFrame()
    if not timing.empty:
        write_csv(timing, out / "tuning_times.csv", prov)
        written.append(out / "tuning_times.csv")
        shown = timing.copy()
        for column in ("tuning_s_total", "tuning_s_per_study", "s_per_trial"):
            shown[column] = shown[column].map("{:.1f}".format)
        md += ["Tuning time (sum of trial fit + validation scoring; measured on a shared machine, noisy):", "",
               markdown(shown), ""]
    chosen = chosen_table(col.runs)
    if not chosen.empty:
        write_csv(chosen, out / "chosen_configurations.csv", prov)
        written.append(out / "chosen_configurations.csv")
        md += ["The configuration each final run refit: `chosen_configurations.csv`.", ""]
    return md
