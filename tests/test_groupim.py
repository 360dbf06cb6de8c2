"""GroupIM (models/groupim.py) on small generated group-item data: an edited network trains, the loss
falls, the member attention is a masked softmax summing to one, a group's score depends on its members
only (not on their order, not on the group's id: unseen groups are scored), and a tiny job runs through
the runner on CAMRa2011, early-stopped on the group validation cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

import models.groupim as groupim
from benchmark.data.base import Dataset
from benchmark.data.group_item import GroupItemData
from benchmark.evaluation.group_item import group_validation
from benchmark.protocol.folds import Fold
from benchmark.protocol.group_split import corrected
from benchmark.protocol.grouping import Groups
from models.base import FitContext, GroupScorer
from models.groupim import GroupIM, GroupIMNetwork
from tests.test_group_protocol import camra_present

N_ITEMS = 150


def small(n_groups: int = 40, seed: int = 0) -> Dataset:
    """Groups of 2-4 users; each user has 6 items drawn from one of 5 'tastes' (30 items each); a group's
    items come from its members' taste, so members predict their group's items."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 5, n_groups)
    members = pd.DataFrame({"group": np.repeat(np.arange(n_groups), sizes), "user": np.arange(sizes.sum())})
    n_users = int(sizes.sum())
    taste = np.repeat(rng.integers(0, 5, n_groups), sizes)
    user_items = np.array([rng.choice(30, 6, replace=False) + 30 * t for t in taste])
    user_train = pd.DataFrame({"user": np.repeat(np.arange(n_users), 6), "item": user_items.ravel()})
    picks = np.array([rng.choice(30, 5, replace=False) + 30 * taste[members["group"].searchsorted(g)]
                      for g in range(n_groups)])
    train = pd.DataFrame({"group": np.repeat(np.arange(n_groups), 4), "item": picks[:, :4].ravel()})
    test = pd.DataFrame({"group": np.arange(n_groups), "item": picks[:, 4]})
    data = GroupItemData(members=members, user_train=user_train, user_test=user_train.iloc[:0], group_train=train,
                         group_test=test, n_users=n_users, n_items=N_ITEMS, n_groups=n_groups, implicit=True,
                         group_negatives=rng.integers(0, N_ITEMS, (n_groups, 100)))
    return Dataset(name="small", ratings=user_train.assign(rating=1.0),
                   user_features=pd.DataFrame(index=pd.RangeIndex(n_users)),
                   item_features=pd.DataFrame(index=pd.RangeIndex(N_ITEMS)), rating_scale=(0.0, 1.0),
                   groups=members, group_item=data)


TRAINER = dict(lr=0.01, weight_decay=0.0, batch_size=8, max_epochs=3, patience=2, val_size=0.1, device="cpu",
               progress=False, sparse_embeddings=False, refit=True, fixed_epochs=None)


def fitted(dataset: Dataset, **settings) -> GroupIM:
    (split,) = corrected(dataset.ratings, seed=0, dataset=dataset)
    members = dataset.groups
    groups = Groups(labels=members.groupby("user")["group"].min(), k=members["group"].nunique(), method="members",
                    membership=members)
    context = FitContext(dataset, groups, fold=Fold(split.train, group=split.group),
                         group_validation=group_validation(split.group, members, 0))
    trainer = {**TRAINER, **settings.pop("trainer", {})}
    options = {"dim": 16, "pretrain_epochs": 2, "pretrain_mi_epochs": 1, **settings}
    return GroupIM(trainer=trainer, **options).fit(split.train, context)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return small()


def test_an_added_parameter_receives_a_gradient_and_moves(data, monkeypatch):
    class Scaled(GroupIMNetwork):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.scale = torch.nn.Parameter(torch.ones(1))

        def aggregate(self, members, mask):
            group, weights = super().aggregate(members, mask)
            return group * self.scale, weights

    monkeypatch.setattr(groupim, "GroupIMNetwork", Scaled)
    model = fitted(data, pretrain_mi_epochs=0, trainer={"fixed_epochs": 3})
    assert isinstance(model.net, Scaled)
    assert model.net.scale.grad is not None and float(model.net.scale.grad.abs()) > 0
    assert abs(float(model.net.scale.detach()) - 1.0) > 1e-4


def test_the_loss_decreases_on_a_small_slice(data):
    model = fitted(data, pretrain_epochs=0, pretrain_mi_epochs=0, trainer={"fixed_epochs": 8})
    losses = [row["train_loss"] for row in model.refit_history]
    assert len(losses) == 8 and losses[-1] < 0.9 * losses[0]
    groups = [row["train_group"] for row in model.refit_history]
    assert groups[-1] < groups[0]


def test_attention_weights_are_a_masked_softmax_summing_to_one():
    torch.manual_seed(0)
    net = GroupIMNetwork(n_items=10, dim=6, dropout=0.0)
    members = torch.randn(3, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True], [True, False, False, False]])
    group, weights = net.aggregate(members, mask)
    assert torch.allclose(weights.sum(dim=1), torch.ones(3))
    assert bool((weights[~mask] == 0).all())
    assert torch.allclose(weights[2, 0], torch.tensor(1.0)) and torch.allclose(group[2], members[2, 0])
    # by hand: softmax over the real members of tanh(w . e + b)
    logits = torch.tanh(members[0, :2] @ net.attention.weight[0] + net.attention.bias[0])
    hand = torch.exp(logits) / torch.exp(logits).sum()
    assert torch.allclose(weights[0, :2], hand, atol=1e-6)
    assert torch.allclose(group[0], (hand[:, None] * members[0, :2]).sum(dim=0), atol=1e-6)


def test_a_groups_score_does_not_depend_on_member_order_or_group_id(data):
    model = fitted(data)
    assert isinstance(model, GroupScorer)
    members = data.groups[data.groups["group"].isin([0, 1, 2])]
    pairs = pd.DataFrame({"group": np.repeat([0, 1, 2], N_ITEMS), "item": np.tile(np.arange(N_ITEMS), 3)})
    scores = model.score_groups(members, pairs)
    assert np.isfinite(scores).all() and scores.std() > 0
    shuffled = members.sample(frac=1.0, random_state=3)
    assert np.allclose(model.score_groups(shuffled, pairs), scores, atol=1e-6)
    # the network itself: permuting the padded member slots leaves the group vector unchanged
    embedded = torch.randn(2, 5, 16)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    perm = torch.tensor([4, 2, 0, 3, 1])
    first, _ = model.net.aggregate(embedded, mask)
    second, _ = model.net.aggregate(embedded[:, perm], mask[:, perm])
    assert torch.allclose(first, second, atol=1e-6)
    # an unseen group (new id) with group 1's members scores as group 1: members are all it reads
    unseen = members[members["group"] == 1].assign(group=999)
    again = model.score_groups(unseen, pd.DataFrame({"group": 999, "item": np.arange(N_ITEMS)}))
    assert np.allclose(again, scores[N_ITEMS:2 * N_ITEMS], atol=1e-6)
    # scores are the logits P h_g, pair order irrelevant
    order = np.random.default_rng(0).permutation(len(pairs))
    assert np.allclose(model.score_groups(members, pairs.iloc[order]), scores[order], atol=1e-6)


@pytest.mark.slow
def test_a_tiny_camra2011_job_logs_group_metrics_early_stopped_on_group_validation(make_cfg, tracking_uri):
    if not camra_present():
        pytest.skip("CAMRa2011 files not present")
    from benchmark.run.job import run

    result = run(make_cfg("dataset=camra2011", "model=groupim", "model.dim=8", "model.pretrain_epochs=1",
                          "model.pretrain_mi_epochs=1", "trainer.max_epochs=2", "trainer.progress=false",
                          "artifacts.save_model=false"))
    for name in ("hr_at_5", "ndcg_at_5", "hr_at_10", "ndcg_at_10"):
        assert 0 < result.metrics[f"group_sampled_{name}"] <= 1 and 0 < result.metrics[f"group_full_{name}"] <= 1
    client = MlflowClient(tracking_uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("groupbench").experiment_id])
    history = client.get_metric_history(logged.info.run_id, "val_group_ndcg_at_10")
    assert len(history) >= 1 and all(0 <= m.value <= 1 for m in history)


def test_corrupted_users_are_never_members_and_half_share_the_groups_items(data):
    model = fitted(data, pretrain_epochs=0, pretrain_mi_epochs=0, trainer={"fixed_epochs": 1})
    model.generator = torch.Generator().manual_seed(5)
    rows = torch.arange(len(model.group_ids)).repeat(50)
    members = model.train_members[rows]
    drawn = model._corrupted(rows, members)
    assert drawn.shape == (len(rows), model.settings.negatives)
    assert not bool((drawn[:, :, None] == members[:, None, :]).any())
    # item-biased draws (eta = 0.5) have one of the group's items; uniform ones rarely do (6 of 150 items each)
    users = model.users.indptr
    has_item = []
    for r, us in zip(rows[:400].tolist(), drawn[:400].tolist()):
        items = set(model.group_items.indices[model.group_items.indptr[r]:model.group_items.indptr[r + 1]].tolist())
        has_item += [bool(items & set(model.users.indices[users[u]:users[u + 1]].tolist())) for u in us]
    share = float(np.mean(has_item))
    assert 0.4 < share < 0.75  # about eta + (1 - eta) x the chance a random user has one of them
