"""The reference predictors' block per dataset (``meta.reference`` of conf/model/*.yaml: the oracle,
constants, random, item mean, popularity), the real models' range, and the notes where a trivial
predictor beats a real model on a metric (docs/protocol.md, "Metrics")."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.core import models_meta
from benchmark.report.format import markdown
from benchmark.report.tables import arrow, higher_is_better

# Reference predictors: shown in their own block, never bold, never "best", never a baseline of the
# significance tests; in their display order.
REFERENCE_MODELS = models_meta.reference_predictors()
TRIVIAL_MODELS = tuple(m for m in REFERENCE_MODELS if models_meta.model_meta(m).reference.trivial)
REFERENCE_NAMES = {m: models_meta.model_meta(m).reference.label for m in REFERENCE_MODELS}

# metric -> (header, higher is better); {k} is the runs' eval.k
REFERENCE_METRICS = {"rmse": ("RMSE (pooled)", False), "user_rmse": ("RMSE (per user)", False),
                     "precision_at_{k}": ("P@{k}", True), "recall_at_{k}": ("R@{k}", True),
                     "ndcg_at_{k}": ("NDCG@{k}", True), "full_recall_at_{k}": ("full R@{k}", True),
                     "full_ndcg_at_{k}": ("full NDCG@{k}", True)}


def present(runs: pd.DataFrame, metrics: list[str]) -> list[str]:
    return [m for m in metrics if m in runs and runs[m].notna().any()]


def _means(runs: pd.DataFrame, metrics: list[str], by: str = "label") -> pd.DataFrame:
    return runs.groupby(by, sort=False)[metrics].mean()


def _fmt(value: float, decimals: int = 4) -> str:
    return f"{value:.{decimals}f}" if np.isfinite(value) else "—"


def _higher(metric: str, k: int) -> bool:
    return REFERENCE_METRICS[next(m for m in REFERENCE_METRICS if m.format(k=k) == metric)][1]


def reference_block(runs: pd.DataFrame, dataset: str, k: int) -> list[str]:
    """Markdown lines: the reference predictors' means, the real models' range, and the calibration notes."""
    in_dataset = runs[runs["dataset"] == dataset]
    refs = in_dataset[in_dataset["model"].isin(REFERENCE_MODELS)]
    real = in_dataset[~in_dataset["model"].isin(REFERENCE_MODELS)]
    lines = [f"## Reference predictors: {dataset}", ""]
    if refs.empty:
        return lines + [f"No reference predictor ran on this dataset (add `model={','.join(REFERENCE_MODELS)}` "
                        f"to the sweep).", ""]
    metrics = present(in_dataset, [m.format(k=k) for m in REFERENCE_METRICS])
    names = {m.format(k=k): h.format(k=k) for m, (h, _) in REFERENCE_METRICS.items()}
    headers = {m.format(k=k): f"{h.format(k=k)} {arrow(hb)}" for m, (h, hb) in REFERENCE_METRICS.items()}
    ref_means = _means(refs, metrics + present(refs, ["prediction_std"]), "model")
    order = [m for m in REFERENCE_MODELS if m in ref_means.index]
    rows = [{"Predictor": REFERENCE_NAMES[m], **{headers[c]: _fmt(ref_means.loc[m, c]) for c in metrics}}
            for m in order]
    real_means = _means(real, metrics) if len(real) else pd.DataFrame(columns=metrics)
    if len(real_means):
        for name, pick in (("real models: best", True), ("real models: worst", False)):
            row = {"Predictor": name}
            for c in metrics:
                values = real_means[c].dropna()
                best = values.max() if _higher(c, k) == pick else values.min()
                row[headers[c]] = _fmt(best) if len(values) else "—"
            rows.append(row)
    lines += ["Means over seeds. The oracle (true test rating) is each metric's ceiling under its protocol; the "
              "others learn nothing about the user. References are never bold and never a baseline of the tests.",
              "", markdown(pd.DataFrame(rows)), ""]
    constant = [REFERENCE_NAMES[m] for m in order if m in constant_scorers(ref_means)]
    if constant:
        lines += [f"{' and '.join(constant)} {'give' if len(constant) > 1 else 'gives'} every item the same "
                  f"score (`prediction_std` = 0): {'their' if len(constant) > 1 else 'its'} ranking is the tie rule "
                  f"alone, so {'they score identically' if len(constant) > 1 else 'it scores as the tie rule does'} "
                  f"on every ranking metric and say nothing about ranking.", ""]
    lines += calibration_notes(ref_means, real_means, metrics, names, k)
    return lines


def trivial_floor(runs: pd.DataFrame, dataset: str, metrics: list[str]) -> dict[str, tuple[float, str]]:
    """Per metric, the best mean over seeds of the trivial reference predictors on ``dataset``: (value, name).
    Timings (``*_seconds``) have none: a reference's speed is not a bar a model must clear."""
    refs = runs[(runs["dataset"] == dataset) & runs["model"].isin(TRIVIAL_MODELS)]
    floor = {}
    for metric in present(refs, [m for m in metrics if not m.endswith("_seconds")]):
        means = _means(refs, [metric], "model")[metric].dropna()
        if means.empty:
            continue
        model = means.idxmax() if higher_is_better(metric) else means.idxmin()
        floor[metric] = (float(means[model]), REFERENCE_NAMES[model])
    return floor


def constant_scorers(ref_means: pd.DataFrame) -> list[str]:
    """References whose predictions do not vary (``prediction_std`` 0 in every seed's mean)."""
    if "prediction_std" not in ref_means:
        return []
    return [m for m in ref_means.index if np.isfinite(ref_means.loc[m, "prediction_std"])
            and ref_means.loc[m, "prediction_std"] <= 1e-12]


def calibration_notes(ref_means: pd.DataFrame, real_means: pd.DataFrame, metrics: list[str],
                      names: dict[str, str], k: int) -> list[str]:
    """One line per metric on which a trivial predictor beats at least one real configuration."""
    notes = []
    for metric in metrics:
        higher = _higher(metric, k)
        values = real_means[metric].dropna() if metric in real_means else pd.Series(dtype=float)
        if values.empty:
            continue
        winners = []
        for model in (m for m in TRIVIAL_MODELS if m in ref_means.index):
            ref = ref_means.loc[model, metric]
            beaten = int((values < ref).sum() if higher else (values > ref).sum()) if np.isfinite(ref) else 0
            if beaten:
                winners.append(f"{REFERENCE_NAMES[model]} ({_fmt(ref)}) beats {beaten}")
        if not winners:
            continue
        if metric.startswith("full_"):
            what = "a ranking that knows nothing about the user does as well (popularity and item-mean bias)"
        elif higher:
            what = "it measures calibration (which predictions reach the relevance threshold), not ranking"
        else:
            what = "a predictor that learns nothing about users does as well"
        notes.append(f"- **{names[metric]}**: {'; '.join(winners)} of {len(values)} real configurations — {what}.")
    if not notes:
        return ["No trivial predictor beats a real configuration on these metrics.", ""]
    return ["Where a trivial predictor beats real models (means over seeds):", "", *notes, ""]
