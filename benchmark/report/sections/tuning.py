"""The tuned sweep's selection rule, budget (tuning seconds per model) and chosen configurations."""

from __future__ import annotations

import pandas as pd

from benchmark.report.context import Context
from benchmark.report.format import markdown
from benchmark.tracking.queries import retry_locked, runs_frame

STUDIES = "tags.`groupbench.role` = 'study' and attributes.status = 'FINISHED'"


def tuning_table(uri: str, experiment_id: str) -> pd.DataFrame:
    """One row per (dataset, model): studies, trials, seconds of tuning (sum and per trial) — the budget."""
    studies = runs_frame(uri, experiment_id, STUDIES)
    if studies.empty:
        return pd.DataFrame()

    def column(name: str, default=None) -> pd.Series:
        values = studies[name] if name in studies else pd.Series(default, index=studies.index, dtype=object)
        return values.where(values.notna(), default)

    frame = pd.DataFrame({"dataset": column("tags.dataset"), "model": column("tags.model"),
                          "seed": column("tags.seed"), "start": studies["start_time"],
                          "trials": column("metrics.n_trials", float("nan")).astype(float),
                          "failed": column("metrics.n_trials_failed", 0.0).astype(float),
                          "tuning_s": column("metrics.tuning_seconds", float("nan")).astype(float),
                          "chosen": column("tags.tuned.chosen", "")})
    frame = frame.sort_values("start").drop_duplicates(["dataset", "model", "seed"], keep="last")
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


def section(ctx: Context) -> list[str]:
    if ctx.trials is None:
        return []
    experiment = retry_locked(ctx.client.get_experiment_by_name, ctx.experiment)
    md = ["## Tuning: selection rule and budget", "",
          f"Each (model, dataset, seed) with a search space (`conf/search/<model>.yaml`) ran its own study of "
          f"{ctx.trials if ctx.trials > 0 else 'UNEQUAL'} seeded Optuna TPE trials on that seed's training part: a "
          f"trial fits on the training part minus a per-user validation part (`tune.val_size` of each user's "
          f"training ratings, the hold-out rule of the split) and is scored on the validation part by this "
          f"project's metric code; the configuration with the best validation metric (`tune.metric`) is refit on "
          f"the whole training part and evaluated once on test. The test part plays no role in any choice. Models "
          f"without hyperparameters ran once. The tables above are final runs only (trial runs, tag "
          f"`groupbench.role=trial`, are never results).", ""]
    runs = ctx.col.runs
    if "group_split" in runs and runs["group_split"].fillna("").astype(bool).any():
        md += [" ".join([
            "On a group-item dataset (a run with a group split) the trials are the group stream's instead: a trial",
            "fits on the group training part minus its validation cases and early-stops on a second carve of it;",
            "it is scored on the validation cases (one held-out training positive per group against its sampled",
            "negatives), NDCG@10 of the model's group scores (`val_group_ndcg_at_10`; a user-level model's members",
            "aggregated by the mean), whatever `tune.metric` says; the final run refits on the whole training part",
            "and is tested once (docs/protocol.md, \"Tuning on group splits\")."]), ""]
    timing = tuning_table(ctx.uri, experiment.experiment_id) if experiment else pd.DataFrame()
    if not timing.empty:
        ctx.csv(timing, "tuning_times.csv")
        shown = timing.copy()
        for column in ("tuning_s_total", "tuning_s_per_study", "s_per_trial"):
            shown[column] = shown[column].map("{:.1f}".format)
        md += ["Tuning time (sum of trial fit + validation scoring; measured on a shared machine, noisy):", "",
               markdown(shown), ""]
    chosen = chosen_table(ctx.col.runs)
    if not chosen.empty:
        ctx.csv(chosen, "chosen_configurations.csv")
        md += ["The configuration each final run refit: `chosen_configurations.csv`.", ""]
    return md
