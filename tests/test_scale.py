"""The scale benchmark's pieces (issue 15): growth exponents, harness shares, skips, merging runs,
one real job through the runner; and what the scale work changed in the pipeline: the trainer's
batches without a shuffled copy, KMeans on one thread with unchanged labels."""

from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace

import numpy as np
import pytest
import threadpoolctl
import torch
from torch import nn

from benchmark import growth, scale, timing
from benchmark.data.synthetic import load
from benchmark.protocol import grouping
from models.base import FitContext
from models.samplers import RowSampler
from models.trainer import Trainer, TrainerConfig, ValidationLoss


def _result(model: str, n: int, seconds: dict[str, float], rss: float = 500.0, **extra) -> dict:
    return {"model": model, "n_ratings": n, "seconds": {k: seconds.get(k, 0.0) for k in timing.STAGES},
            "job_peak_rss_mb": rss, **extra}


def test_exponent_recovers_known_slopes():
    sizes = [100_000, 300_000, 1_000_000]
    assert growth.exponent(sizes, [2e-6 * n for n in sizes]) == pytest.approx(1.0)
    assert growth.exponent(sizes, [3e-12 * n ** 2 for n in sizes]) == pytest.approx(2.0)
    assert growth.exponent(sizes[:1], [1.0]) is None  # one point: no slope


def test_harness_shares_warm_and_with_the_cold_protocol():
    harness = _result(scale.HARNESS_JOB, 10, {"load": 1.0, "split": 0.5, "grouping": 8.5, "evaluate": 1.0, "log": 0.2})
    model = _result("svd", 10, {"load": 1.0, "split": 0.1, "grouping": 0.1, "fit": 15.0, "predict": 2.0,
                                "evaluate": 1.0, "log": 0.8})
    warm, cold = growth.shares(model, [harness, model])
    assert warm == pytest.approx(3.0 / 20.0)                     # (1 + .1 + .1 + 1 + .8) / 20
    assert cold == pytest.approx((1.0 + 0.5 + 8.5 + 1.0 + 0.8) / (20.0 - 1.2 + 10.0))
    assert growth.shares(model, [model])[1] is None               # no harness job at that size


@pytest.mark.slow
def test_a_job_over_the_memory_limit_is_skipped_never_started(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(scale, "run_isolated", lambda *a, **k: pytest.fail("a job was started"))
    scale.main(["--sizes", "5000", "--models", "dmtl,svd", "--memory-limit-gb", "0.01", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count(": skipped: estimated") == 3  # the harness job and both models, one line each
    saved = json.loads((tmp_path / "scale.json").read_text())
    assert [r["model"] for r in saved["results"]] == [scale.HARNESS_JOB, "dmtl", "svd"]
    assert all("skipped" in r for r in saved["results"])


def test_estimates_match_the_measured_peaks():
    """The estimates, recalibrated from the peaks measured on this machine (MiB, docs/performance.md),
    neither fall short of them (a job would be started that crashes the machine) nor far exceed them."""
    measured_mib = {(scale.HARNESS_JOB, 1_000_000): 805, (scale.HARNESS_JOB, 10_000_000): 1_638,
                    ("dmtl", 1_000_000): 966, ("dmtl", 10_000_000): 3_021, ("svd", 1_000_000): 1_185,
                    ("knn_item", 1_000_000): 1_378, ("neural_mf", 1_000_000): 1_199}
    for (model, n), peak in measured_mib.items():
        estimate = scale.estimate_bytes(model, n)[0] / 2 ** 20
        assert 0.95 * peak <= estimate <= 1.25 * peak, (model, n, estimate, peak)
    # 10M with the default 4 GB limit: the harness and DMTL run (1.6 and 3.0 GB measured); Surprise's
    # trainset (Python tuples) and k-NN's item-item matrices do not fit
    over = {m for m in (scale.HARNESS_JOB, *scale.MODELS) if scale.estimate_bytes(m, 10_000_000)[0] > 4 * 2 ** 30}
    assert over == {"svd", "knn_item"}


def test_merging_runs_prints_exponents_across_them(tmp_path, capsys):
    sizes = (100_000, 1_000_000, 10_000_000)
    files = []
    for n in sizes:
        results = [_result(scale.HARNESS_JOB, n, {"load": n * 1e-6, "split": n * 2e-7, "grouping": n * 1e-6,
                                                  "evaluate": n * 1e-6, "log": 0.1}, rss=500 + n * 1e-4),
                   _result("dmtl", n, {"load": n * 1e-6, "fit": n * 1e-5, "predict": n * 1e-6,
                                       "evaluate": n * 1e-6, "log": 0.1}, seconds_per_epoch=(n * 1e-5) ** 1.5)]
        path = tmp_path / f"{n}.json"
        path.write_text(json.dumps({"machine": "test", "argv": [str(n)], "results": results}))
        files.append(str(path))
    scale.main(["--from-json", *files, "--out", str(tmp_path / "merged")])
    out = capsys.readouterr().out
    fitted = json.loads((tmp_path / "merged" / "scale.json").read_text())["exponents"]
    assert fitted["grouping"] == pytest.approx(1.0) and fitted["log"] == pytest.approx(0.0, abs=1e-9)
    assert fitted["dmtl.epoch"] == pytest.approx(1.5)
    assert "DMTL epoch grows linearly (exponent ~1): 1.50" in out
    assert "peak RSS at 10M, dmtl job <= 4 GB: 0.49 GB (met)" in out
    assert (tmp_path / "merged" / "scale.png").stat().st_size > 0


def test_one_job_reports_the_runners_stages(tmp_path, monkeypatch):
    from benchmark.run import job as runner

    stages_class, run_function = runner.Stages, runner.run
    monkeypatch.setattr(scale, "shape", lambda n, group_size=scale.GROUP_SIZE, n_groups=None: {
        "n_users": 60, "n_items": 80, "n_ratings": n, "n_groups": 3})
    root, level = logging.getLogger(), logging.getLogger().level
    started = time.perf_counter()
    try:
        result = scale.run_job("svd", 2_000, 1, "parquet", f"sqlite:///{tmp_path / 'mlflow.db'}",
                               str(tmp_path / "cache"))
    finally:
        root.setLevel(level)  # run_job quiets the root logger (a spawned job's own): not the tests'
    wall = time.perf_counter() - started
    assert set(result["seconds"]) == set(timing.STAGES)
    assert result["seconds"]["fit"] > 0 and result["seconds"]["predict"] > 0 and result["seconds"]["evaluate"] > 0
    assert sum(result["seconds"].values()) < wall
    # predict holds the test pairs and the group members' pairs the evaluation asked for
    assert result["seconds"]["predict"] >= result["test_predict_seconds"] > 0
    assert result["protocol_cache"] == "dataset=uncached split=miss groups=miss"
    assert result["job_peak_rss_mb"] > 100 and 0.5 < result["rmse"] < 2.0
    peaks = result["peak_rss_by_stage_mb"]
    assert set(timing.STAGES) <= set(peaks) and max(peaks.values()) <= result["job_peak_rss_mb"]
    assert peaks[result["peak_stage"]] == max(peaks.values())
    assert set(result["minor_page_faults_by_stage"]) == set(peaks)
    # metered through run(..., stages=...): the runner is used as it is, never patched
    assert runner.Stages is stages_class and runner.run is run_function


# ---- the pipeline changes made for scale

class _Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.batches: list[torch.Tensor] = []


def test_trainer_batches_are_the_slices_of_a_shuffled_copy():
    """Batches are gathered per step instead of from a shuffled copy of every tensor: same rows, same order."""
    n, batch = 4096, 64  # at least Trainer.MIN_STEPS batches: the configured batch is used
    rows = torch.arange(n)
    net = _Recorder()

    def loss(model, part):
        if model.training:
            model.batches.append(part[0].clone())
        value = ((model.weight - part[1]) ** 2).mean()
        return value, {"mse": value}

    config = TrainerConfig(batch_size=batch, max_epochs=2, patience=5, progress=False, lr=0.01)
    trainer = Trainer(config, seed=7, name="test")
    values = torch.randn(n)
    context = FitContext(dataset=SimpleNamespace(name="x", rating_scale=(1.0, 5.0)), groups=None, seed=7)
    trainer.fit(net, loss, RowSampler([rows, values]), ValidationLoss(loss, [rows[:10], values[:10]]), context)
    generator = torch.Generator().manual_seed(7)
    expected = []
    for _ in range(2):
        shuffled = rows.index_select(0, torch.randperm(n, generator=generator))
        expected += [shuffled[start:start + batch] for start in range(0, n, batch)]
    assert len(net.batches) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(net.batches, expected))


def test_kmeans_runs_on_one_thread_and_its_labels_do_not_depend_on_it(monkeypatch):
    dataset = load(n_users=400, n_items=150, n_ratings=8000, n_groups=8)
    seen = []
    fit = grouping.KMeans.fit

    def spying_fit(self, *args, **kwargs):
        seen.append([p["num_threads"] for p in threadpoolctl.threadpool_info()])  # OpenMP and BLAS pools
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(grouping.KMeans, "fit", spying_fit)
    one = grouping.kmeans(dataset, dataset.ratings, k=8, seed=0)
    assert seen and all(threads == [1] * len(threads) for threads in seen)
    monkeypatch.setattr(grouping, "KMEANS_THREADS", None)
    every = grouping.kmeans(dataset, dataset.ratings, k=8, seed=0)
    assert (one.labels == every.labels).all()
    assert one.stats["inertia"] == pytest.approx(every.stats["inertia"], rel=1e-9)
    assert np.unique(one.labels).size == 8
