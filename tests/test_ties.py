"""Ties never decide a metric (docs/protocol.md, "Ties"): a model that clips its scores to the rating
scale is ranked by the scores before the clip, remaining ties fall by a seeded random permutation
(not by item id), the share of queries with a tie across the cut-off is logged, and the report
flags the rows where it is high. Each test failed on the item-id rule on clipped scores (f7c82e2..73985c4).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from benchmark.data.synthetic import load as load_synthetic
from benchmark.evaluation.base import EvalContext, Scorer, user_level
from benchmark.evaluation.full_ranking import full_catalogue
from benchmark.protocol.grouping import kmeans
from benchmark.protocol.ranking import tie_key
from benchmark.protocol.split import holdout
from benchmark.report.sections.ties import flagged
from models.base import FitContext, RawScores, Recommender

K = 5
CONFIG = OmegaConf.create({"k": K, "threshold": 3.5, "full_catalogue": True,
                           "group": {"aggregations": ["mean"], "min_raters": 1}})


class Overshooting(Recommender):
    """Scores every item above the scale's top by a different margin (a user bias and an item
    term), clipped to 5 for its rating: by its clipped rating every item ties."""

    name = "overshooting"

    def fit(self, train, context):
        self.scale = context.rating_scale
        return self

    def raw_scores(self, pairs):
        return 6.0 + 0.01 * pairs["user"].to_numpy() + np.sin(pairs["item"].to_numpy() * 1.7)

    def clip_rating(self, scores):
        return np.clip(scores, *self.scale)

    def predict(self, pairs):
        return self.clip_rating(self.raw_scores(pairs))


@pytest.fixture(scope="module")
def small():
    dataset = load_synthetic(n_users=30, n_items=25, n_ratings=300, n_groups=3, seed=3)
    split = holdout(dataset.ratings, test_size=0.3, seed=0)[0]
    groups = kmeans(dataset, split.train, k=3, seed=0)
    return dataset, split, groups


def evaluated(model, dataset, split, groups, seed=0):
    model.fit(split.train, FitContext(dataset=dataset, groups=groups, seed=seed))
    rating, score = Scorer(model).scored(split.test, "test pairs")
    frame = split.test[["user", "item", "rating"]].assign(prediction=rating)
    if isinstance(model, RawScores):
        frame["score"] = score
    return EvalContext(dataset, split.train, frame, groups, model, CONFIG, seed=seed)


def test_a_clipping_model_is_ranked_by_its_score_before_the_clip(small):
    dataset, split, groups = small
    model = Overshooting()
    assert isinstance(model, RawScores)
    ctx = evaluated(model, dataset, split, groups)
    assert (ctx.predictions["prediction"] == 5.0).all()  # its ratings: all tied at the top of the scale
    users = user_level(ctx)
    full = full_catalogue(ctx)
    # its scores have no ties: nothing was decided by the tie rule, in either candidate set
    assert users.metrics[f"ties_at_{K}"] == 0.0 and full.metrics[f"full_ties_at_{K}"] == 0.0
    assert full.metrics[f"full_group_mean_ties_at_{K}"] == 0.0
    # the catalogue top k of each user: the k largest raw scores among the items not trained on
    table = full.tables["per_user_full_metrics"].set_index("user")
    items = np.sort(dataset.item_features.index.to_numpy())
    trained = set(zip(split.train["user"], split.train["item"]))
    relevant = split.test[split.test["rating"] >= 3.5]
    for user in table.index[table["n_relevant"] > 0]:
        candidates = [i for i in items if (user, i) not in trained]
        raw = model.raw_scores(pd.DataFrame({"user": user, "item": candidates}))
        top = [candidates[n] for n in np.argsort(-raw, kind="stable")[:K]]
        hits = len(set(top) & set(relevant.loc[relevant["user"] == user, "item"]))
        assert table.loc[user, "precision"] == pytest.approx(hits / K)
    # the test-items ranking too: its per-user precision from the raw order, by hand
    per_user = users.tables["per_user_metrics"].set_index("user")
    for user, rows in ctx.predictions.groupby("user"):
        order = rows.sort_values("score", ascending=False)
        top = order.head(K)
        hits = int(((top["rating"] >= 3.5) & (top["prediction"] >= 3.5)).sum())
        assert per_user.loc[user, "precision"] == pytest.approx(hits / len(top))


def test_ties_fall_by_a_seeded_permutation_not_by_item_id():
    """Among 10 tied items, item 0 lands at each position about equally often over 2,000 queries
    (by item id it would always be first), and another seed permutes them otherwise."""
    queries = np.arange(2000)[:, None]
    items = np.arange(10)[None, :]
    ranks = np.argsort(np.argsort(tie_key(queries, items, seed=0), axis=1), axis=1)
    counts = np.bincount(ranks[:, 0], minlength=10)
    assert counts.min() > 140 and counts.max() < 260, counts  # expected 200 each
    assert (tie_key(queries, items, 0) == tie_key(queries, items, 0)).all()  # deterministic
    other = np.argsort(np.argsort(tie_key(queries, items, seed=1), axis=1), axis=1)
    assert (other != ranks).any(axis=1).mean() > 0.9
    # strings and integers alike: the same id gives the same key
    assert tie_key("u1", "i9", 3) == tie_key(np.array(["u1"]), np.array(["i9"]), 3)[0]


def test_the_constant_predictor_ties_everywhere_and_says_so(small):
    dataset, split, groups = small
    from models.reference import Constant

    ctx = evaluated(Constant(value="top"), dataset, split, groups)
    users, full = user_level(ctx), full_catalogue(ctx)
    per_user = users.tables["per_user_metrics"]
    # every user with more than K test items has a tie across the cut-off; the others cannot
    n_test = split.test.groupby("user").size()
    assert users.metrics[f"ties_at_{K}"] == pytest.approx((n_test > K).mean())
    assert per_user.set_index("user")["tie_at_cutoff"].eq((n_test > K).astype(float)).all()
    assert full.metrics[f"full_ties_at_{K}"] == 1.0
    # the catalogue P@k of ties is not the P@k of the lowest item ids: seeds move it
    values = {full_catalogue(evaluated(Constant(value="top"), dataset, split, groups, seed=s))
              .metrics[f"full_precision_at_{K}"] for s in range(4)}
    assert len(values) > 1


def test_the_report_flags_rows_with_many_ties():
    runs = pd.DataFrame({"dataset": ["d"] * 4, "label": ["A", "A", "B", "B"],
                         "ties_at_10": [0.0, 0.02, 0.9, 1.0], "full_ties_at_10": [0.06, 0.08, 0.0, 0.0],
                         "group_mean_ties_at_10": [0.0, 0.0, 0.5, 0.7]})
    table = flagged(runs, 10)
    got = {(r.configuration, r.metric): r.share for r in table.itertuples()}
    assert got == pytest.approx({("A", "full_ties_at_10"): 0.07, ("B", "ties_at_10"): 0.95,
                                 ("B", "group_mean_ties_at_10"): 0.6})
    assert set(table["candidates"]) == {"full catalogue", "test items", "groups, test items (mean)"}
