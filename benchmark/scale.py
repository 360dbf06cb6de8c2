"""How the harness's cost grows with the data: each stage's time and peak memory, 100k to 10M ratings.

    python -m benchmark.scale                                   # 100k, 300k, 1M ratings (this 2-core machine)
    python -m benchmark.scale --sizes 10m --models dmtl --epochs 1 --memory-limit-gb 14 --out outputs/scale-10m
    python -m benchmark.scale --from-json outputs/scale/scale.json outputs/scale-10m/scale.json   # merged
    python -m benchmark.scale --groups 250 --models dmtl --epochs 2 --set trainer.sparse_embeddings=true
        --set grouping.clustering=bisecting_kmeans          # (one line) the method's k fixed: linear epoch

At 10M the harness and DMTL jobs fit the default 4 GB limit (peaks 1.6 and 2.6 GB); SVD and the
item k-NN are skipped by their estimates. The 10M command took 8 min on the 2-core, 24 GB machine
of docs/performance.md (its higher limit is a margin, not a need).

For each size the synthetic generator (``dataset=synthetic``: planted groups, ~150 ratings per
user, items growing as the square root of the ratings) feeds every model through the real job,
``benchmark.run.job.run`` (one pipeline definition), and the stage times are the runner's own
``stage_*_seconds`` metrics: load (generate), split, grouping (KMeans), fit, predict (every
prediction the model makes: the test pairs, and those the evaluation asks for: group members'
pairs, the catalogue, profiling labels), evaluate (the harness's own evaluation work: merges,
aggregation, ranking, metrics), log.

Each job runs in its own spawned process, so its peak RSS (``ru_maxrss``) is that job's alone.
The first job of each size is the harness alone (``model=global_mean``: the training mean, no
fitting): its peak RSS is the harness's, and it runs with the protocol cache cold, paying load,
split and KMeans as the first job of a sweep does. The models' jobs then find split and groups
in the cache (``benchmark/data/cache.py``), as every later job of a sweep does; the harness share is
printed both ways (cold: with the harness job's load, split and grouping). A model whose
estimated memory exceeds ``--memory-limit-gb`` is skipped with the estimate printed, never started.

The full-catalogue evaluation (users x items scores, ``eval.full_catalogue``) is off unless
``--full-catalogue``: it is O(users x items) by nature, ratings^1.5 here (docs/performance.md).

Output: the stage table, growth exponents fitted by least squares on log(time) vs log(ratings),
the targets checked, a log-log plot and a JSON file (``--out``). A benchmark, not a test:
nothing is asserted. Timings from a shared machine are noisy; say so where they are recorded.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.config import CONF
from benchmark.run import job as runner
from benchmark.tracking.tracker import Tracker

# the harness's stages (the model's are fit and predict); open_store is apart: a per-process cost
HARNESS_STAGES = ("load", "split", "grouping", "evaluate", "log")
PROTOCOL_STAGES = ("load", "split", "grouping")  # what the protocol cache saves a warm job
STAGES = ("load", "split", "grouping", "fit", "predict", "evaluate", "log")
DEFAULT_SIZES = "100k,300k,1m"
DEFAULT_MODELS = ("dmtl", "neural_mf", "svd", "knn_item")
HARNESS_JOB = "harness"  # the first job of every size: model=global_mean, cache cold
RATINGS_PER_USER = 150
# KMeans k = users / GROUP_SIZE (planted groups too): groups keep their size as data grows, so the
# group-level evaluation's member x candidate-item pairs grow linearly; KMeans then grows as users x k
# and DMTL's K-way profiling head as ratings x k (docs/performance.md, "Scaling to 10M ratings")
GROUP_SIZE = 25

# Model name -> (conf/model file, overrides). The k-NN model is item-based: the user-based one
# needs an n_users^2 similarity matrix, out of reach already at 1M ratings here.
MODELS: dict[str, tuple[str, list[str]]] = {
    HARNESS_JOB: ("global_mean", []),
    "dmtl": ("dmtl", []),
    "neural_mf": ("neural_mf", []),
    "svd": ("svd", []),
    "knn_item": ("knn_basic", ["model.params.sim_options.user_based=false"]),
}


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def shape(n_ratings: int, group_size: int = GROUP_SIZE, n_groups: int | None = None) -> dict[str, int]:
    """Users and items of a synthetic dataset of ``n_ratings`` (ML-like: items ~ sqrt(ratings)); groups of
    ``group_size`` users, or ``n_groups`` groups whatever the size (their size then grows with the users)."""
    n_users = max(2 * group_size, n_ratings // RATINGS_PER_USER, 2 * (n_groups or 0))
    n_items = int(5 * np.sqrt(n_ratings))
    return {"n_users": n_users, "n_items": n_items, "n_ratings": n_ratings,
            "n_groups": n_groups or n_users // group_size}


# DMTL's own memory beside the harness's (encoded training rows, the model, Adam's state), from its
# measured peaks: 966 MiB at 1M and 3,021 MiB at 10M ratings (1 epoch, docs/performance.md)
DMTL_BASE, DMTL_PER_RATING = 0.03e9, 145.0


def estimate_bytes(model: str, n_ratings: int, full_catalogue: bool = False) -> tuple[float, str]:
    """A job's peak memory, estimated before starting it from the peaks measured on this machine at
    100k, 300k, 1M and 10M ratings (docs/performance.md, "Scaling to 10M ratings"). The harness:
    ~0.55 GB of interpreter and libraries, ~0.2 GB of evaluation chunks (bounded: the group
    evaluation works a run of groups at a time) and ~97 B per rating of data, split and groups
    (805 MiB at 1M, 1,638 MiB at 10M). Each model adds what it holds meanwhile. The full catalogue
    (off by default) adds its score chunks only: it is bounded by the chunk size."""
    dims = shape(n_ratings)
    harness = 0.75e9 + 97.0 * n_ratings
    extra = 32.0 * 2 ** 20 if full_catalogue else 0.0
    if model == "knn_item":
        # Surprise's item-item similarity: n_items^2 float64 kept; during fit three such matrices
        # (similarities, co-rating counts, squared differences) on top of the data before evaluation
        kept, building = 8.0 * dims["n_items"] ** 2, 24.0 * dims["n_items"] ** 2
        peak = max(harness + kept, 0.55e9 + 125.0 * n_ratings + building) + 265.0 * n_ratings
        return peak + extra, f"{dims['n_items']:,}^2 item similarities + Surprise trainset"
    if model == "dmtl":
        return harness + DMTL_BASE + DMTL_PER_RATING * n_ratings + extra, "DMTL's encoded training rows and model"
    if model == "neural_mf":
        return harness + 0.4e9 + 20.0 * n_ratings + extra, "encoded training rows and model"
    if model == HARNESS_JOB:
        return harness + extra, "data, split, groups, evaluation chunks"
    return harness + 0.15e9 + 265.0 * n_ratings + extra, "Surprise trainset (Python tuples)"


def compose_cfg(model: str, n_ratings: int, epochs: int | None, uri: str, fmt: str, cache_dir: str | None = None,
                full_catalogue: bool = False, group_size: int = GROUP_SIZE, n_groups: int | None = None,
                overrides: tuple[str, ...] = ()):
    from hydra import compose, initialize_config_dir

    conf_name, extra = MODELS[model]
    dims = shape(n_ratings, group_size, n_groups)
    overrides = [*overrides, f"model={conf_name}", "dataset=synthetic", *extra,
                 *(f"dataset.loader.{key}={value}" for key, value in dims.items()),
                 # epochs=None: conf/trainer's own (early stopping), as the job runs in a sweep
                 *([f"trainer.max_epochs={epochs}", f"trainer.patience={epochs + 1}"] if epochs else []),
                 "trainer.progress=false",
                 f"tracking.uri={uri}", "tracking.experiment=scale", f"artifacts.format={fmt}",
                 f"eval.full_catalogue={str(full_catalogue).lower()}"]
    if cache_dir is not None:
        overrides.append(f"cache.dir={cache_dir}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_job(model: str, n_ratings: int, epochs: int | None, fmt: str, uri: str, cache_dir: str,
            full_catalogue: bool = False, group_size: int = GROUP_SIZE, n_groups: int | None = None,
            overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """One job through ``benchmark.run.job.run`` (in a fresh process): its ``stage_*_seconds``
    metrics and the process's peak RSS."""
    import logging


    logging.getLogger().setLevel(logging.WARNING)
    cfg = compose_cfg(model, n_ratings, epochs, uri, fmt, cache_dir, full_catalogue, group_size, n_groups, overrides)
    peaks: dict[str, float] = {}
    page_faults: dict[str, int] = {}  # minor page faults per stage (fresh memory the kernel maps in)

    class PeakStages(runner.Stages):
        """The runner's stage timer, also noting the process's peak RSS when each stage ends: the
        peak is reached in the first stage whose end shows the job's final peak."""

        @contextmanager
        def __call__(self, name: str):
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            with super().__call__(name):
                yield
            peaks[name] = max(peaks.get(name, 0.0), peak_rss_mb())
            page_faults[name] = page_faults.get(name, 0) + resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

    runner.Stages = PeakStages  # this spawned process only
    started = time.perf_counter()
    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment)  # as runner.build_tracker does
    open_store = time.perf_counter() - started
    result = runner.run(cfg, tracker)
    metrics = result.metrics
    seconds = {name: float(metrics.get(f"stage_{name}_seconds", 0.0)) for name in STAGES}
    tags = tracker.client.get_run(result.run_id).data.tags
    return {"model": model, "n_ratings": n_ratings, "open_store": open_store, "seconds": seconds,
            "test_predict_seconds": metrics.get("predict_seconds"), "job_peak_rss_mb": peak_rss_mb(),
            "peak_rss_by_stage_mb": peaks, "peak_stage": peak_stage(peaks),
            "minor_page_faults_by_stage": page_faults,
            "seconds_per_epoch": metrics.get("seconds_per_epoch"), "epochs": metrics.get("epochs_trained"),
            "rmse": metrics.get("rmse"), "protocol_cache": tags.get("protocol_cache"),
            "full_catalogue": full_catalogue, "shape": shape(n_ratings, group_size, n_groups),
            "overrides": list(overrides)}


def peak_stage(peaks: dict[str, float]) -> str | None:
    """The stage in which the job's peak RSS was reached (stages in pipeline order; ``log`` last)."""
    top = max(peaks.values(), default=None)
    return next((name for name in (*STAGES, *peaks) if name in peaks and peaks[name] >= top), None)


def _child(queue, *args) -> None:
    try:
        queue.put(run_job(*args))
    except BaseException as exc:  # reported, never fatal to the benchmark
        queue.put({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]})


def run_isolated(args: tuple, timeout: float) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")  # a fresh process: its ru_maxrss is this job's alone
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, *args))
    process.start()
    try:
        result = queue.get(timeout=timeout)
    except Exception:
        result = {"error": f"no result within {timeout:.0f} s (or the process died: exit {process.exitcode})"}
    process.join(timeout=30)
    if process.is_alive():
        process.kill()
    return result


def exponent(sizes: list[int], values: list[float]) -> float | None:
    """Slope of log(value) on log(size), least squares: 1 = linear growth."""
    points = [(np.log(s), np.log(v)) for s, v in zip(sizes, values) if v and v > 0]
    if len(points) < 2:
        return None
    x, y = np.array(points).T
    return float(np.polyfit(x, y, 1)[0])


def available_models(wanted: list[str]) -> tuple[list[str], list[str]]:
    kept, notes = [], []
    for model in wanted:
        if model not in MODELS or model == HARNESS_JOB:
            raise SystemExit(f"--models: unknown model {model!r}; choose from "
                             f"{', '.join(m for m in MODELS if m != HARNESS_JOB)}")
        if not (CONF / "model" / f"{MODELS[model][0]}.yaml").exists():
            notes.append(f"{model}: skipped, conf/model/{MODELS[model][0]}.yaml does not exist in this checkout")
            continue
        kept.append(model)
    return kept, notes


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"{cpu}, {os.cpu_count()} CPUs, {memory:.0f} GiB RAM, Python {platform.python_version()}"


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmark.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="ratings per dataset, e.g. 100k,1m,10m (default %(default)s)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"from {', '.join(m for m in MODELS if m != HARNESS_JOB)} (default %(default)s); "
                             "the harness job (global_mean) always runs first at each size")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train the neural models exactly this many epochs (default: conf/trainer's own, early "
                             "stopping on the validation part, as a sweep's job trains)")
    parser.add_argument("--memory-limit-gb", type=float, default=4.0,
                        help="skip a job whose estimated peak memory exceeds this (default 4)")
    parser.add_argument("--full-catalogue", action="store_true",
                        help="also run the full-catalogue evaluation (O(users x items); off by default)")
    parser.add_argument("--group-size", type=int, default=GROUP_SIZE,
                        help="users per planted group and KMeans k = users / this (default %(default)s)")
    parser.add_argument("--groups", type=int, default=None, metavar="K",
                        help="K groups at every size instead (KMeans k = K: groups grow with the users)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="a Hydra override for every job, e.g. --set grouping.clustering=bisecting_kmeans (repeatable)")
    parser.add_argument("--format", default="parquet", choices=("parquet", "csv"), help="artifacts.format")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per job before it is given up")
    parser.add_argument("--out", type=Path, default=Path("outputs/scale"), help="folder for scale.json and scale.png (default %(default)s)")
    parser.add_argument("--from-json", type=Path, nargs="+", metavar="SCALE_JSON",
                        help="run nothing: merge earlier scale.json files (e.g. the 10M run with the "
                             "100k-1M one) and print / plot them together")
    args = parser.parse_args(argv)
    if args.from_json:
        loaded = [json.loads(path.read_text()) for path in args.from_json]
        for each in loaded:
            print(f"machine ({' '.join(each['argv'])}): {each['machine']}")
        summarize([r for each in loaded for r in each["results"]], args.out, {"merged": [str(p) for p in args.from_json]})
        return

    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    models, notes = available_models([m.strip() for m in args.models.split(",") if m.strip()])
    print(f"machine: {machine()}; load average at start {load_average()}")
    for note in notes:
        print(note)
    # one tracking store and one protocol cache for every job, created here: a real run logs to an
    # existing store, so creating one (schema migrations, seconds) would be charged to no job's stage
    work = tempfile.TemporaryDirectory(prefix="groupbench-scale-")
    uri = f"sqlite:///{work.name}/mlflow.db"

    Tracker(uri, "scale")
    results: list[dict[str, Any]] = []
    header = {"machine": machine(), "argv": sys.argv[1:] if argv is None else list(argv),
              "load_average_start": load_average()}
    for n_ratings in sizes:
        dims = shape(n_ratings, args.group_size, args.groups)
        print(f"\n{n_ratings:,} ratings: {dims['n_users']:,} users x {dims['n_items']:,} items, "
              f"{dims['n_groups']:,} groups; load average {load_average()}", flush=True)
        for model in [HARNESS_JOB, *models]:
            estimate, what = estimate_bytes(model, n_ratings, args.full_catalogue)
            if estimate > args.memory_limit_gb * 2 ** 30:
                reason = (f"skipped: estimated {estimate / 2 ** 30:.1f} GB ({what}) > --memory-limit-gb "
                          f"{args.memory_limit_gb:g}")
                print(f"  {model}: {reason}", flush=True)
                results.append({"model": model, "n_ratings": n_ratings, "skipped": reason})
                continue
            started = time.perf_counter()
            job = (model, n_ratings, args.epochs, args.format, uri, f"{work.name}/cache", args.full_catalogue,
                   args.group_size, args.groups, tuple(args.overrides))
            result = run_isolated(job, args.timeout)
            result.setdefault("model", model)
            result.setdefault("n_ratings", n_ratings)
            result["estimated_mb"] = estimate / 2 ** 20
            result["load_average_after"] = load_average()
            if "error" in result:
                print(f"  {model}: FAILED {result['error']}", flush=True)
            else:
                print(f"  {model}: {time.perf_counter() - started:.1f} s, peak RSS {result['job_peak_rss_mb']:,.0f} MB "
                      f"(estimated {estimate / 2 ** 20:,.0f} MB), "
                      + ", ".join(f"{k} {v:.2f}" for k, v in result["seconds"].items())
                      + (f", {result['seconds_per_epoch']:.2f} s/epoch" if result.get("seconds_per_epoch") else "")
                      + f"; cache {result.get('protocol_cache')}; load average {result['load_average_after']}",
                      flush=True)
            results.append(result)
            # after every job, so a run stopped half-way keeps what it measured (--from-json reads it)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "scale.json").write_text(json.dumps({**header, "results": results}, indent=2, default=str))

    header["load_average_end"] = load_average()
    summarize(results, args.out, header)
    work.cleanup()


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


if __name__ == "__main__":
    main()
