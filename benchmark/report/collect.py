"""The report's input: an experiment's job runs as one DataFrame (``mlflow.search_runs``).

Resumed sweeps keep results in runs of earlier invocations, so runs are collected by experiment
and the latest FINISHED run per (config hash, data hash) is kept (``results.latest_results``).
Each run becomes a row: its id, status, model, dataset, seed, configuration (the params that
define it) and its metrics, plus one column per swept model parameter (``meta.swept`` of
``conf/model/*.yaml``; e.g. DMTL's ``lambda_profile`` and ``attention``). Configurations get a
readable label: the model's display name and its swept values (``DMTL (λ=1, softmax)``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core import models_meta
from benchmark.core import reproduction as reproductions
from benchmark.core.config import RESULT_KEYS
from benchmark.core.errors import TrackingError
from benchmark.report.results import latest_results
from benchmark.tracking import provenance
from benchmark.tracking.queries import retry_locked, runs_frame, search_all

# Param sections that define a model configuration (config_hash's keys without seed and dataset).
CONFIG_SECTIONS = ("model", "split", "grouping", "eval")
JOBS = "tags.`groupbench.role` = 'job'"
SWEEPS = "tags.`groupbench.role` = 'sweep'"


@dataclass
class Collected:
    """Job runs of one experiment: the kept (latest FINISHED per config_hash) and the rest."""
    runs: pd.DataFrame                   # kept runs: job_table's columns, ``label``, one column per metric
    metrics: list[str]
    incomplete: pd.DataFrame             # one row per (cell, seed) without a FINISHED run
    expected_seeds: int
    expected_source: str
    parent_run_id: str | None
    k: int
    all_runs: pd.DataFrame | None = None  # every kept run; ``runs`` minus merged duplicates (report.merge)
    merges: list | None = None            # report.merge's records of configurations shown as one row
    # kept runs of a reproduction configuration (tag ``reproduction``: +reproduction=<name>, the authors'
    # protocol): never in ``runs``, so no table of this harness's protocol mixes them in
    # (sections/group_reproduction.py shows them beside it)
    reproductions: pd.DataFrame | None = None


def swept_columns() -> list[str]:
    """The report's per-run columns of swept model parameters (``lambda_profile``, ``attention``)."""
    return [swept.key for swept in models_meta.swept_params()]


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _seed(value) -> int:
    number = _float(value)
    return int(number) if np.isfinite(number) else -1


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def configuration_label(model: str, values: dict[str, Any]) -> str:
    """``DMTL (λ=1, softmax)``: the model's display name, then its swept values (``meta.swept``)."""
    meta = models_meta.model_meta(model)
    parts = []
    for swept in meta.swept:
        value = values.get(swept.key)
        if swept.kind == "number" and np.isfinite(_float(value)):
            parts.append(f"{swept.short}={_float(value):g}")
        elif swept.kind == "category" and _given(value) and value:
            parts.append(str(value))
    return f"{meta.display_name} ({', '.join(parts)})" if parts else meta.display_name


def order_key(model: str, values: dict[str, Any], label: str) -> tuple:
    """Table order: the focus model first (by its categories' level order, then its numbers), then the rest."""
    focus = models_meta.model_meta(model).focus
    params = models_meta.swept_params()
    levels = tuple(s.rank(values.get(s.key)) if focus else 0 for s in params if s.kind == "category")
    numbers = tuple(v if np.isfinite(v := _float(values.get(s.key))) else -1.0 for s in params if s.kind == "number")
    return (0 if focus else 1, *levels, *numbers, label)


def count_values(value) -> int:
    """How many values a sweep override gives: ``0,1,2``, ``range(0,5)``, a list, or one value."""
    if isinstance(value, (list, tuple)):
        return len(value)
    text = str(value).strip()
    found = re.fullmatch(r"range\((-?\d+)\s*(?:,\s*(-?\d+))?\s*(?:,\s*(-?\d+))?\)", text)
    if found:
        a, b, step = (int(x) if x is not None else None for x in found.groups())
        return len(range(a, b, step or 1)) if b is not None else len(range(a))
    return len([part for part in text.split(",") if part.strip()])


def sweep_seed_count(parent) -> int | None:
    """Seeds per cell of a sweep invocation: its command-line ``seed=`` override, else its grids'."""
    params = parent.data.params
    for token in str(params.get("overrides", "")).split():
        if token.lstrip("+").startswith("seed="):
            return count_values(token.split("=", 1)[1])
    try:
        grids = json.loads(params.get("grids", "null"))
    except ValueError:
        return None
    if not isinstance(grids, dict) or not grids:
        return None
    counts = [count_values(grid["seed"]) if isinstance(grid, dict) and "seed" in grid else 1
              for grid in grids.values()]
    return max(counts)


def _expected_seeds(parents: list, cell_seeds: pd.Series) -> tuple[int, str]:
    """max(the latest sweep invocation's seed count, the most seeds any cell has)."""
    most = int(cell_seeds.max()) if len(cell_seeds) else 0
    for parent in parents:  # newest first
        count = sweep_seed_count(parent)
        if count is not None:
            if count >= most:
                return count, f"seed values of sweep run {parent.info.run_id}"
            return most, f"the most seeds of any cell; the latest sweep run asked for {count}"
    return most, "the most seeds of any cell; no sweep run logged its grid"


def job_table(jobs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``mlflow.search_runs``' frame of job runs -> one row per run: run_id, status, start_time (ms),
    config_hash, model, dataset, seed, signature (the configuration minus seed and dataset), config,
    tuned_trials, tuned_chosen, error, eval_k, dataset_sha256, git_commit, the swept columns, then the metrics."""
    def column(name: str, default=None) -> pd.Series:
        values = jobs[name] if name in jobs else pd.Series(None, index=jobs.index, dtype=object)
        return values.map(lambda v: v if _given(v) else default)

    def tag_or(name: str, fallback: pd.Series) -> pd.Series:  # ``tags.get(name) or fallback``
        values = column(f"tags.{name}")
        return values.where(values.astype(bool), fallback)

    # each run's configuration as configured (the ``configured`` tag over the effective params; runs logged
    # before it: import paths and plumbing dropped as today's runs do), so seeds whose data size changed
    # the trainer's batch and lr share a cell
    params = [c for c in jobs.columns if c.startswith("params.")]
    configured = column(f"tags.{provenance.CONFIGURED_TAG}")
    configs = [{key: value for key, value in provenance.as_configured(
                    {key[len("params."):]: value for key, value in row.items() if _given(value)}, tag).items()
                if key.split(".", 1)[0] in CONFIG_SECTIONS}
               for row, tag in zip(jobs[params].to_dict("records"), configured)]
    model = tag_or("model", column("params.model.name", "?"))
    tuned = column("tags.tuned.trials")
    seeds = column("tags.seed").where(column("tags.seed").notna(), column("params.seed"))
    frame = pd.DataFrame({
        "run_id": jobs["run_id"], "status": jobs["status"],
        "start_time": [0 if pd.isna(t) else int(t.value // 10**6) for t in jobs["start_time"]],  # ms, as run.info
        "config_hash": column("tags.config_hash").where(column("tags.config_hash").notna(), jobs["run_id"]),
        "model": model, "dataset": tag_or("dataset", column("params.dataset.name", "?")),
        "seed": seeds.map(_seed),
        # a tuned sweep's final runs of one model are one cell, whatever each seed's study chose
        "signature": [f"tuned:{m}" if _given(t) else json.dumps(c, sort_keys=True)
                      for m, t, c in zip(model, tuned, configs)],
        "config": configs, "tuned_trials": tuned, "tuned_chosen": column("tags.tuned.chosen", ""),
        "error": column("tags.error", ""), "eval_k": column("params.eval.k"),
        "dataset_sha256": column("tags.dataset_sha256", ""), "git_commit": column("tags.git_commit", ""),
        "group_split": column("tags.group_split", ""),  # group-item runs: which group split (corrected, ...)
        # +reproduction=<name> runs: the reproduction (else ""), its label and the run's role (model | reference)
        "reproduction": column(f"tags.{reproductions.TAG}", ""),
        "reproduction_label": column(f"tags.{reproductions.LABEL_TAG}", ""),
        "reproduction_role": column(f"tags.{reproductions.ROLE_TAG}", ""),
    }, index=jobs.index)
    for swept in models_meta.swept_params():
        values = column(f"params.{swept.param}")
        frame[swept.key] = values.map(_float) if swept.kind == "number" else values.map(lambda v: v or None)
    metrics = sorted(c[len("metrics."):] for c in jobs.columns if c.startswith("metrics."))
    frame = pd.concat([frame, jobs[[f"metrics.{m}" for m in metrics]].set_axis(metrics, axis=1)], axis=1)
    return frame.reset_index(drop=True), metrics


def collect(client, experiment: str, uri: str) -> Collected:
    found = retry_locked(client.get_experiment_by_name, experiment)
    if found is None:
        raise TrackingError(f"experiment {experiment!r} not found in tracking store {uri}; run "
                            f"`python -m benchmark +sweep={experiment}` first, or pass --experiment / --tracking-uri")
    jobs = runs_frame(uri, found.experiment_id, JOBS)
    if jobs.empty:
        raise TrackingError(f"experiment {experiment!r} in {uri} has no job runs (tag groupbench.role=job); "
                            f"run the sweep first")
    parents = sorted(search_all(client, found.experiment_id, SWEEPS),
                     key=lambda r: r.info.start_time or 0, reverse=True)
    # a sweep of reproductions only (+sweep=group_reproduction) is not the one whose seeds and overrides the
    # harness's tables follow (its runs are apart: ``reproductions``); the newest other sweep is
    parents = [p for p in parents if not reproduction_sweep(p)] or parents

    frame, metrics = job_table(jobs)
    reproduced = is_reproduction(frame)
    frame["label"] = ""  # a reproduction run's configuration never renames this harness's (nor theirs)
    frame.loc[~reproduced, "label"] = configuration_labels(frame[~reproduced])
    frame.loc[reproduced, "label"] = [f"{models_meta.display_name(m)} (reproduction {r})"
                                      for m, r in zip(frame.loc[reproduced, "model"], frame.loc[reproduced, "reproduction"])]
    tuned = frame["tuned_trials"].notna()  # tuned final runs: one cell per model, whatever each seed chose
    frame.loc[tuned, "label"] = [models_meta.display_name(m) + (" (tuned)" if str(t) != "0" else "")
                                 for m, t in zip(frame.loc[tuned, "model"], frame.loc[tuned, "tuned_trials"])]
    for key, kind in ((s.key, s.kind) for s in models_meta.swept_params()):
        frame.loc[tuned, key] = np.nan if kind == "number" else None

    finished = frame[frame["status"] == "FINISHED"].sort_values("start_time")
    kept = latest_results(finished)  # per (config hash, data hash); one data version per dataset
    # the newest non-FINISHED run of each config_hash that never finished: its cell misses that seed
    unfinished = (frame[~frame["config_hash"].isin(kept["config_hash"])].sort_values("start_time")
                  .drop_duplicates("config_hash", keep="last"))

    cell_seeds = kept.groupby(["dataset", "signature"])["seed"].nunique()
    expected, source = _expected_seeds(parents, cell_seeds)
    incomplete = _incomplete(frame, kept, unfinished, expected, is_reproduction(frame))
    ks = kept["eval_k"].dropna()
    k = int(ks.mode().iloc[0]) if len(ks) else 10
    reproduced = is_reproduction(kept)
    return Collected(kept[~reproduced].reset_index(drop=True), metrics, incomplete, expected, source,
                     parents[0].info.run_id if parents else None, k,
                     reproductions=kept[reproduced].reset_index(drop=True))


def is_reproduction(runs: pd.DataFrame) -> pd.Series:
    """Runs of a reproduction configuration (tag ``reproduction``): the authors' protocol, never mixed into
    this harness's tables."""
    if "reproduction" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["reproduction"].fillna("").astype(str) != ""


def reproduction_sweep(parent) -> bool:
    """Whether a sweep parent run's every grid sets ``+reproduction`` (a sweep of reproduction runs only)."""
    try:
        grids = json.loads(parent.data.params.get("grids", "null"))
    except ValueError:
        return False
    overrides = str(parent.data.params.get("overrides", ""))
    return (isinstance(grids, dict) and bool(grids)
            and all(isinstance(g, dict) and "+reproduction" in g for g in grids.values())) \
        or "+reproduction=" in overrides and not grids


def _incomplete(frame: pd.DataFrame, kept: pd.DataFrame, unfinished: pd.DataFrame, expected: int,
                reproduced: pd.Series | None = None) -> pd.DataFrame:
    """One row per (cell, seed) without a FINISHED run: failed or killed runs, and seeds never run (a
    reproduction's cell, ``reproduced``, expects only the seeds it ran: failed or killed ones are listed)."""
    reproduced = reproduced if reproduced is not None else pd.Series(False, index=frame.index)
    all_seeds = sorted(frame["seed"].unique())
    cells = frame.drop_duplicates(["dataset", "signature"])[["dataset", "signature", "label", "model"]]
    rows = []
    for cell in cells.itertuples(index=False):
        in_cell = (frame["dataset"] == cell.dataset) & (frame["signature"] == cell.signature)
        done = set(kept.loc[in_cell.loc[kept.index], "seed"])
        failed = unfinished[in_cell.loc[unfinished.index]]
        for run in failed.itertuples(index=False):
            if run.seed not in done:
                rows.append({"dataset": cell.dataset, "configuration": cell.label, "seed": run.seed,
                             "status": run.status, "run_id": run.run_id, "error": run.error})
        listed = done | set(failed["seed"])
        if reproduced[in_cell].any():
            continue
        never_run = [seed for seed in all_seeds if seed not in listed][:max(0, expected - len(listed))]
        for seed in never_run:
            rows.append({"dataset": cell.dataset, "configuration": cell.label, "seed": seed,
                         "status": "MISSING (no run)", "run_id": "", "error": ""})
        if len(listed) + len(never_run) < expected:  # seeds no cell ever ran: their values are unknown here
            rows.append({"dataset": cell.dataset, "configuration": cell.label, "seed": -1,
                         "status": f"MISSING ({expected - len(listed) - len(never_run)} more seed(s), no run)",
                         "run_id": "", "error": ""})
    return pd.DataFrame(rows, columns=["dataset", "configuration", "seed", "status", "run_id", "error"])


def _section(key: str) -> tuple[int, str]:
    """Label extras in the order runs log their params: the config's sections (split, grouping, model,
    eval), then the key (``mlflow.search_runs`` keeps no per-run param order)."""
    head = key.split(".", 1)[0]
    return (RESULT_KEYS.index(head) if head in RESULT_KEYS else len(RESULT_KEYS), key)


def configuration_labels(frame: pd.DataFrame) -> pd.Series:
    """Readable configuration names; configurations sharing a name get their differing params appended."""
    swept = swept_columns()
    base = pd.Series([configuration_label(m, values) for m, values in
                      zip(frame["model"], frame[swept].to_dict("records"))], index=frame.index)
    labels = base.copy()
    for (dataset, label), group in frame.groupby([frame["dataset"], base]):
        signatures = group.drop_duplicates("signature")
        if len(signatures) < 2:
            continue
        configs = pd.DataFrame(list(signatures["config"]), index=signatures["signature"])
        differing = sorted((c for c in configs.columns if configs[c].nunique(dropna=False) > 1), key=_section)
        for signature, config in configs[differing].iterrows():
            extra = ", ".join(f"{c.split('.', 1)[-1]}={config[c]}" for c in differing)
            labels[group.index[group["signature"] == signature]] = f"{label} [{extra}]"
    return labels
