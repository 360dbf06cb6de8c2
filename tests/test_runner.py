"""One run end to end: MLflow run contents, every baseline, seeds, k-fold, and failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from benchmark.core import models_meta
from benchmark.core.config import config_hash
from benchmark.run.job import run
from benchmark.tracking.artifacts import read_table
from benchmark.tracking.tracker import Tracker
from tests.conftest import data_root

REPO = Path(__file__).resolve().parent.parent
REFERENCES = ("oracle", "constant", "global_mean", "random", "item_mean", "popularity")  # models/reference.py
GROUP_ITEM_ONLY = models_meta.group_item_models()  # need a group-item dataset: tests/test_group_protocol.py
IMPLICIT = models_meta.implicit_models()  # rank, predict no rating (RMSE means nothing): tests/test_implicit_models.py
BASELINES = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")
                   if p.stem != "dmtl" and p.stem not in REFERENCES and p.stem not in GROUP_ITEM_ONLY + IMPLICIT)
SLOW_BASELINES = ("neural_mf",)  # trains a network: the full tier only (test_neural_mf.py has its fast tests)


def artifact_frame(client: MlflowClient, run_id: str, name: str, tmp_path: Path) -> pd.DataFrame:
    return read_table(client.download_artifacts(run_id, name, str(tmp_path)))


def test_single_run_logs_everything(make_cfg, tracking_uri, tmp_path):
    cfg = make_cfg("dataset=itmrec", "model=svd", "seed=0")
    result = run(cfg)
    client = MlflowClient(tracking_uri)
    logged = client.get_run(result.run_id)
    assert logged.info.status == "FINISHED"
    for metric in ("rmse", "mae", "precision_at_10", "recall_at_10", "ndcg_at_10", "fit_seconds",
                   "predict_seconds"):
        assert logged.data.metrics[metric] == pytest.approx(result.metrics[metric])
    assert logged.data.params["model.name"] == "svd" and logged.data.params["split.test_size"] == "0.2"
    assert logged.data.params["grouping.k"] == "40"
    tags = logged.data.tags
    assert tags["config_hash"] == config_hash(cfg) and len(tags["dataset_sha256"]) == 64
    assert tags["git_commit"]
    predictions = artifact_frame(client, result.run_id, "predictions.parquet", tmp_path)
    # SVD clips its estimates: the rating it predicts, and the score before the clip that ranks
    assert list(predictions.columns) == ["user", "item", "rating", "prediction", "score"]
    assert len(predictions) == len(result.predictions) > 900  # ~20% of 4,798 pairs
    assert (predictions.prediction == predictions.score.clip(1, 5)).all()
    # the logged rmse is the rmse of the logged predictions
    err = predictions.prediction - predictions.rating
    assert logged.data.metrics["rmse"] == pytest.approx(((err ** 2).mean()) ** 0.5)
    per_user = artifact_frame(client, result.run_id, "per_user_metrics.parquet", tmp_path)
    assert per_user.precision.mean() == pytest.approx(logged.data.metrics["precision_at_10"])
    assert per_user.tie_at_cutoff.mean() == pytest.approx(logged.data.metrics["ties_at_10"])


@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_BASELINES else m
                                   for m in BASELINES])
def test_every_baseline_runs(make_cfg, model):
    result = run(make_cfg("dataset=synthetic", f"model={model}"))
    assert 0 < result.metrics["rmse"] < 2.5
    assert result.predictions.prediction.between(1, 5).all()


@pytest.mark.parametrize("model", REFERENCES)
def test_every_reference_predictor_runs_with_both_metric_families(make_cfg, tracking_uri, model):
    result = run(make_cfg("dataset=synthetic", f"model={model}"))
    run_info = MlflowClient(tracking_uri).get_run(result.run_id)
    assert run_info.info.status == "FINISHED"
    for metric in ("rmse", "user_rmse", "ndcg_at_10", "full_ndcg_at_10", "full_mrr", "full_coverage_at_10",
                   "full_group_mean_ndcg_at_10", "grouping_size_singleton_share"):
        assert metric in run_info.data.metrics, metric
    predictions = result.predictions
    if model == "oracle":
        assert (predictions.prediction == predictions.rating).all() and result.metrics["full_ndcg_at_10"] == 1.0
    elif model == "constant":
        assert (predictions.prediction == 5.0).all()
    else:
        assert predictions.prediction.between(1, 5).all() and 0 < result.metrics["rmse"] < 2.5


def test_baselines_beat_normal_predictor(make_cfg):
    floor = run(make_cfg("dataset=synthetic", "model=normal_predictor")).metrics["rmse"]
    assert run(make_cfg("dataset=synthetic", "model=baseline_only")).metrics["rmse"] < floor - 0.2


def test_same_seed_same_metrics(make_cfg):
    first = run(make_cfg("dataset=itmrec", "model=svd", "seed=3")).metrics
    second = run(make_cfg("dataset=itmrec", "model=svd", "seed=3")).metrics
    other = run(make_cfg("dataset=itmrec", "model=svd", "seed=4")).metrics
    quality = ("rmse", "mae", "precision_at_10", "recall_at_10", "ndcg_at_10")
    assert {k: first[k] for k in quality} == {k: second[k] for k in quality}
    assert first["rmse"] != other["rmse"]


@pytest.mark.slow
def test_kfold_svd_matches_surprise_published_rmse(make_cfg, tracking_uri, tmp_path):
    """Surprise's docs report RMSE 0.934 for SVD, 5-fold CV on ML-100K."""
    result = run(make_cfg("dataset=ml100k", "model=svd", "split=kfold", "grouping.n_init=1"))
    assert abs(result.metrics["rmse"] - 0.934) < 0.01
    assert result.metrics["rmse_std"] > 0
    client = MlflowClient(tracking_uri)
    predictions = artifact_frame(client, result.run_id, "predictions.parquet", tmp_path)
    assert sorted(predictions.fold.unique()) == [0, 1, 2, 3, 4] and len(predictions) == 100_000
    # the logged headline is the mean of the per-fold values, each computed from its fold's rows
    logged = client.get_run(result.run_id).data.metrics
    folds = [logged[f"fold{i}_rmse"] for i in range(5)]
    assert logged["rmse"] == pytest.approx(sum(folds) / 5)
    for i, value in enumerate(folds):
        err = predictions.loc[predictions.fold == i].eval("prediction - rating")
        assert value == pytest.approx(((err ** 2).mean()) ** 0.5)


def cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "benchmark", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                           f"data.root={data_root()}",
                           "hydra.run.dir=" + str(tmp_path / "out"), *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def only_run(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("groupbench")
    (logged,) = client.search_runs([experiment.experiment_id])
    return logged


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


@pytest.mark.slow
def test_cli_runs_and_finishes(tmp_path):
    proc = cli(tmp_path, "dataset=synthetic", "model=baseline_only")
    assert proc.returncode == 0, proc.stderr
    assert only_run(tmp_path).info.status == "FINISHED"


@pytest.mark.parametrize("override, message", [
    ("eval.k=0", "eval.k=0 must be an integer >= 1"),
    ("split.test_size=0", "split.test_size=0 must be a finite number > 0 and < 1"),
    ("grouping.k=100000", "grouping.k=100000 must be between 1"),
    ("data.root=/nonexistent/place", "dataset itmrec not found"),
])
@pytest.mark.slow
def test_bad_input_fails_run_with_one_line(tmp_path, real_data, override, message):
    proc = cli(tmp_path, "dataset=itmrec", "model=baseline_only", "data.download=false", override)
    assert proc.returncode == 2
    (line,) = error_lines(proc.stderr)
    assert message in line
    logged = only_run(tmp_path)
    assert logged.info.status == "FAILED" and message in logged.data.tags["error"]


@pytest.mark.slow
def test_unreachable_tracking_server(tmp_path):
    proc = cli(tmp_path, "dataset=synthetic", "model=baseline_only", "tracking.uri=http://127.0.0.1:9")
    assert proc.returncode == 2
    (line,) = error_lines(proc.stderr)
    assert "tracking server http://127.0.0.1:9 is unreachable" in line and "mlflow server" in line


def test_crash_inside_model_marks_run_failed(make_cfg, tracking_uri, monkeypatch):
    from baselines.surprise import SurpriseRecommender

    def broken_fit(self, train, context):
        raise RuntimeError("boom")

    monkeypatch.setattr(SurpriseRecommender, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="boom"):
        run(make_cfg("dataset=synthetic", "model=svd"))
    client = MlflowClient(tracking_uri)
    (logged,) = client.search_runs([Tracker(tracking_uri).experiment_id])
    assert logged.info.status == "FAILED" and logged.data.tags["error"] == "RuntimeError: boom"


def test_config_hash_tracks_results_not_presentation(make_cfg):
    base = config_hash(make_cfg("model=dmtl"))
    assert config_hash(make_cfg("model=dmtl", "trainer.progress=false")) == base
    assert config_hash(make_cfg("model=dmtl", "tracking.experiment=other", "data.download=false")) == base
    assert config_hash(make_cfg("model=dmtl", "trainer.lr=0.01")) != base
    assert config_hash(make_cfg("model=dmtl", "seed=1")) != base
    # a baseline ignores the trainer group entirely
    assert config_hash(make_cfg("model=svd", "trainer.lr=0.01")) == config_hash(make_cfg("model=svd"))


def test_run_takes_a_stages_factory_instead_of_a_patched_runner(make_cfg):
    """A tool measuring more per stage hands ``run`` a factory (benchmark.timing.MeteredStages for
    scale): the job times its stages with what the factory made, and the runner is left as it is."""
    from contextlib import contextmanager

    from benchmark.run import job
    from benchmark.timing import STAGES

    entered: list[str] = []

    class Recording(job.Stages):
        @contextmanager
        def __call__(self, name: str):
            entered.append(name)
            with super().__call__(name):
                yield

    made: list[Recording] = []
    original = job.Stages
    result = run(make_cfg("dataset=synthetic", "model=baseline_only"), stages=lambda: made.append(Recording()) or made[-1])
    assert len(made) == 1 and job.Stages is original
    assert set(entered) == set(STAGES) and entered[0] == "log" and entered[-1] == "log"
    assert entered.index("load") < entered.index("split") < entered.index("grouping") < entered.index("fit") \
        < entered.index("predict") < entered.index("evaluate")
    assert {k: v for k, v in result.metrics.items() if k.startswith("stage_")} == made[0].metrics()
