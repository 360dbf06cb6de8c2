"""DMTL: both heads train the shared layer, ablations, fits planted groups, determinism, failures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from benchmark.runner import instantiate, run  # instantiate re-raises our one-line errors, unlike Hydra's wrapper
from mlflow.tracking import MlflowClient

import models.dmtl as dmtl
import models.dmtl_fused as dmtl_fused
from benchmark.artifacts import read_table
from benchmark.errors import ConfigError, TrainingError

from benchmark.tracking import Tracker
from models.base import Diagnosed, FitContext, GroupProfiler

CONF = Path(__file__).resolve().parent.parent / "conf"
FAST = ["dataset=synthetic", "model=dmtl", "trainer.progress=false", "trainer.max_epochs=40", "trainer.patience=4",
        "trainer.batch_size=256", "trainer.lr=0.003", "trainer.device=cpu"]


def _network(attention: str = "softmax", n_groups: int = 4) -> dmtl.DMTLNetwork:
    torch.manual_seed(0)
    return dmtl.DMTLNetwork(n_users=10, n_items=12, user_features=3, item_features=5, n_groups=n_groups,
                            user_dim=6, item_dim=7, shared_dim=8, activation="tanh", dropout=0.0,
                            attention=attention, rating_scale=(1.0, 5.0), mean_rating=3.5)


def _batch(n: int = 32, n_groups: int = 4, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 11, (n,), generator=gen), torch.randint(1, 13, (n,), generator=gen),
            torch.randn(n, 3, generator=gen), torch.randn(n, 5, generator=gen),
            1 + 4 * torch.rand(n, generator=gen), torch.randint(0, n_groups, (n,), generator=gen)]


def _shared_grad(net: dmtl.DMTLNetwork, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    net.zero_grad(set_to_none=True)
    loss.backward()
    head = net.profile_head.weight.grad
    return net.shared.weight.grad.clone(), None if head is None else head.clone()


def _losses(net: dmtl.DMTLNetwork, batch):
    rating, logits, _ = net(*batch[:4])
    return dmtl.rating_loss(rating, batch[4]), dmtl.profile_loss(logits, batch[5])


def test_both_heads_reach_the_shared_layer_and_lambda_zero_adds_nothing():
    net, batch = _network(), _batch()
    g_rec, _ = _shared_grad(net, _losses(net, batch)[0])
    g_prof, _ = _shared_grad(net, _losses(net, batch)[1])
    assert g_rec.abs().sum() > 0 and g_prof.abs().sum() > 0
    assert not torch.allclose(g_rec, g_prof)

    lam = 0.7
    g_joint, head = _shared_grad(net, dmtl.objective(*_losses(net, batch), lam))
    torch.testing.assert_close(g_joint, g_rec + lam * g_prof)  # the shared layer sees both tasks
    assert head is not None and head.abs().sum() > 0

    g_single, head = _shared_grad(net, dmtl.objective(*_losses(net, batch), 0.0))
    assert torch.equal(g_single, g_rec)  # exactly: λ = 0 contributes nothing
    assert head is None  # the profiling head gets no gradient at all


@pytest.mark.parametrize("attention, expected", [("none", 1.0), ("uniform", 1.0 / 7)])
def test_attention_ablations_are_exact(attention, expected):
    net = _network(attention)
    assert net.attention_layer is None
    _, _, alpha = net(*_batch()[:4])
    assert alpha.shape == (32, 7)
    assert torch.equal(alpha, torch.full_like(alpha, expected))


def test_softmax_attention_is_a_distribution_over_item_dims():
    _, _, alpha = _network("softmax")(*_batch()[:4])
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(32))
    assert (alpha > 0).all() and alpha.std() > 0  # input dependent, not uniform


def test_flops_count_matches_the_layer_sizes():
    net = _network("softmax", n_groups=4)
    # user 3->6, item 5->7, attention 13->7, shared 13->8, profile 8->4, rating 8->1
    assert net.flops_per_sample() == 2 * (3 * 6 + 5 * 7 + 13 * 7 + 13 * 8 + 8 * 4 + 8 * 1)


@pytest.mark.parametrize("override, key", [
    ("model.lambda_profile=-0.1", "model.lambda_profile"),
    ("model.attention=additive", "model.attention"),
    ("model.activation=swish", "model.activation"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.sizes.item_dim=0", "model.sizes.item_dim"),
    ("trainer.lr=0", "trainer.lr"),
    ("trainer.step=turbo", "trainer.step"),
])
def test_invalid_config_is_refused_before_training(make_cfg, tracking_uri, override, key):
    cfg = make_cfg(*FAST, override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        instantiate(cfg.model, seed=0)
    with pytest.raises(ConfigError):
        run(cfg)
    client = MlflowClient(tracking_uri)
    (found,) = client.search_runs([client.get_experiment_by_name("groupbench").experiment_id])
    assert found.info.status == "FAILED" and key in found.data.tags["error"]
    assert "val_loss" not in found.data.metrics  # refused before any epoch


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: trainer.device=cuda is valid here")
def test_cuda_requested_without_cuda_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="trainer.device=cuda"):
        instantiate(make_cfg(*FAST, "trainer.device=cuda").model, seed=0)


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    """Two runs with the same seed on the planted-group data (shared by several tests)."""
    from hydra import compose, initialize_config_dir

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"tracking.uri={uri}", *FAST])
    tracker = Tracker(uri, "groupbench")
    return cfg, uri, run(cfg, tracker=tracker), run(cfg, tracker=tracker)


def test_fits_planted_groups_far_better_than_chance(synthetic_runs):
    cfg, uri, result, _ = synthetic_runs
    dataset = instantiate(cfg.dataset.loader, root=None)
    split = instantiate(cfg.split)(dataset.ratings, seed=cfg.seed)[0]
    groups = instantiate(cfg.grouping)(dataset, split.train, seed=cfg.seed)
    # chance: the majority group for profiling, the training mean for ratings
    test_labels = groups.of(split.test["user"].to_numpy())
    chance_accuracy = np.bincount(test_labels).max() / len(test_labels)
    chance_rmse = math.sqrt(((split.test["rating"] - split.train["rating"].mean()) ** 2).mean())
    m = result.metrics
    assert chance_accuracy < 0.5
    assert m["profile_accuracy"] > 0.9 and m["profile_accuracy"] > chance_accuracy + 0.4
    assert m["rmse"] < 0.75 * chance_rmse
    assert m["prediction_std"] > 0.5 * split.test["rating"].std()  # no collapse to the mean


def test_run_records_epochs_diagnostics_and_artifacts(synthetic_runs, tmp_path):
    _, uri, result, _ = synthetic_runs
    client = MlflowClient(uri)
    found = client.get_run(result.run_id)
    assert found.info.status == "FINISHED"
    epochs = int(result.metrics["epochs_trained"])
    for key in ("train_rating_loss", "train_profile_loss", "train_loss", "val_rating_loss", "val_profile_loss",
                "val_loss"):
        history = client.get_metric_history(result.run_id, key)
        assert sorted(h.step for h in history) == list(range(1, epochs + 1))
    val = {h.step: h.value for h in client.get_metric_history(result.run_id, "val_loss")}
    assert result.metrics["best_epoch"] == min(val, key=val.get)
    assert 0.0 < result.metrics["attention_entropy_ratio"] <= 1.0
    for key in ("profile_precision_macro", "profile_recall_macro", "profile_f1_macro", "precision_at_10"):
        assert key in result.metrics
    folder = client.download_artifacts(result.run_id, "", str(tmp_path))
    attention = read_table(f"{folder}/attention_by_feature.parquet")
    assert sorted(attention["feature"]) == [f"genre_{j}" for j in range(8)]
    history = read_table(f"{folder}/training_history.parquet")
    assert len(history) == epochs
    assert len(read_table(f"{folder}/predictions.parquet")) == len(result.predictions)


def test_same_seed_gives_identical_metrics(synthetic_runs):
    _, _, first, second = synthetic_runs
    for key in ("rmse", "mae", "ndcg_at_10", "profile_accuracy", "epochs_trained", "attention_entropy_ratio"):
        assert first.metrics[key] == second.metrics[key], key
    np.testing.assert_array_equal(first.predictions["prediction"], second.predictions["prediction"])


@pytest.mark.parametrize("step", ["auto", "fused", "autograd"])
def test_forced_nan_fails_the_run_with_a_clear_message(make_cfg, tracking_uri, step):
    # an absurd learning rate makes the first Adam steps blow the weights up to inf, then NaN
    with pytest.raises(TrainingError, match=r"epoch 1: train_\w+_loss is (nan|inf).*lower trainer.lr"):
        run(make_cfg(*FAST, "trainer.lr=1e38", f"trainer.step={step}"))
    client = MlflowClient(tracking_uri)
    (found,) = client.search_runs([client.get_experiment_by_name("groupbench").experiment_id])
    assert found.info.status == "FAILED"
    assert found.data.tags["error_type"] == "TrainingError"
    assert "epoch 1" in found.data.tags["error"] and "trainer.lr" in found.data.tags["error"]


@pytest.mark.parametrize("override", ["model.attention=none", "model.attention=uniform", "model.lambda_profile=0"])
def test_ablations_run_and_report_their_signature(make_cfg, override):
    result = run(make_cfg(*FAST, "trainer.max_epochs=3", override))
    assert np.isfinite(result.predictions["prediction"]).all()
    if "attention" in override:
        assert result.metrics["attention_entropy_ratio"] == pytest.approx(1.0)


def test_cold_users_and_items_get_predictions_from_side_features(make_cfg):
    cfg = make_cfg(*FAST, "trainer.max_epochs=3")
    dataset = instantiate(cfg.dataset.loader, root=None)
    split = instantiate(cfg.split)(dataset.ratings, seed=0)[0]
    groups = instantiate(cfg.grouping)(dataset, split.train, seed=0)
    cold_user = int(split.train["user"].iloc[0])
    train = split.train[split.train["user"] != cold_user]
    model = instantiate(cfg.model, seed=0)
    model.fit(train, FitContext(dataset, groups, seed=0))
    assert isinstance(model, GroupProfiler) and isinstance(model, Diagnosed)
    pairs = pd.DataFrame({"user": [cold_user, cold_user, 10_000], "item": [1, 10_000, 2]})
    predictions = model.predict(pairs)
    assert np.isfinite(predictions).all() and ((predictions >= 1) & (predictions <= 5)).all()
    groups_out = model.predict_groups(np.array([cold_user, int(train["user"].iloc[0])]))
    assert groups_out.shape == (2,) and ((groups_out >= 0) & (groups_out < groups.k)).all()


# ---- the fused training step (models/dmtl_fused.py) against autograd --------------------------

def _double_network(activation: str, attention: str, dropout: float = 0.0) -> dmtl.DMTLNetwork:
    torch.manual_seed(0)
    return dmtl.DMTLNetwork(n_users=10, n_items=12, user_features=3, item_features=5, n_groups=4,
                            user_dim=6, item_dim=7, shared_dim=8, activation=activation, dropout=dropout,
                            attention=attention, rating_scale=(1.0, 5.0), mean_rating=3.5).double()


def _double_batch(device: str = "cpu"):
    batch = _batch()
    return [(t.double() if t.is_floating_point() else t).to(device) for t in batch]


# the fused step's CUDA path runs wherever the suite finds a GPU
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _fused(net, lam, activation, attention, dropout=0.0, lr=0.0, weight_decay=0.0, seed=3):
    device = next(net.parameters()).device
    return dmtl_fused.FusedTrainingStep(net, lam, lr=lr, weight_decay=weight_decay, dropout=dropout,
                                        activation=activation, attention=attention,
                                        generator=torch.Generator(device=device).manual_seed(seed))


@pytest.mark.parametrize("activation", sorted(dmtl.ACTIVATIONS))
@pytest.mark.parametrize("attention", sorted(dmtl.ATTENTION))
@pytest.mark.parametrize("lam", [0.0, 0.7])
@pytest.mark.parametrize("device", DEVICES)
def test_fused_step_gradients_and_losses_equal_autograd(activation, attention, lam, device):
    batch = _double_batch(device)
    reference = _double_network(activation, attention).to(device)
    l_rec, l_prof = _losses(reference, batch)
    dmtl.objective(l_rec, l_prof, lam).backward()

    net = _double_network(activation, attention).to(device)
    fused_rec, fused_prof = _fused(net, lam, activation, attention)(*batch)  # lr 0: gradients only
    torch.testing.assert_close(fused_rec, l_rec.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused_prof, l_prof.detach(), rtol=1e-12, atol=1e-12)
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        expected = torch.zeros_like(q) if q.grad is None else q.grad  # λ = 0: no gradient for the profiling head
        torch.testing.assert_close(p.grad, expected, rtol=1e-10, atol=1e-12, msg=name)
    if lam == 0:
        assert net.profile_head.weight.grad.abs().sum() == 0
    else:
        assert net.profile_head.weight.grad.abs().sum() > 0


class _FixedMask(torch.nn.Module):
    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.mask = mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


def test_fused_dropout_backward_matches_autograd_with_the_same_mask():
    batch = _double_batch()
    net = _double_network("relu", "softmax", dropout=0.4)
    step = _fused(net, 0.5, "relu", "softmax", dropout=0.4, seed=11)
    draws = step.dropout_draws(len(batch[0]), 8, torch.device("cpu"))  # the mask the step will draw next...
    step.generator.manual_seed(11)                                    # ...once the generator is rewound
    mask = (draws > step.drop_threshold).double() * step.keep_scale
    assert 0 < (mask == 0).sum() < mask.numel()

    reference = _double_network("relu", "softmax", dropout=0.4)
    reference.dropout = _FixedMask(mask)  # autograd with exactly the fused step's mask
    dmtl.objective(*_losses(reference, batch), 0.5).backward()
    step(*batch)
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_fused_dropout_keeps_the_configured_share_and_preserves_the_mean():
    step = _fused(_network(), 0.1, "tanh", "softmax", dropout=0.3)
    draws = step.dropout_draws(4000, 64, torch.device("cpu"))
    kept = draws > step.drop_threshold
    share = kept.double().mean().item()
    sigma = math.sqrt(0.3 * 0.7 / kept.numel())
    assert abs(share - 0.7) < 5 * sigma
    assert abs(1 / step.keep_scale - 0.7) < 1 / dmtl_fused.DROP_LEVELS  # p rounded to a multiple of 1/65536
    assert abs((kept.double() * step.keep_scale).mean().item() - 1.0) < 5 * sigma / 0.7
    # each of the four int16 cut from one 64-bit draw keeps the same share (the sign bit is random too)
    for lane in kept.reshape(-1, 4).double().T:
        assert abs(lane.mean().item() - 0.7) < 5 * sigma * 2
    assert not torch.equal(kept[0], kept[1])


@pytest.mark.parametrize("device", DEVICES)
def test_fused_step_updates_parameters_exactly_like_torch_adam(device):
    batch = _double_batch(device)
    reference = _double_network("relu", "softmax").to(device)
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.01, weight_decay=0.001)
    net = _double_network("relu", "softmax").to(device)
    step = _fused(net, 0.3, "relu", "softmax", lr=0.01, weight_decay=0.001)
    for _ in range(3):
        optimizer.zero_grad()
        dmtl.objective(*_losses(reference, batch), 0.3).backward()
        optimizer.step()
        step(*batch)
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=name)
    assert net.user_embedding.weight[0].abs().sum() == 0  # the unknown-id row stays zero
