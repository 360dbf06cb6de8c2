"""One scoring path for users and groups: candidates (benchmark/protocol/candidates.py), group scores
(benchmark/evaluation/scoring.py: a GroupScorer's own or the member-aggregation adapter), the one tie
rule (benchmark/protocol/ranking.py) and the model clock without patching. The toy group model end to
end: tests/test_group_scorer_seam.py.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from benchmark.core.errors import ConfigError
from benchmark.evaluation import full_ranking, scoring
from benchmark.evaluation.base import EVALUATORS, EvalContext, Scorer, evaluate, model_clock
from benchmark.evaluation.metrics import rank_by_prediction, rank_metrics
from benchmark.evaluation.pipeline import rank_catalogue, user_chunks
from benchmark.evaluation.scoring import (
    AGGREGATIONS,
    DirectGroupScores,
    MemberAggregation,
    aggregate,
    group_scores_of,
    member_predictions,
)
from benchmark.protocol import ranking
from benchmark.protocol.candidates import (
    CatalogueCandidates,
    PairIndex,
    group_catalogue,
    group_test_items,
    user_catalogue,
)
from benchmark.protocol.grouping import Groups
from models.base import GroupScorer, Recommender
from models.reference import Constant
from tests.toy_group_model import ToyGroupModel


class Table(Recommender):
    """Predictions from a (user, item) -> rating table, 3.0 elsewhere; records every predict call."""

    name = "table"

    def __init__(self, table: dict | None = None):
        self.table, self.calls = table or {}, []

    def fit(self, train, context):
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        self.calls.append(pairs[["user", "item"]].copy())
        return np.array([self.table.get((u, i), 3.0) for u, i in zip(pairs["user"], pairs["item"])])


# ---------------------------------------------------------------------------- candidates

def test_group_catalogue_excludes_only_what_every_member_trained_on():
    members = pd.DataFrame({"group": [1, 1, 2, 2, 2], "user": [10, 11, 12, 12, 13]})  # 12 listed twice
    train = pd.DataFrame({"user": [10, 11, 10, 12, 13, 13], "item": [5, 5, 6, 7, 7, 8], "rating": 4.0})
    truth = pd.DataFrame({"group": [1, 1, 2], "item": [6, 8, 8], "rating": [4.0, 2.0, 5.0]})
    items = pd.Index([5, 6, 7, 8])
    candidates = group_catalogue(items, members, train, truth, threshold=3.5)
    assert candidates.queries.tolist() == [1, 2]
    excluded, relevant = candidates.matrices(0, 2)
    # group 1: item 5 (both members), not 6 (one of two); group 2: item 7 (12 and 13), not 8 (13 only)
    assert excluded.tolist() == [[True, False, False, False], [False, False, True, False]]
    assert relevant.tolist() == [[False, True, False, False], [False, False, False, True]]
    users = user_catalogue(items, np.array([10, 13]), train, pd.DataFrame({"user": [13], "item": [5], "rating": [4.0]}), 3.5)
    assert users.matrices(0, 2)[0].tolist() == [[True, True, False, False], [False, False, True, True]]
    assert users.matrices(1, 2)[1].tolist() == [[True, False, False, False]]


def test_group_test_items_kmeans_truth_real_ratings_and_refusal():
    labels = pd.Series([0, 0, 1], index=[1, 2, 3])
    test = pd.DataFrame({"user": [1, 2, 3, 2], "item": [7, 7, 7, 8], "rating": [5.0, 3.0, 1.0, 4.0]})
    kmeans = group_test_items(Groups(labels, 2, "kmeans"), None, test, min_raters=2)
    assert kmeans.key == "group" and kmeans.rated
    assert kmeans.frame[["group", "item", "rating"]].values.tolist() == [[0, 7, 4.0]]

    class Data:
        name = "tiny"
        group_ratings = pd.DataFrame({"group": [5, 6, 9], "item": [7, 8, 7], "rating": [2.0, 4.0, 1.0]})

    real = Groups(labels, 2, "real", membership=pd.DataFrame({"group": [5, 6], "user": [1, 2]}))
    assert group_test_items(real, Data(), test, 1).frame.values.tolist() == [[5, 7, 2.0], [6, 8, 4.0]]
    Data.group_ratings = None
    with pytest.raises(ConfigError, match="grouping=real: dataset tiny has no group ratings"):
        group_test_items(real, Data(), test, 1)


# ---------------------------------------------------------------------------- the tie rule

def reversed_ties(queries, items, seed=0):
    """Another rule for the test: among equal scores, the HIGHER item id first."""
    items = np.broadcast_arrays(np.asarray(queries), np.asarray(items))[1]
    return (np.iinfo(np.int64).max - items.astype(np.int64)).astype(np.uint64)


@pytest.mark.parametrize("rule", ["seeded", "reversed"])
def test_every_ranking_follows_the_one_tie_rule(monkeypatch, rule):
    """Changing benchmark.protocol.ranking.tie_key alone changes the order of ties in the listed
    metrics, the catalogue top k (and first relevant rank) and Recommender.rank alike; the seeded
    rule orders ties by its key of (seed, query, item) in all three."""
    seed = 7
    if rule == "reversed":
        monkeypatch.setattr(ranking, "tie_key", reversed_ties)
    tie = ((lambda q, i: int(ranking.tie_key(q, i, seed))) if rule == "seeded" else (lambda q, i: -i))
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"user": rng.integers(0, 5, 200), "item": rng.permutation(200),
                          "rating": 3.0, "prediction": rng.integers(1, 4, 200) / 1.0})
    ranked = rank_by_prediction(frame, seed)
    expected = sorted(range(len(frame)),
                      key=lambda r: (frame.user[r], -frame.prediction[r], tie(frame.user[r], frame.item[r])))
    assert ranked["item"].tolist() == frame["item"].to_numpy()[expected].tolist()

    items = pd.Index(np.arange(12) * 3)
    scores = rng.integers(0, 3, (4, 12)).astype(float)  # heavy ties
    train = pd.DataFrame({"user": [0, 1], "item": [items[2], items[5]]})
    test = pd.DataFrame({"user": [0, 1, 2, 3, 3], "item": items[[1, 4, 7, 10, 11]], "rating": 5.0})
    candidates = user_catalogue(items, np.arange(4), train, test, 3.5)
    table, top = rank_catalogue(candidates, user_chunks(candidates, lambda users: scores[users]), k=4, seed=seed)["user"]
    excluded, relevant = candidates.matrices(0, 4)
    for row in range(4):
        order = sorted((j for j in range(12) if not excluded[row, j]),
                       key=lambda j: (-scores[row, j], tie(row, items[j])))
        assert top[row].tolist() == order[:4]
        first = next(n for n, j in enumerate(order) if relevant[row, j])
        assert table["mrr"].iloc[row] == pytest.approx(1 / (first + 1))
        # a tie across the cut-off: the 4th and 5th candidates have equal scores
        assert table["tie_at_cutoff"].iloc[row] == float(scores[row, order[3]] == scores[row, order[4]])

    constant = Constant(value="top")
    constant.constant = 5.0
    assert constant.rank(1, [4, 2, 9, 7], k=3, seed=seed)["item"].tolist() == \
        sorted([4, 2, 9, 7], key=lambda i: tie(1, i))[:3]


def test_rank_metrics_with_a_tie_key_equals_reordered_columns():
    """A tie key that reverses the columns ranks exactly like the reversed matrix ranked by position."""
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 2, (3, 9)).astype(float)
    excluded, relevant = rng.random((3, 9)) < 0.2, rng.random((3, 9)) < 0.4
    relevant &= ~excluded
    tie = np.tile(np.arange(9)[::-1].astype(np.uint64), (3, 1))
    table, top = rank_metrics(scores, excluded, relevant, 4, tie=tie)
    flipped, flipped_top = rank_metrics(scores[:, ::-1], excluded[:, ::-1], relevant[:, ::-1], 4)
    pd.testing.assert_frame_equal(table, flipped)
    assert (top == np.where(flipped_top >= 0, 8 - flipped_top, -1)).all()


# ---------------------------------------------------------------------------- the member-aggregation adapter

@pytest.fixture
def overlapping():
    rng = np.random.default_rng(11)
    members = pd.DataFrame({"group": rng.integers(0, 8, 60), "user": rng.integers(0, 40, 60)})
    members = members.drop_duplicates().sort_values("group", kind="stable", ignore_index=True)
    items = np.arange(15)
    table = {(u, i): float(rng.normal(3, 1)) for u in range(40) for i in items}
    return members, items, table


def test_adapter_pairs_equal_the_old_member_predictions_and_aggregate(overlapping):
    """The adapter's listed scores are bit for bit the old two-step path: every member's prediction
    (member_predictions), then each registered aggregation over (group, item) (aggregate)."""
    members, items, table = overlapping
    rng = np.random.default_rng(2)
    pairs = (pd.DataFrame({"group": rng.integers(0, 8, 70), "item": rng.choice(items, 70)}).drop_duplicates()
             .sort_values(["group", "item"], ignore_index=True))
    pairs = pairs[pairs["group"].isin(members["group"])].reset_index(drop=True)
    model = Table(table)
    adapter = MemberAggregation(Scorer(model), list(AGGREGATIONS))
    scores = adapter.pairs(members, pairs)
    assert sum(len(call) for call in model.calls) == len(pd.concat(model.calls).drop_duplicates())  # once per pair
    old = member_predictions(Table(table), members, pairs)
    for name in AGGREGATIONS:
        expected = aggregate(old, name)
        assert expected[["group", "item"]].values.tolist() == pairs.values.tolist()
        rating, score = scores[name]
        assert score is rating  # a model that does not clip: its rating is what ranks
        np.testing.assert_array_equal(rating, expected["prediction"].to_numpy())


def test_adapter_matrix_equals_a_per_group_reduction_and_the_pair_scores(overlapping):
    members, items, table = overlapping
    adapter = MemberAggregation(Scorer(Table(table)), list(AGGREGATIONS))
    matrix = adapter.matrix(members, items)
    groups = np.unique(members["group"])
    all_pairs = pd.DataFrame({"group": np.repeat(groups, len(items)), "item": np.tile(items, len(groups))})
    listed = adapter.pairs(members, all_pairs)
    for name, reduce in {"mean": np.mean, "least_misery": np.min, "most_pleasure": np.max}.items():
        assert matrix[name].shape == (len(groups), len(items))
        for row, g in enumerate(groups):
            users = members.loc[members["group"] == g, "user"]
            expected = reduce([[table[(u, i)] for i in items] for u in users], axis=0)
            np.testing.assert_allclose(matrix[name][row], expected, rtol=1e-14)
        np.testing.assert_allclose(listed[name][1], matrix[name].ravel(), rtol=1e-14)


def test_group_scores_of_picks_the_models_own_scores_for_a_group_scorer():
    assert isinstance(ToyGroupModel(), GroupScorer) and not isinstance(Table(), GroupScorer)
    assert isinstance(group_scores_of(Scorer(ToyGroupModel()), ["mean"]), DirectGroupScores)
    assert isinstance(group_scores_of(Scorer(Table()), ["mean"]), MemberAggregation)
    assert DirectGroupScores.strategies == [scoring.DIRECT]


# ---------------------------------------------------------------------------- the model clock

class Slow(Recommender):
    """Every method sleeps; each call checks that the model is not patched (nothing on the instance)."""

    name = "slow"
    seen: list

    def fit(self, train, context):
        return self

    def _check(self):
        self.seen.append(sorted(vars(self)))
        assert type(self).predict is Slow.predict and "predict" not in vars(self)

    def predict(self, pairs):
        self._check()
        time.sleep(0.02)
        return np.full(len(pairs), 3.0)

    def score_all(self, users, items):  # calls predict: one call for the clock, not two
        self._check()
        return self.predict(pd.DataFrame({"user": np.repeat(users, len(items)),
                                          "item": np.tile(items, len(users))})).reshape(len(users), len(items))

    def predict_groups(self, users):
        self._check()
        time.sleep(0.02)
        return np.zeros(len(users), dtype=int)


def test_model_clock_counts_scorer_calls_once_and_never_patches_the_model():
    model = Slow()
    model.seen = []
    before = dict(vars(model))
    frame = pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [4.0, 2.0], "prediction": [3.0, 3.0]})
    ctx = EvalContext(None, frame, frame, Groups(pd.Series([0, 1], index=[1, 2]), 2, "kmeans"), model,
                      OmegaConf.create({"k": 2, "threshold": 3.5}))
    started = time.perf_counter()
    with model_clock(ctx) as clock:
        ctx.scorer.score_matrix(np.arange(2), np.arange(3))      # score_all -> predict: 0.02 s, once
        ctx.scorer.predict(frame[["user", "item"]])               # 0.02 s
        ctx.scorer.predict_groups(np.array([1, 2]))               # 0.02 s
        time.sleep(0.05)                                          # the harness's own time: not counted
    elapsed = time.perf_counter() - started
    assert 0.06 <= clock.seconds < elapsed - 0.04
    assert ctx.clock.seconds == pytest.approx(clock.seconds)
    assert vars(model).keys() == before.keys() | {"seen"} and all(keys == ["seen"] for keys in model.seen)


def test_evaluation_reaches_the_model_only_through_its_scorer(monkeypatch):
    """Every evaluator's model call goes through ctx.scorer: a model whose methods refuse to run
    outside a Scorer-timed call still evaluates, and the clock holds the time of those calls."""
    from benchmark.data.synthetic import load as load_synthetic
    from benchmark.protocol.grouping import kmeans
    from benchmark.protocol.split import holdout

    # every evaluator is registered: this module imports benchmark.evaluation.groups and full_ranking
    dataset = load_synthetic(n_users=40, n_items=20, n_ratings=400, n_groups=3, seed=2)
    split = holdout(dataset.ratings, test_size=0.3, seed=0)[0]
    groups = kmeans(dataset, split.train, k=3, seed=0)
    model = Slow()
    model.seen = []
    frame = split.test.assign(prediction=3.0)
    ctx = EvalContext(dataset, split.train, frame, groups, model, OmegaConf.create(
        {"k": 3, "threshold": 3.5, "full_catalogue": True, "group": {"aggregations": ["mean"], "min_raters": 1}}))
    inside = []
    original = ctx.clock.timed

    def timed(method):
        call = original(method)

        def wrapped(*args, **kwargs):
            inside.append(method.__name__)
            return call(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(ctx.clock, "timed", timed)
    result = evaluate(ctx)
    assert {"group_kmeans", "full_catalogue"} <= set(EVALUATORS) and full_ranking
    assert result.metrics["full_group_mean_ndcg_at_3"] >= 0 and "profile_accuracy" in result.metrics
    assert set(inside) == {"predict", "score_all", "predict_groups"}
    assert len(model.seen) == len(inside) + inside.count("score_all")  # score_all's inner predict only
    assert ctx.clock.seconds >= 0.02 * len(inside)


def test_catalogue_candidates_read_by_ranges():
    frame = pd.DataFrame({"user": [3, 1, 3], "item": [20, 10, 10]})
    index = PairIndex(frame, "user", pd.Index([1, 2, 3]), pd.Index([10, 20]))
    candidates = CatalogueCandidates("user", pd.Index([1, 2, 3]), pd.Index([10, 20]), index, index)
    assert candidates.matrices(1, 3)[0].tolist() == [[False, False], [True, True]]
