"""Saved models and ``python -m benchmark.recommend``, and what a run records about itself
(params, tags, dataset input, name), on a tiny synthetic dataset."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmark.tracking.artifacts import download_table
from benchmark import recommend
from benchmark.run import summary
from benchmark.tracking import provenance
from benchmark.data import synthetic
from benchmark.core.errors import ConfigError
from benchmark.core.config import RESULT_KEYS
from benchmark.run.job import run
from tests.conftest import CONF

SIZE = dict(n_users=40, n_items=60, n_ratings=400, n_groups=5)
TINY = ("dataset=synthetic", *(f"dataset.loader.{key}={value}" for key, value in SIZE.items()))


def printed_table(out: str) -> pd.DataFrame:
    """The rows under the ``rank item prediction title`` header of recommend's output."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["rank", "item", "prediction"])
    rows = [line.split(None, 3) for line in lines[start + 1:] if line.strip()]
    return pd.DataFrame({"rank": [int(r[0]) for r in rows], "item": [int(r[1]) for r in rows],
                         "prediction": [float(r[2]) for r in rows]})


def saved_model(client: MlflowClient, run_id: str, tmp_path: Path):
    return pickle.loads(Path(client.download_artifacts(run_id, "model.pkl", str(tmp_path))).read_bytes())


@pytest.fixture(scope="module")
def svd_store(tmp_path_factory):
    """One SVD run in a store of its own, shared by the tests that only read it."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('svd') / 'mlflow.db'}"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"tracking.uri={uri}", *TINY, "model=svd", "seed=0"])
    return run(cfg), uri


@pytest.fixture
def svd_run(svd_store):
    return svd_store[0]


@pytest.fixture
def svd_uri(svd_store):
    return svd_store[1]


def test_run_records_clean_params_tags_dataset_and_a_model(svd_run, svd_uri, tmp_path):
    client = MlflowClient(svd_uri)
    logged = client.get_run(svd_run.run_id)
    params, tags = logged.data.params, logged.data.tags
    assert {key.split(".")[0] for key in params} <= set(RESULT_KEYS)
    assert params["model.name"] == "svd" and params["dataset.loader.n_items"] == "60"
    assert not any(key.endswith(("_partial_", "_convert_")) for key in params)
    assert not any(key.startswith(("config.", "version.")) for key in tags)  # in config.yaml / provenance.json
    record = json.loads(Path(client.download_artifacts(svd_run.run_id, "provenance.json", str(tmp_path))).read_text())
    assert record["versions"]["torch"] == torch.__version__ and record["versions"]["python"]
    assert record["versions"]["scikit-surprise"].startswith("1.1")
    assert record["dataset"]["sha256"] == tags["dataset_sha256"] and record["dataset"]["files_sha256"]
    config = OmegaConf.load(client.download_artifacts(svd_run.run_id, "config.yaml", str(tmp_path)))
    assert config.tracking.uri == svd_uri and "root" in config.data
    assert "**svd** on **synthetic**" in tags["mlflow.note.content"]
    assert logged.info.run_name == "svd · synthetic · s0"
    [data] = logged.inputs.dataset_inputs
    assert data.dataset.name == "synthetic"
    assert data.dataset.digest == synthetic.load(**SIZE).sha256[:36]
    experiment = client.get_experiment(logged.info.experiment_id)
    assert "Single runs" in experiment.tags["mlflow.note.content"]
    # the saved model is the fitted one: it reproduces the logged test predictions
    model = saved_model(client, svd_run.run_id, tmp_path)
    logged_predictions = download_table(client, svd_run.run_id, "predictions", tmp_path)
    assert model.predict(logged_predictions) == pytest.approx(logged_predictions["prediction"].to_numpy())
    assert tags["model_artifact"].startswith("model.pkl")


def test_user_top_k_matches_an_independent_ranking(svd_run, svd_uri, tmp_path, capsys):
    user, k = 7, 5
    assert recommend.main(["--run", svd_run.run_id, "--user", str(user), "--k", str(k),
                           "--tracking-uri", svd_uri]) == 0
    table = printed_table(capsys.readouterr().out)
    # independently: every catalogue item the user never rated, scored by Surprise's own predict
    algorithm = saved_model(MlflowClient(svd_uri), svd_run.run_id, tmp_path).algorithm
    ratings = synthetic.load(**SIZE).ratings
    seen = set(ratings.loc[ratings.user == user, "item"])
    scores = {item: algorithm.predict(user, item, clip=True).est for item in range(1, SIZE["n_items"] + 1)
              if item not in seen}
    expected = sorted(scores, key=lambda item: (-scores[item], item))[:k]
    assert table["item"].tolist() == expected
    assert table["prediction"].tolist() == pytest.approx([scores[i] for i in expected], abs=5e-4)
    assert table["rank"].tolist() == list(range(1, k + 1))


@pytest.mark.parametrize("strategy, combine", [("least_misery", min), ("mean", lambda v: sum(v) / len(v)),
                                               ("most_pleasure", max)])
def test_group_top_k_matches_an_independent_aggregation(svd_run, svd_uri, tmp_path, capsys, strategy, combine):
    client = MlflowClient(svd_uri)
    groups = download_table(client, svd_run.run_id, "groups", tmp_path)
    group = int(groups.group.value_counts().idxmin())  # the smallest group leaves the most unrated items
    members = groups.loc[groups.group == group, "user"].tolist()
    assert recommend.main(["--run", svd_run.run_id, "--group", str(group), "--k", "4", "--strategy", strategy,
                           "--tracking-uri", svd_uri]) == 0
    table = printed_table(capsys.readouterr().out)
    algorithm = saved_model(client, svd_run.run_id, tmp_path).algorithm
    ratings = synthetic.load(**SIZE).ratings
    seen = set(ratings.loc[ratings.user.isin(members), "item"])
    scores = {item: combine([algorithm.predict(u, item, clip=True).est for u in members])
              for item in range(1, SIZE["n_items"] + 1) if item not in seen}
    expected = sorted(scores, key=lambda item: (-scores[item], item))[:4]
    assert table["item"].tolist() == expected
    assert table["prediction"].tolist() == pytest.approx([scores[i] for i in expected], abs=5e-4)


@pytest.mark.slow
def test_dmtl_model_is_saved_and_ranks_by_its_predictions(make_cfg, tracking_uri, tmp_path, capsys):
    result = run(make_cfg(*TINY, "model=dmtl", "trainer.max_epochs=2",
                          "trainer.progress=false"))
    client = MlflowClient(tracking_uri)
    model = saved_model(client, result.run_id, tmp_path)
    assert not hasattr(model, "fit_data")  # the encoded training rows are not pickled
    assert model.predict(result.predictions) == pytest.approx(result.predictions["prediction"].to_numpy(), abs=1e-6)
    assert recommend.main(["--run", result.run_id, "--user", "3", "--k", "6", "--tracking-uri", tracking_uri]) == 0
    table = printed_table(capsys.readouterr().out)
    ratings = synthetic.load(**SIZE).ratings
    candidates = sorted(set(range(1, SIZE["n_items"] + 1)) - set(ratings.loc[ratings.user == 3, "item"]))
    predicted = model.predict(pd.DataFrame({"user": 3, "item": candidates}))
    expected = sorted(zip(candidates, predicted), key=lambda pair: (-pair[1], pair[0]))[:6]
    assert table["item"].tolist() == [item for item, _ in expected]


def test_bad_run_user_group_or_missing_model_is_one_line_exit_2(svd_run, svd_uri, make_cfg, tracking_uri, capsys):
    unsaved = run(make_cfg(*TINY, "model=baseline_only", "artifacts.save_model=false"))
    cases = [(("--run", "0123abcd", "--user", "1"), svd_uri, "not found"),
             (("--run", svd_run.run_id, "--user", "999"), svd_uri, "user 999 is not a user of synthetic"),
             (("--run", svd_run.run_id, "--group", "99"), svd_uri, "group 99 is not among"),
             (("--run", unsaved.run_id, "--user", "1"), tracking_uri, "has no saved model")]
    for argv, uri, message in cases:
        capsys.readouterr()  # what the fixtures printed
        assert recommend.main([*argv, "--tracking-uri", uri]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_save_model_setting(make_cfg, tracking_uri):
    client = MlflowClient(tracking_uri)
    small = run(make_cfg(*TINY, "model=baseline_only", "artifacts.max_model_mb=0.001"))  # auto, over the limit
    assert "model.pkl" not in {f.path for f in client.list_artifacts(small.run_id)}
    assert "artifacts.max_model_mb=0.001" in client.get_run(small.run_id).data.tags["model_artifact"]
    forced = run(make_cfg(*TINY, "model=baseline_only", "artifacts.save_model=true", "artifacts.max_model_mb=0.001"))
    assert "model.pkl" in {f.path for f in client.list_artifacts(forced.run_id)}
    with pytest.raises(ConfigError, match="artifacts.save_model=maybe"):
        run(make_cfg(*TINY, "model=baseline_only", "artifacts.save_model=maybe"))


def test_names_lines_and_params_from_a_config(make_cfg):
    cfg = make_cfg("model=dmtl", "dataset=itmrec", "seed=2")
    varies = {"model": "dmtl", "model.lambda_profile": "0.5", "dataset": "itmrec", "seed": "2"}
    assert provenance.display_name(cfg, varies) == "λ=0.5 · dmtl · itmrec · s2"
    assert provenance.swept_values({**varies, "model.attention": "none"}) == ["λ=0.5", "attention=none"]
    params = provenance.configured_params(cfg, RESULT_KEYS)
    assert params["model.trainer.max_epochs"] == cfg.trainer.max_epochs  # DMTL's trainer, logged once
    assert not any(key.startswith(("trainer.", "tracking.", "data.", "hydra")) for key in params)
    assert "model.trainer.progress" not in params
    lines = summary.headline({"rmse": 0.93123, "mae": 0.7, "precision_at_10": 0.5, "ndcg_at_10": 0.9,
                              "fit_seconds": 1.5, "predict_seconds": 0.1, "grouping_inertia": 3.0})
    assert lines[0].split() == ["rating", "RMSE", "0.9312", "MAE", "0.7000"]
    assert lines[1].split() == ["ranking", "P@10", "0.5000", "NDCG@10", "0.9000"]
    assert len(lines) == 3 and "inertia" not in " ".join(lines)


class _Crafted:
    """A pickle that runs code when loaded (it creates a file named by its argument)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_replaced_model_pickle_is_refused_before_it_is_loaded(make_cfg, tracking_uri, tmp_path, capsys):
    """model.pkl's sha256 is recorded when it is saved; a file replaced in the artifact store (here a
    pickle that would run code) is refused in one line, exit 2, and never unpickled (#28 item 7)."""
    result = run(make_cfg(*TINY, "model=svd"))
    client = MlflowClient(tracking_uri)
    recorded = client.get_run(result.run_id).data.tags["model_sha256"]
    saved = Path(client.download_artifacts(result.run_id, "model.pkl", str(tmp_path / "download"))).read_bytes()
    assert recorded == hashlib.sha256(saved).hexdigest()
    marker = tmp_path / "the-pickle-ran"
    artifact_dir = Path(client.get_run(result.run_id).info.artifact_uri.replace("file://", ""))
    (artifact_dir / "model.pkl").write_bytes(pickle.dumps(_Crafted(str(marker))))
    code = recommend.main(["--run", result.run_id, "--user", "1", "--tracking-uri", tracking_uri])
    err = capsys.readouterr().err
    assert code == 2 and "was replaced, and is not unpickled" in err, err
    assert not marker.exists()
    client.set_tag(result.run_id, "model_sha256", "")  # a run without the record is refused too
    assert recommend.main(["--run", result.run_id, "--user", "1", "--tracking-uri", tracking_uri]) == 2
    assert "no recorded sha256" in capsys.readouterr().err and not marker.exists()
