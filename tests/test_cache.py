"""The protocol cache (benchmark/data/cache.py): keys, exact hits, verification, concurrency, off switch."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from benchmark.core.errors import DataError
from benchmark.data.cache import ProtocolCache

CONF = Path(__file__).resolve().parent.parent / "conf"


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def protocol(cfg):
    """The runner's three cached steps (benchmark/run/job.py wires them the same way)."""
    cache = ProtocolCache(cfg)
    dataset = cache.dataset(lambda: instantiate(cfg.dataset.loader, root=cfg.data.root, download=cfg.data.download,
                                                verify=cfg.data.verify))
    splits = cache.splits(lambda: instantiate(cfg.split)(dataset.ratings, seed=cfg.seed))
    groups = [cache.groups(split.fold, lambda split=split: instantiate(cfg.grouping)(dataset, split.train,
                                                                                    seed=cfg.seed))
              for split in splits]
    return cache, dataset, splits, groups


def assert_same(first, second) -> None:
    """Frames compared exactly (values, dtypes, index)."""
    _, dataset_a, splits_a, groups_a = first
    _, dataset_b, splits_b, groups_b = second
    for name in ("ratings", "user_features", "item_features", "groups", "group_ratings"):
        if getattr(dataset_a, name) is None:
            assert getattr(dataset_b, name) is None
            continue
        pd.testing.assert_frame_equal(getattr(dataset_a, name), getattr(dataset_b, name), check_exact=True)
    assert dataset_a.files_sha256 == dataset_b.files_sha256 and dataset_a.rating_scale == dataset_b.rating_scale
    assert len(splits_a) == len(splits_b)
    for a, b in zip(splits_a, splits_b):
        pd.testing.assert_frame_equal(a.train, b.train, check_exact=True)
        pd.testing.assert_frame_equal(a.test, b.test, check_exact=True)
    for a, b in zip(groups_a, groups_b):
        pd.testing.assert_series_equal(a.labels, b.labels, check_exact=True)
        pd.testing.assert_frame_equal(a.members, b.members, check_exact=True)
        assert a.stats == b.stats and (a.k, a.method) == (b.k, b.method)


def entries(folder: Path) -> dict[str, int]:
    return {kind: len(list((folder / kind).glob("*.pkl"))) for kind in ("dataset", "split", "groups")}


@pytest.fixture
def itmrec(real_data, tmp_path):
    def make(*overrides: str, root: Path = real_data):
        return compose_cfg("dataset=itmrec", f"data.root={root}", f"cache.dir={tmp_path / 'cache'}", *overrides)
    return make


def test_a_hit_returns_exactly_what_computing_returns(itmrec, tmp_path):
    first = protocol(itmrec("split=kfold", "split.n_folds=2"))
    assert first[0].outcomes == {"dataset": "miss", "split": "miss", "groups": "miss"}
    assert entries(tmp_path / "cache") == {"dataset": 1, "split": 1, "groups": 2}
    second = protocol(itmrec("split=kfold", "split.n_folds=2"))
    assert second[0].outcomes == {"dataset": "hit", "split": "hit", "groups": "hit"}
    assert entries(tmp_path / "cache") == {"dataset": 1, "split": 1, "groups": 2}
    uncached = protocol(itmrec("split=kfold", "split.n_folds=2", "cache.enabled=false"))
    assert_same(second, first)
    assert_same(second, uncached)


def test_a_changed_seed_config_or_data_file_makes_a_new_entry(itmrec, data_copy, tmp_path):
    protocol(itmrec())
    assert protocol(itmrec("seed=1"))[0].outcomes == {"dataset": "hit", "split": "miss", "groups": "miss"}
    assert protocol(itmrec("grouping.k=20"))[0].outcomes == {"dataset": "hit", "split": "hit", "groups": "miss"}
    assert protocol(itmrec("grouping.n_init=2"))[0].outcomes["groups"] == "miss"
    assert protocol(itmrec("split.test_size=0.3"))[0].outcomes == {"dataset": "hit", "split": "miss",
                                                                     "groups": "miss"}
    assert entries(tmp_path / "cache") == {"dataset": 1, "split": 3, "groups": 5}

    # one rating changed in a copy of the files (verification off, so the loader reads it)
    ratings = data_copy / "itm-rec" / "ratings.csv"
    lines = ratings.read_text().splitlines(keepends=True)
    fields = lines[1].split(",")
    fields[2] = "1" if fields[2].strip() != "1" else "2"
    lines[1] = ",".join(fields)
    ratings.write_text("".join(lines))
    changed = protocol(itmrec("data.verify=false", root=data_copy))
    assert changed[0].outcomes == {"dataset": "miss", "split": "miss", "groups": "miss"}
    assert entries(tmp_path / "cache")["dataset"] == 2
    assert not changed[1].ratings.equals(protocol(itmrec())[1].ratings)


def test_files_are_still_verified_on_a_hit(itmrec, data_copy):
    protocol(itmrec(root=data_copy))
    (data_copy / "itm-rec" / "group.csv").write_text("GroupID,UserID\n1,1\n")
    with pytest.raises(DataError, match="sha256 mismatch"):
        protocol(itmrec(root=data_copy))


def test_disabled_writes_nothing(itmrec, tmp_path):
    cache = protocol(itmrec("cache.enabled=false"))[0]
    assert cache.summary() == "off" and not (tmp_path / "cache").exists()


def write_concurrently(overrides: list[str], barrier, results: str, index: int) -> None:
    """A worker process: wait for the others, then run the whole cached protocol."""
    cfg = compose_cfg(*overrides)
    barrier.wait()
    cache = protocol(cfg)[0]
    Path(results, f"{index}.pkl").write_bytes(pickle.dumps(cache.outcomes))


@pytest.mark.slow
def test_parallel_writers_of_one_key_leave_one_good_entry(itmrec, real_data, tmp_path):
    overrides = ["dataset=itmrec", f"data.root={real_data}", f"cache.dir={tmp_path / 'cache'}",
                 "split=kfold", "split.n_folds=2"]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    workers = [context.Process(target=write_concurrently, args=(overrides, barrier, str(tmp_path), n))
               for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    outcomes = [pickle.loads((tmp_path / f"{n}.pkl").read_bytes()) for n in range(3)]
    # the lock: each entry was computed by exactly one worker; the others read it
    for kind in ("dataset", "split"):
        assert sorted(o[kind] for o in outcomes) == ["hit", "hit", "miss"]
    assert entries(tmp_path / "cache") == {"dataset": 1, "split": 1, "groups": 2}
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    cached = protocol(itmrec("split=kfold", "split.n_folds=2"))
    assert cached[0].outcomes == {"dataset": "hit", "split": "hit", "groups": "hit"}
    assert_same(cached, protocol(itmrec("split=kfold", "split.n_folds=2", "cache.enabled=false")))


def test_an_unreadable_entry_is_recomputed(itmrec, tmp_path):
    first = protocol(itmrec())
    for path in (tmp_path / "cache" / "split").glob("*.pkl"):
        path.write_bytes(b"not a pickle")
    again = protocol(itmrec())
    assert again[0].outcomes["split"] == "miss"
    assert_same(again, first)


def test_runs_log_their_stages_and_cache_outcome(make_cfg, tracking_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    from benchmark.run.job import run

    overrides = ("dataset=synthetic", "model=baseline_only", f"cache.dir={tmp_path / 'runs'}")
    first, second = run(make_cfg(*overrides)), run(make_cfg(*overrides))
    client = MlflowClient(tracking_uri)
    assert client.get_run(first.run_id).data.tags["protocol_cache"] == "dataset=uncached split=miss groups=miss"
    assert client.get_run(second.run_id).data.tags["protocol_cache"] == "dataset=uncached split=hit groups=hit"
    pd.testing.assert_frame_equal(first.predictions, second.predictions, check_exact=True)
    logged = client.get_run(second.run_id).data.metrics
    stages = ("load", "split", "grouping", "fit", "predict", "evaluate", "log")
    for stage in stages:
        assert logged[f"stage_{stage}_seconds"] == pytest.approx(second.metrics[f"stage_{stage}_seconds"])
        assert logged[f"stage_{stage}_seconds"] >= 0
    assert second.metrics["stage_fit_seconds"] >= second.metrics["fit_seconds"]
    # the predict stage holds the test pairs and every prediction evaluation asked of the model
    assert second.metrics["eval_predict_seconds"] > 0
    assert second.metrics["stage_predict_seconds"] == pytest.approx(
        second.metrics["predict_seconds"] + second.metrics["eval_predict_seconds"], abs=1e-3)
    run_info = client.get_run(second.run_id).info
    assert sum(logged[f"stage_{stage}_seconds"] for stage in stages) <= (run_info.end_time - run_info.start_time) / 1e3
    assert len(second.models) == 1 and second.models[0].trainset is not None


def test_an_unwritable_cache_slows_a_job_down_never_fails_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = compose_cfg("dataset=synthetic", f"cache.dir={blocker / 'cache'}")
    cache, dataset, splits, groups = protocol(cfg)
    assert cache.outcomes == {"dataset": "uncached", "split": "unwritable", "groups": "unwritable"}
    assert_same((cache, dataset, splits, groups), protocol(compose_cfg("dataset=synthetic", "cache.enabled=false")))


def test_model_clock_counts_the_models_prediction_calls_once_and_never_patches_them():
    import time

    from benchmark.evaluation.base import EvalContext, model_clock

    class Slow:
        def predict(self, pairs):
            time.sleep(0.05)
            return np.zeros(len(pairs))

        def score_all(self, users, items):  # calls predict: one call for the clock, not two
            return self.predict(pd.DataFrame({"user": np.repeat(users, len(items)),
                                              "item": np.tile(items, len(users))})).reshape(len(users), len(items))

    model = Slow()
    ctx = EvalContext(None, None, None, None, model, None)
    started = time.perf_counter()
    with model_clock(ctx) as spent:
        ctx.scorer.score_matrix(np.arange(2), np.arange(3))
        ctx.scorer.predict(pd.DataFrame({"user": [1], "item": [2]}))
        time.sleep(0.05)  # the harness's own time: not counted
    elapsed = time.perf_counter() - started
    assert 0.1 <= spent.seconds < elapsed - 0.04
    assert not vars(model)  # nothing was ever set on the model: the scorer times its calls from outside
    assert Slow.predict.__name__ == "predict" and model.predict.__func__ is Slow.predict


@pytest.mark.slow
def test_an_entry_of_the_wrong_type_or_key_is_recomputed_not_used(make_cfg, tracking_uri, tmp_path):
    """A valid pickle of the wrong type, or another key's entry, copied over an entry: the job
    recomputes it (and rewrites it) instead of failing on it, then and in every later run (#28 item 7)."""
    from mlflow.tracking import MlflowClient

    from benchmark.run.job import run

    overrides = ("dataset=synthetic", "model=baseline_only", "split=kfold", "split.n_folds=2",
                 f"cache.dir={tmp_path / 'runs'}")
    first = run(make_cfg(*overrides))
    [split_entry] = (tmp_path / "runs" / "split").glob("*.pkl")
    fold0, fold1 = sorted((tmp_path / "runs" / "groups").glob("*.pkl"))
    split_entry.write_bytes(pickle.dumps({"not": "a split"}))         # a valid pickle, the wrong type
    fold1.write_bytes(fold0.read_bytes())                              # a real entry, another key
    wrapped = pickle.loads(fold0.read_bytes())
    fold0.write_bytes(pickle.dumps({**wrapped, "value": [1, 2, 3]}))  # the right envelope, the wrong type
    second = run(make_cfg(*overrides))
    pd.testing.assert_frame_equal(first.predictions, second.predictions, check_exact=True)
    assert MlflowClient(tracking_uri).get_run(second.run_id).data.tags["protocol_cache"] == \
        "dataset=uncached split=miss groups=miss"
    third = run(make_cfg(*overrides))  # rewritten: a hit again
    assert MlflowClient(tracking_uri).get_run(third.run_id).data.tags["protocol_cache"] == \
        "dataset=uncached split=hit groups=hit"
