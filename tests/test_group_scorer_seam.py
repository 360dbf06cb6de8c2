"""The seam of group models: a model that scores groups itself (tests/toy_group_model.py, a
models.base.GroupScorer reached through tests/conf/model/toy_group.yaml with Hydra's searchpath, no
generic module edited) runs through the same evaluation as a member-aggregated SVD on ITM-Rec's
real groups, and both give exactly what a hand computation from their scores gives.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmark.core.config import instantiate
from benchmark.evaluation import scoring
from benchmark.evaluation.base import EvalContext
from benchmark.evaluation.scoring import DirectGroupScores, MemberAggregation
from benchmark.protocol.candidates import group_test_items
from benchmark.protocol.ranking import tie_key
from benchmark.run.job import run
from tests.conftest import CONF, data_root
from tests.toy_group_model import SHARE_WEIGHT, ToyGroupModel

TESTS_CONF = Path(__file__).resolve().parent / "conf"


def compose_with_tests_conf(tracking_uri: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[
            f"hydra.searchpath=[file://{TESTS_CONF}]", f"tracking.uri={tracking_uri}", f"data.root={data_root()}",
            "artifacts.save_model=false", *overrides])


def hand_listed_metrics(scored: pd.DataFrame, k: int, threshold: float, seed: int) -> dict[str, float]:
    """P@k, R@k, NDCG@k of ``group, item, rating, score[, prediction]`` rows, group by group with plain
    Python: ranked by score, equal scores by the tie key of (seed, group, item), recommended = in the
    top k with a predicted rating (``prediction``, else the score) >= threshold."""
    out = {"precision": [], "recall": [], "ndcg": []}
    for g, rows in scored.groupby("group"):
        rating = rows["prediction"] if "prediction" in rows else rows["score"]
        ranked = sorted(zip(rows["score"], rows["item"], rows["rating"], rating),
                        key=lambda t: (-t[0], int(tie_key(g, t[1], seed))))
        top = ranked[:k]
        recommended = [t for t in top if t[3] >= threshold]
        hits = sum(1 for t in recommended if t[2] >= threshold)
        relevant = sum(1 for t in ranked if t[2] >= threshold)
        out["precision"].append(hits / len(recommended) if recommended else 0.0)
        out["recall"].append(hits / relevant if relevant else 0.0)
        dcg = sum(t[2] / math.log2(n + 2) for n, t in enumerate(top))
        ideal = sorted((t[2] for t in ranked), reverse=True)[:k]
        idcg = sum(r / math.log2(n + 2) for n, r in enumerate(ideal))
        out["ndcg"].append(dcg / idcg if idcg else 0.0)
    return {name: float(np.mean(values)) for name, values in out.items()}


@pytest.mark.slow
def test_a_group_model_and_member_aggregated_svd_through_the_same_evaluation(real_data, tracking_uri, monkeypatch):
    """ITM-Rec's real groups: the toy GroupScorer's group metrics (group_model_*) equal a hand
    computation from its definition, and SVD's (group_mean_* ...) come through the adapter and equal
    a hand computation from its member predictions; both through the same evaluators."""
    calls = {"direct": 0, "adapter": 0}
    for cls, key in ((DirectGroupScores, "direct"), (MemberAggregation, "adapter")):
        original = cls.pairs

        def counted(self, members, pairs, _original=original, _key=key):
            calls[_key] += 1
            return _original(self, members, pairs)
        monkeypatch.setattr(cls, "pairs", counted)

    overrides = ("dataset=itmrec", "grouping=real")
    toy_cfg = compose_with_tests_conf(tracking_uri, *overrides, "model=toy_group")
    toy = run(toy_cfg)
    assert calls["adapter"] == 0 and calls["direct"] > 0
    svd = run(compose_with_tests_conf(tracking_uri, *overrides, "model=svd"))
    assert calls["adapter"] > 0

    k, threshold = int(toy_cfg.eval.k), float(toy_cfg.eval.threshold)
    dataset = instantiate(toy_cfg.dataset.loader, root=toy_cfg.data.root, download=False, verify=True)
    (split,) = instantiate(toy_cfg.split)(dataset.ratings, seed=toy_cfg.seed)
    pd.testing.assert_frame_equal(split.test[["user", "item", "rating"]].reset_index(drop=True),
                                  toy.predictions[["user", "item", "rating"]].reset_index(drop=True))
    members = dataset.groups[["group", "user"]].drop_duplicates()
    truth = dataset.group_ratings[dataset.group_ratings["group"].isin(members["group"])][["group", "item", "rating"]]

    # the toy's own definition, recomputed here: share of members who rated the item in training, blended
    train = split.train
    low, high = dataset.rating_scale
    popularity = train.groupby("item").size() / train.groupby("item").size().max()
    raters = train[["user", "item"]].drop_duplicates().merge(members, on="user").groupby(["group", "item"])["user"].nunique()
    size = members.groupby("group")["user"].nunique()
    share = [raters.get((g, i), 0) / size[g] for g, i in zip(truth["group"], truth["item"])]
    score = low + (high - low) * (SHARE_WEIGHT * np.array(share)
                                  + (1 - SHARE_WEIGHT) * popularity.reindex(truth["item"]).fillna(0).to_numpy())
    seed = int(toy_cfg.seed)
    expected = hand_listed_metrics(truth.assign(score=score), k, threshold, seed)
    for metric, value in expected.items():
        assert toy.metrics[f"group_model_{metric}_at_{k}"] == pytest.approx(value, abs=1e-12), metric
        assert f"group_mean_{metric}_at_{k}" not in toy.metrics
    assert toy.metrics["group_n_groups"] == truth["group"].nunique()
    assert toy.metrics[f"full_group_model_ndcg_at_{k}"] > 0 and f"full_group_mean_ndcg_at_{k}" not in toy.metrics
    # not what aggregating its user predictions would give (those are the popularity term alone)
    assert expected != hand_listed_metrics(truth.assign(score=low + (high - low) * popularity.reindex(
        truth["item"]).fillna(0).to_numpy()), k, threshold, seed)

    # SVD: each member's score before the clip (ranked) and predicted rating (the threshold), each
    # reduced per (group, item), ranked the same way
    model = svd.models[0]
    pairs = truth.merge(members, on="group")
    pairs["score"] = model.raw_scores(pairs[["user", "item"]])
    pairs["prediction"] = model.predict(pairs[["user", "item"]])
    assert (pairs["score"] != pairs["prediction"]).any()  # some member scores are above 5 or below 1
    for name, reduce in {"mean": "mean", "least_misery": "min", "most_pleasure": "max"}.items():
        reduced = pairs.groupby(["group", "item"], as_index=False).agg(score=("score", reduce),
                                                                       prediction=("prediction", reduce))
        expected = hand_listed_metrics(truth.merge(reduced, on=["group", "item"]), k, threshold, seed)
        for metric, value in expected.items():
            assert svd.metrics[f"group_{name}_{metric}_at_{k}"] == pytest.approx(value, abs=1e-12), (name, metric)
    assert not any(key.startswith(("group_model_", "full_group_model_")) for key in svd.metrics)


def test_a_group_models_catalogue_ranking_equals_a_hand_ranking():
    """The full-catalogue group rows of a GroupScorer: its scores of every item, the items all members
    trained on left out, ranked by (-score, tie key) and scored against the group's relevant items."""
    from benchmark.data.synthetic import load as load_synthetic
    from benchmark.evaluation.full_ranking import full_catalogue
    from benchmark.protocol.grouping import kmeans
    from benchmark.protocol.split import holdout
    from models.base import FitContext

    dataset = load_synthetic(n_users=40, n_items=25, n_ratings=500, n_groups=3, seed=5)
    split = holdout(dataset.ratings, test_size=0.3, seed=0)[0]
    groups = kmeans(dataset, split.train, k=3, seed=0)
    model = ToyGroupModel().fit(split.train, FitContext(dataset=dataset, groups=groups))
    frame = split.test.assign(prediction=model.predict(split.test))
    k = 5
    ctx = EvalContext(dataset, split.train, frame, groups, model, OmegaConf.create(
        {"k": k, "threshold": 3.5, "full_catalogue": True, "group": {"aggregations": ["mean"], "min_raters": 1}}))
    per_group = full_catalogue(ctx).tables["per_group_full_metrics"].set_index("group")
    assert set(per_group["aggregation"]) == {scoring.DIRECT}
    items = np.sort(dataset.item_features.index.to_numpy())
    trained = set(zip(split.train["user"], split.train["item"]))
    members = groups.members
    truth = group_test_items(groups, dataset, frame, 1).frame
    for g, users in members.groupby("group")["user"]:
        users = sorted(set(users))
        score = model.score_groups(members[members["group"] == g], pd.DataFrame({"group": g, "item": items}))
        ranked = sorted((n for n, i in enumerate(items) if not all((u, i) in trained for u in users)),
                        key=lambda n: (-score[n], int(tie_key(g, items[n], 0))))
        relevant = set(truth.loc[(truth["group"] == g) & (truth["rating"] >= 3.5), "item"])
        if relevant:
            hits = [items[n] in relevant for n in ranked[:k]]
            assert per_group.loc[g, "precision"] == pytest.approx(sum(hits) / k)
            first = next(r for r, n in enumerate(ranked) if items[n] in relevant)
            assert per_group.loc[g, "mrr"] == pytest.approx(1 / (first + 1))
