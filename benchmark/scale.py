"""How the harness's cost grows with the data: each stage's time and peak memory, 100k to 10M ratings.

    python -m benchmark.scale                                   # 100k, 1M, 10M ratings
    python -m benchmark.scale --sizes 100k,1m                   # the 2-core CI-machine run
    python -m benchmark.scale --sizes 10m --models dmtl,svd --epochs 1   # 10M alone (docs/performance.md)

For each size the synthetic generator (``dataset=synthetic``: planted groups, ~150 ratings per
user, items growing as the square root of the ratings) feeds every model through the pipeline's
own pieces, each stage timed: load (generate), split, grouping (KMeans), fit, predict,
evaluation (every registered evaluator), logging (an MLflow run in a temporary sqlite store with
params, metrics and the table artifacts). Each model runs in its own spawned process, so its
peak RSS (``ru_maxrss``) is that job's alone. A model whose estimated memory exceeds
``--memory-limit-gb`` is skipped with the estimate printed, never started.

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
from pathlib import Path
from typing import Any

import numpy as np

CONF = Path(__file__).resolve().parent.parent / "conf"
HARNESS_STAGES = ("open_store", "load", "split", "grouping", "evaluate", "log")
# eval_predict: the model's own predictions that evaluation asks for (group-level scores of every
# member for every candidate item, cold-start profiling), timed apart from the harness's work
STAGES = ("open_store", "load", "split", "grouping", "fit", "predict", "evaluate", "eval_predict", "log")
DEFAULT_MODELS = ("dmtl", "neural_mf", "svd", "knn_item")
RATINGS_PER_USER = 150
# KMeans k = users / GROUP_SIZE (planted groups too): groups keep their size as data grows, so the
# group-level evaluation's member x candidate-item pairs grow linearly; KMeans then grows as users x k
GROUP_SIZE = 25

# Model name -> (conf/model file, overrides). The k-NN model is item-based: the user-based one
# needs an n_users^2 similarity matrix, out of reach already at 1M ratings here.
MODELS: dict[str, tuple[str, list[str]]] = {
    "dmtl": ("dmtl", []),
    "neural_mf": ("neural_mf", []),
    "svd": ("svd", []),
    "knn_item": ("knn_basic", ["model.params.sim_options.user_based=false"]),
}


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def shape(n_ratings: int) -> dict[str, int]:
    """Users and items of a synthetic dataset of ``n_ratings`` (ML-like: items ~ sqrt(ratings))."""
    n_users = max(2 * GROUP_SIZE, n_ratings // RATINGS_PER_USER)
    n_items = int(5 * np.sqrt(n_ratings))
    return {"n_users": n_users, "n_items": n_items, "n_ratings": n_ratings, "n_groups": n_users // GROUP_SIZE}


def estimate_bytes(model: str, n_ratings: int) -> tuple[float, str]:
    """A job's peak memory, estimated before starting it from per-rating slopes measured at 100k
    and 1M on this harness (docs/performance.md): the harness's frames plus the group-level
    evaluation's member x candidate pairs (~23 per rating) cost ~900 B per rating with SVD;
    DMTL's predict also keeps its attention weights (32 floats) for every pair (~2.5 kB)."""
    dims = shape(n_ratings)
    if model == "knn_item":
        # Surprise's similarity: three n_items x n_items float64/int64 matrices (sim, freq, diffs)
        matrices = 3 * 8.0 * dims["n_items"] ** 2
        return 450e6 + 900.0 * n_ratings + matrices, f"3 x {dims['n_items']:,}^2 similarity matrices + pairs"
    if model in ("dmtl", "neural_mf"):
        return 900e6 + 2500.0 * n_ratings, "group-evaluation pairs with attention weights"
    return 400e6 + 900.0 * n_ratings, "Surprise trainset + group-evaluation pairs"


def compose_cfg(model: str, n_ratings: int, epochs: int, uri: str, fmt: str):
    from hydra import compose, initialize_config_dir

    conf_name, extra = MODELS[model]
    dims = shape(n_ratings)
    overrides = [f"model={conf_name}", "dataset=synthetic", *extra,
                 *(f"dataset.loader.{key}={value}" for key, value in dims.items()),

                 f"trainer.max_epochs={epochs}", f"trainer.patience={epochs + 1}", "trainer.progress=false",
                 f"tracking.uri={uri}", "tracking.experiment=scale", f"artifacts.format={fmt}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_job(model: str, n_ratings: int, epochs: int, fmt: str, uri: str) -> dict[str, Any]:
    """One job through the pipeline's pieces, each stage timed (runs in a fresh process)."""
    from omegaconf import OmegaConf

    from benchmark.artifacts import table_name, write_table
    from benchmark.evaluation import EvalContext, checked_predictions, evaluate
    from benchmark.runner import flatten, instantiate, to_container
    from benchmark.tracking import Tracker
    from models.base import Diagnosed, FitContext

    seconds: dict[str, float] = {}
    rss: dict[str, float] = {}

    def stage(name: str, started: float) -> None:
        seconds[name] = time.perf_counter() - started
        rss[name] = peak_rss_mb()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(model, n_ratings, epochs, uri, fmt)
        started = time.perf_counter()
        tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment)  # as the runner does, before the data
        stage("open_store", started)
        started = time.perf_counter()
        dataset = instantiate(cfg.dataset.loader)
        stage("load", started)
        started = time.perf_counter()
        split = instantiate(cfg.split)(dataset.ratings, seed=cfg.seed)[0]
        stage("split", started)
        started = time.perf_counter()
        groups = instantiate(cfg.grouping)(dataset, split.train, seed=cfg.seed)
        stage("grouping", started)
        harness_rss = peak_rss_mb()  # data, split and groups in memory: the harness's own peak

        recommender = instantiate(cfg.model, seed=cfg.seed)
        started = time.perf_counter()
        recommender.fit(split.train, FitContext(dataset=dataset, groups=groups, seed=cfg.seed))
        stage("fit", started)
        started = time.perf_counter()
        prediction = checked_predictions(recommender, split.test)
        stage("predict", started)

        model_seconds = _time_model_calls(recommender)
        started = time.perf_counter()
        frame = split.test[["user", "item", "rating"]].assign(prediction=prediction)
        result = evaluate(EvalContext(dataset, split.train, frame, groups, recommender, cfg.eval))
        stage("evaluate", started)
        seconds["eval_predict"] = model_seconds[0]
        seconds["evaluate"] -= model_seconds[0]

        started = time.perf_counter()
        tables = {"predictions": frame, **result.tables,
                  "groups": groups.labels.rename("group").reset_index()}
        with tracker.run(f"{model}/{n_ratings}", tags={"groupbench.role": "scale"}) as logger:
            logger.log_params(flatten(to_container(cfg)))
            logger.log_artifacts({"config.yaml": OmegaConf.to_yaml(cfg, resolve=True)})
            logger.log_metrics(result.metrics)
            logger.log_artifacts({table_name(name, fmt): table for name, table in tables.items()})
        stage("log", started)

        # artifact sizes in both formats (the log stage wrote only ``fmt``)
        sizes = {}
        for name in ("predictions", "per_user_metrics"):
            if name in tables:
                for each in ("parquet", "csv"):
                    path = Path(tmp) / table_name(name, each)
                    write_table(tables[name], path)
                    sizes[f"{name}.{each}"] = path.stat().st_size
        diagnostics = recommender.diagnostics() if isinstance(recommender, Diagnosed) else {}
    return {"model": model, "n_ratings": n_ratings, "seconds": seconds, "peak_rss_mb": rss,
            "harness_peak_rss_mb": harness_rss, "job_peak_rss_mb": peak_rss_mb(),
            "seconds_per_epoch": diagnostics.get("seconds_per_epoch"),
            "epochs": diagnostics.get("epochs_trained"), "rmse": result.metrics.get("rmse"),
            "artifact_bytes": sizes, "shape": shape(n_ratings)}


def _time_model_calls(model) -> list[float]:
    """Wrap the model's predict / predict_groups so the seconds spent in them add up in the list."""
    spent = [0.0]
    for name in ("predict", "predict_groups"):
        original = getattr(model, name, None)
        if original is None:
            continue

        def timed(*args, _original=original, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started
        setattr(model, name, timed)
    return spent


def _child(queue, *args) -> None:
    try:
        queue.put(run_job(*args))
    except BaseException as exc:  # reported, never fatal to the benchmark
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_isolated(model: str, n_ratings: int, epochs: int, fmt: str, uri: str, timeout: float) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")  # a fresh process: its ru_maxrss is this job's alone
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, model, n_ratings, epochs, fmt, uri))
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
        if model not in MODELS:
            raise SystemExit(f"--models: unknown model {model!r}; choose from {', '.join(MODELS)}")
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
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} CPUs, {memory:.0f} GiB RAM, Python {platform.python_version()}, "
            f"load average at start {load}")


def _mb(value: float | None) -> str:
    return "n/m" if value is None else f"{value:,.0f} MB"


def table(results: list[dict[str, Any]]) -> str:
    head = ("| ratings | model | " + " | ".join(STAGES)
            + " | harness share (without open_store) | s/epoch | harness RSS | job RSS |")
    lines = [head, "|" + "---|" * (len(STAGES) + 6)]
    for r in results:
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['n_ratings']:,} | {r['model']} | " + " | ".join("" for _ in STAGES)
                         + f" | {r.get('skipped') or r.get('error')} | | | |")
            continue
        s = r["seconds"]
        total = sum(s.values())
        share = sum(s[k] for k in HARNESS_STAGES) / total
        # open_store is a fixed cost per process: a sweep worker pays it once for all its jobs
        warm = sum(s[k] for k in HARNESS_STAGES if k != "open_store") / (total - s["open_store"])
        epoch = f"{r['seconds_per_epoch']:.2f}" if r.get("seconds_per_epoch") else ""
        lines.append(f"| {r['n_ratings']:,} | {r['model']} | " + " | ".join(f"{s[k]:.2f}" for k in STAGES)
                     + f" | {share:.0%} ({warm:.0%}) | {epoch} | {_mb(r.get('harness_peak_rss_mb'))} | {_mb(r['job_peak_rss_mb'])} |")
    return "\n".join(lines)


def exponents(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """Growth exponent per harness stage (median over models at each size), per model fit /
    predict, DMTL's epoch, and the peak RSS."""
    ok = [r for r in results if "seconds" in r]
    sizes = sorted({r["n_ratings"] for r in ok})
    out: dict[str, float | None] = {}
    for stage_name in HARNESS_STAGES:
        values = [float(np.median([r["seconds"][stage_name] for r in ok if r["n_ratings"] == n])) for n in sizes]
        out[stage_name] = exponent(sizes, values)
    with_rss = [r for r in ok if r.get("harness_peak_rss_mb")]
    rss_sizes = sorted({r["n_ratings"] for r in with_rss})
    out["harness_rss"] = exponent(rss_sizes, [float(np.median([r["harness_peak_rss_mb"] for r in with_rss
                                                                if r["n_ratings"] == n])) for n in rss_sizes])
    for model in sorted({r["model"] for r in ok}):
        mine = sorted((r for r in ok if r["model"] == model), key=lambda r: r["n_ratings"])
        n = [r["n_ratings"] for r in mine]
        out[f"{model}.fit"] = exponent(n, [r["seconds"]["fit"] for r in mine])
        out[f"{model}.predict"] = exponent(n, [r["seconds"]["predict"] for r in mine])
        if all(r.get("seconds_per_epoch") for r in mine):
            out[f"{model}.epoch"] = exponent(n, [r["seconds_per_epoch"] for r in mine])
    return out


def targets(results: list[dict[str, Any]], fitted: dict[str, float | None]) -> list[str]:
    """The issue's targets, each with its measured value and met / not met / not measured."""
    lines = []
    for stage_name in HARNESS_STAGES:
        value = fitted.get(stage_name)
        lines.append(f"{stage_name} exponent <= 1.1: " + ("not measured" if value is None else
                                                           f"{value:.2f} ({'met' if value <= 1.1 else 'NOT met'})"))
    at_1m = [r for r in results if "seconds" in r and r["n_ratings"] == 1_000_000]
    for r in at_1m:
        s = r["seconds"]
        share = sum(s[k] for k in HARNESS_STAGES) / sum(s.values())
        warm = sum(s[k] for k in HARNESS_STAGES if k != "open_store") / (sum(s.values()) - s["open_store"])
        lines.append(f"harness share of the {r['model']} job at 1M <= 10%: {share:.0%}, {warm:.0%} without "
                     f"opening the store ({'met' if share <= 0.10 else 'NOT met'})")
    epoch = fitted.get("dmtl.epoch")
    lines.append("DMTL epoch grows linearly (exponent ~1): " + ("not measured" if epoch is None else f"{epoch:.2f}"))
    at_10m = [r for r in results if "seconds" in r and r["n_ratings"] == 10_000_000]
    for r in at_10m:
        for what, key in (("harness", "harness_peak_rss_mb"), (r["model"] + " job", "job_peak_rss_mb")):
            if r.get(key) is None:
                continue
            value = r[key] / 1024
            lines.append(f"peak RSS at 10M, {what} <= 4 GB: {value:.2f} GB ({'met' if value <= 4 else 'NOT met'})")
    if not at_10m:
        lines.append("peak RSS at 10M <= 4 GB: not measured in this run (--sizes without 10m)")
    return lines


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if "seconds" in r]
    sizes = sorted({r["n_ratings"] for r in ok})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage_name in HARNESS_STAGES:
        values = [np.median([r["seconds"][stage_name] for r in ok if r["n_ratings"] == n]) for n in sizes]
        left.plot(sizes, values, marker="o", label=stage_name)
    for model in sorted({r["model"] for r in ok}):
        mine = sorted((r for r in ok if r["model"] == model), key=lambda r: r["n_ratings"])
        left.plot([r["n_ratings"] for r in mine], [r["seconds"]["fit"] for r in mine], marker="s", ls="--",
                  label=f"{model} fit")
        right.plot([r["n_ratings"] for r in mine], [r["job_peak_rss_mb"] for r in mine], marker="s",
                   label=f"{model} job")
    with_rss = [r for r in ok if r.get("harness_peak_rss_mb")]
    rss_sizes = sorted({r["n_ratings"] for r in with_rss})
    right.plot(rss_sizes, [np.median([r["harness_peak_rss_mb"] for r in with_rss if r["n_ratings"] == n])
                           for n in rss_sizes], marker="o", color="black", label="harness (before fit)")
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
    parser.add_argument("--sizes", default="100k,1m,10m", help="ratings per dataset, e.g. 100k,1m (default %(default)s)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"from {', '.join(MODELS)} (default %(default)s; neural_mf only where it exists)")
    parser.add_argument("--epochs", type=int, default=2, help="trainer.max_epochs of the neural models (default 2)")
    parser.add_argument("--memory-limit-gb", type=float, default=4.0,
                        help="skip a job whose estimated peak memory exceeds this (default 4)")
    parser.add_argument("--format", default="parquet", choices=("parquet", "csv"), help="artifacts.format")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per job before it is given up")
    parser.add_argument("--out", type=Path, default=Path("outputs/scale"), help="folder for scale.json and scale.png (default %(default)s)")
    parser.add_argument("--from-json", type=Path, nargs="+", metavar="SCALE_JSON",
                        help="run nothing: merge earlier scale.json files (e.g. the 10M run with the "
                             "100k/1M one) and print / plot them together")
    args = parser.parse_args(argv)
    if args.from_json:
        loaded = [json.loads(path.read_text()) for path in args.from_json]
        for each in loaded:
            print(f"machine ({' '.join(each['argv'])}): {each['machine']}")
        summarize([r for each in loaded for r in each["results"]], args.out, {"merged": [str(p) for p in args.from_json]})
        return

    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    models, notes = available_models([m.strip() for m in args.models.split(",") if m.strip()])
    print(f"machine: {machine()}")
    for note in notes:
        print(note)
    # one tracking store for every job, created here: a real run logs to an existing store, so
    # creating one (schema migrations, seconds) would be charged to no job's "log" stage
    store = tempfile.TemporaryDirectory(prefix="groupbench-scale-")
    uri = f"sqlite:///{store.name}/mlflow.db"
    from benchmark.tracking import Tracker

    Tracker(uri, "scale")
    results: list[dict[str, Any]] = []
    for n_ratings in sizes:
        dims = shape(n_ratings)
        print(f"\n{n_ratings:,} ratings: {dims['n_users']:,} users x {dims['n_items']:,} items, "
              f"{dims['n_groups']:,} groups",
              flush=True)
        for model in models:
            estimate, what = estimate_bytes(model, n_ratings)
            if estimate > args.memory_limit_gb * 2 ** 30:
                reason = (f"skipped: estimated {estimate / 2 ** 30:.1f} GB ({what}) > --memory-limit-gb "
                          f"{args.memory_limit_gb:g}")
                print(f"  {model}: {reason}", flush=True)
                results.append({"model": model, "n_ratings": n_ratings, "skipped": reason})
                continue
            started = time.perf_counter()
            result = run_isolated(model, n_ratings, args.epochs, args.format, uri, args.timeout)
            result.setdefault("model", model)
            result.setdefault("n_ratings", n_ratings)
            if "error" in result:
                print(f"  {model}: FAILED {result['error']}", flush=True)
            else:
                print(f"  {model}: {time.perf_counter() - started:.1f} s, peak RSS {result['job_peak_rss_mb']:,.0f} MB "
                      f"(estimated {estimate / 2 ** 20:,.0f} MB), "
                      + ", ".join(f"{k} {v:.2f}" for k, v in result["seconds"].items())
                      + (f", {result['seconds_per_epoch']:.2f} s/epoch" if result.get("seconds_per_epoch") else ""),
                      flush=True)
            results.append(result)
            # after every job, so a run stopped half-way keeps what it measured (--from-json reads it)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "scale.json").write_text(json.dumps({"machine": machine(), "argv": sys.argv[1:],
                                                             "results": results}, indent=2, default=str))

    summarize(results, args.out, {"machine": machine(), "argv": sys.argv[1:]})
    store.cleanup()


def summarize(results: list[dict[str, Any]], out: Path, header: dict[str, Any]) -> None:
    """Print the stage table, exponents, targets and artifact sizes; write scale.json and scale.png."""
    sizes = sorted({r["n_ratings"] for r in results})
    print("\n" + table(results))
    fitted = exponents(results)
    print("\ngrowth exponents (log-log least squares over " + ", ".join(f"{n:,}" for n in sizes) + " ratings):")
    for key, value in fitted.items():
        print(f"  {key}: {'n/a' if value is None else f'{value:.2f}'}")
    print("\ntargets:")
    for line in targets(results, fitted):
        print(f"  {line}")
    sizes_1m = [r["artifact_bytes"] for r in results if "artifact_bytes" in r and r["n_ratings"] == 1_000_000]
    if sizes_1m:
        print("\nartifact sizes at 1M (bytes): " + ", ".join(f"{k} {v:,}" for k, v in sizes_1m[0].items()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps({**header, "results": results, "exponents": fitted},
                                               indent=2, default=str))
    if any("seconds" in r for r in results):
        plot(results, out / "scale.png")
    print(f"\nwrote {out / 'scale.json'} and {out / 'scale.png'}")


if __name__ == "__main__":
    main()
