"""Neural biased MF (DMTL's control): its forward is biased MF, it learns planted structure, and it
trains through the shared trainer like DMTL."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

import models.trainer as trainer_module
from benchmark.core.config import build_model, instantiate
from benchmark.run.job import run
from models.base import FitContext
from models.dmtl import DMTL
from models.neural_mf import NeuralMF, NeuralMFNetwork

FAST = ["dataset=synthetic", "trainer.progress=false", "trainer.max_epochs=40", "trainer.patience=4",
        "trainer.batch_size=256", "trainer.lr=0.003", "trainer.device=cpu"]


def test_forward_is_mean_plus_biases_plus_dot_product():
    torch.manual_seed(0)
    net = NeuralMFNetwork(n_users=4, n_items=5, factors=3, mean_rating=3.2, init_std=0.5)
    with torch.no_grad():
        net.user_bias.weight[1:].normal_()
        net.item_bias.weight[1:].normal_()
    user, item = torch.tensor([1, 2, 4, 0, 3]), torch.tensor([5, 1, 2, 3, 0])
    rating, norms = net(user, item)
    P, Q = net.user_factors.weight.detach().numpy(), net.item_factors.weight.detach().numpy()
    bu, bi = net.user_bias.weight.detach().numpy()[:, 0], net.item_bias.weight.detach().numpy()[:, 0]
    for row, (u, i) in enumerate(zip(user.tolist(), item.tolist())):
        expected = 3.2 + bu[u] + bi[i] + float(np.dot(P[u], Q[i]))
        assert rating[row].item() == pytest.approx(expected, abs=1e-5)
        assert norms[row].item() == pytest.approx(P[u] @ P[u] + Q[i] @ Q[i] + bu[u] ** 2 + bi[i] ** 2, abs=1e-5)
    # index 0 (an unknown id) has zero factors and bias: an unknown user and item get the mean
    assert rating[3].item() == pytest.approx(3.2 + bi[3], abs=1e-6) and bu[0] == 0 and not P[0].any()


@pytest.mark.parametrize("model, sparse", [("neural_mf", False), ("neural_mf", True), ("dmtl", True)],
                         ids=["neural_mf", "neural_mf sparse embeddings", "dmtl sparse embeddings"])
@pytest.mark.slow
def test_learns_the_planted_ratings_far_better_than_the_mean(make_cfg, tracking_uri, model, sparse):
    cfg = make_cfg(*FAST, f"model={model}", f"trainer.sparse_embeddings={str(sparse).lower()}")
    result = run(cfg)
    dataset = instantiate(cfg.dataset.loader, root=None)
    split = instantiate(cfg.split)(dataset.ratings, seed=0)[0]
    mean_rmse = math.sqrt(((split.test["rating"] - split.train["rating"].mean()) ** 2).mean())
    assert result.metrics["rmse"] < 0.8 * mean_rmse
    assert result.predictions["prediction"].between(1, 5).all()
    logged = MlflowClient(tracking_uri).get_run(result.run_id)
    assert logged.info.status == "FINISHED"
    assert len(logged.data.metrics) and "val_rating_loss" in logged.data.metrics
    assert result.metrics["best_epoch"] >= 1 and result.metrics["epochs_trained"] >= result.metrics["best_epoch"]


def _fit_both(make_cfg):
    cfg = make_cfg(*FAST, "trainer.max_epochs=3")
    dataset = instantiate(cfg.dataset.loader, root=None)
    split = instantiate(cfg.split)(dataset.ratings, seed=0)[0]
    groups = instantiate(cfg.grouping)(dataset, split.train, seed=0)
    context = FitContext(dataset, groups, seed=0)
    dmtl = build_model(make_cfg(*FAST, "trainer.max_epochs=3", "model=dmtl").model, seed=0)
    mf = build_model(make_cfg(*FAST, "trainer.max_epochs=3", "model=neural_mf").model, seed=0)
    return split, context, dmtl, mf


def test_both_neural_models_train_through_the_shared_trainer(make_cfg, monkeypatch):
    """Both phases of both models' fits run in the shared trainer: early stopping (Trainer.fit), then the
    refit (Trainer.refit) of a freshly built network, which is the fitted model."""
    split, context, dmtl, mf = _fit_both(make_cfg)
    calls = []
    original_fit, original_refit = trainer_module.Trainer.fit, trainer_module.Trainer.refit

    def recording_fit(self, net, loss, *args, **kwargs):
        result = original_fit(self, net, loss, *args, **kwargs)
        calls.append(("fit", self.name, net, result))
        return result

    def recording_refit(self, net, loss, *args, **kwargs):
        result = original_refit(self, net, loss, *args, **kwargs)
        calls.append(("refit", self.name, net, result))
        return result

    monkeypatch.setattr(trainer_module.Trainer, "fit", recording_fit)
    monkeypatch.setattr(trainer_module.Trainer, "refit", recording_refit)
    for model in (dmtl, mf):
        model.fit(split.train, context)
    assert [(phase, name, type(net).__name__) for phase, name, net, _ in calls] == [
        ("fit", "DMTL", "DMTLNetwork"), ("refit", "DMTL", "DMTLNetwork"),
        ("fit", "NeuralMF", "NeuralMFNetwork"), ("refit", "NeuralMF", "NeuralMFNetwork")]
    for model, (fit, refit) in zip((dmtl, mf), (calls[:2], calls[2:])):
        assert isinstance(model, (DMTL, NeuralMF)) and model.net is refit[2] and refit[2] is not fit[2]
        assert model.history is fit[3].history and len(model.history) == 3
        assert model.refit_history is refit[3].refit_history and len(model.refit_history) == model.best_epoch
        assert {"train_loss", "val_loss", "train_rating_loss", "val_rating_loss", "epoch_seconds"} <= set(model.history[0])
        assert {"train_loss", "train_rating_loss", "epoch_seconds"} <= set(model.refit_history[0])


def test_same_seed_same_predictions_and_cold_pairs_get_the_mean(make_cfg):
    split, context, _, first = _fit_both(make_cfg)
    _, _, _, second = _fit_both(make_cfg)
    first.fit(split.train, context)
    second.fit(split.train, context)
    pairs = split.test[["user", "item"]]
    np.testing.assert_array_equal(first.predict(pairs), second.predict(pairs))
    cold = first.predict(pd.DataFrame({"user": [10_000], "item": [10_000]}))
    assert cold[0] == pytest.approx(first.net.mean_rating.item())


@pytest.mark.parametrize("sparse", [False, True])
def test_sparse_embeddings_move_only_the_rows_a_batch_used(sparse):
    """Dense Adam keeps moving a row its momentum remembers; SparseAdam (lazy) moves only the batch's rows
    (sparse gradients), while the dense layers train with Adam either way."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(6, 3), torch.nn.Linear(3, 1))
    optimizers = trainer_module.Optimizers(net, torch.device("cpu"), lr=0.1, weight_decay=0.0, sparse=sparse)

    def step(rows):
        before = [p.detach().clone() for p in net.parameters()]
        optimizers.zero_grad()
        net(torch.tensor(rows)).pow(2).sum().backward()
        assert net[0].weight.grad.is_sparse == sparse
        optimizers.step()
        return [(b != p.detach()) for b, p in zip(before, net.parameters())]

    step([1, 2])
    table, weight, bias = step([3])
    assert table[3].all() and weight.all() and bias.all()
    assert table[[1, 2]].any() != sparse  # rows 1 and 2 (not in this batch): moved by Adam's momentum only
    assert not table[[0, 4, 5]].any()
    optimizers.restore()
    assert net[0].sparse is False


def test_sparse_embeddings_refuse_weight_decay():
    net = torch.nn.Sequential(torch.nn.Embedding(6, 3), torch.nn.Linear(3, 1))
    with pytest.raises(Exception, match=r"trainer.sparse_embeddings=true cannot apply trainer.weight_decay=0.01"):
        trainer_module.Optimizers(net, torch.device("cpu"), lr=0.1, weight_decay=0.01, sparse=True)
    trainer_module.Optimizers(net, torch.device("cpu"), lr=0.1, weight_decay=0.01, sparse=False)  # dense: fine


def test_sparse_embeddings_with_weight_decay_fail_the_run_before_any_data_work(make_cfg, tracking_uri):
    from benchmark.core.errors import ConfigError

    cfg = make_cfg(*FAST, "model=neural_mf", "trainer.sparse_embeddings=true", "trainer.weight_decay=0.001")
    with pytest.raises(ConfigError, match=r"^trainer.sparse_embeddings=true cannot apply trainer.weight_decay=0.001"):
        run(cfg)
    failed = MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    assert [r.info.status for r in failed] == ["FAILED"]
    assert "dataset_sha256" not in failed[0].data.tags  # refused when the model was built, before loading data
