"""Equal-budget tuning (benchmark/sweeps/tune.py), selection by validation data, and the LensKit wrapper.

Small synthetic data and few trials: the point is what the code reads and counts, not quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

import benchmark.protocol.split
import benchmark.sweeps.tune as tune
from benchmark.core import models_meta
from benchmark.core.config import config_hash
from benchmark.report import build as report
from benchmark.report.sections.references import REFERENCE_MODELS
from benchmark.run.job import run
from benchmark.tracking.claims import finished_keys
from benchmark.tracking.tracker import Tracker

CONF = Path(__file__).resolve().parent.parent / "conf"
TUNED_MODELS = ("svd", "knn_basic", "lenskit_item_knn", "dmtl")
# cache off: the scramble patches the split function, which a protocol-cache hit would bypass
FAST = ("dataset=synthetic", "trainer.max_epochs=3", "trainer.progress=false", "tune.enabled=true",
        "tune.trials=3", "cache.enabled=false")


def scrambled(split):
    """The split function with every test rating replaced by a random one (training rows untouched)."""
    def wrapper(ratings, **kwargs):
        out = []
        for part in split(ratings, **kwargs):
            test = part.test.copy()
            test["rating"] = np.random.default_rng(99).integers(1, 6, len(test)).astype(float)
            out.append(benchmark.protocol.split.Split(part.fold, part.train, test))
        return out
    return wrapper


def tracker_at(folder: Path, experiment: str = "tuned") -> Tracker:
    folder.mkdir(parents=True, exist_ok=True)
    return Tracker(f"sqlite:///{folder / 'mlflow.db'}", experiment)


def runs_with(tracker: Tracker, role: str):
    return tracker.client.search_runs([tracker.experiment_id], f"tags.`groupbench.role` = '{role}'",
                                      max_results=1000)


def tuned_and_selected(make_cfg, tracker: Tracker) -> tuple[dict, dict, str]:
    """Tuned choices per model, test RMSE per model, and the report's best DMTL configuration."""
    chosen, test_rmse = {}, {}
    for model in TUNED_MODELS:
        result = tune.run_tuned(make_cfg(*FAST, f"model={model}"), tracker)
        final = tracker.client.get_run(result.run_id)
        chosen[model] = json.loads(final.data.tags["tuned.chosen"])
        test_rmse[model] = result.metrics["rmse"]
    # two untuned DMTL configurations, as the paper sweep logs them: the report picks one
    plain = tracker_at(Path(tracker.uri[len("sqlite:///"):]).parent, "paper")
    for lam in (0, 2):
        run(make_cfg("dataset=synthetic", "model=dmtl", f"model.lambda_profile={lam}", "trainer.max_epochs=3",
                     "trainer.progress=false"), plain)
    col = report.collect(plain.client, "paper", plain.uri)
    col.runs = report.fill_val_rmse(plain.client, col.runs)
    best = report.best_configuration(report.main_table(col), "synthetic", col.k)
    # independently: the configuration with the lowest val_rmse the runs logged
    runs = {r.data.params["model.lambda_profile"]: r.data.metrics["val_rmse"] for r in runs_with(plain, "job")}
    assert best["configuration"] == f"DMTL (λ={min(runs, key=runs.get)}, softmax)"
    return chosen, test_rmse, best["configuration"]


@pytest.mark.slow
def test_scrambled_test_ratings_change_no_choice(make_cfg, tmp_path, monkeypatch):
    """Selection never reads the test part; every tunable model gets tune.trials trials."""
    tracker = tracker_at(tmp_path / "plain")
    chosen, test_rmse, selected = tuned_and_selected(make_cfg, tracker)

    studies = runs_with(tracker, "study")
    assert sorted(s.data.tags["model"] for s in studies) == sorted(TUNED_MODELS)
    for study in studies:  # the equal budget: 3 FINISHED trial runs under each study, none a result
        trials = tracker.client.search_runs([tracker.experiment_id],
                                            f"tags.`mlflow.parentRunId` = '{study.info.run_id}' "
                                            f"and tags.`groupbench.role` = 'trial'")
        assert len(trials) == study.data.metrics["n_trials"] == 3
        assert all(t.info.status == "FINISHED" and "rmse" not in t.data.metrics for t in trials)
        best = min(t.data.metrics["objective"] for t in trials)
        assert study.data.metrics["best_val_rmse"] == pytest.approx(best)
    assert len(runs_with(tracker, "job")) == len(TUNED_MODELS)
    # a rerun of the sweep skips the jobs: their grid hash (the untuned config) counts as finished
    assert config_hash(make_cfg(*FAST, "model=svd")) in {digest for digest, _ in finished_keys(tracker)}

    monkeypatch.setattr(benchmark.protocol.split, "holdout", scrambled(benchmark.protocol.split.holdout))
    chosen2, test_rmse2, selected2 = tuned_and_selected(make_cfg, tracker_at(tmp_path / "scrambled"))
    assert chosen2 == chosen
    assert selected2 == selected
    assert all(abs(test_rmse2[m] - test_rmse[m]) > 0.05 for m in TUNED_MODELS), "the scramble missed test"


@pytest.mark.slow
def test_killed_study_resumes_without_rerunning_trials(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("dataset=synthetic", "model=svd", "tune.enabled=true", "tune.trials=4")
    tracker = tracker_at(tmp_path)
    calls = []
    score = tune.score_trial

    def killed_at_third(cfg, data):
        calls.append(dict(OmegaConf.to_container(cfg.model.params)))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return score(cfg, data)

    monkeypatch.setattr(tune, "score_trial", killed_at_third)
    with pytest.raises(KeyboardInterrupt):
        tune.run_study(cfg, tracker)
    assert [s.info.status for s in runs_with(tracker, "study")] == ["KILLED"]
    finished = [t for t in runs_with(tracker, "trial") if t.info.status == "FINISHED"]
    assert len(finished) == 2

    calls.clear()
    monkeypatch.setattr(tune, "score_trial", lambda cfg, data: calls.append(1) or score(cfg, data))
    result = tune.run_study(cfg, tracker)
    assert len(calls) == 2 and result.trials_run == 2  # trials 2 and 3 only
    done = tune.finished_trials(tracker, result.key)
    assert sorted(done) == [0, 1, 2, 3]
    best = min(done.values(), key=lambda t: t["value"])
    assert result.chosen == best["values"] and result.value == pytest.approx(best["value"])
    # the resumed study proposed what an uninterrupted one proposes: the same trial by trial, no repeats
    monkeypatch.setattr(tune, "score_trial", score)
    whole = tracker_at(tmp_path / "uninterrupted")
    uninterrupted = tune.finished_trials(whole, tune.run_study(cfg, whole).key)
    assert {n: t["values"] for n, t in done.items()} == {n: t["values"] for n, t in uninterrupted.items()}
    assert len({json.dumps(t["values"], sort_keys=True) for t in done.values()}) == 4


def test_every_model_is_in_the_tuned_sweep_with_one_budget():
    sweep = OmegaConf.load(CONF / "sweep" / "tuned.yaml")
    models = set(sweep.hydra.sweeper.grids.tuned.model.split(","))
    # tuned on group data by a later sweep, not here: the group references, and the implicit-feedback models
    # (they rank and predict no rating, and the tuned sweep selects on the validation RMSE)
    group_item_only = set(models_meta.group_item_models()) | set(models_meta.implicit_models())
    assert models == {p.stem for p in (CONF / "model").glob("*.yaml")} - group_item_only
    untuned = {m for m in models if not tune.search_space(m)}
    # no hyperparameters: they run once (the reference predictors too: the tuned report's reference block)
    assert untuned == {"slope_one", "normal_predictor", *REFERENCE_MODELS} - group_item_only
    assert "trials" not in sweep.get("tune", {})  # one tune.trials (conf/config.yaml) for every model
    for model in models - untuned:  # every key of a space exists in the model's config (or trainer)
        cfg = OmegaConf.merge({"model": OmegaConf.load(CONF / "model" / f"{model}.yaml")},
                              {"trainer": OmegaConf.load(CONF / "trainer" / "default.yaml")})
        for key in tune.search_space(model):
            assert OmegaConf.select(cfg, key, throw_on_missing=False) is not None or key.endswith(
                ("shrinkage", ".reg", "learning_rate")), f"{model}: {key}"


@pytest.mark.slow
def test_lenskit_bias_model_matches_a_hand_computation(make_cfg):
    from baselines.lenskit import LenskitRecommender

    train = pd.DataFrame({"user": [1, 1, 1, 2, 2, 3], "item": [10, 11, 12, 10, 12, 11],
                          "rating": [5.0, 3.0, 4.0, 2.0, 1.0, 4.0]})
    damping = 2.0
    mu = train["rating"].mean()
    item = train.assign(r=train["rating"] - mu).groupby("item")["r"].agg(["sum", "count"])
    b_item = item["sum"] / (item["count"] + damping)
    residual = train["rating"] - mu - train["item"].map(b_item)
    user = residual.groupby(train["user"]).agg(["sum", "count"])
    b_user = user["sum"] / (user["count"] + damping)

    class Context:
        rating_scale = (1.0, 5.0)

    model = LenskitRecommender("lenskit_bias", "lenskit.basic.BiasScorer", {"damping": damping}, fallback=False)
    model.fit(train, Context())
    pairs = pd.DataFrame({"user": [1, 2, 3, 3, 99], "item": [11, 11, 10, 12, 10]})
    expected = [mu + b_item[i] + (b_user[u] if u in b_user else 0.0) for u, i in zip(pairs["user"], pairs["item"])]
    np.testing.assert_allclose(model.predict(pairs), np.clip(expected, 1, 5), rtol=1e-5)

    knn = LenskitRecommender("lenskit_item_knn", "lenskit.knn.ItemKNNScorer", {"max_nbrs": 5, "min_nbrs": 1})
    knn.fit(train, Context())
    # item 13 is unknown: k-NN cannot score it, LensKit's fallback (BiasScorer, no damping) does
    fallback = LenskitRecommender("lenskit_bias", "lenskit.basic.BiasScorer", {"damping": 0.0}, fallback=False)
    fallback.fit(train, Context())
    unknown = pd.DataFrame({"user": [1], "item": [13]})
    np.testing.assert_allclose(knn.predict(unknown), fallback.predict(unknown), rtol=1e-6)
    # on denser data k-NN scores pairs itself: its predictions are not the bias model's
    rng = np.random.default_rng(0)
    dense = pd.DataFrame([(u, i, float(rng.integers(1, 6))) for u in range(30) for i in range(12) if rng.random() < 0.7],
                         columns=["user", "item", "rating"])
    knn.fit(dense, Context())
    fallback.fit(dense, Context())
    grid = pd.DataFrame([(u, i) for u in range(30) for i in range(12)], columns=["user", "item"])
    assert np.mean(np.abs(knn.predict(grid) - fallback.predict(grid)) > 1e-3) > 0.5


def test_trial_zero_is_the_untuned_configuration(make_cfg, tmp_path):
    """Trial 0 scores the job's own config (conf/model/svd.yaml), so the chosen trial is never worse on
    validation than the defaults; its score equals an independent fit of the untuned model."""
    cfg = make_cfg("dataset=synthetic", "model=svd", "tune.enabled=true", "tune.trials=3")
    tracker = tracker_at(tmp_path)
    result = tune.run_study(cfg, tracker)
    done = tune.finished_trials(tracker, result.key)
    assert done[0]["values"] == {"model.params.n_factors": 100, "model.params.n_epochs": 20,
                                 "model.params.lr_all": 0.005, "model.params.reg_all": 0.02}
    assert result.value <= done[0]["value"]
    untuned = tune.score_trial(cfg, tune.tuning_data(cfg))["val_rmse"]
    assert done[0]["value"] == pytest.approx(untuned)
    trial0 = [t for t in runs_with(tracker, "trial") if t.data.tags["tuned.trial"] == "0"]
    assert [t.data.tags["tuned.defaults"] for t in trial0] == ["true"]


def test_trial_zero_brings_defaults_into_the_range_or_gives_up(make_cfg):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    cfg = make_cfg("dataset=synthetic", "model=dmtl")  # trainer.weight_decay=0.0: below the log range
    values, moved = tune.default_trial(cfg, tune.distributions(tune.search_space("dmtl")))
    assert values["trainer.weight_decay"] == 1e-7 and values["model.lambda_profile"] == cfg.model.lambda_profile
    assert moved == ["trainer.weight_decay=0.0 -> 1e-07 (the search range)"]
    dists = {"model.attention": CategoricalDistribution(["none", "uniform"]),
             "trainer.batch_size": IntDistribution(16, 64)}
    values, moved = tune.default_trial(cfg, dists)
    assert values is None and "model.attention=softmax is not among" in moved[0]
    values, _ = tune.default_trial(cfg, {"trainer.batch_size": IntDistribution(16, 64),
                                         "trainer.lr": FloatDistribution(0.01, 0.1)})
    assert values == {"trainer.batch_size": 64, "trainer.lr": 0.01}


def scrambled_fold(number: int):
    """split.kfold on the same ratings with those of fold ``number``'s test rows replaced by random ones,
    wherever those rows are (its test part, the other folds' training parts): the folds are dealt by
    user and row order only, so every fold keeps its rows."""
    kfold = benchmark.protocol.split.kfold

    def wrapper(ratings, **kwargs):
        rows = kfold(ratings.assign(row=np.arange(len(ratings))), **kwargs)[number].test["row"].to_numpy()
        edited = ratings.copy()
        edited.loc[edited.index[rows], "rating"] = np.random.default_rng(7).integers(1, 6, len(rows)).astype(float)
        return kfold(edited, **kwargs)
    return wrapper


def fold_objectives(tracker: Tracker, n_folds: int) -> dict[int, list[float]]:
    """fold -> the objectives (by trial number) of the study whose choice that fold's final model used."""
    (final,) = runs_with(tracker, "job")
    tags = final.data.tags
    studies = (json.loads(tags["tuned.study_run_ids"]) if "tuned.study_run_ids" in tags
               else {str(f): tags["tuned.study_run_id"] for f in range(n_folds)})  # one study for every fold
    out = {}
    for fold, study in studies.items():
        trials = tracker.client.search_runs([tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{study}' "
                                                                     f"and tags.`groupbench.role` = 'trial'")
        out[int(fold)] = [t.data.metrics["objective"] for t in sorted(trials, key=lambda t: int(t.data.tags["tuned.trial"]))]
    return out


@pytest.mark.slow
def test_kfold_tunes_each_fold_on_its_own_training_part(make_cfg, tmp_path, monkeypatch):
    """No test row reaches any tuning under k-fold: scrambling fold 1's test ratings changes none of the
    trial objectives behind fold 1's choice (before #23 the one study tuned on fold 0's training part,
    which holds fold 1's test rows, and its choice was tested on every fold)."""
    overrides = ("dataset=synthetic", "model=svd", "split=kfold", "split.n_folds=3", "tune.enabled=true",
                 "tune.trials=2", "cache.enabled=false")
    plain = tracker_at(tmp_path / "plain")
    result = tune.run_tuned(make_cfg(*overrides), plain)
    before = fold_objectives(plain, 3)

    monkeypatch.setattr(benchmark.protocol.split, "kfold", scrambled_fold(1))
    scrambled = tracker_at(tmp_path / "scrambled")
    result2 = tune.run_tuned(make_cfg(*overrides), scrambled)
    after = fold_objectives(scrambled, 3)
    assert after[1] == before[1], "fold 1's tuning read fold 1's test ratings"
    assert after[0] != before[0] and after[2] != before[2], "the scramble missed the other folds' training parts"
    # one study per fold, and each fold was fitted with its own study's choice
    assert len(runs_with(plain, "study")) == 3 and len(runs_with(plain, "trial")) == 6
    chosen = json.loads(plain.client.get_run(result.run_id).data.tags["tuned.chosen"])
    assert sorted(chosen) == ["fold0", "fold1", "fold2"] and len(result.models) == 3
    for fold, model in enumerate(result.models):
        assert model.algorithm.n_factors == chosen[f"fold{fold}"]["model.params.n_factors"]
    fold1_rmse = [tracker.client.get_run(r.run_id).data.metrics["fold1_rmse"] for tracker, r in
                  ((plain, result), (scrambled, result2))]
    assert abs(fold1_rmse[1] - fold1_rmse[0]) > 0.05, "the scramble missed fold 1's test part"
