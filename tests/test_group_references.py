"""The group-item references popularity_user and members_items, and Weeplaces' held-out protocol
(split=ephemeral, benchmark/evaluation/group_item.py ``group_heldout_*``, eval.mask_member_items):
hand computations on small generated data, then the real files end to end (docs/protocol.md,
"Group recommendation: sampled and full ranking")."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from benchmark.core.errors import ConfigError
from benchmark.data.base import Dataset
from benchmark.data.group_item import GroupItemData
from benchmark.evaluation import group_item
from benchmark.evaluation.base import EvalContext
from benchmark.protocol.folds import Fold
from benchmark.protocol.group_split import GroupFold, ephemeral
from benchmark.protocol.grouping import Groups
from models.base import FitContext
from models.members_items import MembersItems
from models.popularity_user import PopularityUser
from tests.conftest import data_root
from tests.test_group_protocol import camra_present, cli

EMPTY = np.zeros((0, 5), dtype=np.int64)


def dataset_of(ratings: pd.DataFrame, member_rows: pd.DataFrame, n_users: int, n_items: int) -> Dataset:
    return Dataset(name="hand", ratings=ratings, user_features=pd.DataFrame(index=pd.RangeIndex(n_users)),
                   item_features=pd.DataFrame(index=pd.RangeIndex(n_items)), rating_scale=(0.0, 100.0),
                   groups=member_rows)


def groups_of(member_rows: pd.DataFrame) -> Groups:
    labels = member_rows.groupby("user")["group"].min()
    return Groups(labels=labels, k=member_rows["group"].nunique(), method="members", membership=member_rows)


def fitted(model, ratings, member_rows, fold: GroupFold, n_users: int):
    dataset = dataset_of(ratings, member_rows, n_users, fold.n_items)
    context = FitContext(dataset, groups_of(member_rows), fold=Fold(ratings, group=fold))
    return model.fit(ratings, context), dataset


def eval_context(model, dataset, ratings, member_rows, fold, **config) -> EvalContext:
    return EvalContext(dataset, ratings, ratings.assign(prediction=0.0), groups_of(member_rows), model,
                       {"ties": "random", "group": {"aggregations": ["mean"]}, **config}, group_fold=fold)


# ---------------------------------------------------------------------------- a small hand case

# users 0, 1 form group 0, user 2 group 1; user 3 is in no group. Positives (rating > 0):
#   user 0: items 1, 2    user 1: item 3 (and item 4 with rating 0: no interaction)
#   user 2: item 1        user 3: items 1, 4
# user-train counts: item 0 -> 0, 1 -> 3, 2 -> 1, 3 -> 1, 4 -> 1, 5 -> 0 (C = 3)
RATINGS = pd.DataFrame({"user": [0, 0, 1, 1, 2, 3, 3], "item": [1, 2, 3, 4, 1, 1, 4],
                        "rating": [50.0, 20.0, 80.0, 0.0, 5.0, 60.0, 10.0]})
MEMBERS = pd.DataFrame({"group": [0, 0, 1], "user": [0, 1, 2]})
COUNTS = np.array([0, 3, 1, 1, 1, 0], dtype=float)
GRID = pd.DataFrame({"group": np.repeat([0, 1], 6), "item": np.tile(np.arange(6), 2)})


def hand_fold(foldin: pd.DataFrame | None = None) -> GroupFold:
    train = pd.DataFrame({"group": [0, 1], "item": [0, 0]})
    test = pd.DataFrame({"group": [0, 1], "item": [4, 2]})
    return GroupFold(train=train, fit=train, test=test, negatives=np.array([[0, 1, 2, 3, 5], [0, 1, 3, 4, 5]]),
                     val=test.iloc[:0], val_negatives=EMPTY, n_items=6, label="corrected", legacy=False,
                     foldin=foldin)


def test_popularity_user_scores_are_the_user_train_counts_of_positives_for_every_group():
    model, _ = fitted(PopularityUser(), RATINGS, MEMBERS, hand_fold(), n_users=4)
    assert np.array_equal(model.score_groups(MEMBERS, GRID), np.tile(COUNTS, 2))
    assert np.array_equal(model.predict(pd.DataFrame({"user": [0, 3], "item": [1, 9]})), [3.0, 0.0])


def test_popularity_user_sampled_and_full_metrics_equal_a_hand_computation():
    model, dataset = fitted(PopularityUser(), RATINGS, MEMBERS, hand_fold(), n_users=4)
    ctx = eval_context(model, dataset, RATINGS, MEMBERS, hand_fold())
    sampled = group_item.sampled(ctx).metrics
    # group 0: item 4 (count 1) vs 0, 1, 2, 3, 5: item 1 (3) ahead, items 2 and 3 tie with it
    # group 1: item 2 (count 1) vs 0, 1, 3, 4, 5: item 1 ahead, items 3 and 4 tie with it
    # ranks 2..4 each, whatever the tie rule: every case is a hit at 5, none at 1
    assert sampled["group_sampled_hr_at_5"] == 1.0
    assert sampled["group_sampled_pos_ties"] == 1.0
    full = group_item.full(ctx).metrics  # every catalogue item but the group's training item 0
    assert full["group_full_hr_at_5"] == 1.0 and full["group_full_pos_ties"] == 1.0


def test_members_items_ranks_members_items_first_each_part_by_user_train_popularity():
    model, _ = fitted(MembersItems(), RATINGS, MEMBERS, hand_fold(), n_users=4)
    pop = COUNTS / 4.0  # c(i) / (C + 1)
    own = np.zeros((2, 6))
    own[0, [1, 2, 3]] = 1  # group 0: user 0's items 1, 2 and user 1's item 3 (item 4: rating 0, not a positive)
    own[1, [1]] = 1        # group 1: user 2's item 1
    assert np.allclose(model.score_groups(MEMBERS, GRID), (own + pop).ravel())
    # every member item above every other item; within a part, by count
    scores = model.score_groups(MEMBERS, GRID).reshape(2, 6)
    assert scores[0, [1, 2, 3]].min() > scores[0, [0, 4, 5]].max()
    # a user alone: its own items first
    assert np.allclose(model.predict(pd.DataFrame({"user": [3, 3, 3], "item": [4, 2, 0]})), [1 + 0.25, 0.25, 0.0])


def test_members_items_reads_the_fold_in_parts_visible_at_test_time():
    foldin = pd.DataFrame({"user": [2], "item": [5]})  # Weeplaces: a member's fold-in interaction
    model, _ = fitted(MembersItems(), RATINGS, MEMBERS, hand_fold(foldin), n_users=4)
    scores = model.score_groups(MEMBERS, GRID).reshape(2, 6)
    assert scores[1, 5] == 1.0 and scores[0, 5] == 0.0  # member item of group 1, count 0; not of group 0
    assert scores[1, 5] > scores[1, 2]  # a member item of count 0 above a non-member item of count 1


def test_the_references_refuse_data_without_a_group_split_in_one_line():
    for model in (PopularityUser(), MembersItems()):
        with pytest.raises(ConfigError) as refused:
            model.fit(RATINGS, FitContext(dataset_of(RATINGS, MEMBERS, 4, 6), groups_of(MEMBERS),
                                          fold=Fold(RATINGS)))
        assert "needs a group split" in str(refused.value) and "\n" not in str(refused.value)


# ---------------------------------------------------------------------------- held-out items (Weeplaces' protocol)

def test_heldout_metrics_are_groupims_recall_and_ndcg():
    scores = np.array([[5.0, 4, 3, 2, 1, 0], [5.0, 4, 3, 2, 1, 0]])
    relevant = np.array([[0, 1, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0]], dtype=bool)
    excluded = np.array([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=bool)
    recall, ndcg, _ = group_item.heldout_metrics(scores, relevant, excluded, 2, tie=None)
    # row 0: candidates 1, 2, 3, 4, 5 -> top 2 = items 1, 2: one hit of two; row 1: item 3 at rank 4
    assert recall[0] == 0.5 and ndcg[0] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert recall[1] == 0.0 and ndcg[1] == 0.0
    recall, ndcg, _ = group_item.heldout_metrics(scores, relevant, excluded, 4, tie=None)
    # k = 4: row 0 hits both (ranks 1 and 4), hits / min(4, 2) = 1; row 1: rank 4, hits / min(4, 1) = 1
    assert recall.tolist() == [1.0, 1.0]
    assert ndcg[0] == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert ndcg[1] == pytest.approx(1 / math.log2(5))
    # a row whose relevant items are all excluded has no candidate: NaN, left out of the mean
    recall, _, _ = group_item.heldout_metrics(scores, relevant, relevant.copy(), 4, tie=None)
    assert np.isnan(recall).all()


def ephemeral_case() -> tuple[pd.DataFrame, pd.DataFrame, GroupFold]:
    """100 items; users 0..99 make item i's user-train count 100 - i (item 0 the most popular).
    Test groups (disjoint from training group 0):
      group 10 = users 200, 201: fold-in items 0..29 (members' items); held out 5 (a member item) and 40
      group 11 = user 202: fold-in item 90 (below its held-out items); held out 50 and 60
      group 12 = user 203: fold-in item 7; held out 7 only (every held-out item is a member item)"""
    users = np.repeat(np.arange(100), 100 - np.arange(100))
    items = np.concatenate([np.arange(100 - u) for u in range(100)])
    ratings = pd.DataFrame({"user": users, "item": items, "rating": 1.0})
    members = pd.DataFrame({"group": [0, 10, 10, 11, 12], "user": [0, 200, 201, 202, 203]})
    foldin = pd.DataFrame({"user": [200] * 30 + [202, 203], "item": [*range(30), 90, 7]})
    train = pd.DataFrame({"group": [0], "item": [99]})
    test = pd.DataFrame({"group": [10, 10, 11, 11, 12], "item": [5, 40, 50, 60, 7]})
    fold = GroupFold(train=train, fit=train, test=test, negatives=None, val=train.iloc[:0], val_negatives=None,
                     n_items=100, label="ephemeral (shipped groups)", legacy=False, heldout=True, foldin=foldin)
    return ratings, members, fold


def heldout_run(mask: bool, caplog=None):
    ratings, members, fold = ephemeral_case()
    model, dataset = fitted(PopularityUser(), ratings, members, fold, n_users=204)
    ctx = eval_context(model, dataset, ratings, members, fold, mask_member_items=mask)
    return group_item.heldout(ctx).metrics, ctx


def test_heldout_protocol_equals_a_hand_computation_unmasked():
    metrics, _ = heldout_run(mask=False)
    ideal2 = 1 + 1 / math.log2(3)
    # group 10: ranks 6 and 41; group 11: ranks 51 and 61; group 12: rank 8 (no training item to exclude)
    recall20 = [1 / 2, 0 / 2, 1 / 1]
    ndcg20 = [1 / math.log2(7) / ideal2, 0.0, 1 / math.log2(9)]
    recall50 = [2 / 2, 0 / 2, 1.0]
    ndcg50 = [(1 / math.log2(7) + 1 / math.log2(42)) / ideal2, 0.0, 1 / math.log2(9)]
    assert metrics["group_heldout_recall_at_20"] == pytest.approx(np.mean(recall20))
    assert metrics["group_heldout_ndcg_at_20"] == pytest.approx(np.mean(ndcg20))
    assert metrics["group_heldout_recall_at_50"] == pytest.approx(np.mean(recall50))
    assert metrics["group_heldout_ndcg_at_50"] == pytest.approx(np.mean(ndcg50))
    assert metrics["group_heldout_n_groups"] == 3 and metrics["group_heldout_n_groups_without_candidate"] == 0
    assert not any(name.startswith("group_heldout_masked_") for name in metrics)


def test_masking_members_items_removes_exactly_those_candidates():
    metrics, _ = heldout_run(mask=True)
    # group 10: items 0..29 leave the candidates, and with them held-out item 5: item 40 is the one
    # relevant candidate, behind 30..39 -> rank 11: recall 1 / min(k, 1), NDCG 1 / log2(12)
    # group 11: item 90 leaves, below both held-out items: its ranks (51, 61) and metrics do not move
    # group 12: its only held-out item is a member item: no candidate left, not averaged
    assert metrics["group_heldout_masked_recall_at_20"] == pytest.approx(np.mean([1.0, 0.0]))
    assert metrics["group_heldout_masked_ndcg_at_20"] == pytest.approx(np.mean([1 / math.log2(12), 0.0]))
    assert metrics["group_heldout_masked_recall_at_50"] == pytest.approx(np.mean([1.0, 0.0]))
    assert metrics["group_heldout_masked_n_groups"] == 2
    assert metrics["group_heldout_masked_n_groups_without_candidate"] == 1
    assert not any(name.startswith("group_heldout_recall") for name in metrics)  # no collision with the default


def test_sampled_and_single_positive_full_protocols_are_skipped_with_their_reason(caplog):
    _, ctx = heldout_run(mask=False)
    with caplog.at_level(logging.INFO, logger="benchmark.evaluation.group_item"):
        assert group_item.sampled(ctx).metrics == {}
        assert group_item.full(ctx).metrics == {}
    assert "group_sampled: skipped: the ephemeral (shipped groups) split has no sampled negatives" in caplog.text
    assert "group_full: skipped" in caplog.text


def test_heldout_protocol_does_not_depend_on_the_chunk_size(monkeypatch):
    whole, _ = heldout_run(mask=False)
    monkeypatch.setattr(group_item, "CHUNK_CELLS", 100)  # one group per chunk
    assert heldout_run(mask=False)[0] == pytest.approx(whole)


def test_the_heldout_protocol_runs_only_on_a_heldout_split():
    model, dataset = fitted(PopularityUser(), RATINGS, MEMBERS, hand_fold(), n_users=4)
    assert group_item.heldout(eval_context(model, dataset, RATINGS, MEMBERS, hand_fold())).metrics == {}


def generated_weeplaces(with_val: bool = True) -> Dataset:
    members = pd.DataFrame({"group": [0, 0, 1, 2, 2], "user": [0, 1, 1, 2, 3]})
    user_train = pd.DataFrame({"user": [0, 1], "item": [1, 2]})
    data = GroupItemData(members=members, user_train=user_train, user_test=pd.DataFrame({"user": [3], "item": [4]}),
                         group_train=pd.DataFrame({"group": [0], "item": [1]}),
                         group_test=pd.DataFrame({"group": [2, 2], "item": [3, 4]}), n_users=4, n_items=5,
                         n_groups=3, implicit=True,
                         group_val=pd.DataFrame({"group": [1], "item": [2]}) if with_val else None,
                         user_val_foldin=pd.DataFrame({"user": [2], "item": [0]}),
                         user_test_foldin=pd.DataFrame({"user": [3], "item": [3]}))
    ratings = user_train.assign(rating=1.0)
    return Dataset(name="generated", ratings=ratings, user_features=pd.DataFrame(index=pd.RangeIndex(4)),
                   item_features=pd.DataFrame(index=pd.RangeIndex(5)), rating_scale=(0.0, 1.0), groups=members,
                   group_item=data)


def test_ephemeral_split_is_the_shipped_group_partition():
    (split,) = ephemeral(None, seed=3, dataset=generated_weeplaces())
    fold = split.group
    assert fold.heldout and fold.negatives is None and fold.val_negatives is None and not fold.legacy
    assert fold.test.values.tolist() == [[2, 3], [2, 4]] and fold.val.values.tolist() == [[1, 2]]
    assert fold.foldin.values.tolist() == [[2, 0], [3, 3]]
    assert fold.stats["n_test_groups"] == 1 and fold.n_items == 5


def test_ephemeral_split_refuses_a_dataset_without_shipped_groups_in_one_line():
    with pytest.raises(ConfigError) as refused:
        ephemeral(None, dataset=generated_weeplaces(with_val=False))
    assert "split=ephemeral" in str(refused.value) and "\n" not in str(refused.value)


# ---------------------------------------------------------------------------- the real files, end to end

@pytest.mark.slow
@pytest.mark.parametrize("model", ["popularity_user", "members_items"])
def test_camra2011_references_end_to_end(tmp_path, model):
    if not camra_present():
        pytest.skip(f"CAMRa2011 files not under {data_root()}")
    proc = cli(tmp_path, "dataset=camra2011", f"model={model}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    assert "group sampled, corrected split: HR@5" in proc.stdout and "group full, corrected split: HR@5" in proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("groupbench").experiment_id])
    metrics = run.data.metrics
    for name in ("hr_at_5", "ndcg_at_5", "hr_at_10", "ndcg_at_10"):
        assert 0 < metrics[f"group_sampled_{name}"] <= 1 and 0 < metrics[f"group_full_{name}"] <= 1
    assert metrics["group_sampled_n_cases"] == 1450


def weeplaces_present() -> bool:
    return (data_root() / "group-rec" / "weeplaces").is_dir()


@pytest.mark.slow
def test_weeplaces_popularity_user_end_to_end_logs_recall_and_ndcg_at_20_and_50(tmp_path):
    if not weeplaces_present():
        pytest.skip(f"Weeplaces files not under {data_root()}")
    proc = cli(tmp_path, "dataset=weeplaces", "model=popularity_user")
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    assert "group held-out, ephemeral split: Recall@20" in proc.stdout
    assert "group_sampled: skipped: the ephemeral (shipped groups) split has no sampled negatives" in proc.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("groupbench").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["group_split"] == "ephemeral (shipped groups)"
    metrics = run.data.metrics
    for k in (20, 50):
        assert 0 < metrics[f"group_heldout_recall_at_{k}"] <= 1 and 0 < metrics[f"group_heldout_ndcg_at_{k}"] <= 1
    assert metrics["group_heldout_n_groups"] == 4547 and metrics["group_split_n_test_groups"] == 4547
    assert not any(name.startswith(("group_sampled_", "group_full_")) for name in metrics)
