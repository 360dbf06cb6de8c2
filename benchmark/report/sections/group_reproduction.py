"""Reproducing the group recommenders (issue #25): each reproduction configuration found in the experiment
(``conf/reproduction/<name>.yaml``, runs tagged ``reproduction=<name>``; ``+sweep=group_reproduction``) beside
this harness's protocol (``+sweep=groups``), never mixed with it.

Per reproduction, one table: the figures its sources printed (the ``reproduction.json`` artifact its runs log:
metric names as the harness logs them, the source, the tolerance), the reproduced figures under the reference
protocol (mean over seeds, ``seeds`` = n), their difference from each reported figure, the reference predictors
under the same reference protocol (runs of ``+reproduction=<name> model=<reference>``), then the same model and
the same references on the same dataset under this harness's protocol (untagged runs on the reproduction's
``harness.split``; mean ± sample std over seeds), each row with the command that made it. Under the table a
generated verdict per checked source: **met** (every reported figure within the tolerance), **not met** (which
are not), **no reported figure** (the source was not retrieved: nothing is checked), or **not run**. Nothing here
is typed by hand: the numbers come from the tracking store, the words from them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.core import models_meta
from benchmark.core import reproduction as reproductions
from benchmark.report.context import Context
from benchmark.report.format import markdown
from benchmark.report.sections.group_recommendation import HEADERS, METRIC
from benchmark.tracking.queries import retry_locked

PROTOCOL_SHORT = {"sampled": "sampled", "full": "full", "heldout": "held-out", "heldout_masked": "held-out, masked"}
VERDICT_COLUMNS = ["reproduction", "dataset", "source", "checked", "metric", "reported", "reproduced", "n",
                   "difference", "tolerance", "kind", "within", "verdict"]


def header(metric: str) -> str:
    """``group_sampled_hr_at_5`` -> ``HR@5 sampled``."""
    match = METRIC.match(metric)
    if match is None:
        return metric
    return f"{HEADERS[match['metric']]}@{match['k']} {PROTOCOL_SHORT.get(match['protocol'], match['protocol'])}"


def headline(metrics: tuple[str, ...]) -> str:
    """NDCG at the largest cut-off of the first protocol listed (else the first metric)."""
    first = METRIC.match(metrics[0])
    ndcg = [(int(m["k"]), name) for name in metrics if (m := METRIC.match(name)) and m["metric"] == "ndcg"
            and (first is None or m["protocol"] == first["protocol"])]
    return max(ndcg)[1] if ndcg else metrics[0]


def stats(runs: pd.DataFrame, metric: str) -> tuple[float, float, int]:
    values = runs[metric].dropna() if metric in runs else pd.Series(dtype=float)
    if values.empty:
        return np.nan, np.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else np.nan, len(values)


def cell(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def reproduced_runs(spec: reproductions.Reproduction, runs: pd.DataFrame) -> pd.DataFrame:
    """The reproduced model's runs of this reproduction (role ``model``)."""
    if runs is None or runs.empty:
        return pd.DataFrame(columns=["reproduction", "model"])
    return runs[(runs["reproduction"] == spec.name) & (runs["model"] == spec.choice("model"))]


def verdicts(spec: reproductions.Reproduction, reproduced: pd.DataFrame) -> pd.DataFrame:
    """One row per (reported source, metric it printed): reported, reproduced (mean over seeds), n, difference,
    whether it is within the tolerance, and the source's verdict (met | not met | no reported figure | not run |
    context (not checked))."""
    rows = []
    for entry in spec.reported:
        part = []
        for metric in spec.metrics:
            if metric not in entry.metrics:
                continue
            value = entry.metrics[metric]
            mean, _, n = stats(reproduced, metric)
            reported = np.nan if value is None else float(value)
            difference = mean - reported
            within = (bool(spec.within(difference, reported))
                      if np.isfinite(difference) and spec.tolerance is not None else None)
            part.append({"reproduction": spec.name, "dataset": spec.choice("dataset"), "source": entry.source,
                         "checked": entry.checked, "metric": metric, "reported": reported, "reproduced": mean,
                         "n": n, "difference": difference, "tolerance": spec.tolerance, "kind": spec.tolerance_kind,
                         "within": within})
        figures = [r for r in part if np.isfinite(r["reported"])]
        if not entry.checked:
            word = "context (not checked)"
        elif not figures:
            word = "no reported figure"
        elif spec.tolerance is None:
            word = "no tolerance"
        elif not any(r["n"] for r in figures):
            word = "not run"
        else:
            word = "met" if all(r["within"] for r in figures) else "not met"
        rows += [{**r, "verdict": word} for r in part]
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def verdict_lines(spec: reproductions.Reproduction, found: pd.DataFrame) -> list[str]:
    """The generated verdict of each checked source."""
    tolerance = ("no tolerance" if spec.tolerance is None else
                 f"±{spec.tolerance:g} {'absolute' if spec.tolerance_kind == 'absolute' else 'relative (× the reported figure)'}")
    lines = []
    for source, rows in found[found["checked"]].groupby("source", sort=False):
        word = rows["verdict"].iloc[0]
        figures = rows[np.isfinite(rows["reported"].astype(float))]
        shown = ", ".join(f"{header(r.metric)} {r.difference:+.4f}" for r in figures.itertuples() if np.isfinite(r.difference))
        text = f"- Against {source} (tolerance {tolerance}): **{word}**"
        if word == "not met":
            outside = [header(r.metric) for r in figures.itertuples() if r.within is False]
            text += f" ({', '.join(outside)} outside it; reproduced − reported: {shown})"
        elif word == "met":
            text += f" (reproduced − reported: {shown}; n = {int(figures['n'].max())} seed(s))"
        elif word == "no reported figure":
            text += ": the source's figures were not retrieved, so the tolerance is not checked"
        elif word == "not run":
            text += f": no finished run of `{spec.command}` in this experiment"
        lines.append(text + ".")
    if found.empty or not found["n"].any():
        if not any("**not run**" in line for line in lines):
            lines.append(f"- Not run here: no finished run of `{spec.command}` in this experiment.")
    if spec.tolerance_note:
        lines.append(f"- The tolerance: {spec.tolerance_note}.")
    return lines


def harness_runs(spec: reproductions.Reproduction, runs: pd.DataFrame, model: str) -> pd.DataFrame:
    """Untagged runs of ``model`` on the reproduction's dataset and harness split."""
    if runs is None or runs.empty:
        return pd.DataFrame(columns=["model", "dataset", "group_split", "label", "config"])
    split = runs["group_split"].fillna("").astype(str) if "group_split" in runs else pd.Series("", index=runs.index)
    return runs[(runs["model"] == model) & (runs["dataset"] == spec.choice("dataset"))
                & split.str.startswith(spec.harness_split)]


def harness_command(spec: reproductions.Reproduction, model: str, config: dict) -> str:
    """``python -m benchmark model=M dataset=D`` plus, for the reproduced model, each key of the reproduction's
    harness command line at the value this configuration ran with."""
    words = ["python -m benchmark", f"model={model}", f"dataset={spec.choice('dataset')}"]
    if model == spec.choice("model"):
        for override in spec.harness_overrides:
            key, _, value = override.partition("=")
            if "." in key:
                words.append(f"{key}={config.get(key, value)}")
    return " ".join(words)


def table(spec: reproductions.Reproduction, repro: pd.DataFrame, harness: pd.DataFrame,
          found: pd.DataFrame) -> pd.DataFrame:
    """Long rows (row, protocol, command, seeds, metric, mean, std) of one reproduction's table, in order."""
    rows: list[dict] = []

    def add(kind: str, row: str, protocol: str, command: str, runs: pd.DataFrame | None = None,
            values: dict | None = None, seeds: str = "") -> None:
        for metric in spec.metrics:
            if runs is not None:
                mean, std, n = stats(runs, metric)
                text = cell(mean, std)
            else:
                mean, std, n = values.get(metric, (np.nan, ""))[0], np.nan, 0
                text = values.get(metric, (np.nan, "—"))[1]
            rows.append({"reproduction": spec.name, "dataset": spec.choice("dataset"), "kind": kind, "row": row,
                         "protocol": protocol, "command": command, "metric": metric, "mean": mean, "std": std,
                         "n": n, "text": text,
                         "seeds": seeds or (str(int(runs["seed"].nunique())) if runs is not None and len(runs) else "0"),
                         "run_ids": " ".join(sorted(runs["run_id"])) if runs is not None and "run_id" in runs else ""})

    for entry in spec.reported:
        values = {m: ((np.nan, "not retrieved") if v is None else (float(v), f"{float(v):.4f}"))
                  for m, v in entry.metrics.items()}
        add("reported", f"reported: {entry.source}", "theirs, as printed", "—", values=values, seeds="—")
    model = spec.choice("model")
    mine = reproduced_runs(spec, repro)
    add("model", f"{spec.label} — reproduced", "reference", spec.command, runs=mine)
    for source, part in found[found["checked"]].groupby("source", sort=False):
        if not np.isfinite(part["difference"].astype(float)).any():
            continue  # nothing to subtract: no reported figure, or no run
        values = {r.metric: (r.difference, f"{r.difference:+.4f}" if np.isfinite(r.difference) else "—")
                  for r in part.itertuples()}
        add("difference", f"difference, reproduced − reported ({source})", "", "—", values=values, seeds="—")
    for reference in spec.references:
        runs = repro[(repro["reproduction"] == spec.name) & (repro["model"] == reference)] \
            if repro is not None and len(repro) else pd.DataFrame(columns=["seed", "run_id"])
        add("reference", f"{models_meta.display_name(reference)}, reference protocol", "reference",
            f"{spec.command} model={reference}", runs=runs)
    mine = harness_runs(spec, harness, model)
    if mine.empty:
        add("model", f"{models_meta.display_name(model)}, this harness's protocol", "this harness's",
            harness_command(spec, model, {}), runs=mine)
    for label, runs in mine.groupby("label", sort=True):
        add("model", f"{label}, this harness's protocol", "this harness's",
            harness_command(spec, model, dict(runs["config"].iloc[0])), runs=runs)
    for reference in spec.references:
        add("reference", f"{models_meta.display_name(reference)}, this harness's protocol", "this harness's",
            harness_command(spec, reference, {}), runs=harness_runs(spec, harness, reference))
    return pd.DataFrame(rows)


def wide(long: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """The long rows as the Markdown table: one line per row, one column per metric."""
    lines = []
    for (row, command), part in long.groupby(["row", "command"], sort=False):
        by_metric = part.set_index("metric")
        lines.append({"": row, "seeds": part["seeds"].iloc[0],
                      **{header(m): by_metric.at[m, "text"] for m in metrics},
                      "command": f"`{command}`" if command != "—" else "—"})
    return pd.DataFrame(lines)


def comparison(spec: reproductions.Reproduction, long: pd.DataFrame) -> str:
    """Under each protocol: the model against the best of the references at the headline metric."""
    metric = headline(spec.metrics)
    at = long[(long["metric"] == metric) & (long["protocol"].isin(["reference", "this harness's"]))]
    parts = []
    for protocol, words in (("reference", "the reference protocol"), ("this harness's", "this harness's protocol")):
        rows = at[(at["protocol"] == protocol) & np.isfinite(at["mean"].astype(float))]
        model, refs = rows[rows["kind"] == "model"], rows[rows["kind"] == "reference"]
        if model.empty or refs.empty:
            continue
        best_model, best_ref = model.loc[model["mean"].idxmax()], refs.loc[refs["mean"].idxmax()]
        beats = "beats" if best_model["mean"] > best_ref["mean"] else "does not beat"
        parts.append(f"under {words}, {models_meta.display_name(spec.choice('model'))} ({best_model['mean']:.4f}) "
                     f"{beats} the best reference, {best_ref['row'].split(',')[0]} ({best_ref['mean']:.4f})")
    if not parts:
        return ""
    return f"- At {header(metric)}: " + "; ".join(parts) + "."


def load_specs(ctx: Context, repro: pd.DataFrame) -> tuple[dict[str, reproductions.Reproduction], list[str]]:
    """Each reproduction's node, from the ``reproduction.json`` of its newest run; names whose runs lack it."""
    specs, missing = {}, []
    for name, runs in repro.sort_values("start_time", ascending=False).groupby("reproduction", sort=True):
        for run_id in runs["run_id"]:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    path = retry_locked(ctx.client.download_artifacts, run_id, reproductions.ARTIFACT, tmp)
                    specs[name] = reproductions.parse(json.loads(Path(path).read_text()))
                break
            except Exception:  # absent or unreadable (MLflow's, the parser's one line): try an older run
                continue
        else:
            missing.append(name)
    return specs, missing


def render(spec: reproductions.Reproduction, repro: pd.DataFrame, harness: pd.DataFrame
           ) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    """One reproduction's Markdown, its long rows and its verdict rows."""
    found = verdicts(spec, reproduced_runs(spec, repro))
    long = table(spec, repro, harness, found)
    md = [f"### {spec.label}: {spec.choice('dataset')}", "",
          f"Reference code {spec.reference}; the reference protocol is `{spec.command}` "
          f"(`{' '.join(spec.overrides)}`). This harness's protocol: the {spec.harness_split} split, "
          f"`{spec.harness_command}` for the reproduction's model settings; each of its rows below is a "
          f"configuration that ran, with its command.", "", markdown(wide(long, spec.metrics)), ""]
    md += verdict_lines(spec, found)
    line = comparison(spec, long)
    md += [line] if line else []
    md += [f"- {spec.note}"] if spec.note else []
    return md + [""], long, found


def section(ctx: Context) -> list[str]:
    repro = ctx.col.reproductions
    if repro is None or repro.empty:
        return []
    harness = ctx.col.all_runs if ctx.col.all_runs is not None else ctx.col.runs
    specs, missing = load_specs(ctx, repro)
    md = ["## Reproducing the group recommenders", "",
          "Each published figure re-run under its authors' protocol (a reproduction configuration, "
          "`conf/reproduction/<name>.yaml`; `python -m benchmark +sweep=group_reproduction`), labelled as theirs and "
          "shown beside this harness's protocol (`+sweep=groups`). The two are never mixed: the reproduction runs "
          "(tag `reproduction`) are in no other table of this report. Cells: mean ± sample std over seeds (`seeds`: "
          "how many); reported figures as their source printed them; every row's command is in its last column.", ""]
    longs, founds = [], []
    for name in sorted(specs):
        lines, long, found = render(specs[name], repro, harness)
        md += lines
        longs.append(long)
        founds.append(found)
    if missing:
        md += [f"Reproduction runs without a `{reproductions.ARTIFACT}` artifact (not shown): {', '.join(missing)}.", ""]
    if longs:
        ctx.csv(pd.concat(longs, ignore_index=True).drop(columns=["text"]), "group_reproduction.csv")
        verdict_frame = pd.concat(founds, ignore_index=True)
        ctx.csv(verdict_frame, "group_reproduction_verdicts.csv")
        ctx.results["group_reproduction"] = verdict_frame
    return md
