"""Where a job's time goes, measured in one process; and a finished sweep's wall time against its fit + predict.

    python -m benchmark.speed                               # ML-100K, seed 0: one job per model family
    python -m benchmark.speed dataset=itmrec seed=1         # any Hydra override of conf/config.yaml
    python -m benchmark.speed --models svd,knn_baseline     # some families only
    python -m benchmark.speed --sweep paper                 # a logged sweep (experiment "paper")

Job mode runs real jobs (``benchmark.run.job.run``, a temporary MLflow store) and prints, per
family, the seconds of each stage the runner logs (load, split, grouping, fit, predict,
evaluate incl. group-level evaluation, log; ``other`` = the rest of the job: MLflow run
setup, model construction), the share of the job outside fit + predict, the protocol cache's
cold / miss / hit times, vectorised against Surprise's per-pair predictions, every torch model's
seconds per epoch (a group-item dataset's jobs too: ``--models consrec dataset=mafengwo``) and DMTL to
convergence / SVD++ fit. Sweep mode reads a finished sweep's runs from
MLflow (the one sweep-timing command). Stage names, config composition and the fit + predict sum
are shared with ``python -m benchmark.scale`` (benchmark/timing.py). A benchmark, not a test:
targets are printed beside the figures, nothing is asserted. Results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import tempfile
import time

import numpy as np
import pandas as pd

from baselines import surprise_predict
from baselines.surprise import SurpriseRecommender
from benchmark.core.cli import ArgumentParser, whole
from benchmark.core.config import CONF, instantiate
from benchmark.core.errors import ConfigError, GroupbenchError, one_line
from benchmark.data.cache import ProtocolCache
from benchmark.protocol.split import are_splits, make_splits
from benchmark.run.job import build_tracker, dataset_defaults, run
from benchmark.run.preflight import job_config
from benchmark.timing import (
    STAGES,
    AllJobsFailed,
    compose,
    fit_predict_seconds,
    stage_seconds,
    tool_main,
    tool_overrides,
)
from benchmark.tracking.store import prepare_store
from benchmark.tracking.tracker import existing_store

FAMILIES = ("dmtl", "neural_mf", "svd", "svdpp", "knn_baseline", "slope_one", "baseline_only")
OUTSIDE_TARGET, DMTL_TARGET, SWEEP_TARGET = 0.25, 0.5, 1.3
HEADLINES = ("rmse", "group_sampled_ndcg_at_10", "group_heldout_recall_at_20")  # the first a job logged is printed
CATALOGUE_SAMPLE = 5000  # catalogue pairs Surprise predicts one by one (its time per pair is extrapolated)
# keys job mode sets itself: an override of one would be ignored, so it is refused (-> what to do instead)
OWNED = {"model": "use --models to choose the models (e.g. --models svd,dmtl)",
         "tracking.uri": "job mode logs to a temporary store (--tracking-uri is for --sweep); drop it",
         "tracking.experiment": "job mode logs to a temporary store; drop it",
         "cache.dir": "the protocol cache is timed off, cold and warm in a temporary folder; drop it",
         "cache.enabled": "the protocol cache is timed off, cold and warm in a temporary folder; drop it"}


def compose_config(overrides: list[str]):
    """The job's config as the runner runs it (a group-item dataset's own split and grouping)."""
    return dataset_defaults(compose(["trainer.progress=false", *overrides]))


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = os.getloadavg()[0]
    return (f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores "
            f"(load average {load:.1f}), torch {torch.__version__}, {gpu}")


# ---------------------------------------------------------------------------- job mode

def protocol_seconds(cfg) -> float:
    """Seconds for loading, splitting and grouping one job's data through the cache (as the runner does)."""
    cfg = dataset_defaults(cfg)  # a group-item dataset's own split and grouping, as the job takes them
    started = time.perf_counter()
    cfg = dataset_defaults(cfg)  # a group-item dataset's own split and grouping, as the job's
    cache = ProtocolCache(cfg)
    dataset = cache.dataset(lambda: instantiate(cfg.dataset.loader, root=cfg.data.root, download=cfg.data.download,
                                                verify=cfg.data.verify))
    splits = cache.splits(lambda: make_splits(instantiate(cfg.split), dataset, int(cfg.seed)), are_splits)
    for split in splits:
        cache.groups(split.fold, lambda split=split: instantiate(cfg.grouping)(dataset, split.train, seed=cfg.seed))
    return time.perf_counter() - started


def cache_figures(overrides: list[str], cache_dir: str) -> dict[str, float]:
    off = protocol_seconds(compose_config([*overrides, "cache.enabled=false"]))
    miss = protocol_seconds(compose_config([*overrides, f"cache.dir={cache_dir}"]))
    hit = protocol_seconds(compose_config([*overrides, f"cache.dir={cache_dir}"]))
    print(f"protocol (load + split + grouping): without the cache {off:.2f} s, miss (compute + write) {miss:.2f} s, "
          f"hit {hit:.2f} s")
    return {"protocol_off_seconds": off, "protocol_miss_seconds": miss, "protocol_hit_seconds": hit}


def time_predictions(model, pairs: pd.DataFrame, pairwise_sample: int | None = None) -> dict[str, float]:
    """Seconds per pair: vectorised (all pairs) and Surprise pair by pair (all, or a seeded sample)."""
    algo = model.algorithm
    users, items = pairs["user"].to_numpy(), pairs["item"].to_numpy()
    np.random.seed(0)
    started = time.perf_counter()
    vectorised = surprise_predict.predict(algo, users, items)
    vector_s = time.perf_counter() - started
    rows = np.arange(len(pairs))
    if pairwise_sample is not None and pairwise_sample < len(pairs):
        rows = np.sort(np.random.default_rng(0).choice(len(pairs), pairwise_sample, replace=False))
    started = time.perf_counter()
    reference = surprise_predict.predict_pairwise(algo, users[rows].tolist(), items[rows].tolist())
    pairwise_s = time.perf_counter() - started
    same = np.isfinite(vectorised).all() and np.allclose(vectorised[rows], reference, rtol=0, atol=1e-9)
    return {"pairs": len(pairs), "vectorised_s": vector_s, "surprise_s_per_pair": pairwise_s / len(rows),
            "surprise_s": pairwise_s / len(rows) * len(pairs), "speedup": pairwise_s / len(rows) * len(pairs) / vector_s,
            "sampled": len(rows) < len(pairs), "equal": bool(same) or algo.__class__.__name__ == "NormalPredictor"}


def job_mode(args) -> dict[str, float]:
    families = args.families
    print(f"machine: {machine()}")
    if args.missing:
        print(f"no conf/model/*.yaml for {args.missing}: skipped")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="groupbench-speed-") as scratch:
        store = f"sqlite:///{scratch}/mlflow.db"
        base = [f"tracking.uri={store}", "tracking.experiment=speed", f"cache.dir={scratch}/cache", *args.overrides]
        # the steps before and after the jobs compose as the first family's job, so that a model key on the command
        # line (model.layers=2, valid for every family asked: parse_args) composes there too
        first = f"model={families[0]}"
        figures.update(cache_figures([first, *args.overrides], f"{scratch}/cache"))  # leaves the cache warm

        # once per process, not per job (a sweep worker pays them once): MLflow's store setup, and
        # the torch._dynamo import torch.optim does on its first optimizer
        started = time.perf_counter()

        build_tracker(compose_config([first, *base]))
        importlib.import_module("torch._dynamo")
        print(f"one-time per process (MLflow store setup, torch._dynamo import): {time.perf_counter() - started:.2f} s")

        rows, results, failed = [], {}, {}
        for name in families:
            cfg = compose_config([f"model={name}", *base])
            started = time.perf_counter()
            try:
                result = run(cfg)
            except Exception as exc:  # its run is FAILED in the temporary store; the other families go on
                failed[name] = one_line(exc if isinstance(exc, GroupbenchError) else f"{type(exc).__name__}: {exc}")
                print(f"  {name}: FAILED {failed[name]}", flush=True)
                continue
            total = time.perf_counter() - started
            stages = stage_seconds(result.metrics)
            inside = stages["fit"] + stages["predict"]
            rows.append({"model": name, **stages, "other": total - sum(stages.values()), "job": total,
                         "outside_share": (total - inside) / total})
            results[name] = result
            headline = next((f"{key} {result.metrics[key]:.4f}" for key in HEADLINES if key in result.metrics), "")
            print(f"  {name}: {total:.1f} s ({headline})", flush=True)
        if not rows:
            raise AllJobsFailed("every job failed, nothing was measured: "
                                + "; ".join(f"{name}: {error}" for name, error in failed.items()))
        table = pd.DataFrame(rows).set_index("model")
        print(f"\nseconds per job stage, one job per family, {cfg.dataset.name} seed {cfg.seed}, warm protocol cache "
              f"(evaluate includes group-level evaluation; other = run setup, model construction):")
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.round(3).to_string())
        print(f"target: outside fit + predict <= {OUTSIDE_TARGET:.0%} of each family's job time; over it: "
              f"{', '.join(table.index[table.outside_share > OUTSIDE_TARGET]) or 'none'}")
        if failed:
            print(f"failed (not in the table): {', '.join(failed)}")
        figures.update({f"{name}_{key}": float(value) for name, row in table.iterrows() for key, value in row.items()})

        for name, result in results.items():  # every model trained by models/trainer.py (its diagnostics)
            if "seconds_per_epoch" in result.metrics:
                epochs = result.metrics.get("epochs_trained", 0.0) + result.metrics.get("refit_epochs", 0.0)
                figures.update({f"{name}_seconds_per_epoch": result.metrics["seconds_per_epoch"],
                                f"{name}_fit_seconds": result.metrics["fit_seconds"]})
                print(f"\n{name}: seconds per epoch {result.metrics['seconds_per_epoch']:.3f} (the model's "
                      f"diagnostics); fit to convergence {result.metrics['fit_seconds']:.2f} s over {epochs:.0f} "
                      f"epochs (early stopping + refit)")

        if "dmtl" in results:
            history = results["dmtl"].models[0].history
            epochs = np.array([h["epoch_seconds"] for h in history])
            figures.update({"dmtl_epochs": float(len(epochs)), "dmtl_seconds_per_epoch": float(np.median(epochs)),
                            "dmtl_fit_seconds": results["dmtl"].metrics["fit_seconds"]})
            print(f"\nDMTL: {len(epochs)} epochs, seconds per epoch median {np.median(epochs):.3f} "
                  f"(min {epochs.min():.3f}, max {epochs.max():.3f}); fit to convergence "
                  f"{figures['dmtl_fit_seconds']:.2f} s")
            if "svdpp" in results:
                ratio = figures["dmtl_fit_seconds"] / results["svdpp"].metrics["fit_seconds"]
                figures["dmtl_over_svdpp_fit"] = ratio
                print(f"DMTL to convergence / SVD++ fit = {figures['dmtl_fit_seconds']:.2f} / "
                      f"{results['svdpp'].metrics['fit_seconds']:.2f} = {ratio:.2f} (target <= {DMTL_TARGET})")

        if not args.skip_pairwise:
            figures.update(prediction_figures(results, [first, *base]))
    return figures


def prediction_figures(results: dict, base: list[str]) -> dict[str, float]:
    """Vectorised against Surprise's per-pair predict, on each fitted Surprise model of the jobs above."""
    cfg = compose_config(base)
    cache = ProtocolCache(cfg)
    dataset = cache.dataset(lambda: instantiate(cfg.dataset.loader, root=cfg.data.root, download=cfg.data.download,
                                                verify=cfg.data.verify))
    catalogue = pd.MultiIndex.from_product([dataset.user_features.index, dataset.item_features.index],
                                           names=["user", "item"]).to_frame(index=False)
    rows = []
    for name, result in results.items():
        model = result.models[0]
        if not isinstance(model, SurpriseRecommender):
            continue
        for what, pairs, sample in (("test pairs", result.predictions, None),
                                    ("full catalogue", catalogue, CATALOGUE_SAMPLE)):
            rows.append({"model": name, "pairs of": what, **time_predictions(model, pairs, sample)})
    if not rows:
        return {}
    table = pd.DataFrame(rows)
    print(f"\npredictions: vectorised (baselines/surprise_predict.py) against Surprise's predict pair by pair "
          f"(full catalogue: Surprise timed on {CATALOGUE_SAMPLE:,} sampled pairs and extrapolated; equal = "
          f"same values to 1e-9 on the pairs both predicted):")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round({"vectorised_s": 3, "surprise_s": 2, "surprise_s_per_pair": 7, "speedup": 1}).to_string(
            index=False))
    return {f"{row['model']}_{'test' if row['pairs of'] == 'test pairs' else 'catalogue'}_predict_speedup":
            float(row["speedup"]) for row in rows}


# ---------------------------------------------------------------------------- sweep mode

def workers_of(parent) -> tuple[int, str]:
    """Parallel workers of a sweep invocation: its ``launcher_workers`` param (the launcher's n_jobs
    or array_parallelism), else hydra.launcher.n_jobs in its overrides, 1 for the basic launcher,
    else this machine's cores (said so)."""
    logged = parent.data.params.get("launcher_workers", "")
    if logged.isdigit() and int(logged) > 0:
        return int(logged), "the sweep's launcher_workers param"
    overrides = parent.data.params.get("overrides", "")
    launcher = parent.data.params.get("launcher", "?")
    found = re.search(r"hydra\.launcher\.n_jobs=(\d+)", overrides)
    if found:
        return int(found.group(1)), "hydra.launcher.n_jobs"
    if launcher.endswith("BasicLauncher"):
        return 1, "basic launcher"
    return len(os.sched_getaffinity(0)), f"assumed: this machine's cores ({launcher.rsplit('.', 1)[-1]})"


def sweep_mode(args) -> dict[str, float]:
    from mlflow.tracking import MlflowClient


    uri = existing_store(args.tracking_uri)  # read-only: never created; a server answers within the timeout
    prepare_store(uri)  # a file that is not a complete MLflow store is refused in one line, never changed
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(args.sweep)
    if experiment is None:
        raise ConfigError(f"--sweep {args.sweep}: no MLflow experiment {args.sweep!r} in {uri}; "
                          f"run the sweep first or pass --tracking-uri")
    parents = client.search_runs([experiment.experiment_id], "tags.`groupbench.role` = 'sweep'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise ConfigError(f"--sweep {args.sweep}: experiment {args.sweep!r} has no sweep parent run; "
                          f"run python -m benchmark +sweep={args.sweep} first")
    parent = parents[0]
    # a tuned job is the child of its study, which is the sweep's child: walk both levels
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=50000)
    studies = [c for c in children if c.data.tags.get("groupbench.role") == "study"]
    parents_of_jobs = {parent.info.run_id} | {c.info.run_id for c in studies}
    jobs = [c for c in client.search_runs([experiment.experiment_id], "tags.`groupbench.role` = 'job'",
                                          max_results=50000)
            if c.data.tags.get("mlflow.parentRunId") in parents_of_jobs
            and c.info.end_time and c.info.status == "FINISHED"]
    workers, source = (args.workers, "--workers") if args.workers else workers_of(parent)
    wall = parent.data.metrics.get("wall_seconds", float("nan"))
    rows = [{"model": job.data.tags.get("model") or job.data.params.get("model.name", "?"), "job": (job.info.end_time - job.info.start_time) / 1000,
             "fit_predict": fit_predict_seconds(job.data.metrics),
             **stage_seconds(job.data.metrics, missing=np.nan)} for job in jobs]
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise AllJobsFailed(f"sweep {args.sweep!r} (parent {parent.info.run_id[:8]}) has no FINISHED job run: "
                            f"nothing to measure")
    fit_predict = frame["fit_predict"].sum()
    # a tuned job's study (trials: fit + validation scoring) ran before it, in the same worker
    tuning = float(sum(study.data.metrics.get("tuning_seconds", 0.0) for study in studies))
    ratio = wall / ((fit_predict + tuning) / workers)
    print(f"sweep {args.sweep!r}, parent run {parent.info.run_id[:8]} (latest invocation): {len(frame)} FINISHED jobs, "
          f"{workers} worker(s) ({source})")
    print(f"wall {wall:.1f} s; jobs {frame['job'].sum():.1f} s in all, of which fit + predict {fit_predict:.1f} s"
          + (f"; {len(studies)} studies' trials (tuning) {tuning:.1f} s" if studies else ""))
    work = "fit + predict + tuning" if studies else "fit + predict"
    print(f"wall / (sum of {work} / workers) = {ratio:.2f} (target <= {SWEEP_TARGET})")
    families = frame.groupby("model").agg(jobs=("job", "size"), job_s=("job", "sum"), fit_predict_s=("fit_predict", "sum"),
                                          **{f"{stage}_s": (stage, "sum") for stage in STAGES})
    families["outside_share"] = 1 - families["fit_predict_s"] / families["job_s"]
    print("per model, summed over its jobs (stage columns: NaN for runs logged before stage timing):")
    with pd.option_context("display.width", 220, "display.max_columns", 20):
        print(families.round(2).to_string())
    print(f"over {OUTSIDE_TARGET:.0%} outside fit + predict: "
          f"{', '.join(families.index[families.outside_share > OUTSIDE_TARGET]) or 'none'}")
    return {"wall_seconds": wall, "fit_predict_seconds": float(fit_predict), "tuning_seconds": tuning,
            "studies": float(len(studies)), "jobs": float(len(frame)), "workers": float(workers),
            "wall_over_fit_predict_per_worker": float(ratio),
            **{f"{name}_outside_share": float(v) for name, v in families["outside_share"].items()}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, every value checked here (one line naming the argument, exit 2): a value
    the chosen mode would ignore is refused, each job's config is composed and checked as a single
    run's (``benchmark.run.preflight.job_config``) before anything is measured."""
    parser = ArgumentParser(prog="python -m benchmark.speed", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dataset=itmrec seed=1 trainer.device=cuda")
    parser.add_argument("--models", help=f"comma-separated model configs (default: {','.join(FAMILIES)}; "
                                         f"a default one without a conf/model file is skipped)")
    parser.add_argument("--skip-pairwise", action="store_true",
                        help="do not time Surprise's per-pair predict against the vectorised one")
    parser.add_argument("--sweep", metavar="EXPERIMENT", help="report a finished sweep's timing from MLflow instead")
    parser.add_argument("--tracking-uri", default=None, help="sweep mode: default sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--workers", type=int, help="sweep mode: parallel workers (default: from the sweep's overrides)")
    args = parser.parse_args(argv)
    whole("--workers", args.workers)
    if args.sweep is not None:
        if not args.sweep.strip():
            raise ConfigError("--sweep needs the sweep's experiment name, e.g. --sweep smoke")
        for given, flag in ((args.overrides, " ".join(args.overrides)), (args.models, "--models"),
                            (args.skip_pairwise, "--skip-pairwise")):
            if given:
                raise ConfigError(f"{flag}: job mode only, --sweep reads a finished sweep's runs; drop it or --sweep")
        return args
    for given, flag in ((args.workers, "--workers"), (args.tracking_uri, "--tracking-uri")):
        if given is not None:
            raise ConfigError(f"{flag}: for --sweep only (job mode runs its jobs in a temporary store); drop it "
                              f"or add --sweep NAME")
    known = sorted(path.stem for path in (CONF / "model").glob("*.yaml"))
    if args.models is None:
        args.families = [name for name in FAMILIES if name in known]
        args.missing = sorted(set(FAMILIES) - set(args.families))
    else:
        args.families = list(dict.fromkeys(name.strip() for name in args.models.split(",") if name.strip()))
        args.missing = []
        if not args.families:
            raise ConfigError(f"--models {args.models!r} names no model; use one or more of {known}")
        unknown = [name for name in args.families if name not in known]
        if unknown:
            raise ConfigError(f"--models: no conf/model/<name>.yaml for {unknown}; use one or more of {known}")
    tool_overrides("speed", args.overrides, OWNED)
    for name in args.families:  # as the job composes it (job_mode): every override checked for every family
        try:
            job_config(["trainer.progress=false", f"model={name}", *args.overrides])
        except ConfigError as exc:
            raise ConfigError(f"{exc} (in the {name} job)") from None
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    """The figures; a bad argument or input: one line on stderr, exit 2; every job failed: exit 1."""
    def work() -> dict[str, float]:
        args = parse_args(argv)
        return sweep_mode(args) if args.sweep else job_mode(args)

    return tool_main(work)


if __name__ == "__main__":
    main()
