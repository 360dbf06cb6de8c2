"""Reproduction configurations of the group recommenders (conf/reproduction/, +reproduction=<name>; issue #25):
each composes to exactly its reference protocol's overrides, a run of one is tagged and logs its figures, its
runs stay out of this harness's group tables, the report section's differences and verdicts are the hand-computed
ones, and an ordinary run's config hash is what it was before reproductions existed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf, open_dict

import benchmark.report.collect as collect_module
from benchmark.core import reproduction as reproductions
from benchmark.core.config import config_hash
from benchmark.core.errors import ConfigError
from benchmark.report.build import build_report
from benchmark.report.collect import collect
from benchmark.report.format import Provenance, read_csv
from benchmark.report.sections import group_reproduction as section
from benchmark.report.sections.group_recommendation import METRIC, long_results
from benchmark.run.job import dataset_defaults, run, validate
from tests.conftest import CONF
from tests.test_group_protocol import camra_present
from tests.test_sweeps import planned

NAMES = sorted(path.stem for path in (CONF / "reproduction").glob("*.yaml"))


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return dataset_defaults(compose(config_name="config", overrides=list(overrides)))


def _without_node(cfg):
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        del cfg[reproductions.NODE]
    return cfg


# ---------------------------------------------------------------------------- the configuration files

@pytest.mark.parametrize("name", NAMES)
def test_a_reproduction_file_is_exactly_its_reference_protocols_overrides(name):
    cfg = _compose(f"+reproduction={name}")
    validate(cfg)  # the node parses and the run is what the node's overrides say
    spec = reproductions.of(cfg)
    assert spec.name == name and spec.reported and spec.harness_split
    # the file composes the same job as the documented command line (docs/protocol.md), its node aside
    assert config_hash(_without_node(cfg)) == config_hash(_compose(*spec.overrides))
    assert cfg.model.name == spec.choice("model") and cfg.dataset.name == spec.choice("dataset")
    for metric in spec.metrics:  # named as the harness logs them
        assert METRIC.match(metric), metric
    for entry in spec.reported:
        assert set(entry.metrics) <= set(spec.metrics) and entry.source
    assert _compose(*spec.harness_overrides).model.name == spec.choice("model")
    for reference in spec.references:  # a reference predictor under the same protocol: the model's keys are not its
        ref = _compose(f"+reproduction={name}", f"model={reference}")
        validate(ref)
        assert reproductions.tags(ref)[reproductions.ROLE_TAG] == "reference"
        assert set(ref.model) == set(_compose(f"model={reference}").model)


def test_the_groupim_reproduction_is_labelled_reduced_and_has_no_invented_figures():
    spec = reproductions.of(_compose("+reproduction=groupim_weeplaces_reduced"))
    assert "reduced" in spec.name and "reduced budget" in spec.label
    assert all(value is None for entry in spec.reported for value in entry.metrics.values())
    assert "not retrieved" in spec.reported[0].source


def test_the_full_groupim_reproduction_has_the_reference_budget_and_no_invented_figures():
    """train.py's defaults (CrowdDynamicsLab/GroupIM @ 899890e): 100 + 10 pre-training epochs, 200 group epochs
    with no patience and the best validation epoch kept (no refit), 256 groups a batch at lr 5e-3."""
    cfg = _compose("+reproduction=groupim_weeplaces")
    spec = reproductions.of(cfg)
    assert "reduced" not in spec.name and "full budget" in spec.label
    assert (cfg.model.pretrain_epochs, cfg.model.pretrain_mi_epochs) == (100, 10)
    assert (cfg.trainer.max_epochs, cfg.trainer.patience, cfg.trainer.refit) == (200, 200, False)
    assert (cfg.trainer.batch_size, cfg.trainer.lr) == (256, 0.005)
    assert all(value is None for entry in spec.reported for value in entry.metrics.values())


def test_an_override_that_changes_a_reproduction_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"sets trainer.lr=0.000005 but the run has trainer.lr=0.1") as caught:
        validate(_compose("+reproduction=agree_camra2011", "trainer.lr=0.1"))
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="model=svd is not a reference predictor"):
        validate(_compose("+reproduction=agree_camra2011", "model=svd"))
    with pytest.raises(ConfigError, match="split=corrected"):
        validate(_compose("+reproduction=consrec_mafengwo", "split=corrected"))
    cfg = _compose("+reproduction=agree_camra2011")
    with open_dict(cfg):
        cfg.reproduction.tolerance.kind = "loose"
    with pytest.raises(ConfigError, match="reproduction.tolerance.kind='loose'"):
        validate(cfg)


# ---------------------------------------------------------------------------- the config hash

# hashes of ordinary runs computed at 9ea2078 (before reproductions existed): they must not move
GOLDEN = {("model=agree", "dataset=camra2011"): "4dd287ad7a9eea39",
          ("model=consrec", "dataset=mafengwo"): "87b2fc9219539b3c",
          ("model=groupim", "dataset=weeplaces"): "c2b9b8d1a43886af",
          ("model=popularity_group", "dataset=camra2011", "split=shipped"): "805446cd7a0811dd",
          ("model=svd",): "7f5d853f5af9ca3f",
          ("model=agree", "dataset=camra2011", "split=shipped", "trainer.fixed_epochs=11", "trainer.batch_size=43",
           "trainer.lr=0.000005"): "d8d7ea0c1d1f42eb"}


def test_ordinary_runs_keep_their_config_hash_and_only_the_reproductions_name_joins_it():
    for overrides, digest in GOLDEN.items():
        assert config_hash(_compose(*overrides)) == digest, overrides
    cfg = _compose("+reproduction=agree_camra2011")
    typed = GOLDEN[tuple(reproductions.of(cfg).overrides)]  # the same overrides typed by hand: another job
    assert config_hash(cfg) != typed and config_hash(_without_node(cfg)) == typed
    for key, value in (("reproduction.label", "other"), ("reproduction.tolerance.value", 0.5),
                       ("reproduction.reported", []), ("reproduction.reference", "x @ y")):
        changed = copy.deepcopy(cfg)
        OmegaConf.update(changed, key, value, merge=False)
        assert config_hash(changed) == config_hash(cfg), key  # what is compared, not what is computed
    renamed = copy.deepcopy(cfg)
    renamed.reproduction.name = "other"
    assert config_hash(renamed) != config_hash(cfg)


# ---------------------------------------------------------------------------- a run, and the report

@pytest.mark.slow
def test_a_reproduction_run_is_tagged_and_kept_out_of_the_group_tables(tmp_path, make_cfg, tracking_uri):
    if not camra_present():
        pytest.skip("CAMRa2011 files not present")
    tagged = run(make_cfg("+reproduction=agree_camra2011", "model=popularity_group", "tracking.experiment=groups"))
    plain = run(make_cfg("model=popularity_group", "dataset=camra2011", "split=shipped", "tracking.experiment=groups"))
    client = MlflowClient(tracking_uri)
    tags = client.get_run(tagged.run_id).data.tags
    assert tags[reproductions.TAG] == "agree_camra2011" and tags[reproductions.ROLE_TAG] == "reference"
    assert tags[reproductions.LABEL_TAG].startswith("AGREE, reference protocol")
    assert reproductions.TAG not in client.get_run(plain.run_id).data.tags
    logged = json.loads(Path(client.download_artifacts(tagged.run_id, reproductions.ARTIFACT, str(tmp_path))).read_text())
    assert reproductions.parse(logged) == reproductions.of(_compose("+reproduction=agree_camra2011"))
    # the same protocol and seed: the same figures, and only the plain run is in the harness's tables
    assert tagged.metrics["group_sampled_hr_at_5"] == plain.metrics["group_sampled_hr_at_5"]
    col = collect(client, "groups", tracking_uri)
    assert list(col.runs["run_id"]) == [plain.run_id] and list(col.reproductions["run_id"]) == [tagged.run_id]
    both = pd.concat([col.runs, col.reproductions], ignore_index=True)
    assert set(long_results(both)["run_ids"]) == {plain.run_id}  # the section's own guard, too
    prov = Provenance("test", "today", tracking_uri, "groups", "abc")
    build_report(client, "groups", tracking_uri, tmp_path / "report", prov, log_to_parent=False)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Reproducing the group recommenders" in text
    assert read_csv(tmp_path / "report" / "group_recommendation.csv")["n"].eq(1).all()
    rows = read_csv(tmp_path / "report" / "group_reproduction.csv")
    ref = rows[(rows["row"] == "Group popularity, reference protocol") & (rows["metric"] == "group_sampled_hr_at_5")]
    assert ref["mean"].iloc[0] == pytest.approx(tagged.metrics["group_sampled_hr_at_5"])
    assert ref["command"].iloc[0] == "python -m benchmark +reproduction=agree_camra2011 model=popularity_group"
    found = read_csv(tmp_path / "report" / "group_reproduction_verdicts.csv")
    assert set(found.loc[found["checked"], "verdict"]) == {"not run"}  # AGREE itself never ran here


# ---------------------------------------------------------------------------- differences and verdicts

SPEC = reproductions.parse({
    "name": "toy", "label": "Toy, reference protocol", "reference": "someone/toy @ 1234567",
    "overrides": ["model=agree", "dataset=camra2011", "split=shipped"],
    "metrics": ["group_sampled_hr_at_5", "group_sampled_ndcg_at_5", "group_full_hr_at_5"],
    "tolerance": {"value": 0.03, "kind": "absolute", "note": "two standard errors"},
    "reported": [{"source": "README", "metrics": {"group_sampled_hr_at_5": 0.60, "group_sampled_ndcg_at_5": 0.40}},
                 {"source": "paper", "metrics": {"group_sampled_hr_at_5": 0.70}},
                 {"source": "table 3", "metrics": {"group_sampled_hr_at_5": None}},
                 {"source": "epoch 0", "checked": False, "metrics": {"group_sampled_hr_at_5": 0.10}}],
    "harness": {"overrides": ["model=agree", "dataset=camra2011", "model.embedding=16"], "split": "corrected"},
    "references": ["popularity_group"]})


def _runs(rows: list[dict]) -> pd.DataFrame:
    base = {"reproduction": "", "dataset": "camra2011", "group_split": "corrected", "label": "AGREE",
            "config": {}, "start_time": 0}
    frame = pd.DataFrame([{**base, **row} for row in rows])
    frame["run_id"] = [f"r{n}" for n in range(len(frame))]
    return frame


REPRO = _runs([{"reproduction": "toy", "model": "agree", "seed": 0, "group_split": "shipped (legacy)",
                "group_sampled_hr_at_5": 0.61, "group_sampled_ndcg_at_5": 0.35, "group_full_hr_at_5": 0.08},
               {"reproduction": "toy", "model": "agree", "seed": 1, "group_split": "shipped (legacy)",
                "group_sampled_hr_at_5": 0.63, "group_sampled_ndcg_at_5": 0.37, "group_full_hr_at_5": 0.10},
               {"reproduction": "toy", "model": "popularity_group", "seed": 0, "group_split": "shipped (legacy)",
                "group_sampled_hr_at_5": 0.59, "group_sampled_ndcg_at_5": 0.40, "group_full_hr_at_5": 0.09}])


def test_differences_and_verdicts_are_the_hand_computed_ones():
    found = section.verdicts(SPEC, section.reproduced_runs(SPEC, REPRO))
    by = {(r.source, r.metric): r for r in found.itertuples()}
    # reproduced means over the two seeds: HR@5 (0.61 + 0.63) / 2 = 0.62, NDCG@5 0.36
    readme_hr, readme_ndcg = by[("README", "group_sampled_hr_at_5")], by[("README", "group_sampled_ndcg_at_5")]
    assert readme_hr.reproduced == pytest.approx(0.62) and readme_hr.n == 2
    assert readme_hr.difference == pytest.approx(0.02) and readme_hr.within            # |+0.02| <= 0.03
    assert readme_ndcg.difference == pytest.approx(-0.04) and readme_ndcg.within is False  # |-0.04| > 0.03
    assert readme_hr.verdict == "not met"
    assert by[("paper", "group_sampled_hr_at_5")].difference == pytest.approx(-0.08)
    assert by[("table 3", "group_sampled_hr_at_5")].verdict == "no reported figure"
    assert by[("epoch 0", "group_sampled_hr_at_5")].verdict == "context (not checked)"
    met = reproductions.parse({**SPEC.as_dict(), "reported": [{"source": "s", "metrics": {"group_sampled_hr_at_5": 0.60}}]})
    assert set(section.verdicts(met, section.reproduced_runs(met, REPRO))["verdict"]) == {"met"}
    assert set(section.verdicts(met, REPRO.iloc[:0])["verdict"]) == {"not run"}
    # a relative tolerance scales with the reported figure: 10 % of 0.60 = 0.06 >= |0.62 - 0.60|; of 0.10: 0.01 < 0.02
    relative = reproductions.parse({**SPEC.as_dict(), "tolerance": {"value": 0.1, "kind": "relative"}})
    assert relative.within(0.02, 0.60) and not relative.within(0.02, 0.10)
    lines = section.verdict_lines(SPEC, found)
    assert any("**not met** (NDCG@5 sampled outside it" in line and "HR@5 sampled +0.0200" in line for line in lines)
    assert any("table 3" in line and "**no reported figure**" in line for line in lines)
    assert not any("epoch 0" in line for line in lines)  # context only: no verdict


def test_the_table_puts_the_harness_protocol_beside_it_without_other_splits():
    harness = _runs([{"model": "agree", "seed": s, "group_sampled_hr_at_5": v, "label": "AGREE",
                      "config": {"model.embedding": "32"}} for s, v in ((0, 0.70), (1, 0.80))]
                    + [{"model": "agree", "seed": 0, "group_split": "group_loo", "group_sampled_hr_at_5": 0.10},
                       {"model": "agree", "seed": 0, "dataset": "mafengwo", "group_sampled_hr_at_5": 0.20},
                       {"model": "popularity_group", "seed": 0, "group_sampled_hr_at_5": 0.74}])
    found = section.verdicts(SPEC, section.reproduced_runs(SPEC, REPRO))
    long = section.table(SPEC, REPRO, harness, found)
    hr = long[long["metric"] == "group_sampled_hr_at_5"].set_index("row")
    mine = hr.loc["AGREE, this harness's protocol"]
    assert mine["mean"] == pytest.approx(0.75) and mine["std"] == pytest.approx(np.std([0.70, 0.80], ddof=1))
    assert mine["seeds"] == "2"  # the group_loo and Mafengwo runs are not this table's
    assert mine["command"] == "python -m benchmark model=agree dataset=camra2011 model.embedding=32"
    assert hr.loc["Toy, reference protocol — reproduced", "command"] == "python -m benchmark +reproduction=toy"
    assert hr.loc["Group popularity, reference protocol", "mean"] == pytest.approx(0.59)
    assert hr.loc["Group popularity, this harness's protocol", "mean"] == pytest.approx(0.74)
    assert hr.loc["reported: table 3", "text"] == "not retrieved"
    assert hr.loc["difference, reproduced − reported (README)", "text"] == "+0.0200"
    assert "difference, reproduced − reported (table 3)" not in hr.index  # nothing reported: nothing to subtract
    sentence = section.comparison(SPEC, long)  # headline: NDCG@5 sampled, the only NDCG of the first protocol
    assert "reference protocol, AGREE (0.3600) does not beat the best reference, Group popularity (0.4000)" in sentence


def test_a_reproduction_cell_and_sweep_do_not_set_the_harness_tables_seeds():
    """Reproductions run one seed: their cells are not 'missing' the harness sweep's other seeds, and a sweep
    of reproductions only is not the sweep whose seed count and overrides the report's header follows."""
    rows = [{"dataset": "camra2011", "signature": "h", "label": "Group popularity", "model": "popularity_group",
             "seed": seed, "run_id": f"h{seed}", "status": "FINISHED", "error": "", "reproduction": ""}
            for seed in range(5)]
    rows += [{"dataset": "camra2011", "signature": "r", "label": "AGREE (reproduction toy)", "model": "agree",
              "seed": 0, "run_id": "r0", "status": "FINISHED", "error": "", "reproduction": "toy"},
             {"dataset": "camra2011", "signature": "h2", "label": "AGREE", "model": "agree",
              "seed": 0, "run_id": "a0", "status": "FINISHED", "error": "", "reproduction": ""}]
    frame = pd.DataFrame(rows)
    missing = collect_module._incomplete(frame, frame, frame.iloc[:0], 5, collect_module.is_reproduction(frame))
    assert set(missing["configuration"]) == {"AGREE"} and len(missing) == 4  # seeds 1-4 of the harness's AGREE only

    class Parent:
        def __init__(self, grids, overrides=""):
            self.data = type("Data", (), {"params": {"grids": json.dumps(grids), "overrides": overrides}})()

    assert collect_module.reproduction_sweep(Parent({"a": {"+reproduction": "x,y", "seed": 0},
                                                     "b": {"+reproduction": "x", "model": "popularity_group"}}))
    assert not collect_module.reproduction_sweep(Parent({"a": {"model": "agree"}, "b": {"+reproduction": "x"}}))


@pytest.mark.slow
def test_the_reproduction_sweep_plans_every_reproduction_and_its_references(tmp_path):
    """The sweeper sweeps over ``+reproduction`` (a config group added on the command line) like any group: one
    job per reproduction and one per (reproduction, reference), each with the runner's own config hash."""
    jobs = planned(tmp_path, "+sweep=group_reproduction")
    expected = {}
    for name in NAMES:
        spec = reproductions.of(_compose(f"+reproduction={name}"))
        expected[config_hash(_compose(f"+reproduction={name}"))] = f"{spec.choice('model')}/{spec.choice('dataset')}/seed0"
        for reference in spec.references:
            cfg = _compose(f"+reproduction={name}", f"model={reference}")
            expected[config_hash(cfg)] = f"{reference}/{spec.choice('dataset')}/seed0"
    assert jobs == expected
