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

Output (benchmark/growth.py): the stage table, growth exponents fitted by least squares on
log(time) vs log(ratings), the targets checked, a log-log plot and a JSON file (``--out``). A benchmark, not a test:
nothing is asserted. Timings from a shared machine are noisy; say so where they are recorded.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.cli import ArgumentParser, positive, whole, writable_folder
from benchmark.core.config import CONF
from benchmark.core.errors import ConfigError
from benchmark.growth import HARNESS_JOB, summarize
from benchmark.run.job import run
from benchmark.run.preflight import job_config
from benchmark.timing import AllJobsFailed, MeteredStages, peak_rss_mb, stage_seconds, tool_main, tool_overrides
from benchmark.tracking.tracker import Tracker

DEFAULT_SIZES = "100k,300k,1m"
DEFAULT_MODELS = ("dmtl", "neural_mf", "svd", "knn_item")
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


# keys every job's config gets from the tool itself: an override of one would be ignored, so it is refused
OWNED = {"model": "use --models to choose the models (e.g. --models svd,dmtl)",
         "dataset": "every job runs on synthetic data of the --sizes",
         **{f"dataset.loader.{key}": "set by --sizes, --group-size and --groups"
            for key in ("n_users", "n_items", "n_ratings", "n_groups")},
         "tracking.uri": "the jobs log to a temporary store; drop it",
         "tracking.experiment": "the jobs log to a temporary store; drop it",
         "cache.dir": "the jobs share a temporary protocol cache; drop it",
         "artifacts.format": "use --format parquet|csv",
         "eval.full_catalogue": "use --full-catalogue"}
EPOCH_KEYS = ("trainer.max_epochs", "trainer.patience")  # owned when --epochs is given


def parse_size(text: str) -> int:
    """``100k`` -> 100000, ``1.5m`` -> 1500000, ``2000`` -> 2000; ConfigError naming --sizes otherwise."""
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value >= 1 and value == int(value)):
        raise ConfigError(f"--sizes {text}: not a number of ratings >= 1; use e.g. --sizes 100k,300k,1m")
    return int(value)


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
    return job_config(overrides)  # checked as a single run's: groups, composition, schema, the model's config


def run_job(model: str, n_ratings: int, epochs: int | None, fmt: str, uri: str, cache_dir: str,
            full_catalogue: bool = False, group_size: int = GROUP_SIZE, n_groups: int | None = None,
            overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """One job through ``benchmark.run.job.run`` (in a fresh process): its ``stage_*_seconds``
    metrics and the process's peak RSS, overall and at the end of each stage (the runner's stage
    timer made by ``MeteredStages``, handed to ``run``: the runner itself is left as it is)."""
    logging.getLogger().setLevel(logging.WARNING)
    cfg = compose_cfg(model, n_ratings, epochs, uri, fmt, cache_dir, full_catalogue, group_size, n_groups, overrides)
    timer = MeteredStages()
    started = time.perf_counter()
    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment)  # as the runner's build_tracker does
    open_store = time.perf_counter() - started
    result = run(cfg, tracker, stages=lambda: timer)
    metrics = result.metrics
    tags = tracker.client.get_run(result.run_id).data.tags
    return {"model": model, "n_ratings": n_ratings, "open_store": open_store, "seconds": stage_seconds(metrics),
            "test_predict_seconds": metrics.get("predict_seconds"), "job_peak_rss_mb": peak_rss_mb(),
            "peak_rss_by_stage_mb": timer.peaks, "peak_stage": timer.peak_stage(),
            "minor_page_faults_by_stage": timer.page_faults,
            "seconds_per_epoch": metrics.get("seconds_per_epoch"), "epochs": metrics.get("epochs_trained"),
            "rmse": metrics.get("rmse"), "protocol_cache": tags.get("protocol_cache"),
            "full_catalogue": full_catalogue, "shape": shape(n_ratings, group_size, n_groups),
            "overrides": list(overrides)}


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


def available_models(wanted: list[str]) -> tuple[list[str], list[str]]:
    kept, notes = [], []
    for model in wanted:
        if model not in MODELS or model == HARNESS_JOB:
            raise ConfigError(f"--models: unknown model {model!r}; choose from "
                              f"{', '.join(m for m in MODELS if m != HARNESS_JOB)} (or --models '' for the harness "
                              f"job alone)")
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


def _from_json(path: Path) -> dict[str, Any]:
    """A scale.json written by this tool, or ConfigError naming the file."""
    try:
        loaded = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--from-json {path}: cannot be read ({exc.strerror or exc}); give a scale.json a run "
                          f"wrote (--out folder)") from None
    except ValueError as exc:
        raise ConfigError(f"--from-json {path}: not JSON ({exc}); give a scale.json a run wrote") from None
    results = loaded.get("results") if isinstance(loaded, dict) else None
    if not (isinstance(results, list) and isinstance(loaded.get("argv"), list) and "machine" in loaded
            and all(isinstance(r, dict) and isinstance(r.get("model"), str) and isinstance(r.get("n_ratings"), int)
                    for r in results)):
        raise ConfigError(f"--from-json {path}: not a scale.json (machine, argv and results of models and sizes); "
                          f"give a scale.json a run wrote")
    return loaded


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, every value checked here (one line naming the argument, exit 2), and every
    job's config composed and checked as a single run's before any job starts."""
    parser = ArgumentParser(prog="python -m benchmark.scale", description=__doc__.split("\n\n")[0])
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
        ignored = [f"--{dest.replace('_', '-')}" if dest != "overrides" else "--set"
                   for dest in ("sizes", "models", "epochs", "memory_limit_gb", "full_catalogue", "group_size",
                                "groups", "overrides", "format", "timeout")
                   if getattr(args, dest) != parser.get_default(dest)]
        if ignored:
            raise ConfigError(f"{', '.join(ignored)}: --from-json runs nothing (it merges saved results); drop "
                              f"{'it' if len(ignored) == 1 else 'them'} or --from-json")
        args.loaded = [_from_json(path) for path in args.from_json]
        writable_folder("--out", args.out)
        return args
    args.sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    if not args.sizes:
        raise ConfigError("--sizes names no size; use e.g. --sizes 100k,300k,1m")
    whole("--epochs", args.epochs)
    whole("--group-size", args.group_size, minimum=2)
    whole("--groups", args.groups)
    positive("--memory-limit-gb", args.memory_limit_gb)
    positive("--timeout", args.timeout)
    for n_ratings in args.sizes:  # the synthetic generator's own bounds (benchmark/data/synthetic.py)
        dims = shape(n_ratings, args.group_size, args.groups)
        if not dims["n_users"] <= n_ratings <= dims["n_users"] * dims["n_items"]:
            raise ConfigError(f"--sizes {n_ratings}: fewer ratings than the {dims['n_users']:,} users of synthetic "
                              f"data at this size (each user rates at least once); use more ratings (e.g. 100k)")
    args.models, args.notes = available_models([m.strip() for m in args.models.split(",") if m.strip()])
    owned = {**OWNED, **({key: "set by --epochs; drop one of them" for key in EPOCH_KEYS} if args.epochs else {})}
    args.overrides = tool_overrides("scale", args.overrides, owned)
    writable_folder("--out", args.out)
    for model in [HARNESS_JOB, *args.models]:  # as each job composes it, before any job starts
        try:
            compose_cfg(model, args.sizes[0], args.epochs, "sqlite:///unused.db", args.format, None,
                        args.full_catalogue, args.group_size, args.groups, tuple(args.overrides))
        except ConfigError as exc:
            raise ConfigError(f"{exc} (in the {model} job)") from None
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure (or merge); a bad argument: one line on stderr, exit 2; every job failed: exit 1."""
    tool_main(lambda: measure(parse_args(argv), argv))


def measure(args: argparse.Namespace, argv: list[str] | None) -> None:
    if args.from_json:
        for each in args.loaded:
            print(f"machine ({' '.join(each['argv'])}): {each['machine']}")
        summarize([r for each in args.loaded for r in each["results"]], args.out,
                  {"merged": [str(p) for p in args.from_json]})
        return

    sizes, models, notes = args.sizes, args.models, args.notes
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
    work.cleanup()
    ran = [r for r in results if "skipped" not in r]
    if ran and all("error" in r for r in ran):
        raise AllJobsFailed(f"every job failed, nothing was measured (results in {args.out / 'scale.json'}): "
                            + "; ".join(f"{r['model']} at {r['n_ratings']:,}: {r['error']}" for r in ran)[:1000])
    summarize(results, args.out, header)


if __name__ == "__main__":
    main()
