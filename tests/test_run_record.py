"""What a reader sees of a run in MLflow (#30 items 4, 5): params that say what was trained, without
import paths or plumbing; a few tags; a description that leads with the headline metrics; a
"next:" line that opens the experiment's runs table. The trainer's effective values themselves:
tests/test_dmtl.py (test_params_are_the_batch_and_learning_rate_trained_with)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from benchmark.core.config import RESULT_KEYS
from benchmark.report.collect import job_table
from benchmark.run import summary
from benchmark.tracking import provenance
from benchmark.tracking.provenance import MAX_TAGS, visible_tags
from tests.conftest import CONF
from tests.test_runner import cli

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("split, grouping", [("holdout", "kmeans"), ("kfold", "real")])
def test_params_hold_no_import_path_and_no_plumbing(split, grouping):
    """Every model's params, under both splits and groupings: no ``_target_`` key, no value naming an
    importable module's member, no device / progress bar / verbosity; the split and the grouping are
    still named (``split = holdout``), as the import paths they replace named them."""
    for model in MODELS:
        cfg = _compose(f"model={model}", f"split={split}", f"grouping={grouping}", "dataset=itmrec")
        params = provenance.configured_params(cfg, RESULT_KEYS)
        assert not [key for key in params if "_target_" in key or key.endswith(("_partial_", "_convert_"))], model
        assert not [key for key in params if key.rsplit(".", 1)[-1] in ("device", "progress", "verbose")], model
        paths = [f"{key}={value}" for key, value in params.items() if isinstance(value, str) and DOTTED.fullmatch(value)
                 and importlib.util.find_spec(value.split(".", 1)[0]) is not None]
        assert not paths, (model, paths)
        assert (params["split"], params["grouping"], params["model.name"]) == (split, grouping, cfg.model.name)
        assert {key.split(".", 1)[0] for key in params} <= set(RESULT_KEYS)


@pytest.mark.slow
def test_single_run_record_and_next_line(tmp_path):
    """A single run (the CLI): at most MAX_TAGS tags besides mlflow.*, none of them config.* / version.* /
    per-file data hashes (those are in config.yaml and provenance.json); its description starts with
    the headline metrics it logged; "next:" prints the experiment's runs-table URL."""
    proc = cli(tmp_path, "dataset=synthetic", "model=svd")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("groupbench")
    (logged,) = client.search_runs([experiment.experiment_id])
    tags, metrics = logged.data.tags, logged.data.metrics
    shown = visible_tags(tags)
    assert len(shown) <= MAX_TAGS, sorted(shown)
    assert not [key for key in tags if key.startswith(("config.", "version.", "dataset_sha256.", "dataset_note."))]
    assert {"groupbench.role", "config_hash", "dataset_sha256", "git_commit", "groupbench.owner"} <= set(shown)
    description = tags["mlflow.note.content"]
    assert description.startswith(f"- **rating**: RMSE {metrics['rmse']:.4f} · MAE {metrics['mae']:.4f}\n"), description
    assert f"NDCG@10 {metrics['ndcg_at_10']:.4f}" in description.split("\n\n")[0]
    url = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs"
    browse = [line for line in proc.stdout.splitlines() if line.strip().startswith("browse runs")]  # stdout (#30 item 7)
    assert len(browse) == 1 and f"then open {url}?workflowType=machine_learning" in browse[0], proc.stdout[-2000:]


def test_next_line_names_the_runs_table_of_a_server():
    lines = summary.next_steps("http://10.0.0.5:5000/", "paper", "7")
    assert lines[1].split() == ["browse", "runs", "open",
                                "http://10.0.0.5:5000/#/experiments/7/runs?workflowType=machine_learning"]


def test_report_groups_runs_by_their_configured_values():
    """Two seeds whose data size scaled the trainer differently, and a run logged before these rules
    (import paths, the device, the configured lr as its param): one configuration, one cell."""
    common = {"params.model.name": "dmtl", "params.dataset.name": "itmrec", "params.grouping.k": "40",
              "params.model.trainer.batch_size": None, "tags.config_hash": None, "tags.groupbench.role": "job"}
    new = {**common, "params.split": "holdout", "params.model.trainer.lr": "0.0005419921875",
           "params.model.trainer.batch_size": "111",
           "tags.configured": json.dumps({"model.trainer.batch_size": 1024, "model.trainer.lr": 0.005})}
    rows = [{**new, "run_id": "a", "params.seed": "0"},
            {**new, "run_id": "b", "params.seed": "1", "params.model.trainer.batch_size": "110",
             "params.model.trainer.lr": "0.00537109375"},
            {**common, "run_id": "c", "params.seed": "2", "params.split._target_": "benchmark.protocol.split.holdout",
             "params.model._target_": "models.dmtl.DMTL", "params.model.trainer.device": "auto",
             "params.model.trainer.lr": "0.005", "params.model.trainer.batch_size": "1024"},
            {**new, "run_id": "d", "params.seed": "0", "tags.configured": json.dumps({"model.trainer.lr": 0.01})}]
    jobs = pd.DataFrame(rows).assign(status="FINISHED", start_time=pd.Timestamp("2026-01-01"))
    frame, _ = job_table(jobs)
    signatures = frame.set_index("run_id")["signature"]
    assert signatures["a"] == signatures["b"] == signatures["c"] != signatures["d"]
    config = frame.set_index("run_id")["config"]["c"]
    assert config["split"] == "holdout" and config["model.trainer.lr"] == "0.005" and "model.trainer.device" not in config


def test_readme_counts_of_params_and_tags():
    """The README's "Browsing runs" numbers: DMTL's and SVD's params on the default dataset, and the tag limit."""
    text = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    found = re.search(r"Params hold what was trained \((\d+) for DMTL, (\d+) for SVD", text)
    assert found, "README: the params counts sentence moved"
    counts = tuple(len(provenance.configured_params(_compose(f"model={m}"), RESULT_KEYS)) for m in ("dmtl", "svd"))
    assert tuple(map(int, found.groups())) == counts
    limit = re.search(r"at most (\d+) tags besides MLflow's own", text)
    assert limit and int(limit.group(1)) == MAX_TAGS


def test_a_tuned_sweep_job_stays_under_the_tag_limit(make_cfg, tmp_path):
    """The most tagged job run: a tuned sweep job (``sweep``, ``varies``, ``groupbench.grid_hash``,
    ``tuned.*`` beside the common ones), here with its swept and chosen values in one ``varies`` tag."""
    from benchmark.sweeps import tune
    from benchmark.tracking.tracker import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "tuned")
    cfg = make_cfg("dataset=synthetic", "model=svd", "tune.enabled=true", "tune.trials=2")
    result = tune.run_tuned(cfg, tracker, tags={"sweep": "tuned", "varies.model": "svd",
                                                "varies.dataset": "synthetic", "varies.seed": "0"})
    final = tracker.client.get_run(result.run_id)
    shown = visible_tags(final.data.tags)
    assert {"tuned.chosen", "tuned.trials", "sweep", "varies"} <= set(shown) and len(shown) <= MAX_TAGS, sorted(shown)
    chosen = json.loads(final.data.tags["tuned.chosen"])
    varies = json.loads(shown["varies"])
    assert varies["model"] == "svd" and float(varies["model.params.lr_all"]) == pytest.approx(
        chosen["model.params.lr_all"], rel=1e-3)
    assert float(final.data.params["model.params.lr_all"]) == chosen["model.params.lr_all"]  # the params: as trained


def test_folds_that_trained_differently_give_each_value(make_cfg):
    """k-fold: each fold's model reports its own effective values; equal ones are one value, different
    ones are listed in fold order; a model without a Trainer reports none."""
    from types import SimpleNamespace

    from benchmark.run.job import effective_params
    from models.trainer import Trainer, TrainerConfig

    settings = make_cfg("model=dmtl").trainer

    def fitted(batch: int, lr: float):
        trainer = Trainer(TrainerConfig.from_mapping(dict(settings)), seed=0, name="t")
        trainer.used = {"batch_size": batch, "lr": lr}
        return SimpleNamespace(trainer=trainer)

    assert effective_params([fitted(111, 0.0005), fitted(111, 0.0005)]) == \
        {"model.trainer.batch_size": 111, "model.trainer.lr": 0.0005}
    assert effective_params([fitted(111, 0.5), fitted(110, 0.25), SimpleNamespace(trainer="x")]) == \
        {"model.trainer.batch_size": "111, 110", "model.trainer.lr": "0.5, 0.25"}
    assert effective_params([SimpleNamespace()]) == {}
