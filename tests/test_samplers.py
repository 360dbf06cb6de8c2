"""The sampler-driven trainer (models/samplers.py, models/trainer.py): BPR negatives, interleaved streams,
and early stopping on a ranking-metric callback, each checked against an independent computation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from benchmark.data.synthetic import load
from benchmark.protocol.folds import Fold
from benchmark.protocol.split import holdout
from models.base import FitContext, RankingMetric
from models.neural_mf import NeuralMF
from models.samplers import Interleaved, PairwiseSampler, RowSampler
from models.trainer import Trainer, TrainerConfig, ValidationLoss, ValidationScore

CONTEXT = FitContext(dataset=SimpleNamespace(name="toy", rating_scale=(1.0, 5.0)), groups=None, seed=0)


def _positives(seed: int = 0, n_queries: int = 40, n_items: int = 25):
    """Random (query, item) positives, items numbered from 1 (0: the unknown id); query 0 has every item
    but one, so its only negative is item 7."""
    rng = np.random.default_rng(seed)
    pairs = {(q, int(i)) for q in range(1, n_queries) for i in rng.choice(np.arange(1, n_items + 1),
                                                                           size=rng.integers(1, n_items), replace=False)}
    pairs |= {(0, i) for i in range(1, n_items + 1) if i != 7}
    query, item = map(torch.tensor, zip(*sorted(pairs)))
    return query, item, pairs, n_items


def _epoch(sampler, seed: int, batch: int = 64):
    return list(sampler.batches(batch, torch.Generator().manual_seed(seed)))


def test_bpr_negatives_are_never_known_positives_and_every_positive_comes_once():
    query, item, pairs, n_items = _positives()
    sampler = PairwiseSampler(query, item, n_items=n_items, negatives=4, item_offset=1)
    batches = _epoch(sampler, seed=5)
    q = torch.cat([b[0] for b in batches]).tolist()
    pos = torch.cat([b[1] for b in batches]).tolist()
    neg = torch.cat([b[2] for b in batches]).tolist()
    assert sorted(zip(q, pos)) == sorted(pairs)  # each positive once per epoch
    assert all(b.stream == "pairs" and b[2].shape == (len(b[0]), 4) for b in batches)
    for user, row in zip(q, neg):  # an independent python check against the set of positives
        assert all(1 <= i <= n_items and (user, i) not in pairs for i in row)
    assert {i for user, row in zip(q, neg) if user == 0 for i in row} == {7}


def test_bpr_negatives_are_seeded_and_reproducible():
    query, item, _, n_items = _positives()
    sampler = PairwiseSampler(query, item, n_items=n_items, negatives=3, item_offset=1)
    first, again, other = _epoch(sampler, 11), _epoch(sampler, 11), _epoch(sampler, 12)
    assert all(torch.equal(a, b) for x, y in zip(first, again) for a, b in zip(x, y))
    assert not all(torch.equal(x[2], y[2]) for x, y in zip(first, other))


def test_bpr_negatives_are_uniform_over_the_items_without_a_known_positive():
    """Counts of one query's negatives over 20,000 draws: a chi-square test against the uniform law on
    the allowed items (computed here from the positives, independently of the sampler)."""
    n_items, known = 12, [2, 3, 5, 11]
    allowed = [i for i in range(n_items) if i not in known]
    sampler = PairwiseSampler(torch.zeros(4, dtype=torch.long), torch.tensor(known), n_items=n_items, negatives=5000)
    negatives = torch.cat([b[2].ravel() for b in _epoch(sampler, 3)]).numpy()
    counts = np.bincount(negatives, minlength=n_items)
    assert counts[known].sum() == 0
    assert stats.chisquare(counts[allowed]).pvalue > 1e-3


def test_bpr_refuses_a_query_with_no_possible_negative():
    with pytest.raises(Exception, match="every item as a known positive"):
        PairwiseSampler(torch.zeros(3, dtype=torch.long), torch.arange(3), n_items=3)


def test_interleaved_streams_alternate_or_mix_in_proportion_each_in_its_own_order():
    users = RowSampler([torch.arange(100)], stream="ignored")
    groups = RowSampler([torch.arange(1000, 1030)])
    alternate = Interleaved({"user": users, "group": groups}, schedule="alternate")
    mixed = Interleaved({"user": users, "group": groups}, schedule="proportional")
    a, m = _epoch(alternate, 4, batch=10), _epoch(mixed, 4, batch=10)
    assert [b.stream for b in a] == ["user", "group"] * 3 + ["user"] * 7
    assert sorted(b.stream for b in m) == sorted(b.stream for b in a)  # 10 user and 3 group batches
    assert [b.stream for b in m] == [b.stream for b in _epoch(mixed, 4, batch=10)]  # seeded
    assert len({tuple(b.stream for b in _epoch(mixed, s, batch=10)) for s in range(8)}) > 1
    for name, rows in (("user", range(100)), ("group", range(1000, 1030))):
        own_a = [b[0] for b in a if b.stream == name]
        own_m = [b[0] for b in m if b.stream == name]
        assert all(torch.equal(x, y) for x, y in zip(own_a, own_m))  # the schedule does not change a stream
        assert sorted(torch.cat(own_a).tolist()) == list(rows)  # every row once
    # in proportion: over many seeds, a stream's share of each position is its share of the batches
    first_half = [sum(b.stream == "group" for b in _epoch(mixed, s, batch=10)[:6]) for s in range(300)]
    assert np.mean(first_half) == pytest.approx(6 * 3 / 13, abs=0.15)


def test_sequential_schedule_runs_each_stream_whole_in_the_given_order_with_its_own_batches():
    users = RowSampler([torch.arange(100)])
    groups = RowSampler([torch.arange(1000, 1030)])
    sequential = Interleaved({"group": groups, "user": users}, schedule="sequential")
    alternate = Interleaved({"group": groups, "user": users}, schedule="alternate")
    s, a = _epoch(sequential, 4, batch=10), _epoch(alternate, 4, batch=10)
    assert [b.stream for b in s] == ["group"] * 3 + ["user"] * 10
    for name in ("group", "user"):  # the same batches as any other schedule, in the stream's own order
        assert all(torch.equal(x[0], y[0]) for x, y in zip([b for b in s if b.stream == name],
                                                            [b for b in a if b.stream == name]))


class _Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


def _mse(net, batch):
    value = ((net.weight - batch[-1].float()) ** 2).mean()
    return value, {"mse": value}


def test_two_streams_train_through_one_trainer_with_losses_averaged_per_example():
    """The trainer does not know the streams: a loss picks its part by ``batch.stream``; a name both streams
    report (``loss``) is averaged over all examples, a stream's own part over its examples."""
    seen = []

    def loss(net, batch):
        seen.append(batch.stream)
        value = ((net.weight - batch[0].float()) ** 2).mean()
        return value, {f"{batch.stream}_mse": value}

    sampler = Interleaved({"user": RowSampler([torch.full((3200,), 1.0)]),
                           "group": RowSampler([torch.full((640,), 3.0)])})
    trainer = Trainer(TrainerConfig(batch_size=32, max_epochs=1, lr=1e-9, progress=False, device="cpu"), 0, "toy")
    result = trainer.fit(_Scalar(), loss, sampler, ValidationLoss(_mse, [torch.ones(4)]), CONTEXT)
    row = result.history[0]
    assert result.batch_size == 32 and seen == ["user", "group"] * 20 + ["user"] * 80
    assert row["train_user_mse"] == pytest.approx(1.0) and row["train_group_mse"] == pytest.approx(9.0)
    assert row["train_loss"] == pytest.approx((3200 * 1.0 + 640 * 9.0) / 3840)


def test_early_stopping_on_a_ranking_metric_stops_at_the_right_epoch_and_keeps_its_weights():
    """A score to maximise: best at epoch 3, patience 2 -> stops after epoch 5 with epoch 3's weights.
    The same numbers as a loss (minimised) would keep epoch 1."""
    scores, weights = [0.2, 0.5, 0.7, 0.69, 0.6, 0.9], []

    def score(net):
        weights.append(net.weight.item())
        return scores[len(weights) - 1]

    config = TrainerConfig(batch_size=8, max_epochs=6, patience=2, lr=0.1, progress=False, device="cpu")
    net = _Scalar()
    validation = ValidationScore(score, "ndcg_at_10", also=ValidationLoss(_mse, [torch.ones(4)]))
    result = Trainer(config, 0, "toy").fit(net, _mse, RowSampler([torch.full((256,), 2.0)]), validation, CONTEXT)
    assert [h["val_ndcg_at_10"] for h in result.history] == scores[:5]
    assert result.best_epoch == 3 and len(result.history) == 5
    assert net.weight.item() == weights[2] != weights[4]  # restored to epoch 3
    assert "val_mse" in result.history[0] and "val_loss" in result.history[0]

    values = iter(scores)
    as_loss = ValidationLoss(lambda net, batch: (torch.tensor(next(values)), {}), [torch.ones(1)])
    result = Trainer(config, 0, "toy").fit(_Scalar(), _mse, RowSampler([torch.full((256,), 2.0)]), as_loss, CONTEXT)
    assert result.best_epoch == 1 and len(result.history) == 3


def _ndcg(frame: pd.DataFrame, k: int = 5) -> float:
    """Mean NDCG@k over users, gains = true ratings, ranked by prediction (an independent numpy version)."""
    values = []
    for _, rows in frame.groupby("user"):
        ranked = rows.sort_values("prediction", ascending=False, kind="stable")["rating"].to_numpy()[:k]
        ideal = np.sort(rows["rating"].to_numpy())[::-1][:k]
        discount = 1 / np.log2(np.arange(2, len(ranked) + 2))
        values.append((ranked * discount).sum() / (ideal * discount).sum())
    return float(np.mean(values))


def test_a_model_early_stops_on_the_ranking_metric_its_context_hands_it():
    dataset = load(n_users=80, n_items=50, n_ratings=2000, n_groups=3)
    (split,) = holdout(dataset.ratings, test_size=0.2, seed=1)
    fold = Fold.from_split(split, seed=1)
    seen = []
    metric = RankingMetric("ndcg_at_5", lambda frame: seen.append(frame) or _ndcg(frame))
    trainer = {"lr": 0.01, "weight_decay": 0.0, "batch_size": 64, "max_epochs": 6, "patience": 6, "val_size": 0.2,
               "device": "cpu", "progress": False, "sparse_embeddings": False,
               "refit": False}  # the kept weights are the early-stopping phase's (compared with its history below)
    model = NeuralMF(factors=4, trainer=trainer, seed=1)
    model.fit(split.train, FitContext(dataset, None, seed=1, fold=fold, ranking_metric=metric))
    history = [h["val_ndcg_at_5"] for h in model.history]
    assert len(history) == 6 and model.best_epoch == 1 + int(np.argmax(history))
    candidates = fold.validation(0.2).val
    assert all(frame[["user", "item", "rating"]].equals(candidates[["user", "item", "rating"]]) for frame in seen)
    kept = _ndcg(candidates.assign(prediction=model.predict(candidates)))  # the restored weights' score
    assert kept == pytest.approx(history[model.best_epoch - 1], abs=1e-12)
    assert "val_rating_loss" in model.history[0]  # the validation MSE is still logged (divergence check)
