"""The seed paper's authors' protocol (issue #26; benchmark/protocol/authors.py): their metric formulas
against hand computations, their split and scaler-before-split against scikit-learn called directly,
their grouping against KMeans on the hand-built profile matrix, one end-to-end job, and the clean
protocol's config hash untouched by the new keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import open_dict
from sklearn.cluster import KMeans
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

from benchmark.core.config import config_hash
from benchmark.core.errors import ConfigError
from benchmark.data import Dataset
from benchmark.evaluation import authors as authors_eval
from benchmark.protocol import authors
from benchmark.run.job import dataset_defaults, run

# ---------------------------------------------------------------------------- metric formulas


def test_one_key_by_hand():
    # truth [3, 5, 4, 1]; the scores put rows 1 (0.9) and 2 (0.8) on top (k = 2): truths 5 and 4
    true, score = np.array([3.0, 5.0, 4.0, 1.0]), np.array([0.1, 0.9, 0.8, 0.5])
    p, r, ndcg = authors.authors_metrics(true, score, k=2, threshold=3.7)
    assert p == 1.0 and r == 1.0  # hits 2 / k 2; hits 2 / relevant 2
    assert ndcg == pytest.approx(1.0)  # top 2 already in true order
    # scores put the 3 and the 4 on top: hits 1 (the 4), P = 1/2, R = 1/2 (relevant: 5 and 4)
    p, r, ndcg = authors.authors_metrics(true, np.array([0.9, 0.1, 0.8, 0.5]), k=2, threshold=3.7)
    assert (p, r) == (0.5, 0.5)
    dcg = (2**3 - 1) / np.log2(2) + (2**4 - 1) / np.log2(3)  # 7 + 9.4640
    ideal = (2**4 - 1) / np.log2(2) + (2**3 - 1) / np.log2(3)  # the SAME top 2 re-sorted: 15 + 4.4165
    assert ndcg == pytest.approx(dcg / ideal) and ndcg == pytest.approx(0.847935, abs=1e-6)


def test_keys_without_relevant_items_and_short_keys():
    rows = pd.DataFrame({"key": [1, 1, 1, 1, 2, 2, 3],
                         "truth": [3.0, 5.0, 4.0, 1.0, 2.0, 3.0, 5.0],
                         "score": [0.9, 0.1, 0.8, 0.5, 1.0, 2.0, 0.3]})
    table = authors.per_key_metrics(rows, k=2, threshold=3.7)
    assert table["precision"].tolist() == [0.5, 0.0, 0.5]  # key 3: 1 hit / k = 2 although it has 1 row
    assert table["recall"].iloc[0] == 0.5 and np.isnan(table["recall"].iloc[1]) and table["recall"].iloc[2] == 1.0
    summary = authors.summarize_keys(table, 2, "authors_")
    assert summary["authors_precision_at_2"] == pytest.approx(1 / 3)
    assert summary["authors_recall_at_2"] == pytest.approx(0.75)  # NaN of key 2 skipped: (0.5 + 1) / 2
    assert summary["authors_keys_without_relevant"] == 1.0 and summary["authors_n_keys"] == 3.0


def test_key_rows_group_truth_and_singletons():
    test = pd.DataFrame({"user": [1, 2, 2, 9], "item": [10, 10, 11, 10], "rating": [2.0, 4.0, 3.0, 5.0],
                         "score": [0.1, 0.2, 0.3, 0.4]})
    members = pd.DataFrame({"group": [100, 100, 200], "user": [1, 2, 2]})  # user 2 in two groups, 9 in none
    group_ratings = pd.DataFrame({"group": [100], "item": [10], "rating": [4.5]})
    rows = authors.key_rows(test, members, group_ratings).sort_values(["key", "user", "item"], ignore_index=True)
    assert rows[["key", "user", "item"]].values.tolist() == [[9, 9, 10], [100, 1, 10], [100, 2, 10], [100, 2, 11],
                                                             [200, 2, 10], [200, 2, 11]]
    # group 100 rated item 10 (4.5): its members' rows take it; the rest keep their own rating
    assert rows["truth"].tolist() == [5.0, 4.5, 4.5, 3.0, 4.0, 3.0]


# ---------------------------------------------------------------------------- split and scaler


@pytest.fixture
def toy():
    rng = np.random.default_rng(3)
    return pd.DataFrame({"user": rng.integers(0, 8, 40), "item": np.arange(40),
                         "rating": rng.integers(1, 6, 40).astype(float), "age": rng.integers(18, 70, 40).astype(float)})


def test_global_split_and_scaler_before_split_match_sklearn(toy):
    (s,) = authors.authors_split(toy, seed=42, test_size=0.2, scale=["age"])
    expected = toy.copy()
    expected[["age"]] = MinMaxScaler().fit_transform(toy[["age"]])  # fitted on ALL rows: the leak
    train, test = train_test_split(expected, test_size=0.2, random_state=42)
    pd.testing.assert_frame_equal(s.train, train.reset_index(drop=True))
    pd.testing.assert_frame_equal(s.test, test.reset_index(drop=True))
    # the scale is the whole frame's: (age - min over all rows) / range over all rows, test rows included
    lo, hi = toy["age"].min(), toy["age"].max()
    raw = toy.set_index("item").loc[s.test["item"], "age"].to_numpy()
    assert np.allclose(s.test["age"], (raw - lo) / (hi - lo))
    assert len(s.test) == 8 and set(s.train["item"]).isdisjoint(s.test["item"])


def test_split_random_state_is_the_seed_unless_given(toy):
    (a,) = authors.authors_split(toy, seed=42)
    (b,) = authors.authors_split(toy, seed=0, random_state=42)
    (c,) = authors.authors_split(toy, seed=0)
    assert a.test["item"].tolist() == b.test["item"].tolist() != c.test["item"].tolist()
    assert "age" in a.test and a.test["age"].equals(toy.set_index("item").loc[a.test["item"], "age"].reset_index(drop=True))


def test_scaling_the_target_is_refused(toy):
    with pytest.raises(ConfigError, match="not a side feature"):
        authors.authors_split(toy, scale=["rating"])
    with pytest.raises(ConfigError, match="no column"):
        authors.authors_split(toy, scale=["height"])


# ---------------------------------------------------------------------------- grouping


def _toy_dataset(groups: pd.DataFrame | None = None) -> Dataset:
    rng = np.random.default_rng(5)
    users = pd.Index(range(1, 13), name="user")
    occupation = pd.get_dummies(pd.Categorical(rng.choice(["artist", "doctor", "writer"], 12),
                                               categories=["artist", "doctor", "writer"]), prefix="occ", dtype=float)
    occupation.index = users
    user_features = pd.concat([pd.DataFrame({"age": rng.integers(18, 60, 12).astype(float),
                                             "gender": rng.integers(0, 2, 12).astype(float)}, index=users),
                               occupation], axis=1)
    items = pd.Index(range(20), name="item")
    item_features = pd.DataFrame(rng.integers(0, 2, (20, 3)).astype(float), index=items, columns=["g_a", "g_b", "g_c"])
    ratings = pd.DataFrame({"user": np.repeat(np.arange(1, 12), 5), "item": rng.integers(0, 20, 55),
                            "rating": rng.integers(1, 6, 55).astype(float)}).drop_duplicates(["user", "item"])
    return Dataset(name="toy", ratings=ratings.reset_index(drop=True), user_features=user_features,
                   item_features=item_features, rating_scale=(1.0, 5.0), groups=groups)


def test_authors_grouping_is_kmeans_on_unscaled_profiles_of_all_ratings():
    data = _toy_dataset()
    train = data.ratings.iloc[::2]
    groups = authors.authors_kmeans(data, train, k=4, seed=42)
    # by hand: [age, occupation code, mean genre flags over ALL ratings], user 12 (no rating) 0, unscaled
    taste = (data.item_features.reindex(data.ratings["item"]).set_axis(data.ratings.index)
             .groupby(data.ratings["user"]).mean())
    occ = data.user_features[["occ_artist", "occ_doctor", "occ_writer"]].to_numpy().argmax(axis=1)
    profile = pd.DataFrame({"age": data.user_features["age"], "occ": occ.astype(float)},
                           index=data.user_features.index).join(taste).fillna(0.0)
    expected = KMeans(n_clusters=4, random_state=42, n_init=10).fit_predict(profile.to_numpy())
    assert groups.labels.tolist() == expected.tolist() and groups.method == "authors"
    assert groups.stats["leak_all_rows"] == 1.0 and groups.members["user"].tolist() == list(range(1, 13))
    # rows=train: profiles from the training part only (no leak): another matrix
    assert authors.authors_kmeans(data, train, k=4, seed=42, rows="train").stats["leak_all_rows"] == 0.0
    assert authors.authors_kmeans(data, train, k=40, seed=42).k == 12  # min(k, n_users)


def test_authors_grouping_keeps_real_groups_and_singletons():
    data = _toy_dataset(groups=pd.DataFrame({"group": [100, 100, 100], "user": [1, 2, 2]}))
    groups = authors.authors_kmeans(data, data.ratings, k=3, seed=0)
    members = groups.members
    assert members.loc[members["group"] == 100, "user"].tolist() == [1, 2]
    alone = members[members["group"] != 100]
    assert (alone["group"] == alone["user"]).all() and sorted(alone["user"]) == list(range(3, 12))


# ---------------------------------------------------------------------------- config and one job


def test_run_tags_name_the_pieces():
    full = {"split": {"_target_": "benchmark.protocol.authors.authors_split", "scale": []},
            "grouping": {"_target_": "benchmark.protocol.authors.authors_kmeans", "rows": "all"},
            "eval": {"protocol": "authors"}}
    assert authors_eval.tags(full) == {"protocol": "authors", "protocol_pieces": "split,grouping,eval",
                                       "leak": "kmeans_all_rows"}
    step = {"split": full["split"], "grouping": {"_target_": "benchmark.protocol.grouping.kmeans"},
            "eval": {"protocol": "authors_metrics"}}
    assert authors_eval.tags(step) == {"protocol": "mixed", "protocol_pieces": "split,eval", "leak": "none"}
    assert authors_eval.tags({"split": {"_target_": "benchmark.protocol.split.holdout"}, "eval": {}}) == {}


def test_clean_config_hash_is_unchanged_by_the_new_keys(make_cfg):
    cfg = make_cfg("dataset=itmrec", "model=svd")
    stripped = cfg.copy()
    with open_dict(stripped):
        del stripped.eval["protocol"], stripped.eval["authors"]
    assert config_hash(cfg) == config_hash(stripped)
    assert config_hash(make_cfg("dataset=itmrec", "model=svd", "eval.protocol=authors_metrics")) != config_hash(cfg)


def test_authors_job_on_itmrec_logs_their_metrics_and_tags(make_cfg, tracking_uri):
    result = run(make_cfg("eval.protocol=authors", "model=svd", "dataset=itmrec", "seed=42",
                          "eval.full_catalogue=false"))
    logged = MlflowClient(tracking_uri).get_run(result.run_id)
    tags, metrics, params = logged.data.tags, logged.data.metrics, logged.data.params
    assert tags["protocol"] == "authors" and tags["leak"] == "kmeans_all_rows"
    assert params["split"] == "authors_split" and params["grouping"] == "authors_kmeans"
    for name in ("authors_precision_at_10", "authors_recall_at_10", "authors_user_precision_at_10"):
        assert 0.0 < metrics[name] <= 1.0
    # keys: the 143 real groups with a test row plus the singleton users in no group
    assert metrics["authors_n_keys"] > metrics["authors_user_n_keys"] * 0.5
    assert metrics["authors_threshold"] == 3.7
    # the hash is the replaced config's (what a sweep plans with), not the command line's
    cfg = make_cfg("eval.protocol=authors", "model=svd", "dataset=itmrec", "seed=42", "eval.full_catalogue=false")
    assert tags["config_hash"] == config_hash(dataset_defaults(cfg)) != config_hash(cfg)


def test_authors_protocol_refuses_group_item_datasets_and_keeps_explicit_pieces(make_cfg):
    with pytest.raises(ConfigError, match="group-item dataset"):
        dataset_defaults(make_cfg("eval.protocol=authors", "dataset=camra2011"))
    cfg = dataset_defaults(make_cfg("eval.protocol=authors", "dataset=ml100k"))
    assert cfg.split._target_.endswith("authors_split") and cfg.grouping._target_.endswith("authors_kmeans")
    assert cfg.grouping.k == 250  # ML-100K: the authors' min(250, 943)
    # authors_metrics keeps the run's own split and grouping (the ablation's steps)
    kept = dataset_defaults(make_cfg("eval.protocol=authors_metrics", "dataset=ml100k"))
    assert kept.split._target_.endswith("split.holdout") and kept.grouping._target_.endswith("grouping.kmeans")


def test_report_ablation_reads_each_step_on_common_seeds():
    from benchmark.report.sections import reproduction

    assert reproduction.kind_of({"eval.protocol": "authors"}) == "authors"
    assert reproduction.kind_of({"eval.protocol": "authors_metrics", "split": "holdout"}) == "clean"
    assert reproduction.kind_of({"eval.protocol": "authors_metrics", "split": "authors_split"}) == "split"
    assert reproduction.kind_of({"split": "holdout"}) == "other"

    def row(kind, seed, p, r, up=np.nan, ur=np.nan, ap=np.nan, ar=np.nan):
        return {"dataset": "d", "model": "svd", "label": "SVD", "kind": kind, "seed": seed,
                "precision_at_10": p, "recall_at_10": r, "authors_user_precision_at_10": up,
                "authors_user_recall_at_10": ur, "authors_precision_at_10": ap, "authors_recall_at_10": ar}

    runs = pd.DataFrame([row("clean", 42, 0.70, 0.55), row("split", 42, 0.68, 0.54),
                         row("authors", 42, 0.69, 0.53, 0.57, 0.73, 0.76, 0.38),
                         row("authors", 0, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10)])  # seed 0: no clean run, left out
    table = reproduction.ablation_table(runs, "d", 10)
    assert table["P@10"].round(2).tolist() == [0.70, 0.68, 0.68, 0.69, 0.57, 0.76]
    assert table["R@10"].round(2).tolist() == [0.55, 0.54, 0.54, 0.53, 0.73, 0.38]
    assert table["ΔP"].iloc[2] == 0.0 and table["ΔR"].round(2).iloc[5] == -0.35
