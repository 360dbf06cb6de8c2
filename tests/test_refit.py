"""The refit (#23 item 1): after early stopping picks the epoch count on the fold's validation part,
the torch models are rebuilt on the WHOLE training part and trained that many epochs, seeded, as
every baseline fits on the whole training part; ``trainer.refit=false`` keeps the early-stopping
weights, and a run records which one it used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import benchmark.sweeps.tune as tune
import models.trainer as trainer_module
from benchmark.core.config import build_model, config_hash, instantiate
from benchmark.protocol.folds import Fold
from benchmark.run.job import run
from benchmark.tracking.tracker import Tracker
from models.base import FitContext

FAST = ("dataset=synthetic", "trainer.progress=false", "trainer.max_epochs=4", "trainer.patience=10",
        "trainer.batch_size=256", "trainer.lr=0.003", "trainer.device=cpu")


def _data(make_cfg):
    cfg = make_cfg(*FAST)
    dataset = instantiate(cfg.dataset.loader, root=None)
    split = instantiate(cfg.split)(dataset.ratings, seed=0)[0]
    groups = instantiate(cfg.grouping)(dataset, split.train, seed=0)
    return dataset, split, groups


def _fit(make_cfg, data, model: str, *overrides: str, record: list | None = None, monkeypatch=None):
    dataset, split, groups = data
    if record is not None:
        original = trainer_module.Trainer.refit

        def recording(self, net, loss, sampler, selected, context):
            record.append(len(sampler))
            return original(self, net, loss, sampler, selected, context)

        monkeypatch.setattr(trainer_module.Trainer, "refit", recording)
    fitted = build_model(make_cfg(*FAST, f"model={model}", *overrides).model, seed=0)
    fold = Fold.from_split(split, seed=0)
    fitted.fit(split.train, FitContext(dataset, groups, seed=0, fold=fold))
    return fitted, fold


@pytest.mark.parametrize("model", ["dmtl", "neural_mf"])
def test_refit_trains_on_every_training_row_for_the_chosen_epochs(make_cfg, model, monkeypatch):
    data = _data(make_cfg)
    _, split, _ = data
    sampled: list[int] = []
    refitted, fold = _fit(make_cfg, data, model, record=sampled, monkeypatch=monkeypatch)
    kept, _ = _fit(make_cfg, data, model, "trainer.refit=false")
    part = fold.validation(0.1)

    # the early-stopping phase is the same with or without the refit: same epochs, same losses
    drop = lambda rows: [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]  # noqa: E731
    assert drop(refitted.history) == drop(kept.history) and refitted.best_epoch == kept.best_epoch
    # the refit: every training row (fitting rows + validation part), exactly best_epoch epochs
    assert sampled == [len(split.train)] and len(split.train) == len(part.fit) + len(part.val)
    assert [row["epoch"] for row in refitted.refit_history] == list(range(1, refitted.best_epoch + 1))
    assert kept.refit_history == [] and "refit_epochs" not in kept.diagnostics()
    assert refitted.diagnostics()["refit_epochs"] == refitted.best_epoch
    # its vocabularies are the whole training part's (an id rated only in the validation part is known)
    assert set(refitted.item_vocab) == set(split.train["item"]) and set(kept.item_vocab) == set(part.fit["item"])
    assert set(refitted.user_vocab) == set(split.train["user"])
    pairs = split.test[["user", "item"]]
    assert not np.array_equal(refitted.predict(pairs), kept.predict(pairs))
    # the artifact shows both phases
    history = refitted.artifacts()["training_history"]
    assert history["phase"].tolist() == ["early_stopping"] * len(refitted.history) + ["refit"] * refitted.best_epoch
    assert history.loc[history["phase"] == "refit", "val_rating_loss"].isna().all()


@pytest.mark.parametrize("model", ["dmtl", "neural_mf"])
def test_refit_is_seeded_and_deterministic(make_cfg, model):
    data = _data(make_cfg)
    first, _ = _fit(make_cfg, data, model)
    second, _ = _fit(make_cfg, data, model)
    pairs = data[1].test[["user", "item"]]
    np.testing.assert_array_equal(first.predict(pairs), second.predict(pairs))
    losses = lambda m: [row["train_loss"] for row in m.refit_history]  # noqa: E731
    assert losses(first) == losses(second) and len(losses(first)) == first.best_epoch


@pytest.mark.slow
def test_a_run_records_whether_it_refitted(make_cfg, tracking_uri):
    client = MlflowClient(tracking_uri)
    refitted = run(make_cfg(*FAST, "model=neural_mf"))
    kept = run(make_cfg(*FAST, "model=neural_mf", "trainer.refit=false"))
    on, off = client.get_run(refitted.run_id).data, client.get_run(kept.run_id).data
    assert on.params["model.trainer.refit"] == "True" and off.params["model.trainer.refit"] == "False"
    assert on.metrics["refit_epochs"] == on.metrics["best_epoch"] >= 1 and "refit_epochs" not in off.metrics
    assert "refit_train_loss" in on.metrics and "refit_train_loss" not in off.metrics
    # a different result: a different experiment (config hash), so a sweep never mixes the two
    assert on.tags["config_hash"] != off.tags["config_hash"]
    assert config_hash(make_cfg(*FAST, "model=neural_mf")) == on.tags["config_hash"]
    assert refitted.metrics["rmse"] != kept.metrics["rmse"]


@pytest.mark.slow
def test_tuning_trials_and_the_final_run_refit_through_the_same_path(make_cfg, tmp_path, monkeypatch):
    """One path: every trial and tuning's final fit go through Trainer.train, so each refits."""
    phases: list[str] = []
    original = trainer_module.Trainer.train

    def recording(self, setup, loss, train, context):
        result = original(self, setup, loss, train, context)
        phases.append("refit" if result.refitted else "kept")
        return result

    monkeypatch.setattr(trainer_module.Trainer, "train", recording)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "tuned")
    cfg = make_cfg(*FAST, "model=neural_mf", "tune.enabled=true", "tune.trials=2")
    result = tune.run_tuned(cfg, tracker)
    assert phases == ["refit"] * 3  # two trials, then the final run
    final = tracker.client.get_run(result.run_id).data
    assert final.metrics["refit_epochs"] == final.metrics["best_epoch"]
    assert pd.notna(final.metrics["rmse"])



def test_fixed_epochs_train_exactly_that_many_epochs_on_the_whole_training_part_without_validation(make_cfg, monkeypatch):
    """trainer.fixed_epochs (a reproduction's epoch count): no early-stopping phase, N epochs on every
    training row."""
    from models.trainer import TrainerConfig
    values = {"lr": 0.01, "weight_decay": 0.0, "batch_size": 64, "max_epochs": 50, "patience": 1, "val_size": 0.2,
              "device": "cpu", "progress": False, "sparse_embeddings": False, "refit": True}
    assert TrainerConfig.from_mapping(values).fixed_epochs is None          # optional key: null by default
    with pytest.raises(Exception, match=r"trainer.fixed_epochs=0 must be null"):
        TrainerConfig.from_mapping({**values, "fixed_epochs": 0})
    data = _data(make_cfg)
    sampled: list[int] = []
    fitted, _ = _fit(make_cfg, data, "neural_mf", "trainer.fixed_epochs=3", record=sampled, monkeypatch=monkeypatch)
    assert fitted.history == [] and [row["epoch"] for row in fitted.refit_history] == [1, 2, 3]
    assert sampled == [len(data[1].train)]
