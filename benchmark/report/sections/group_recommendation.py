"""Group recommendation (issue #24): the group-item runs' ranking metrics, one table per (dataset, split,
protocol), and a sentence per table saying which configuration is best and whether it beats the best
reference predictor (``meta.reference``).

Group-item runs (docs/protocol.md, "Group recommendation: sampled and full ranking";
benchmark/evaluation/group_item.py) log ``group_<protocol>_[<aggregation>_]<metric>_at_<k>``: protocol
``sampled`` or ``full`` (HR and NDCG at 5 and 10) or ``heldout`` / ``heldout_masked`` (Weeplaces: Recall and
NDCG at 20 and 50); a group scorer logs no aggregation, a user-level model one per member aggregation
(``mean``, ``least_misery``, ``most_pleasure``), shown as its own row (``SVD (mean)``). The split is the
run's ``group_split`` tag. Cells are the mean ± sample std over seeds; the best real configuration of a
column is bold, references never are and sit in their own block under the real models. On the sampled
protocol and table, from the runs' per-case artifacts (``per_case_sampled``, ``per_case_full``,
``per_group_heldout``), the best real configuration is tested against the best reference paired per group,
and the best group-scoring model against the best member-aggregated user-level model where a table holds
both (Wilcoxon, Holm over the table's tests, bootstrap CI).

Only runs with such metrics make the section: the paper and tuned reports have none. Runs of a reproduction
configuration (``+reproduction=<name>``, the authors' protocol) never do: they are shown beside this harness's
protocol in "Reproducing the group recommenders" (group_reproduction.py), never mixed into these tables.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.core import models_meta
from benchmark.evaluation.metrics import hit_rate_ndcg
from benchmark.evaluation.scoring import DIRECT
from benchmark.report.collect import is_reproduction
from benchmark.report.context import Context
from benchmark.report.format import Table, markdown
from benchmark.report.stats import bootstrap_ci, holm, paired_test, verdict
from benchmark.tracking.artifacts import download_table
from benchmark.tracking.queries import retry_locked

METRIC = re.compile(r"^group_(?P<protocol>sampled|full|heldout_masked|heldout)_(?:(?P<aggregation>[a-z_]+?)_)?"
                    r"(?P<metric>hr|ndcg|recall)_at_(?P<k>\d+)$")
HEADERS = {"hr": "HR", "ndcg": "NDCG", "recall": "Recall"}
PROTOCOLS = {"sampled": "sampled (100 negatives)", "full": "full catalogue",
             "heldout": "held-out items, full catalogue",
             "heldout_masked": "held-out items, full catalogue, members' items masked"}
LEGACY_SPLITS = ("shipped (legacy)",)
PAIRED_NOTE = ("Paired per-group tests (one unit = one group; each run logs a per-case table, `per_case_sampled`, "
               "`per_case_full` or `per_group_heldout`): in each table, the best real configuration against the best "
               "reference, and, where the table holds models that score groups themselves and member-aggregated "
               "user-level models, the best of the former against the best of the latter; chosen by NDCG at the "
               "largest cut-off. Per group, its metrics averaged over seeds, the difference's 95% bootstrap CI, "
               "Wilcoxon signed-rank p Holm-corrected over all of the table's tests.")
CASES = {"sampled": "per_case_sampled", "full": "per_case_full", "heldout": "per_group_heldout",
         "heldout_masked": "per_group_heldout_masked"}
COLUMNS = ["dataset", "split", "protocol", "configuration", "model", "reference", "metric", "mean", "std", "n",
           "pos_ties", "bold", "strategy", "run_ids"]


def _without_split(label: str) -> str:
    """``SVD [split=corrected]`` -> ``SVD``: the split is the table's, not a difference between its rows."""
    label = re.sub(r"(\[|, )split=[^,\]]*", lambda m: "[" if m.group(1) == "[" else "", label)
    return re.sub(r"\s*\[,?\s*\]", "", label).replace("[, ", "[")


def _reference(model: str):
    return models_meta.model_meta(model).reference


def long_results(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, split, protocol, configuration, metric): mean, sample std and n over seeds,
    the mean share of cases whose positive tied (``pos_ties``), and whether the cell is the column's best
    real configuration (``bold``)."""
    if runs is not None:
        runs = runs[~is_reproduction(runs)]  # the authors' protocol: its own section (group_reproduction)
    if runs is None or runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    parsed = {c: METRIC.match(str(c)) for c in runs.columns}
    parsed = {c: m for c, m in parsed.items() if m and runs[c].notna().any()}
    if not parsed:
        return pd.DataFrame(columns=COLUMNS)
    split = runs["group_split"] if "group_split" in runs else pd.Series("", index=runs.index)
    split = split.fillna("").map(lambda s: s or "?")
    records = []
    for column, match in parsed.items():
        protocol, aggregation = match["protocol"], match["aggregation"]
        ties = f"group_{protocol}_{aggregation + '_' if aggregation else ''}pos_ties"
        header = f"{HEADERS[match['metric']]}@{match['k']}"
        for index, value in runs[column].dropna().items():
            model = runs.at[index, "model"]
            ref = _reference(model)
            name = ref.label if ref is not None else _without_split(str(runs.at[index, "label"]))
            if aggregation:
                name = f"{name} ({aggregation.replace('_', ' ')})"
            records.append({"dataset": runs.at[index, "dataset"], "split": split[index], "protocol": protocol,
                            "configuration": name, "model": model, "reference": ref is not None,
                            "order": ref.order if ref is not None else -1,
                            "metric": header, "key": (int(match["k"]), match["metric"] == "ndcg"),
                            "value": float(value),
                            "tie": float(runs.at[index, ties]) if ties in runs else np.nan,
                            "strategy": aggregation or DIRECT, "run_id": runs.at[index, "run_id"],
                            "seed": runs.at[index, "seed"]})
    frame = pd.DataFrame(records)
    keys = ["dataset", "split", "protocol", "configuration", "model", "reference", "order", "metric", "key"]
    table = (frame.groupby(keys, sort=False, dropna=False)
             .agg(mean=("value", "mean"), std=("value", "std"), n=("value", "size"), pos_ties=("tie", "mean"),
                  strategy=("strategy", "first"),
                  run_ids=("run_id", lambda v: " ".join(sorted(set(v))))).reset_index())
    table["bold"] = False
    real = table[~table["reference"]]
    if len(real):
        best = real.groupby(["dataset", "split", "protocol", "metric"])["mean"].transform("max")
        table.loc[real.index, "bold"] = real["mean"] >= best - 1e-12
    table = table.sort_values(["dataset", "split", "protocol", "reference", "order", "configuration", "key"],
                              kind="stable")
    return table.drop(columns=["order"]).reset_index(drop=True)


def _cell(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def wide_table(rows: pd.DataFrame) -> tuple[Table, list[str]]:
    """One (dataset, split, protocol)'s rows as a Table (real configurations, then the references) and its
    metric headers in order."""
    metrics = list(dict.fromkeys(rows.sort_values("key", kind="stable")["metric"]))
    lines, bold = [], []
    for reference in (False, True):
        block = rows[rows["reference"] == reference]
        if block.empty:
            continue
        if reference:
            lines.append({"configuration": "*reference predictors*", **{m: "" for m in metrics},
                          "seeds": "", "positive ties": ""})
            bold.append({m: False for m in metrics})
        for name, config in block.groupby("configuration", sort=False):
            by_metric = config.set_index("metric")
            row = {"configuration": name}
            for m in metrics:
                row[m] = _cell(by_metric.at[m, "mean"], by_metric.at[m, "std"]) if m in by_metric.index else "—"
            ns = sorted(set(config["n"]))
            row["seeds"] = ", ".join(str(n) for n in ns)
            ties = config["pos_ties"].dropna()
            row["positive ties"] = f"{ties.iloc[0]:.1%}" if len(ties) else "—"
            lines.append(row)
            bold.append({m: bool(by_metric.at[m, "bold"]) if m in by_metric.index else False for m in metrics})
    cells = pd.DataFrame(lines)
    mask = pd.DataFrame(bold).reindex(columns=cells.columns, fill_value=False)
    return Table(cells, mask), metrics


def verdicts(rows: pd.DataFrame, metrics: list[str]) -> list[dict]:
    """Per metric: the best real configuration and the best reference, with their means."""
    found = []
    for metric in metrics:
        at = rows[rows["metric"] == metric]
        real, refs = at[~at["reference"]], at[at["reference"]]
        best = real.loc[real["mean"].idxmax()] if len(real) else None
        ref = refs.loc[refs["mean"].idxmax()] if len(refs) else None
        found.append({"metric": metric,
                      "best": None if best is None else best["configuration"],
                      "best_mean": np.nan if best is None else float(best["mean"]),
                      "reference": None if ref is None else ref["configuration"],
                      "reference_mean": np.nan if ref is None else float(ref["mean"]),
                      "beats": bool(best is not None and ref is not None and best["mean"] > ref["mean"])})
    return found


def sentence(found: list[dict]) -> str:
    """What the table found, from its numbers: the best configuration, and whether it beats the best reference."""
    parts = []
    for best in dict.fromkeys(v["best"] for v in found if v["best"] is not None):
        on = [v["metric"] for v in found if v["best"] == best]
        parts.append(f"{best} on {', '.join(on)}")
    if not parts:
        return "Only reference predictors ran here."
    text = "Best real configuration: " + "; ".join(parts) + "."
    against = [v for v in found if v["best"] is not None and v["reference"] is not None]
    beaten = [v for v in against if v["beats"]]
    if beaten:
        text += " " + "; ".join(f"{v['best']} beats the best reference, {v['reference']}, on {v['metric']} "
                               f"({v['best_mean']:.4f} vs {v['reference_mean']:.4f})" for v in beaten) + "."
    for reference in dict.fromkeys(v["reference"] for v in against if not v["beats"]):
        on = [v for v in against if not v["beats"] and v["reference"] == reference]
        values = ", ".join(f"{v['reference_mean']:.4f} vs {v['best_mean']:.4f}" for v in on)
        text += (f" No real model beats {reference} on {', '.join(v['metric'] for v in on)} "
                 f"({reference} vs best real: {values}).")
    return text


def headline(found: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, group split and protocol: the verdict on its NDCG at the largest cut-off (the Findings'
    line), the legacy split's only where a dataset has no other."""
    if found is None or found.empty:
        return pd.DataFrame()
    ndcg = found[found["metric"].str.startswith("NDCG@")].copy()
    ndcg["cut"] = ndcg["metric"].str[5:].astype(int)
    ndcg = ndcg[ndcg["cut"] == ndcg.groupby(["dataset", "split", "protocol"])["cut"].transform("max")]
    legacy = ndcg["split"].isin(LEGACY_SPLITS)
    only_legacy = legacy.groupby(ndcg["dataset"]).transform("all")
    return ndcg[~legacy | only_legacy].drop(columns=["cut"]).reset_index(drop=True)


def headline_metric(metrics: list[str]) -> str:
    """NDCG at the largest cut-off (the tables' metrics are ordered by cut-off)."""
    return [m for m in metrics if m.startswith("NDCG@")][-1]


def case_metrics(client, run_ids: list[str], strategy: str, protocol: str, tmp: Path, missing: list[str]) -> pd.DataFrame:
    """Per (seed run, group): the table's metrics from the run's per-case artifact (``CASES``): HR and NDCG
    at 5 and 10 from the per-case ranks (one case per group), or the held-out protocols' per-group Recall
    and NDCG at 20 and 50."""
    parts = []
    for run_id in run_ids:
        try:
            cases = retry_locked(download_table, client, run_id, CASES[protocol], tmp / run_id)
        except Exception:  # absent artifact (runs older than it): named, never silently dropped
            missing.append(run_id)
            continue
        cases = cases[cases["strategy"] == strategy]
        values = {"group": cases["group"].to_numpy(), "run": run_id}
        if "rank" in cases:
            for k in (5, 10):
                hit, ndcg = hit_rate_ndcg(cases["rank"].to_numpy(), k)
                values[f"HR@{k}"], values[f"NDCG@{k}"] = hit, ndcg
        else:
            for column in cases.columns:
                match = re.match(r"^(recall|ndcg)_at_(\d+)$", column)
                if match:
                    values[f"{HEADERS[match[1]]}@{match[2]}"] = cases[column].to_numpy()
        parts.append(pd.DataFrame(values))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def contenders(rows: pd.DataFrame, metric: str) -> list[tuple[pd.Series, pd.Series]]:
    """The pairs a table tests, each (better candidate, its rival) at ``metric``: the best real
    configuration against the best reference; and, when the table holds both models that score groups
    themselves and member-aggregated user-level models, the best of the former against the best of the latter."""
    at = rows[rows["metric"] == metric]
    real, refs = at[~at["reference"]], at[at["reference"]]
    pairs = []
    if len(real) and len(refs):
        pairs.append((real.loc[real["mean"].idxmax()], refs.loc[refs["mean"].idxmax()]))
    direct, aggregated = real[real["strategy"] == DIRECT], real[real["strategy"] != DIRECT]
    if len(direct) and len(aggregated):
        pairs.append((direct.loc[direct["mean"].idxmax()], aggregated.loc[aggregated["mean"].idxmax()]))
    return pairs


def paired(ctx: Context, rows: pd.DataFrame, metrics: list[str], protocol: str) -> tuple[list[str], pd.DataFrame]:
    """The table's paired per-group tests (:func:`contenders`), Holm-corrected over all of the table's tests."""
    top = headline_metric(metrics)
    results, groups_of, missing = [], {}, []
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for a, b in contenders(rows, top):
        with tempfile.TemporaryDirectory() as tmp:
            cases_a = case_metrics(ctx.client, a["run_ids"].split(), a["strategy"], protocol, Path(tmp) / "a", missing)
            cases_b = case_metrics(ctx.client, b["run_ids"].split(), b["strategy"], protocol, Path(tmp) / "b", missing)
        if cases_a.empty or cases_b.empty:
            continue
        shown = [m for m in metrics if m in cases_a and m in cases_b]
        means_a = cases_a.groupby("group")[shown].mean()  # per group: the mean over seeds
        means_b = cases_b.groupby("group")[shown].mean()
        groups = means_a.index.intersection(means_b.index)
        groups_of[(a["configuration"], b["configuration"])] = len(groups)
        for metric in shown:
            test = paired_test(means_a.loc[groups, metric], means_b.loc[groups, metric])
            low, high = bootstrap_ci(means_a.loc[groups, metric].to_numpy() - means_b.loc[groups, metric].to_numpy())
            results.append({"configuration": a["configuration"], "reference": b["configuration"], "metric": metric,
                            "groups": test.n, "mean_diff": test.mean_diff, "ci_low": low, "ci_high": high,
                            "wilcoxon_p": test.wilcoxon_p})
    if missing:
        return [f"No paired per-group test: runs without a `{CASES[protocol]}` artifact: "
                f"{', '.join(sorted(set(missing)))}.", ""], pd.DataFrame()
    if not results:
        return [], pd.DataFrame()
    table = pd.DataFrame(results)
    table["wilcoxon_p_holm"] = holm(table["wilcoxon_p"])
    table["verdict"] = [verdict(d, p) for d, p in zip(table["mean_diff"], table["wilcoxon_p_holm"])]
    lines = []
    for (a, b), part in table.groupby(["configuration", "reference"], sort=False):
        shown_table = pd.DataFrame({
            "metric": part["metric"], "difference": part["mean_diff"].map(lambda v: f"{v:+.4f}"),
            "95% CI": [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(part["ci_low"], part["ci_high"])],
            "Holm p": part["wilcoxon_p_holm"].map(lambda v: f"{v:.2g}"), "verdict": part["verdict"]})
        lines += [f"Paired per group ({groups_of[(a, b)]} groups): {a} − {b}.", "", markdown(shown_table), ""]
    return lines, table


def heading(dataset: str, split: str, protocol: str) -> str:
    legacy = " — legacy" if split in LEGACY_SPLITS else ""
    return f"Group recommendation: {dataset}, {split} split{legacy}, {PROTOCOLS.get(protocol, protocol)}"


def section(ctx: Context) -> list[str]:
    runs = ctx.col.all_runs if ctx.col.all_runs is not None else ctx.col.runs
    table = long_results(runs)
    if table.empty:
        return []  # no group-item runs (the paper and tuned experiments)
    ctx.csv(table.drop(columns=["key", "strategy", "run_ids"]), "group_recommendation.csv")
    md = ["## Group recommendation", "",
          "Group-item runs (docs/protocol.md, \"Group recommendation: sampled and full ranking\"): one table per "
          "dataset, group split and protocol. Cells: mean ± sample std over seeds (`seeds`: how many). A "
          "user-level model is scored through each member aggregation, one row each. The best real configuration "
          "of a column is bold; the reference predictors (their own block) never are. `positive ties`: the "
          "share of cases whose held-out item tied with a candidate (mean over seeds).", "",
          PAIRED_NOTE, ""]
    found_all, tests = [], []
    for (dataset, split, protocol), rows in table.groupby(["dataset", "split", "protocol"], sort=False):
        shown, metrics = wide_table(rows)
        found = verdicts(rows, metrics)
        found_all += [{"dataset": dataset, "split": split, "protocol": protocol,
                       "table": heading(dataset, split, protocol), **v} for v in found]
        md += [f"### {heading(dataset, split, protocol)}", "", shown.markdown(), "", sentence(found), ""]
        lines, test = paired(ctx, rows, metrics, protocol)
        md += lines
        if len(test):
            tests.append(test.assign(dataset=dataset, split=split, protocol=protocol))
    if tests:
        ctx.csv(pd.concat(tests, ignore_index=True), "group_recommendation_tests.csv")
    ctx.results["group_recommendation"] = pd.DataFrame(found_all)
    return md
