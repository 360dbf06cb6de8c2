"""Implicit feedback (issue #24): BPR-MF on the shared trainer, LensKit's implicit ALS and implicit item
k-NN, and the refusal (single job) or skip (sweep) of rating models on implicit data."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import models.bpr_mf as bpr_module
from benchmark.core import models_meta
from benchmark.core.config import CONF, build_model, instantiate
from benchmark.core.errors import ConfigError
from benchmark.run.job import run
from benchmark.sweeps.plan import Job
from benchmark.sweeps.sweep import not_applicable_jobs
from models.base import FitContext
from models.bpr_mf import BPRNetwork

REPO = Path(__file__).resolve().parent.parent
FAST = ["dataset=synthetic", "model=bpr_mf", "trainer.progress=false", "trainer.device=cpu", "trainer.batch_size=256",
        "trainer.lr=0.01", "trainer.refit=false"]


def _fit_bpr(make_cfg, *overrides: str, train: pd.DataFrame | None = None):
    """BPR-MF fitted on the synthetic dataset's training part, or on ``train`` (its fold carved from it)."""
    cfg = make_cfg(*FAST, *overrides)
    dataset = instantiate(cfg.dataset.loader, root=None)
    split = instantiate(cfg.split)(dataset.ratings, seed=0)[0]
    groups = instantiate(cfg.grouping)(dataset, split.train, seed=0)
    model = build_model(cfg.model, seed=0)
    model.fit(split.train if train is None else train, FitContext(dataset, groups, seed=0))
    return model, split


def blocks(seed: int = 0) -> pd.DataFrame:
    """Planted implicit structure: users 0-39 interact with half of items 0-29, users 40-79 with half of 30-59."""
    rng = np.random.default_rng(seed)
    rows = [(u, i) for u in range(80) for i in (range(30) if u < 40 else range(30, 60)) if rng.random() < 0.5]
    return pd.DataFrame(rows, columns=["user", "item"]).assign(rating=1.0)


def test_bpr_forward_is_the_dot_product_plus_the_item_bias():
    torch.manual_seed(0)
    net = BPRNetwork(n_users=3, n_items=4, factors=2, init_std=0.5)
    with torch.no_grad():
        net.item_bias.weight[1:].normal_()
    P, Q = net.user_factors.weight.detach().numpy(), net.item_factors.weight.detach().numpy()
    b = net.item_bias.weight.detach().numpy()[:, 0]
    user, item = torch.tensor([1, 3, 0]), torch.tensor([[2, 4], [1, 0], [3, 3]])
    scores, norms = net(user, item)
    for row, u in enumerate(user.tolist()):
        for col, i in enumerate(item[row].tolist()):
            assert scores[row, col].item() == pytest.approx(float(P[u] @ Q[i]) + b[i], abs=1e-6)
            assert norms[row, col].item() == pytest.approx(float(Q[i] @ Q[i]) + b[i] ** 2, abs=1e-6)
    assert scores[2, 0].item() == pytest.approx(b[3], abs=1e-7)  # an unknown user (index 0): the item bias
    assert b[0] == 0 and not Q[0].any()                          # an unknown item: 0


def test_bpr_loss_decreases_and_the_validation_auc_beats_chance(make_cfg):
    model, _ = _fit_bpr(make_cfg, "trainer.max_epochs=6", "trainer.patience=6", train=blocks())
    losses = [h["train_bpr_loss"] for h in model.history]
    assert len(losses) == 6 and losses[-1] < 0.9 * losses[0] and losses[0] == pytest.approx(np.log(2), abs=0.05)
    assert all(later <= earlier + 1e-6 for earlier, later in zip(losses, losses[1:]))
    assert max(h["val_sampled_auc"] for h in model.history) > 0.6  # chance: 0.5
    assert model.best_epoch == 1 + int(np.argmax([h["val_sampled_auc"] for h in model.history]))
    assert "val_bpr_loss" in model.history[0]


def test_bpr_loss_is_the_hand_computed_pairwise_loss():
    model = BPRMFForLoss()
    torch.manual_seed(0)
    net = BPRNetwork(n_users=2, n_items=3, factors=2, init_std=0.3)
    user, pos, neg = torch.tensor([1, 2]), torch.tensor([1, 3]), torch.tensor([[2], [1]])
    total, parts = model.loss(net, [user, pos, neg])
    s = lambda u, i: float(net(torch.tensor([u]), torch.tensor([i]))[0].detach())  # noqa: E731
    expected = -np.mean([np.log(1 / (1 + np.exp(-(s(1, 1) - s(1, 2))))), np.log(1 / (1 + np.exp(-(s(2, 3) - s(2, 1)))))])
    assert parts["bpr_loss"].item() == pytest.approx(expected, abs=1e-6)
    assert total.item() > parts["bpr_loss"].item()  # + reg x the L2 of what the batch read


def BPRMFForLoss():
    return bpr_module.BPRMF(reg=0.5, trainer=dict(OmegaConf.load(CONF / "trainer" / "default.yaml")), seed=0)


def test_a_network_change_trains(make_cfg, monkeypatch):
    """A parameter added to the network (a score scale) receives a gradient and moves: the trainer
    optimises whatever the network holds, with no change elsewhere."""
    added = []

    class Scaled(BPRNetwork):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.scale = torch.nn.Parameter(torch.ones(1))
            added.append(self.scale)

        def forward(self, user, item):
            scores, norms = super().forward(user, item)
            return self.scale * scores, norms

    monkeypatch.setattr(bpr_module, "BPRNetwork", Scaled)
    model, split = _fit_bpr(make_cfg, "trainer.max_epochs=2", "trainer.patience=2")
    assert len(added) == 1 and model.net.scale is added[0]
    assert added[0].grad is not None and added[0].grad.abs().item() > 0
    assert abs(added[0].item() - 1.0) > 1e-4
    assert np.isfinite(model.raw_scores(split.test)).all()


def test_bpr_score_all_equals_its_pairwise_scores(make_cfg):
    model, split = _fit_bpr(make_cfg, "trainer.max_epochs=1", "trainer.patience=1")
    users, items = np.array([1, 2, 3, 10 ** 6]), np.array([1, 5, 7, 10 ** 6])  # the last: unknown ids
    pairs = pd.DataFrame({"user": np.repeat(users, len(items)), "item": np.tile(items, len(users))})
    assert model.score_all(users, items) == pytest.approx(model.raw_scores(pairs).reshape(4, 4), abs=1e-5)


TINY = pd.DataFrame({"user": [1, 1, 2, 2, 2, 3], "item": [10, 11, 10, 11, 12, 12], "rating": 1.0})


class _Context:
    rating_scale = (0.0, 1.0)


def test_lenskit_implicit_item_knn_scores_are_hand_computed_cosine_sums(make_cfg):
    """Items as binary user vectors: 10 = 11 = (1, 1, 0), 12 = (0, 1, 1); cos(10, 12) = 1/2, cos(10, 11) = 1.
    User 3's history is {12}: item 10 scores cos(10, 12) = 0.5; user 1's ({10, 11}) item 12: 0.5 + 0.5."""
    model = build_model(make_cfg("model=lenskit_item_knn_implicit").model, seed=0).fit(TINY, _Context())
    pairs = pd.DataFrame({"user": [3, 3, 1, 99], "item": [10, 11, 12, 10]})
    assert model.raw_scores(pairs) == pytest.approx([0.5, 0.5, 1.0, 0.0], abs=1e-6)  # 99: unknown, unscored = 0


def test_lenskit_implicit_mf_ranks_a_users_block_first(make_cfg):
    """Two blocks of users and items (users 0-9 chose items 0-4, users 10-19 items 5-9), one item of each
    user held out: implicit ALS scores the held-out item of the user's own block above the other block."""
    rows = [(u, i) for u in range(20) for i in (range(5) if u < 10 else range(5, 10)) if i != u % 5 + (0 if u < 10 else 5)]
    train = pd.DataFrame(rows, columns=["user", "item"]).assign(rating=1.0)
    model = build_model(make_cfg("model=lenskit_implicit_mf", "model.config.embedding_size=4").model,
                        seed=0).fit(train, _Context())
    own = pd.DataFrame({"user": range(20), "item": [u % 5 + (0 if u < 10 else 5) for u in range(20)]})
    other = own.assign(item=(own["item"] + 5) % 10)
    assert (model.raw_scores(own) > model.raw_scores(other)).all()
    assert model.raw_scores(pd.DataFrame({"user": [123], "item": [0]})) == pytest.approx([0.0])  # unscored


def test_every_surprise_and_explicit_lenskit_model_is_a_rating_model():
    catalogue = models_meta.catalogue()
    for name, meta in catalogue.items():
        target = str(OmegaConf.load(CONF / "model" / f"{name}.yaml")["_target_"])
        if target.startswith("baselines.surprise") or name in ("dmtl", "neural_mf", "lenskit_bias", "lenskit_biased_mf"):
            assert meta.feedback == "explicit", name
    assert set(models_meta.implicit_models()) == {"bpr_mf", "lenskit_implicit_mf", "lenskit_item_knn_implicit"}
    assert models_meta.feedback_error("bpr_mf", "mafengwo", True) is None
    assert models_meta.feedback_error("svd", "camra2011", False) is None


def test_a_rating_model_on_implicit_data_is_refused_in_one_line_before_any_data_work(make_cfg):
    cfg = make_cfg("dataset=mafengwo", "model=svd", "data.root=/nonexistent")  # no file is read
    with pytest.raises(ConfigError) as refused:
        run(cfg)
    message = str(refused.value)
    assert "\n" not in message and "model=svd" in message and "dataset=mafengwo" in message
    assert "use an implicit-feedback model: model=bpr_mf, model=lenskit_implicit_mf" in message


@pytest.mark.slow
def test_the_command_line_exits_2_with_the_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmark", "model=lenskit_biased_mf", "dataset=weeplaces",
                           f"tracking.uri=sqlite:///{tmp_path}/m.db"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "model=lenskit_biased_mf" in errors[0] and "dataset=weeplaces" in errors[0]
    assert "Traceback" not in done.stderr


def test_a_sweep_leaves_rating_models_on_implicit_data_out_with_one_line_per_pair(make_cfg, caplog):
    pairs = [("svd", "mafengwo"), ("svd", "mafengwo"), ("svd", "camra2011"), ("bpr_mf", "mafengwo"),
             ("dmtl", "weeplaces"), ("popularity_group", "mafengwos")]
    configs = [make_cfg(f"model={m}", f"dataset={d}", f"seed={n}") for n, (m, d) in enumerate(pairs)]
    jobs = [Job([f"model={m}", f"dataset={d}"], {}, str(n), f"{m}/{d}") for n, (m, d) in enumerate(pairs)]
    with caplog.at_level(logging.INFO, logger="benchmark.sweeps.sweep"):
        kept, kept_cfgs, dropped = not_applicable_jobs(jobs, configs)
    assert dropped == 3 and [j.name for j in kept] == ["svd/camra2011", "bpr_mf/mafengwo", "popularity_group/mafengwos"]
    assert len(kept_cfgs) == 3
    notes = [r.getMessage() for r in caplog.records if "not applicable" in r.getMessage()]
    assert len(notes) == 2 and "svd/mafengwo" in notes[0] and "dmtl/weeplaces" in notes[1]
