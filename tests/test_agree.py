"""AGREE (models/agree.py): its network trains as written, its loss falls, its attention is a
distribution over a group's real members, its group scores ignore the members' order and equal a
hand computation, and a tiny job runs through the runner, early-stopped on the group validation cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import models.agree as agree_module
from benchmark.data.base import Dataset
from benchmark.data.group_item import GroupItemData
from benchmark.protocol.folds import Fold
from benchmark.protocol.group_split import corrected
from benchmark.protocol.grouping import Groups
from benchmark.run.job import run
from models.agree import Agree, AgreeNetwork, expand, member_lists
from models.base import FitContext, GroupScorer, RawScores
from tests.test_group_scorer_seam import compose_with_tests_conf

N_GROUPS, N_ITEMS = 40, 160
TRAINER = {"lr": 0.01, "weight_decay": 0.0, "batch_size": 64, "max_epochs": 3, "patience": 2, "val_size": 0.1,
           "device": "cpu", "progress": False, "sparse_embeddings": False, "refit": True, "fixed_epochs": None}


def tiny(n_groups: int = N_GROUPS, n_items: int = N_ITEMS, seed: int = 3) -> Dataset:
    """Groups of 2-4 users (some users in two groups), 6 training positives a group, one test case each;
    each user 8 training positives and one test item; item ids 0..n_items-1, implicit."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 5, n_groups)
    n_users = int(sizes.sum())
    member_rows = pd.DataFrame({"group": np.repeat(np.arange(n_groups), sizes), "user": np.arange(n_users)})
    extra = pd.DataFrame({"group": np.arange(0, n_groups, 5), "user": (np.arange(0, n_groups, 5) * 7 + 1) % n_users})
    member_rows = pd.concat([member_rows, extra], ignore_index=True).drop_duplicates(ignore_index=True)
    # items a group likes come from a "taste" block, so there is something to learn
    taste = rng.integers(0, 4, n_groups)
    picks = np.array([rng.choice(np.arange(40) + 40 * t, 7, replace=False) for t in taste])
    group_train = pd.DataFrame({"group": np.repeat(np.arange(n_groups), 6), "item": picks[:, :6].ravel()})
    group_test = pd.DataFrame({"group": np.arange(n_groups), "item": picks[:, 6]})
    user_taste = taste[member_rows.drop_duplicates("user").sort_values("user")["group"].to_numpy()]
    user_picks = np.array([rng.choice(np.arange(40) + 40 * t, 9, replace=False) for t in user_taste])
    user_train = pd.DataFrame({"user": np.repeat(np.arange(n_users), 8), "item": user_picks[:, :8].ravel()})
    user_test = pd.DataFrame({"user": np.arange(n_users), "item": user_picks[:, 8]})
    data = GroupItemData(members=member_rows, user_train=user_train, user_test=user_test, group_train=group_train,
                         group_test=group_test, n_users=n_users, n_items=n_items, n_groups=n_groups, implicit=True,
                         group_negatives=rng.integers(0, n_items, (n_groups, 100)))
    return Dataset(name="agree_tiny", ratings=user_train.assign(rating=1.0),
                   user_features=pd.DataFrame(index=pd.RangeIndex(n_users)),
                   item_features=pd.DataFrame(index=pd.RangeIndex(n_items)), rating_scale=(0.0, 1.0),
                   groups=member_rows, group_item=data, files_sha256={"generated": "0" * 64})


def tiny_loader(root=None, download=False, verify=True) -> Dataset:
    """The loader of tests/conf/dataset/agree_tiny.yaml."""
    return tiny()


def fitted(epochs: int = 3, **settings) -> tuple[Agree, Dataset]:
    dataset = tiny()
    (split,) = corrected(dataset.ratings, seed=0, dataset=dataset)
    groups = Groups(labels=pd.Series(0, index=pd.RangeIndex(dataset.group_item.n_users)), k=1, method="members",
                    membership=dataset.groups)
    model = Agree(trainer={**TRAINER, "fixed_epochs": epochs}, **settings)
    model.fit(split.train, FitContext(dataset, groups, fold=Fold(split.train, group=split.group)))
    return model, dataset


def test_agree_is_a_group_scorer_with_raw_scores():
    model = Agree(trainer=TRAINER)
    assert isinstance(model, GroupScorer) and isinstance(model, RawScores)


def test_a_parameter_added_to_the_network_receives_a_gradient_and_moves(monkeypatch):
    class Shifted(AgreeNetwork):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.shift = nn.Parameter(torch.zeros(self.predict[0].out_features))

        def interaction(self, query, item):
            hidden = torch.relu(self.predict[0](torch.cat([query * item, query, item], dim=-1)) + self.shift)
            return self.predict[3](self.predict[2](hidden)).squeeze(-1)

    monkeypatch.setattr(agree_module, "AgreeNetwork", Shifted)
    model, _ = fitted(epochs=2)
    assert isinstance(model.net, Shifted)
    assert float(model.net.shift.detach().abs().sum()) > 1e-4  # trained: it left its zero start


def test_the_loss_decreases_on_a_small_slice():
    model, _ = fitted(epochs=6)
    losses = [row["train_loss"] for row in model.refit_history]
    assert len(losses) == 6 and losses[-1] < 0.9 * losses[0], losses
    assert {"train_user_loss", "train_group_loss"} <= set(model.refit_history[0])


def test_attention_weights_over_members_sum_to_one_whatever_the_group_sizes():
    torch.manual_seed(0)
    members = pd.DataFrame({"group": [0, 0, 0, 1, 2, 2], "user": [1, 2, 3, 4, 5, 6]})
    starts, flat = (torch.tensor(a) for a in member_lists(np.array([0, 1, 2, 3]), members, lambda u: np.asarray(u)))
    net = AgreeNetwork(6, 5, 4, 8, 16, 8, 0.0, starts, flat)
    pair, users = expand(torch.tensor([0, 1, 2, 3, 0]), starts, flat)  # group 3 has no members; group 0 twice
    assert pair.tolist() == [0, 0, 0, 1, 2, 2, 4, 4, 4] and users.tolist() == [1, 2, 3, 4, 5, 6, 1, 2, 3]
    items = net.items(torch.tensor([1, 2, 3, 4, 5]))
    weights = net.attention_weights(pair, users, items)
    sums = torch.zeros(5).index_add(0, pair, weights)
    assert torch.allclose(sums, torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])) and bool((weights > 0).all())
    assert float(weights[3].detach()) == pytest.approx(1.0)  # a one-member group: all weight on it
    # the padded, masked softmax of the same logits (the reference's per-group softmax), computed apart
    logits = net.attention(torch.cat([net.users(users), items[pair]], dim=1)).squeeze(1)
    padded = torch.full((5, 3), float("-inf"))
    padded[pair, torch.tensor([0, 1, 2, 0, 0, 1, 0, 1, 2])] = logits
    expected = torch.softmax(padded, dim=1).nan_to_num(0.0)
    assert torch.allclose(expected[expected > 0], weights, atol=1e-6)
    # a group without members is its group embedding alone
    vector = net.group_vector(torch.tensor([4]), *expand(torch.tensor([3]), starts, flat), items[3:4])
    assert torch.allclose(vector[0], net.groups.weight[4])


def test_member_lists_are_distinct_sorted_and_flat():
    members = pd.DataFrame({"group": [7, 3, 7, 7, 3], "user": [5, 2, 1, 9, 2]})  # group 3 lists user 2 twice
    starts, flat = member_lists(np.array([3, 5, 7]), members, lambda u: np.asarray(u) + 1)
    assert starts.tolist() == [0, 1, 1, 4] and flat.tolist() == [3, 2, 6, 10]


def test_group_scores_do_not_depend_on_member_order_and_equal_a_hand_computation():
    model, dataset = fitted(epochs=1)
    members = dataset.groups[["group", "user"]]
    pairs = pd.DataFrame({"group": np.repeat([0, 5, 10], 4), "item": np.tile([0, 41, 82, 150], 3)})
    scores = model.score_groups(members, pairs)
    shuffled = members.sample(frac=1.0, random_state=1).iloc[::-1]
    assert np.array_equal(scores, model.score_groups(shuffled, pairs))
    # the whole frame or only these groups' members: the same scores, row by row
    assert np.array_equal(scores, model.score_groups(members[members["group"].isin([0, 5, 10])], pairs))
    # by hand, one pair at a time, from the network's parameters (eval mode: no dropout)
    net = model.net.eval()
    with torch.no_grad():
        for (g, i), score in zip(pairs.itertuples(index=False), scores):
            users = torch.tensor(np.sort(members.loc[members["group"] == g, "user"].unique()) + 1)
            e_u, e_i = net.users(users), net.items(torch.tensor([i + 1]))[0]
            logits = torch.stack([net.attention(torch.cat([u, e_i])).squeeze() for u in e_u])
            group = torch.softmax(logits, 0) @ e_u + net.groups(torch.tensor(g + 1))
            expected = net.predict(torch.cat([group * e_i, group, e_i])).item()
            assert score == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_fit_refuses_data_without_a_group_split_in_one_line():
    dataset = tiny()
    from benchmark.core.errors import ConfigError
    with pytest.raises(ConfigError, match="needs a group split"):
        Agree(trainer=TRAINER).fit(dataset.ratings, FitContext(dataset, Groups(labels=pd.Series(dtype=int), k=1, method="x")))


def test_a_tiny_job_through_the_runner_logs_group_metrics_early_stopped_on_group_validation(tracking_uri):
    cfg = compose_with_tests_conf(tracking_uri, "dataset=agree_tiny", "model=agree", "cache.enabled=false",
                                  "trainer.max_epochs=4", "trainer.patience=2", "trainer.progress=false",
                                  "trainer.device=cpu")
    result = run(cfg)
    metrics = result.metrics
    for name in ("hr_at_5", "ndcg_at_5", "hr_at_10", "ndcg_at_10"):
        assert 0 <= metrics[f"group_sampled_{name}"] <= 1 and 0 <= metrics[f"group_full_{name}"] <= 1
    assert metrics["group_sampled_n_cases"] == N_GROUPS
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri)
    history = client.get_metric_history(result.run_id, "val_group_ndcg_at_10")
    assert 1 <= len(history) <= 4 and all(0 <= h.value <= 1 for h in history)


def test_speed_prints_a_trainer_models_epoch_and_a_group_metric_without_rmse(monkeypatch, capsys):
    """benchmark.speed's job mode reads any trained model's epoch from its diagnostics (no rmse on group data)."""
    from benchmark import speed
    from tests.conftest import data_root
    from tests.test_group_protocol import camra_present
    if not camra_present():
        pytest.skip(f"CAMRa2011 files not under {data_root()}")
    from benchmark.run.job import JobResult

    metrics = {**{f"stage_{name}_seconds": 1.0 for name in ("load", "split", "grouping", "predict", "evaluate", "log")},
               "stage_fit_seconds": 12.0, "fit_seconds": 12.0, "seconds_per_epoch": 2.5, "epochs_trained": 4.0,
               "refit_epochs": 2.0, "group_sampled_ndcg_at_10": 0.5838}
    monkeypatch.setattr(speed, "run", lambda cfg, *args, **kwargs: JobResult("run", dict(metrics), pd.DataFrame()))
    figures = speed.main(["--models", "agree", "--skip-pairwise", "dataset=camra2011", f"data.root={data_root()}",
                          "data.download=false"])
    out = capsys.readouterr().out
    assert "  agree: " in out and "(group_sampled_ndcg_at_10 0.5838)" in out
    assert "agree: seconds per epoch 2.500" in out and "over 6 epochs" in out
    assert figures["agree_seconds_per_epoch"] == 2.5 and figures["agree_fit_seconds"] == 12.0


def test_speed_takes_a_key_of_the_timed_model(monkeypatch, capsys):
    """A key that only the timed model has (model.negatives, at the reference code's settings) composes in every
    step of job mode, the protocol timing before the jobs included, and reaches the job's config."""
    from benchmark import speed
    from tests.conftest import data_root
    from tests.test_group_protocol import camra_present
    if not camra_present():
        pytest.skip(f"CAMRa2011 files not under {data_root()}")
    from benchmark.run.job import JobResult

    seen = []

    def fake_run(cfg, *args, **kwargs):
        seen.append((cfg.model.name, cfg.model.negatives, cfg.trainer.optimizer))
        return JobResult("run", {"stage_fit_seconds": 1.0, "fit_seconds": 1.0}, pd.DataFrame())

    monkeypatch.setattr(speed, "run", fake_run)
    speed.main(["--models", "agree", "--skip-pairwise", "dataset=camra2011", f"data.root={data_root()}",
                "data.download=false", "model.negatives=3", "trainer.optimizer=rmsprop"])
    assert seen == [("agree", 3, "rmsprop")]
    assert "protocol (load + split + grouping)" in capsys.readouterr().out


def test_a_group_without_training_rows_is_its_members_alone():
    model, dataset = fitted(epochs=1)
    pairs = pd.DataFrame({"group": [3, 3], "item": [5, 60]})
    members = dataset.groups[dataset.groups["group"] == 3]
    assert float(model.net.groups.weight[4].detach().abs().sum()) > 0  # group 3 trained: its own vector
    # an id the model never trained (beyond every table) with group 3's members: the members alone
    unseen = model.score_groups(members.assign(group=10_000), pairs.assign(group=10_000))
    net = model.net
    with torch.no_grad():
        item = net.items(torch.tensor([6, 61]))
        pair, users = expand(torch.tensor([0, 0]), torch.tensor([0, len(members)]),
                             torch.tensor(np.sort(members["user"].to_numpy()) + 1))
        vector = torch.zeros_like(item).index_add(0, pair, net.attention_weights(pair, users, item)[:, None]
                                                  * net.users(users))
        assert np.allclose(unseen, net.interaction(vector, item).numpy(), atol=1e-6)
