"""The compiled DMTL step (models/dmtl_native.cpp) against autograd, the eager fused step and torch's Adam.

Skipped only where this machine has no C++ compiler at all; where one exists, a build failure fails
these tests (it would otherwise hide behind trainer.step=auto's fallback).
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from mlflow.tracking import MlflowClient

import models.dmtl as dmtl
import models.dmtl_native as dmtl_native
from benchmark.errors import TrainingError
from benchmark.runner import instantiate, run
from models.dmtl_fused import FusedTrainingStep, dropout_constants
from tests.test_dmtl import FAST, _FixedMask, _losses

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="no C++ compiler: trainer.step=auto falls back to the eager fused step")

N_USERS, N_ITEMS, USER_FEATURES, ITEM_FEATURES, GROUPS = 10, 12, 23, 19, 5


def _net(activation: str = "relu", attention: str = "softmax", user_dim: int = 6, item_dim: int = 7,
         dropout: float = 0.0, dtype: torch.dtype = torch.float64) -> dmtl.DMTLNetwork:
    torch.manual_seed(0)
    return dmtl.DMTLNetwork(n_users=N_USERS, n_items=N_ITEMS, user_features=USER_FEATURES,
                            item_features=ITEM_FEATURES, n_groups=GROUPS, user_dim=user_dim, item_dim=item_dim,
                            shared_dim=24, activation=activation, dropout=dropout, attention=attention,
                            rating_scale=(1.0, 5.0), mean_rating=3.5).to(dtype)


def _rows(n: int = 40, seed: int = 1, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """user, item, xu, xi, rating, group; ids include 0 (the unknown-id padding row)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, N_USERS + 1, (n,), generator=gen), torch.randint(0, N_ITEMS + 1, (n,), generator=gen),
            torch.randn(n, USER_FEATURES, generator=gen, dtype=dtype),
            torch.randn(n, ITEM_FEATURES, generator=gen, dtype=dtype),
            1 + 4 * torch.rand(n, generator=gen, dtype=dtype), torch.randint(0, GROUPS, (n,), generator=gen)]


def _native(net, lam, activation, attention, dropout=0.0, lr=0.0, weight_decay=0.0, seed=3, max_rows=64):
    return dmtl_native.NativeTrainingStep(net, lam, lr=lr, weight_decay=weight_decay, dropout=dropout,
                                          activation=activation, attention=attention,
                                          generator=torch.Generator().manual_seed(seed), max_rows=max_rows)


def test_the_extension_builds_here():
    assert hasattr(dmtl_native.extension(), "Step")  # raises NativeUnavailable with the compiler's error


# widths: below one 16-lane block (6, 7), whole blocks (32, 16) and blocks plus a tail (20, 33)
@pytest.mark.parametrize("user_dim, item_dim", [(6, 7), (32, 20), (16, 33)])
@pytest.mark.parametrize("activation", sorted(dmtl.ACTIVATIONS))
@pytest.mark.parametrize("attention", sorted(dmtl.ATTENTION))
@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_native_losses_and_gradients_equal_autograd(user_dim, item_dim, activation, attention, lam):
    batch = _rows()
    reference = _net(activation, attention, user_dim, item_dim)
    l_rec, l_prof = _losses(reference, batch)
    dmtl.objective(l_rec, l_prof, lam).backward()

    net = _net(activation, attention, user_dim, item_dim)
    native_rec, native_prof = _native(net, lam, activation, attention)(*batch)  # lr 0: gradients only
    torch.testing.assert_close(native_rec, l_rec.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(native_prof, l_prof.detach(), rtol=1e-12, atol=1e-12)
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        expected = torch.zeros_like(q) if q.grad is None else q.grad  # λ = 0: no gradient for the profiling head
        torch.testing.assert_close(p.grad, expected, rtol=1e-10, atol=1e-12, msg=name)
    assert net.user_embedding.weight.grad[0].abs().sum() == 0  # the unknown-id row gets no gradient


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_native_dropout_backward_matches_autograd_with_the_same_mask(activation):
    batch = _rows()
    net = _net(activation, dropout=0.4)
    step = _native(net, 0.5, activation, "softmax", dropout=0.4, seed=11)
    draws = step.dropout_draws(len(batch[0]))  # the draws the step will make next...
    step.generator.manual_seed(11)              # ...once the generator is rewound
    _, threshold, keep_scale = dropout_constants(0.4)
    mask = (draws.double() > threshold).double() * keep_scale
    assert 0 < (mask == 0).sum() < mask.numel()

    reference = _net(activation, dropout=0.4)
    reference.dropout = _FixedMask(mask)  # autograd with exactly the compiled step's mask
    dmtl.objective(*_losses(reference, batch), 0.5).backward()
    step(*batch)
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_native_dropout_draws_are_uniform_and_differ_between_steps():
    step = _native(_net(), 0.1, "relu", "softmax", dropout=0.3, max_rows=4000)
    first, second = step.dropout_draws(4000), step.dropout_draws(4000)  # 4000 x 24 = 96k draws each
    assert not torch.equal(first, second)
    _, threshold, _ = dropout_constants(0.3)
    kept = (first.double() > threshold).double()
    sigma = math.sqrt(0.3 * 0.7 / kept.numel())
    assert abs(kept.mean().item() - 0.7) < 5 * sigma
    for lane in kept.reshape(-1, 4).T:  # each int16 cut from one 64-bit word
        assert abs(lane.mean().item() - 0.7) < 5 * sigma * 2
    values = first.double()
    assert abs(values.mean().item()) < 5 * (65536 / math.sqrt(12)) / math.sqrt(values.numel())
    assert values.min() < -32000 and values.max() > 32000


def test_native_adam_equals_torch_adam():
    batch = _rows()
    reference = _net()
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.01, weight_decay=0.001)
    net = _net()
    step = _native(net, 0.3, "relu", "softmax", lr=0.01, weight_decay=0.001)
    for _ in range(3):
        optimizer.zero_grad()
        dmtl.objective(*_losses(reference, batch), 0.3).backward()
        optimizer.step()
        step(*batch)
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=name)
    assert net.user_embedding.weight[0].abs().sum() == 0  # the unknown-id row stays zero


def test_native_float32_steps_follow_the_eager_fused_step():
    """float32, the training dtype: five Adam steps of both implementations stay within float rounding."""
    batch = _rows(dtype=torch.float32)
    eager_net, native_net = _net("relu", dtype=torch.float32), _net("relu", dtype=torch.float32)
    eager = FusedTrainingStep(eager_net, 0.5, 0.01, 0.0, 0.0, "relu", "softmax", torch.Generator().manual_seed(5))
    native = _native(native_net, 0.5, "relu", "softmax", lr=0.01)
    for _ in range(5):
        torch.testing.assert_close(native(*batch), eager(*batch), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(native_net.named_parameters(), eager_net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def _indexed(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-user / per-item tables with a row index per rating, as _Encoded.indexed() lays them out."""
    user, item, xu, xi, rating, group = batch
    rows = torch.arange(len(user))
    return [user, item, rows, rows, rating, group, xu, xi]


def test_an_epoch_equals_its_steps_in_the_permuted_order():
    data = _rows(n=100)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(4))
    by_epoch, by_steps = _net(), _net()
    epoch_step = _native(by_epoch, 0.5, "relu", "softmax", lr=0.01, max_rows=32)
    losses = epoch_step.epoch(epoch_step.pack(_indexed(data)), order, batch=32)

    single_step = _native(by_steps, 0.5, "relu", "softmax", lr=0.01, max_rows=32)
    sums = torch.zeros(2, dtype=torch.float64)
    for start in range(0, 100, 32):  # 32, 32, 32, 4 rows
        part = [t[order[start:start + 32]] for t in data]
        sums += single_step(*part) * len(part[0])
    torch.testing.assert_close(losses, sums / 100, rtol=1e-12, atol=1e-12)
    for (name, p), q in zip(by_epoch.named_parameters(), by_steps.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12, msg=name)


def test_evaluate_equals_the_network_forward():
    data = _rows(n=150)
    net = _net("tanh", "softmax", 32, 20)
    step = _native(net, 0.5, "tanh", "softmax", dropout=0.3, max_rows=64)  # chunks of 64; no dropout at evaluation
    with torch.no_grad():
        net.eval()
        expected = torch.stack(_losses(net, data))
    torch.testing.assert_close(step.evaluate(step.pack(_indexed(data))), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("column, value, message", [
    (0, N_USERS + 1, "tensor 0 outside"), (1, -1, "tensor 1 outside"), (5, GROUPS, "tensor 5 outside")])
def test_pack_refuses_ids_outside_the_tables(column, value, message):
    data = _rows()
    data[column] = data[column].clone()
    data[column][3] = value
    step = _native(_net(), 0.5, "relu", "softmax")
    with pytest.raises(RuntimeError, match=message):
        step.pack(_indexed(data))


def test_trainer_step_auto_falls_back_to_the_eager_step_without_the_extension(make_cfg, tracking_uri, monkeypatch):
    monkeypatch.setattr(dmtl_native, "_load", lambda: dmtl_native.NativeUnavailable("no compiler (test)"))
    result = run(make_cfg(*FAST, "trainer.max_epochs=2"))  # trainer.step=auto, the default
    client = MlflowClient(tracking_uri)
    assert client.get_run(result.run_id).data.tags["dmtl.training_step"] == "fused"

    with pytest.raises(TrainingError, match=r"trainer\.step=native: .*no compiler \(test\).*trainer\.step=fused"):
        run(make_cfg(*FAST, "trainer.max_epochs=2", "trainer.step=native"))


def test_the_step_resolves_at_construction_and_runs_record_it(make_cfg, tracking_uri, monkeypatch):
    cfg = make_cfg(*FAST, "trainer.max_epochs=2")
    assert instantiate(cfg.model, seed=0).training_step == "native"  # loaded (or built) before any fit
    loads = []
    monkeypatch.setattr(dmtl_native, "extension", lambda: loads.append(1))  # counts any load
    assert instantiate(make_cfg(*FAST, "trainer.step=fused").model, seed=0).training_step == "fused"
    assert instantiate(make_cfg(*FAST, "trainer.step=autograd").model, seed=0).training_step == "autograd"
    assert loads == []  # explicit eager steps never touch the extension
    monkeypatch.undo()
    result = run(cfg)
    assert MlflowClient(tracking_uri).get_run(result.run_id).data.tags["dmtl.training_step"] == "native"


def test_native_and_eager_training_reach_the_same_quality(make_cfg):
    """Different dropout streams, same model: the fits agree to within run-to-run noise."""
    native = run(make_cfg(*FAST, "trainer.step=native")).metrics
    fused = run(make_cfg(*FAST, "trainer.step=fused")).metrics
    assert abs(native["rmse"] - fused["rmse"]) < 0.05 * fused["rmse"]
    assert abs(native["profile_accuracy"] - fused["profile_accuracy"]) < 0.05


def test_encoded_feature_tables_give_each_rating_its_own_users_and_items_features(make_cfg):
    """What every step reads (per-user / per-item tables + a table row per rating) equals the side
    features looked up row by row, independently of the unique/inverse encoding."""
    from models.base import FitContext
    cfg = make_cfg(*FAST, "trainer.max_epochs=1")
    dataset = instantiate(cfg.dataset.loader, root=None)
    split = instantiate(cfg.split)(dataset.ratings, seed=0)[0]
    groups = instantiate(cfg.grouping)(dataset, split.train, seed=0)
    model = instantiate(cfg.model, seed=0).fit(split.train, FitContext(dataset, groups, seed=0))
    encoded, pairs = model.fit_data, model.fit_pairs  # the fitting rows, in encoding order
    assert encoded.user_table.is_contiguous() and encoded.item_table.is_contiguous()
    assert len(encoded.user_table) < len(encoded)  # a table row per user, not per rating
    per_row_users = model._side(model.user_features, model.user_scaler, pairs["user"].to_numpy())
    per_row_items = model._side(model.item_features, model.item_scaler, pairs["item"].to_numpy())
    torch.testing.assert_close(encoded.xu, torch.from_numpy(per_row_users), rtol=0, atol=0)
    torch.testing.assert_close(encoded.xi, torch.from_numpy(per_row_items), rtol=0, atol=0)


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path):
    import os
    import time
    lock = tmp_path / "lock"
    lock.write_text("")
    assert not dmtl_native.remove_stale_lock(tmp_path)  # a build may be running: wait for it
    assert lock.exists()
    old = time.time() - dmtl_native.STALE_LOCK_SECONDS - 1
    os.utime(lock, (old, old))
    assert dmtl_native.remove_stale_lock(tmp_path)      # left by a killed build: removed
    assert not lock.exists()
    assert not dmtl_native.remove_stale_lock(tmp_path)  # nothing to remove
