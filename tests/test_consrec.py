"""ConsRec (models/consrec.py) on small generated group-item data: its graphs against hand
computations, its training (a network change trains, the loss falls), the member-level mean's
weights, order invariance, the reference code's frozen hypergraph layers, and one job end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from benchmark.core.errors import ConfigError
from benchmark.data.base import Dataset
from benchmark.data.group_item import GroupItemData
from benchmark.evaluation.group_item import group_validation
from benchmark.protocol.folds import Fold
from benchmark.protocol.group_split import corrected
from models.base import FitContext, GroupScorer, RawScores
from models.consrec import ConsRec, build_graphs
from models.samplers import Batch
from tests.conftest import data_root
from tests.test_group_protocol import cli

TRAINER = dict(lr=0.01, weight_decay=0.0, batch_size=64, max_epochs=3, patience=2, val_size=0.1, device="cpu",
               progress=False, sparse_embeddings=False, refit=True)


def small(n_groups: int = 60, n_users: int = 90, n_items: int = 160, seed: int = 3, shuffle_members: bool = False):
    """Groups of 2-4 users drawn from ``n_users``; each group and user likes items of its "taste" block
    (items with the same residue mod 4), so a model can learn something in a few epochs."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 5, n_groups)
    member_rows = pd.DataFrame({"group": np.repeat(np.arange(n_groups), sizes),
                                "user": np.concatenate([rng.choice(n_users, s, replace=False) for s in sizes])})
    if shuffle_members:
        member_rows = member_rows.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)
    taste = np.arange(n_groups) % 4
    block = [np.arange(t, n_items, 4) for t in range(4)]
    picks = np.array([rng.choice(block[t], 6, replace=False) for t in taste])
    train = pd.DataFrame({"group": np.repeat(np.arange(n_groups), 5), "item": picks[:, :5].ravel()})
    test = pd.DataFrame({"group": np.arange(n_groups), "item": picks[:, 5]})
    user_items = np.array([rng.choice(block[u % 4], 12, replace=False) for u in range(n_users)])
    user_train = pd.DataFrame({"user": np.repeat(np.arange(n_users), 12), "item": user_items.ravel()})
    data = GroupItemData(members=member_rows, user_train=user_train, user_test=user_train.iloc[:0],
                         group_train=train, group_test=test, n_users=n_users, n_items=n_items, n_groups=n_groups,
                         implicit=True, group_negatives=rng.integers(0, n_items, (n_groups, 100)))
    ratings = user_train.assign(rating=1.0)
    return Dataset(name="small", ratings=ratings, user_features=pd.DataFrame(index=pd.RangeIndex(n_users)),
                   item_features=pd.DataFrame(index=pd.RangeIndex(n_items)), rating_scale=(0.0, 1.0),
                   groups=member_rows, group_item=data)


def fitted(dataset: Dataset, **settings) -> tuple[ConsRec, FitContext]:
    split = corrected(dataset.ratings, seed=0, dataset=dataset)[0]
    context = FitContext(dataset=dataset, groups=None, seed=0, fold=Fold.from_split(split, seed=0),
                         group_validation=group_validation(split.group, dataset.groups, 0))
    trainer = {**TRAINER, **settings.pop("trainer", {})}
    model = ConsRec(embedding_dim=8, layers=2, negatives=2, trainer=trainer, **settings)
    return model.fit(split.train, context), context


def test_graphs_match_hand_computed_means_overlap_and_normalisation():
    members = pd.DataFrame({"group": [0, 0, 1, 1, 1, 2], "user": [0, 1, 1, 2, 2, 3]})  # a repeated membership
    items = pd.DataFrame({"group": [0, 1, 1], "item": [0, 0, 1]})
    g = build_graphs(members, items, n_groups=3, n_users=4, n_items=2, n_group_items=2, device=torch.device("cpu"))
    assert np.allclose(g.member_mean.dense(), [[.5, .5, 0, 0], [0, .5, .5, 0], [0, 0, 0, 1]])
    assert np.allclose(g.item_mean.dense(), [[1, 0], [.5, .5], [0, 0]])
    # node u1 sits in hyperedges 0 and 1; item 0 (node 4) in 0 and 1; user 3 only in 2
    assert np.allclose(g.node_mean.dense()[[1, 3, 4, 5]], [[.5, .5, 0], [0, 0, 1], [.5, .5, 0], [0, 1, 0]])
    # sets: g0 {u0, u1, i0}, g1 {u1, u2, i0, i1}, g2 {u3}: Jaccard(g0, g1) = 2 / 5
    w = np.array([[1, .4, 0], [.4, 1, 0], [0, 0, 1]])
    assert np.allclose(g.overlap.dense(), w / w.sum(axis=1, keepdims=True))
    # LightGCN: R = [[1, 0], [1, 1], [0, 0]], degrees groups (1, 2, 0), items (2, 1)
    assert np.allclose(g.bipartite.dense(), [[1 / np.sqrt(2), 0], [1 / 2, 1 / np.sqrt(2)], [0, 0]])


def test_member_level_weights_over_each_groups_members_sum_to_one_and_ignore_padding_rows():
    dataset = small()
    members = dataset.group_item.members
    g = build_graphs(members, dataset.group_item.group_train, 60, 90, 160, 160, torch.device("cpu")).member_mean.dense()
    assert np.allclose(g.sum(axis=1), 1.0)
    sizes = members.groupby("group").size().to_numpy()
    assert np.allclose(g.max(axis=1), 1.0 / sizes) and ((g > 0).sum(axis=1) == sizes).all()  # uniform, members only


def test_loss_decreases_and_scores_are_finite_on_a_small_slice():
    model, context = fitted(small(), trainer={"max_epochs": 4, "patience": 4, "fixed_epochs": 4})
    losses = [row["train_group_bpr"] for row in model.refit_history]
    assert losses[-1] < losses[0] - 0.02, losses
    assert isinstance(model, GroupScorer) and isinstance(model, RawScores)
    pairs = pd.DataFrame({"group": [0, 1, 2], "item": [0, 1, 2]})
    assert np.isfinite(model.score_groups(context.dataset.groups, pairs)).all()


def test_a_network_change_trains_an_added_parameter_gets_a_gradient_and_moves():
    model, _ = fitted(small(), trainer={"fixed_epochs": 1})
    net = model.net
    net.extra_bias = torch.nn.Parameter(torch.zeros(8))  # a change to the network: a bias on the group vectors
    views = net.views

    def changed():
        fused, items, parts = views()
        return fused + net.extra_bias, items, parts

    net.views = changed
    batch = Batch([torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([[5, 6]] * 3)], "group")
    before = net.extra_bias.detach().clone()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    total, _ = model.loss(net, batch)
    total.backward()
    assert net.extra_bias.grad is not None and net.extra_bias.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(before, net.extra_bias.detach())


def test_group_scores_do_not_depend_on_the_order_of_members():
    a, ctx_a = fitted(small(), trainer={"fixed_epochs": 2})
    b, _ = fitted(small(shuffle_members=True), trainer={"fixed_epochs": 2})
    pairs = pd.DataFrame({"group": np.repeat(np.arange(60), 160), "item": np.tile(np.arange(160), 60)})
    assert np.allclose(a.score_groups(ctx_a.dataset.groups, pairs), b.score_groups(ctx_a.dataset.groups, pairs),
                       atol=1e-5)


@pytest.mark.parametrize("trained", [False, True])
def test_hypergraph_layers_are_frozen_as_in_the_reference_code_or_trained_as_in_the_paper(trained):
    model, _ = fitted(small(), trainer={"fixed_epochs": 2}, train_hypergraph_layers=trained)
    # the same seeded network at a learning rate too small to move anything: the initial values
    initial, _ = fitted(small(), trainer={"fixed_epochs": 2, "lr": 1e-12}, train_hypergraph_layers=trained)
    ref = initial
    moved = any(not torch.allclose(p, q) for p, q in zip(model.net.hypergraph_layers.parameters(),
                                                          ref.net.hypergraph_layers.parameters()))
    assert moved == trained
    assert all(p.requires_grad == trained for p in model.net.hypergraph_layers.parameters())


def test_early_stops_on_the_group_validation_score_and_refuses_a_dataset_without_group_split():
    model, _ = fitted(small())
    assert model.history and all("val_group_ndcg_at_10" in row for row in model.history)
    assert model.best_epoch == max(model.history, key=lambda r: r["val_group_ndcg_at_10"])["epoch"]
    plain = small()
    context = FitContext(dataset=Dataset(name="plain", ratings=plain.ratings, user_features=plain.user_features,
                                         item_features=plain.item_features, rating_scale=(0.0, 1.0)),
                         groups=None, seed=0)
    with pytest.raises(ConfigError) as refused:
        ConsRec(trainer=TRAINER).fit(plain.ratings, context)
    assert "group-item dataset" in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.slow
def test_mafengwo_job_end_to_end_logs_group_metrics_early_stopped_on_group_validation(tmp_path):
    if not (data_root() / "group-rec" / "Mafengwo").is_dir():
        pytest.skip(f"Mafengwo files not under {data_root()}")
    proc = cli(tmp_path, "dataset=mafengwo", "model=consrec", "trainer.max_epochs=2", "model.layers=1",
               "model.negatives=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("groupbench").experiment_id])
    metrics = run.data.metrics
    for name in ("hr_at_5", "ndcg_at_5", "hr_at_10", "ndcg_at_10"):
        assert 0 < metrics[f"group_sampled_{name}"] <= 1 and 0 <= metrics[f"group_full_{name}"] <= 1
    assert "val_group_ndcg_at_10" in metrics and metrics["group_sampled_n_cases"] == 995
    assert len(client.get_metric_history(run.info.run_id, "val_group_ndcg_at_10")) == 2


def test_mlp_rankings_read_the_logit_whose_sigmoid_is_the_reference_score():
    model, context = fitted(small(), trainer={"fixed_epochs": 1}, predictor="mlp")
    pairs = pd.DataFrame({"group": np.repeat(np.arange(60), 160), "item": np.tile(np.arange(160), 60)})
    logits = model.score_groups(context.dataset.groups, pairs)
    model.logit = False  # model.rank_by_logit=false: the reference code's σ scores
    probabilities = model.score_groups(context.dataset.groups, pairs)
    assert np.allclose(probabilities, 1 / (1 + np.exp(-logits)), atol=1e-6)
    assert ((logits < 0) | (logits > 1)).any()  # not the σ (in (0, 1))
