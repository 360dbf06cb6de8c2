"""DMTL: both heads train the shared layer, ablations, fits planted groups, determinism, failures,
an edited network trains as written. (Over 400 lines: one model's tests, kept together.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import models.dmtl as dmtl
from benchmark.core.config import build_model
from benchmark.core.errors import ConfigError, TrainingError
from benchmark.protocol.split import holdout_mask
from benchmark.run.job import instantiate, run  # instantiate re-raises our one-line errors, unlike Hydra's wrapper
from benchmark.tracking.artifacts import read_table
from benchmark.tracking.tracker import Tracker
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
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.device=tpu", "trainer.device"),
])
def test_invalid_config_is_refused_before_training(make_cfg, tracking_uri, override, key):
    cfg = make_cfg(*FAST, override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_model(cfg.model, seed=0)
    with pytest.raises(ConfigError):
        run(cfg)
    client = MlflowClient(tracking_uri)
    (found,) = client.search_runs([client.get_experiment_by_name("groupbench").experiment_id])
    assert found.info.status == "FAILED" and key in found.data.tags["error"]
    assert "val_loss" not in found.data.metrics  # refused before any epoch


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: trainer.device=cuda is valid here")
def test_cuda_requested_without_cuda_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="trainer.device=cuda"):
        build_model(make_cfg(*FAST, "trainer.device=cuda").model, seed=0)


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
    # both phases: the early-stopping epochs, then the refit's best_epoch epochs on the whole training part
    best = int(result.metrics["best_epoch"])
    assert history["phase"].tolist() == ["early_stopping"] * epochs + ["refit"] * best
    assert result.metrics["refit_epochs"] == best
    refit = client.get_metric_history(result.run_id, "refit_train_loss")
    assert sorted(h.step for h in refit) == list(range(1, best + 1))
    assert len(read_table(f"{folder}/predictions.parquet")) == len(result.predictions)


def test_same_seed_gives_identical_metrics(synthetic_runs):
    _, _, first, second = synthetic_runs
    for key in ("rmse", "mae", "ndcg_at_10", "profile_accuracy", "epochs_trained", "attention_entropy_ratio"):
        assert first.metrics[key] == second.metrics[key], key
    np.testing.assert_array_equal(first.predictions["prediction"], second.predictions["prediction"])


def test_forced_nan_fails_the_run_with_a_clear_message(make_cfg, tracking_uri):
    # an absurd learning rate makes the first Adam steps blow the weights up to inf, then NaN
    with pytest.raises(TrainingError, match=r"epoch 1: train_\w+_loss is (nan|inf).*lower trainer.lr"):
        run(make_cfg(*FAST, "trainer.lr=1e38"))
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
    model = build_model(cfg.model, seed=0)
    model.fit(train, FitContext(dataset, groups, seed=0))
    assert isinstance(model, GroupProfiler) and isinstance(model, Diagnosed)
    pairs = pd.DataFrame({"user": [cold_user, cold_user, 10_000], "item": [1, 10_000, 2]})
    predictions = model.predict(pairs)
    assert np.isfinite(predictions).all() and ((predictions >= 1) & (predictions <= 5)).all()
    groups_out = model.predict_groups(np.array([cold_user, int(train["user"].iloc[0])]))
    assert groups_out.shape == (2,) and ((groups_out >= 0) & (groups_out < groups.k)).all()


class _WiderNetwork(dmtl.DMTLNetwork):
    """DMTLNetwork plus one extra layer on the shared representation: a researcher's edit."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shared_dim = self.shared.out_features
        self.extra = torch.nn.Linear(shared_dim, shared_dim)
        self.initial_extra = self.extra.weight.detach().clone()

    def forward(self, user, item, xu, xi):
        hu = self.act(self.user_embedding(user) + self.user_projection(xu))
        hi = self.act(self.item_embedding(item) + self.item_projection(xi))
        alpha = self.attention(self.attention_layer, hu, hi)
        zg = self.dropout(self.act(self.shared(torch.cat([hu, alpha * hi], dim=1))))
        zg = zg + self.act(self.extra(zg))
        rating = self.low + self.span * torch.sigmoid(self.rating_head(zg).squeeze(1))
        return rating, self.profile_head(zg), alpha


def test_an_edited_network_trains_as_written(make_cfg, monkeypatch):
    cfg = make_cfg(*FAST, "trainer.max_epochs=4")
    dataset = instantiate(cfg.dataset.loader, root=None)
    split = instantiate(cfg.split)(dataset.ratings, seed=0)[0]
    groups = instantiate(cfg.grouping)(dataset, split.train, seed=0)
    context = FitContext(dataset, groups, seed=0)
    plain = build_model(cfg.model, seed=0).fit(split.train, context)
    monkeypatch.setattr(dmtl, "DMTLNetwork", _WiderNetwork)
    edited = build_model(cfg.model, seed=0).fit(split.train, context)
    assert isinstance(edited.net, _WiderNetwork)
    moved = (edited.net.extra.weight.detach() - edited.net.initial_extra).abs().max().item()
    assert moved > 1e-3  # the new layer's weights are trained, not left at their initialisation
    pairs = split.test[["user", "item"]]
    assert np.abs(edited.predict(pairs) - plain.predict(pairs)).max() > 1e-3  # and change the predictions


@pytest.mark.slow
def test_params_are_the_batch_and_learning_rate_trained_with(make_cfg, tracking_uri, tmp_path):
    # 6,000 synthetic ratings -> ~4,300 fitting rows: batch 1024 would give 5 steps per epoch, so the
    # trainer uses ceil(rows / 32) and scales the learning rate with it; the params hold the values used
    # (#30 item 4), the configured ones are in the ``configured`` tag and in config.yaml
    result = run(make_cfg(*FAST, "trainer.max_epochs=2", "trainer.batch_size=1024", "trainer.lr=0.004"))
    client = MlflowClient(tracking_uri)
    logged = client.get_run(result.run_id).data
    dataset = instantiate(make_cfg(*FAST).dataset.loader, root=None)
    split = instantiate(make_cfg(*FAST).split)(dataset.ratings, seed=0)[0]
    n_fit = int((~holdout_mask(split.train, 0.1, 0)).sum())
    expected = math.ceil(n_fit / 32)
    assert expected < 1024
    assert logged.metrics["used_batch_size"] == expected
    assert logged.metrics["used_lr"] == pytest.approx(0.004 * expected / 1024)
    assert logged.params["model.trainer.batch_size"] == str(expected)
    assert float(logged.params["model.trainer.lr"]) == pytest.approx(0.004 * expected / 1024)
    assert result.models[0].trainer.used == {"batch_size": expected, "lr": pytest.approx(0.004 * expected / 1024)}
    assert json.loads(logged.tags["configured"]) == {"model.trainer.batch_size": 1024, "model.trainer.lr": 0.004}
    config = OmegaConf.load(client.download_artifacts(result.run_id, "config.yaml", str(tmp_path)))
    assert (config.trainer.batch_size, config.trainer.lr) == (1024, 0.004)


def test_params_without_scaling_carry_no_configured_tag(make_cfg, tracking_uri):
    # a batch that already leaves >= 32 steps per epoch is used as configured: params = config, no tag
    result = run(make_cfg(*FAST, "trainer.max_epochs=1", "trainer.batch_size=64", "trainer.lr=0.002"))
    logged = MlflowClient(tracking_uri).get_run(result.run_id).data
    assert (logged.params["model.trainer.batch_size"], logged.params["model.trainer.lr"]) == ("64", "0.002")
    assert logged.metrics["used_batch_size"] == 64 and "configured" not in logged.tags


# ---- the removed training-step key: one line, exit 2, a FAILED run ---------------------------

def test_removed_trainer_key_is_admitted_past_hydra():
    from benchmark.__main__ import admit_removed_keys

    assert admit_removed_keys(["trainer.step=native", "+trainer.step=x", "trainer.lr=0.1", "model=dmtl"]) == \
        ["+trainer.step=native", "+trainer.step=x", "trainer.lr=0.1", "model=dmtl"]


@pytest.mark.slow
def test_removed_trainer_key_in_a_config_fails_the_run(make_cfg, tracking_uri):
    # as a composed config carries it when a YAML file sets it; refused for every model (a baseline
    # here) by the runner, and by the trainer's own config for a torch model built directly
    with pytest.raises(ConfigError, match=r"trainer\.step was removed"):
        build_model(make_cfg(*FAST, "+trainer.step=fused").model, seed=0)
    with pytest.raises(ConfigError, match=r"trainer\.step was removed"):
        run(make_cfg("dataset=synthetic", "model=svd", "+trainer.step=fused"))
    client = MlflowClient(tracking_uri)
    (found,) = client.search_runs([client.get_experiment_by_name("groupbench").experiment_id])
    assert found.info.status == "FAILED" and "trainer.step was removed" in found.data.tags["error"]


@pytest.mark.slow
def test_removed_trainer_key_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    from tests.test_runner import cli, error_lines, only_run

    proc = cli(tmp_path, "dataset=synthetic", "model=dmtl", "trainer.step=native")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = error_lines(proc.stderr)
    assert "Traceback" not in proc.stderr and "Could not override" not in proc.stderr
    assert len(lines) == 1 and "trainer.step was removed" in lines[0] and "delete trainer.step" in lines[0]
    logged = only_run(tmp_path)
    assert logged.info.status == "FAILED" and "trainer.step was removed" in logged.data.tags["error"]


# ---- inference and memory at size (issue 15): rating-only prediction, chunked encoding, streamed diagnostics

def test_rating_only_forward_skips_the_profiling_head_and_changes_nothing_else():
    net, batch = _network(), _batch()
    net.eval()
    with torch.no_grad():
        rating, logits, alpha = net(*batch[:4])
        only, no_logits, only_alpha = net(*batch[:4], profile=False)
    assert logits.shape == (32, 4) and no_logits is None
    assert torch.equal(rating, only) and torch.equal(alpha, only_alpha)


@pytest.fixture(scope="module")
def fitted_dmtl():
    """DMTL fitted directly (no runner) on the planted-group data, and the split it was fitted on."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*FAST, "trainer.max_epochs=3"])
    dataset = instantiate(cfg.dataset.loader, root=None)
    split = instantiate(cfg.split)(dataset.ratings, seed=0)[0]
    groups = instantiate(cfg.grouping)(dataset, split.train, seed=0)
    model = build_model(cfg.model, seed=0).fit(split.train, FitContext(dataset=dataset, groups=groups, seed=0))
    return model, split


def test_predict_never_runs_the_profiling_head_and_equals_the_whole_network(fitted_dmtl):
    model, split = fitted_dmtl
    # test pairs plus a cold user and a cold item (side features only)
    pairs = pd.concat([split.test[["user", "item"]],
                       pd.DataFrame({"user": [10_000, 1], "item": [1, 10_000]})], ignore_index=True)
    calls = []
    hook = model.net.profile_head.register_forward_hook(lambda *_: calls.append(1))
    try:
        predicted = model.predict(pairs)
    finally:
        hook.remove()
    assert calls == [] and len(pairs) < model.CHUNK  # one chunk: the same batch as the reference below
    model.net.eval()
    with torch.no_grad():  # the reference: every head, every pair in one pass, features built for the whole frame
        rating, logits, _ = model.net(*model._encode(pairs).inputs())
    assert logits.shape == (len(pairs), model.k)
    np.testing.assert_array_equal(predicted, rating.numpy().astype(float))
    model.CHUNK = 7  # many chunks, each encoded on its own
    try:
        np.testing.assert_allclose(model.predict(pairs), predicted, rtol=0, atol=1e-5)
    finally:
        del model.CHUNK


def test_diagnostics_streamed_in_chunks_equal_a_whole_pass(fitted_dmtl):
    model, _ = fitted_dmtl
    model.net.eval()
    with torch.no_grad():  # reference: the whole fit in one pass, as the diagnostics were computed before
        rating, _, alpha = model.net(*model._encode(model.fit_pairs).inputs())
    weights = (alpha / alpha.sum(1, keepdim=True)).double().numpy()
    di = weights.shape[1]
    entropy = -(weights * np.log(np.clip(weights, 1e-12, None))).sum(1) / math.log(di)
    w = model.net.item_projection.weight.detach().abs().double().numpy()
    score = di * weights @ (w / w.sum(0, keepdims=True))
    present = model.item_features.reindex(model.fit_pairs["item"]).fillna(0.0).to_numpy() > 0
    expected = pd.DataFrame({"feature": model.item_features.columns, "rows_with_feature": present.sum(0),
                             "attention_when_present": (score * present).sum(0) / present.sum(0),
                             "attention_all_rows": score.mean(0),
                             "entropy_ratio_when_present": (entropy[:, None] * present).sum(0) / present.sum(0)})
    model.CHUNK = 13
    try:
        model._summarize()
    finally:
        del model.CHUNK
    got = model.diagnostics()
    assert got["attention_entropy_ratio"] == pytest.approx(entropy.mean(), rel=1e-5)
    assert got["train_prediction_std"] == pytest.approx(rating.double().std(unbiased=False).item(), rel=1e-6)
    table = model.artifacts()["attention_by_feature"].set_index("feature").loc[expected["feature"]]
    for column in expected.columns[1:]:
        np.testing.assert_allclose(table[column].to_numpy(dtype=float), expected[column].to_numpy(dtype=float),
                                   rtol=1e-5, err_msg=column)


def test_loss_gathers_the_side_features_of_each_row(fitted_dmtl):
    """The trainer's tensors carry feature-table rows; the loss must see each row's own xu and xi."""
    model, _ = fitted_dmtl
    model.net.eval()
    rows, inputs = model.fit_data.rows(), model.fit_data.inputs()  # inputs: per-row features built in full
    picked = torch.randperm(len(model.fit_data), generator=torch.Generator().manual_seed(3))[:97]
    with torch.no_grad():
        _, parts = model.loss(model.net, [t.index_select(0, picked) for t in rows])
        rating, logits, _ = model.net(*[t.index_select(0, picked) for t in inputs])
    assert parts["rating_loss"].item() == pytest.approx(
        torch.mean((rating - model.fit_data.rating[picked]) ** 2).item(), rel=1e-6)
    assert parts["profile_loss"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, model.fit_data.group[picked]).item(), rel=1e-6)


def test_predict_groups_in_small_chunks_equals_a_whole_pass(fitted_dmtl):
    """The profiling pass works ~PROFILE_CHUNK_VALUES logits at a time (rows x K): the labels equal the
    mean of the softmax over each user's training pairs computed in one pass (cold users: popular items)."""
    model, _ = fitted_dmtl
    users = np.r_[np.unique(model.fit_pairs["user"])[:40], [10_000]]
    model.net.eval()
    with torch.no_grad():
        _, logits, _ = model.net(*model._encode(model.fit_pairs).inputs())
    probabilities = pd.DataFrame(torch.softmax(logits, 1).double().numpy()).groupby(model.fit_pairs["user"].to_numpy()).mean()
    with torch.no_grad():
        cold = pd.DataFrame({"user": 10_000, "item": model.popular_items})
        _, cold_logits, _ = model.net(*model._encode(cold).inputs())
    expected = [int(probabilities.loc[u].to_numpy().argmax()) for u in users[:-1]]
    expected.append(int(torch.softmax(cold_logits, 1).mean(0).argmax()))
    model.PROFILE_CHUNK_VALUES = model.k * 64  # chunks of 64 rows (the floor)
    try:
        assert model.predict_groups(users).tolist() == expected
    finally:
        del model.PROFILE_CHUNK_VALUES
    assert model.predict_groups(users).tolist() == expected
