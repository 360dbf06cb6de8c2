"""Metrics against hand-computed cases and independent implementations."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score

from benchmark.evaluation.metrics import per_user_metrics, summarize


def frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "rating", "prediction"])


def test_faq_rule_hand_computed():
    # user 1: top-2 by prediction are items 1 (4.5) and 2 (4.0); item 3 (3.9) is cut by k=2.
    # relevant (true >= 3.5): items 1, 3 -> P@2 = 1/2, R@2 = 1/2
    # user 2: no prediction reaches the threshold -> nothing recommended -> P = 0, R = 0
    # user 3: nothing relevant -> R = 0; recommended {1} not relevant -> P = 0
    preds = frame([
        (1, 1, 4.0, 4.5), (1, 2, 2.0, 4.0), (1, 3, 5.0, 3.9),
        (2, 1, 5.0, 3.0), (2, 2, 4.0, 2.0),
        (3, 1, 2.0, 4.0), (3, 2, 1.0, 1.0),
    ])
    table = per_user_metrics(preds, k=2, threshold=3.5)
    assert table.loc[1, "precision"] == pytest.approx(0.5) and table.loc[1, "recall"] == pytest.approx(0.5)
    assert table.loc[2, "precision"] == 0.0 and table.loc[2, "recall"] == 0.0
    assert table.loc[3, "precision"] == 0.0 and table.loc[3, "recall"] == 0.0
    assert table.loc[1, "n_test"] == 3
    # user 1 rmse: errors 0.5, 2.0, -1.1
    assert table.loc[1, "user_rmse"] == pytest.approx(np.sqrt((0.25 + 4.0 + 1.21) / 3))
    summary = summarize(preds, k=2, threshold=3.5)
    assert summary["precision_at_2"] == pytest.approx(0.5 / 3)


def surprise_faq_precision_recall(predictions, k, threshold):
    """The Surprise FAQ's precision_recall_at_k, transcribed as an independent reference."""
    user_est_true = defaultdict(list)
    for uid, _, true_r, est in predictions:
        user_est_true[uid].append((est, true_r))
    precisions, recalls = {}, {}
    for uid, user_ratings in user_est_true.items():
        user_ratings.sort(key=lambda x: x[0], reverse=True)
        n_rel = sum(true_r >= threshold for (_, true_r) in user_ratings)
        n_rec_k = sum(est >= threshold for (est, _) in user_ratings[:k])
        n_rel_and_rec_k = sum((true_r >= threshold) and (est >= threshold) for (est, true_r) in user_ratings[:k])
        precisions[uid] = n_rel_and_rec_k / n_rec_k if n_rec_k != 0 else 0
        recalls[uid] = n_rel_and_rec_k / n_rel if n_rel != 0 else 0
    return precisions, recalls


def random_predictions(seed=0, n_users=40):
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        n = rng.integers(1, 25)
        items = rng.choice(500, n, replace=False)
        # distinct predictions (no ties) so orderings are unambiguous
        preds = rng.permutation(np.linspace(1, 5, n)) + rng.normal(0, 1e-6, n)
        rows += [(user, int(i), float(rng.integers(1, 6)), float(p)) for i, p in zip(items, preds)]
    return frame(rows)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_precision_recall_match_surprise_faq(k):
    preds = random_predictions()
    table = per_user_metrics(preds, k=k, threshold=3.5)
    p_ref, r_ref = surprise_faq_precision_recall(preds.itertuples(index=False), k, 3.5)
    np.testing.assert_allclose(table.precision.to_numpy(), [p_ref[u] for u in table.index])
    np.testing.assert_allclose(table.recall.to_numpy(), [r_ref[u] for u in table.index])


@pytest.mark.parametrize("k", [3, 10])
def test_ndcg_matches_sklearn(k):
    preds = random_predictions(seed=1)
    table = per_user_metrics(preds, k=k)
    for user, rows in preds.groupby("user"):
        if len(rows) < 2:  # sklearn refuses one-document rankings; ours is 1.0 there
            assert table.loc[user, "ndcg"] == pytest.approx(1.0)
            continue
        expected = ndcg_score([rows.rating.to_numpy()], [rows.prediction.to_numpy()], k=k)
        assert table.loc[user, "ndcg"] == pytest.approx(expected)


def test_rmse_mae_and_perfect_predictions():
    preds = random_predictions(seed=2)
    summary = summarize(preds)
    err = preds.prediction - preds.rating
    assert summary["rmse"] == pytest.approx(np.sqrt((err ** 2).mean()))
    assert summary["mae"] == pytest.approx(err.abs().mean())
    perfect = preds.assign(prediction=preds.rating + preds.item * 1e-6)  # break ties by item, keep order
    assert summarize(perfect)["ndcg_at_10"] == pytest.approx(1.0, abs=1e-9)


def test_group_key():
    preds = frame([(7, 1, 5.0, 5.0), (7, 2, 1.0, 1.0)]).rename(columns={"user": "group"})
    table = per_user_metrics(preds, k=1, key="group")
    assert table.index.name == "group" and table.loc[7, "precision"] == 1.0


def test_rank_by_prediction_equals_a_pandas_sort_with_ties():
    from benchmark.evaluation.metrics import rank_by_prediction

    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"user": rng.integers(0, 30, 2000), "item": rng.permutation(2000),
                          "rating": rng.integers(1, 6, 2000).astype(float),
                          "prediction": rng.integers(1, 9, 2000) / 2.0})  # many equal predictions
    # pandas' sort with the tie key as its third key (computed independently, one pair at a time)
    from benchmark.protocol.ranking import tie_key
    keyed = frame.assign(tie=[int(tie_key(u, i, 3)) for u, i in zip(frame["user"], frame["item"])])
    expected = (keyed.sort_values(["user", "prediction", "tie"], ascending=[True, False, True], ignore_index=True)
                .drop(columns="tie"))
    expected["rank"] = expected.groupby("user").cumcount()
    pd.testing.assert_frame_equal(rank_by_prediction(frame, seed=3), expected, check_dtype=False)
