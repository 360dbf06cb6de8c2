"""The scale benchmark's analysis (``python -m benchmark.scale``): per-size stage table, harness
shares, growth exponents, the issue's targets checked, the log-log plot and scale.json.

Apart from benchmark/scale.py, which runs the jobs: this part reads their results only (a run's,
or several runs' merged with ``--from-json``), so it can be re-run on saved results and tested
without running a job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.timing import STAGES

# the harness's stages (the model's are fit and predict); open_store is apart: a per-process cost
HARNESS_STAGES = ("load", "split", "grouping", "evaluate", "log")
PROTOCOL_STAGES = ("load", "split", "grouping")  # what the protocol cache saves a warm job
HARNESS_JOB = "harness"  # the first job of every size: model=global_mean, cache cold


def exponent(sizes: list[int], values: list[float]) -> float | None:
    """Slope of log(value) on log(size), least squares: 1 = linear growth."""
    points = [(np.log(s), np.log(v)) for s, v in zip(sizes, values) if v and v > 0]
    if len(points) < 2:
        return None
    x, y = np.array(points).T
    return float(np.polyfit(x, y, 1)[0])



def _ok(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if "seconds" in r]


def cold_protocol(results: list[dict[str, Any]], n_ratings: int) -> dict[str, float] | None:
    """load, split and grouping seconds of the size's cold harness job (None if it did not run)."""
    for r in _ok(results):
        if r["model"] == HARNESS_JOB and r["n_ratings"] == n_ratings:
            return {k: r["seconds"][k] for k in PROTOCOL_STAGES}
    return None


def shares(r: dict[str, Any], results: list[dict[str, Any]]) -> tuple[float, float | None]:
    """(harness share of the job as it ran, i.e. warm for models; the share with the cold protocol)."""
    s = r["seconds"]
    harness = sum(s[k] for k in HARNESS_STAGES)
    warm = harness / sum(s.values())
    cold = cold_protocol(results, r["n_ratings"])
    if cold is None:
        return warm, None
    swapped = {**s, **cold}
    return warm, sum(swapped[k] for k in HARNESS_STAGES) / sum(swapped.values())


def _mb(value: float | None) -> str:
    return "n/m" if value is None else f"{value:,.0f} MB"


def table(results: list[dict[str, Any]]) -> str:
    head = ("| ratings | job | " + " | ".join(STAGES)
            + " | total | harness share warm / cold | s/epoch | peak RSS (reached in) | protocol cache |")
    lines = [head, "|" + "---|" * (len(STAGES) + 7)]
    for r in results:
        if "seconds" not in r:
            lines.append(f"| {r['n_ratings']:,} | {r['model']} | " + " | ".join("" for _ in STAGES)
                         + f" | | {r.get('skipped') or r.get('error')} | | | |")
            continue
        s = r["seconds"]
        warm, cold = shares(r, results)
        share = "(harness job)" if r["model"] == HARNESS_JOB else \
            f"{warm:.0%} / {'n/m' if cold is None else f'{cold:.0%}'}"
        epoch = f"{r['seconds_per_epoch']:.2f}" if r.get("seconds_per_epoch") else ""
        lines.append(f"| {r['n_ratings']:,} | {r['model']} | " + " | ".join(f"{s[k]:.2f}" for k in STAGES)
                     + f" | {sum(s.values()):.1f} | {share} | {epoch} | {_mb(r['job_peak_rss_mb'])} ({r.get('peak_stage') or '?'}) "
                       f"| {r.get('protocol_cache', '')} |")
    return "\n".join(lines)


def stage_points(results: list[dict[str, Any]], stage_name: str) -> list[tuple[int, float]]:
    """(ratings, seconds) of a harness stage per size: load, split and grouping from the size's cold
    harness job; evaluate and log the median over the size's jobs."""
    ok = _ok(results)
    points = []
    for n in sorted({r["n_ratings"] for r in ok}):
        if stage_name in PROTOCOL_STAGES:
            cold = cold_protocol(results, n)
            if cold is not None:
                points.append((n, cold[stage_name]))
        else:
            points.append((n, float(np.median([r["seconds"][stage_name] for r in ok if r["n_ratings"] == n]))))
    return points


def exponents(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """Growth exponents: each harness stage (load, split, grouping from the cold harness job of
    each size; evaluate and log the median over the size's jobs), the harness job's peak RSS, and
    per model its fit, predict, epoch and peak RSS."""
    ok = _ok(results)
    out: dict[str, float | None] = {}
    for stage_name in HARNESS_STAGES:
        points = stage_points(results, stage_name)
        out[stage_name] = exponent([p[0] for p in points], [p[1] for p in points])
    for model in sorted({r["model"] for r in ok}):
        mine = sorted((r for r in ok if r["model"] == model), key=lambda r: r["n_ratings"])
        n = [r["n_ratings"] for r in mine]
        if model == HARNESS_JOB:
            out["harness.rss"] = exponent(n, [r["job_peak_rss_mb"] for r in mine])
            continue
        out[f"{model}.fit"] = exponent(n, [r["seconds"]["fit"] for r in mine])
        out[f"{model}.predict"] = exponent(n, [r["seconds"]["predict"] for r in mine])
        if all(r.get("seconds_per_epoch") for r in mine):
            out[f"{model}.epoch"] = exponent(n, [r["seconds_per_epoch"] for r in mine])
        out[f"{model}.rss"] = exponent(n, [r["job_peak_rss_mb"] for r in mine])
    return out


def targets(results: list[dict[str, Any]], fitted: dict[str, float | None]) -> list[str]:
    """The issue's targets, each with its measured value and met / not met / not measured."""
    lines = []
    for stage_name in HARNESS_STAGES:
        value = fitted.get(stage_name)
        lines.append(f"{stage_name} exponent <= 1.1: " + ("not measured" if value is None else
                                                           f"{value:.2f} ({'met' if value <= 1.1 else 'NOT met'})"))
    for r in _ok(results):
        if r["n_ratings"] != 1_000_000 or r["model"] == HARNESS_JOB:
            continue
        warm, cold = shares(r, results)
        cold_text = "n/m" if cold is None else f"{cold:.0%} ({'met' if cold <= 0.10 else 'NOT met'})"
        lines.append(f"harness share of the {r['model']} job at 1M <= 10%: warm cache {warm:.0%} "
                     f"({'met' if warm <= 0.10 else 'NOT met'}), cold {cold_text}")
    epoch = fitted.get("dmtl.epoch")
    lines.append("DMTL epoch grows linearly (exponent ~1): " + ("not measured" if epoch is None else f"{epoch:.2f}"))
    at_10m = [r for r in _ok(results) if r["n_ratings"] == 10_000_000]
    for r in at_10m:
        value = r["job_peak_rss_mb"] / 1024
        what = "harness (global_mean job)" if r["model"] == HARNESS_JOB else f"{r['model']} job"
        lines.append(f"peak RSS at 10M, {what} <= 4 GB: {value:.2f} GB ({'met' if value <= 4 else 'NOT met'})")
    if not at_10m:
        lines.append("peak RSS at 10M <= 4 GB: not measured in this run (--sizes without 10m)")
    return lines


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = _ok(results)
    sizes = sorted({r["n_ratings"] for r in ok})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    for stage_name in HARNESS_STAGES:
        points = stage_points(results, stage_name)
        if points:
            left.plot(*zip(*points), marker="o", label=f"harness: {stage_name}")
    for model in sorted({r["model"] for r in ok}):
        mine = sorted((r for r in ok if r["model"] == model), key=lambda r: r["n_ratings"])
        if model != HARNESS_JOB:
            line, = left.plot([r["n_ratings"] for r in mine], [r["seconds"]["fit"] for r in mine], marker="s",
                              ls="--", label=f"{model} fit")
            epochs = [r for r in mine if r.get("seconds_per_epoch")]
            if epochs:
                left.plot([r["n_ratings"] for r in epochs], [r["seconds_per_epoch"] for r in epochs], marker="^",
                          ls=":", color=line.get_color(), label=f"{model} epoch")
        right.plot([r["n_ratings"] for r in mine], [r["job_peak_rss_mb"] for r in mine], marker="s",
                   color="black" if model == HARNESS_JOB else None,
                   label="harness (global_mean job)" if model == HARNESS_JOB else f"{model} job")
    right.axhline(4096, color="grey", ls=":", label="4 GB target")
    left.set(xscale="log", yscale="log", xlabel="ratings", ylabel="seconds", title="stage time")
    right.set(xscale="log", yscale="log", xlabel="ratings", ylabel="peak RSS (MB)", title="peak memory")
    if len(sizes) > 1:
        reference = np.array([sizes[0], sizes[-1]], dtype=float)
        left.plot(reference, reference / reference[0] * 0.1, color="grey", ls=":", label="slope 1")
    left.legend(fontsize=7, ncol=2)
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)



def summarize(results: list[dict[str, Any]], out: Path, header: dict[str, Any]) -> None:
    """Print the stage table, exponents and targets; write scale.json and scale.png."""
    sizes = sorted({r["n_ratings"] for r in results})
    print("\n" + table(results))
    print("\nseconds (the runner's stage_*_seconds); predict = every prediction the model makes (test pairs, group"
          "\nmembers' pairs, catalogue);"
          "\nevaluate = the harness's own evaluation work; harness share = (load + split + grouping + evaluate + log)"
          "\n/ total, warm = as the job ran (protocol cache hit), cold = with the size's harness job's load, split"
          "\nand grouping (cache miss, the first job of a sweep); open_store (MLflow client) is left out")
    fitted = exponents(results)
    print("\ngrowth exponents (log-log least squares over " + ", ".join(f"{n:,}" for n in sizes) + " ratings):")
    for key, value in fitted.items():
        print(f"  {key}: {'n/a' if value is None else f'{value:.2f}'}")
    print("\ntargets:")
    for line in targets(results, fitted):
        print(f"  {line}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps({**header, "results": results, "exponents": fitted},
                                               indent=2, default=str))
    if _ok(results):
        plot(results, out / "scale.png")
    print(f"\nwrote {out / 'scale.json'}" + (f" and {out / 'scale.png'}" if _ok(results) else ""))

