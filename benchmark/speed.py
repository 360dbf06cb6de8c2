"""DMTL training speed against Surprise SVD / SVD++ on the same training data, in one process.

    python -m benchmark.speed                       # default config, ML-100K, CPU
    python -m benchmark.speed trainer.device=cuda   # any Hydra override of conf/config.yaml

Prints seconds per DMTL epoch, samples/s, time to convergence, peak memory, analytic FLOPs per
epoch with the achieved GFLOP/s next to this machine's measured float32 matmul rate, and the
ratios DMTL-to-convergence / SVD++ fit and DMTL epoch / SVD epoch. A benchmark, not a test:
nothing is asserted. Results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from benchmark.runner import instantiate
from models.base import FitContext

CONF = Path(__file__).resolve().parent.parent / "conf"


def matmul_gflops(n: int, m: int, k: int, device: torch.device, seconds: float = 1.0) -> float:
    """Measured float32 (n x k) @ (k x m) throughput, GFLOP/s, at the current thread count."""
    a = torch.randn(n, k, device=device)
    b = torch.randn(k, m, device=device)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    reps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        reps += 1
    sync()
    return 2.0 * n * m * k * reps / (time.perf_counter() - started) / 1e9


def matmul_floor_seconds(net: torch.nn.Module, batch: int, device: torch.device, repeats: int = 50) -> float:
    """Seconds for the matrix products of one training step of ``batch`` rows, back to back on hot
    caches: per dense layer (in -> out) the forward X W^T, the weight gradient dY^T X and the input
    gradient dY W, i.e. exactly the 3 x forward FLOPs the analytic count charges. No element-wise
    work at all, so no eager implementation of the step can be faster than this."""
    layers = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    shapes = [(torch.randn(batch, m.in_features, device=device), torch.randn(batch, m.out_features, device=device),
               m.weight.detach()) for m in layers]

    def products():
        for x, dy, w in shapes:
            x @ w.T
            dy.T @ x
            dy @ w
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(5):
        products()
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        products()
    sync()
    return (time.perf_counter() - started) / repeats


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=["trainer.progress=false", *overrides])


def machine() -> str:
    cores = len(__import__("os").sched_getaffinity(0))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}, {gpu}"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.device=cuda dataset=itmrec")
    parser.add_argument("--skip-surprise", action="store_true", help="time DMTL only")
    args = parser.parse_args(argv)
    cfg = compose_config(["model=dmtl", *args.overrides])

    dataset = instantiate(cfg.dataset.loader, root=cfg.data.root, download=cfg.data.download, verify=cfg.data.verify)
    split = instantiate(cfg.split)(dataset.ratings, seed=cfg.seed)[0]
    groups = instantiate(cfg.grouping)(dataset, split.train, seed=cfg.seed)
    context = FitContext(dataset=dataset, groups=groups, seed=cfg.seed)
    print(f"machine: {machine()}")
    print(f"data: {dataset.summary()}; training rows {len(split.train):,}; K={groups.k}")

    # A one-time cost per process, not per fit (a sweep worker pays it once), paid up front and
    # reported apart: the torch._dynamo import torch.optim does on its first optimizer (~1 s).
    started = time.perf_counter()
    model = instantiate(cfg.model, seed=cfg.seed)
    importlib.import_module("torch._dynamo")
    one_time = "the torch._dynamo import torch.optim triggers"
    one_time_seconds = time.perf_counter() - started
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model.fit(split.train, context)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    dmtl_fit = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    epochs = np.array([h["epoch_seconds"] for h in model.history])
    epoch = float(np.median(epochs))
    flops = model.flops_per_epoch()
    rows = len(model.fit_data) + len(model.val_data)

    # matmul rate at DMTL's own thread count (fit set it) and device: a large square product
    # (the machine's peak) and one of the model's own largest shapes (batch x shared -> K)
    peak = matmul_gflops(1024, 1024, 1024, model.device)
    batch = int(cfg.trainer.batch_size)
    at_shape = matmul_gflops(batch, groups.k, int(cfg.model.sizes.shared_dim), model.device)
    achieved = flops["total"] / epoch / 1e9
    figures = {
        "dmtl_epochs": float(len(epochs)), "dmtl_best_epoch": float(model.best_epoch),
        "dmtl_seconds_per_epoch": epoch, "dmtl_samples_per_second": rows / epoch,
        "dmtl_seconds_to_convergence": dmtl_fit, "one_time_seconds": one_time_seconds, "peak_rss_mb": peak_rss_mb,
        "flops_per_epoch": flops["total"], "achieved_gflops": achieved,
        "matmul_gflops_1024": peak, "matmul_gflops_model_shape": at_shape,
        "epoch_over_flops_at_peak": epoch / (flops["total"] / (peak * 1e9)),
    }
    if model.device.type == "cuda":
        figures["cuda_peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20

    print(f"DMTL ({model.device.type}, "
          f"batch {batch}, lr {cfg.trainer.lr}, "
          f"sizes {dict(cfg.model.sizes)}, torch threads {torch.get_num_threads()}):")
    print(f"  epochs run {len(epochs)} (best {model.best_epoch}); seconds per epoch median {epoch:.3f} "
          f"(min {epochs.min():.3f}, max {epochs.max():.3f}); samples/s {rows / epoch:,.0f}")
    print(f"  time to convergence (whole fit incl. tensor building) {dmtl_fit:.2f} s "
          f"(+ {one_time_seconds:.2f} s once per process: {one_time})")
    print(f"  peak memory: process max RSS {peak_rss_mb:,.0f} MiB"
          + (f", CUDA max allocated {figures['cuda_peak_memory_mb']:.1f} MiB" if "cuda_peak_memory_mb" in figures else ""))
    print(f"  analytic FLOPs/epoch {flops['total'] / 1e9:.2f} G (forward {flops['flops_per_sample_forward']:,.0f} "
          f"FLOP/row; 3x on {len(model.fit_data):,} training rows + 1x on {len(model.val_data):,} validation rows)")
    print(f"  achieved {achieved:.2f} GFLOP/s; measured float32 matmul {peak:.1f} GFLOP/s (1024^3), "
          f"{at_shape:.1f} GFLOP/s ({batch}x{cfg.model.sizes.shared_dim} @ {cfg.model.sizes.shared_dim}x{groups.k})")
    print(f"  epoch time / (FLOPs at the 1024^3 matmul rate) = {figures['epoch_over_flops_at_peak']:.2f}x (target <= 1.5x)")
    floor = matmul_floor_seconds(model.net, batch, model.device)
    figures["matmul_floor_over_flops_at_peak"] = floor / (3 * flops["flops_per_sample_forward"] * batch / (peak * 1e9))
    print(f"  floor: the step's matrix products alone (same shapes, back to back, hot caches) take "
          f"{floor * 1e3:.2f} ms per {batch}-row batch = {figures['matmul_floor_over_flops_at_peak']:.2f}x "
          f"their FLOPs at the 1024^3 rate")

    if not args.skip_surprise:
        for name in ("svd", "svdpp"):
            baseline = instantiate(compose_config([f"model={name}"]).model, seed=cfg.seed)
            started = time.perf_counter()
            baseline.fit(split.train, context)
            figures[f"{name}_fit_seconds"] = time.perf_counter() - started
            figures[f"{name}_epoch_seconds"] = figures[f"{name}_fit_seconds"] / baseline.algorithm.n_epochs
            print(f"Surprise {name}: fit {figures[f'{name}_fit_seconds']:.2f} s "
                  f"({baseline.algorithm.n_epochs} epochs, {figures[f'{name}_epoch_seconds']:.3f} s each)")
        figures["dmtl_over_svdpp_fit"] = dmtl_fit / figures["svdpp_fit_seconds"]
        figures["dmtl_epoch_over_svd_epoch"] = epoch / figures["svd_epoch_seconds"]
        print(f"ratio DMTL to convergence / SVD++ fit = {figures['dmtl_over_svdpp_fit']:.2f} (target <= 0.5); "
              f"with the one-time cost {(dmtl_fit + one_time_seconds) / figures['svdpp_fit_seconds']:.2f}")
        print(f"ratio DMTL epoch / SVD epoch = {figures['dmtl_epoch_over_svd_epoch']:.2f}")
    return figures


if __name__ == "__main__":
    main()
