"""#24: the report's "Group recommendation" section, from a constructed store of group-item runs (synthetic
metrics, no training): cells are mean ± sample std over seeds, references never bold, the sentence names the
best configuration and says when no real model beats the reference; an experiment without group-item
metrics gets no such section."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmark.report import build as report
from benchmark.tracking.tracker import Tracker
from tests.test_report import GROUP_EXTRA, build, make_sweep
from tests.test_report_findings import CITATION, tables

PROV = report.Provenance(command="python -m benchmark.report --experiment groups", date="2026-01-01 00:00 UTC",
                         uri="sqlite:///test.db", experiment="groups", commit="test")
SEEDS = (0, 1, 2)


def metrics_of(model: str, seed: int) -> dict[str, float]:
    if model == "svd":  # a user-level model: one set per member aggregation
        return {"group_sampled_mean_hr_at_5": 0.30 + 0.02 * seed, "group_sampled_mean_ndcg_at_5": 0.20 + 0.01 * seed,
                "group_sampled_least_misery_hr_at_5": 0.25 + 0.01 * seed,
                "group_sampled_least_misery_ndcg_at_5": 0.22 + 0.01 * seed,
                "group_sampled_mean_pos_ties": 0.01, "group_sampled_least_misery_pos_ties": 0.02}
    # popularity_group: a group scorer and a reference; best on HR@5, worst on NDCG@5
    return {"group_sampled_hr_at_5": 0.40 + 0.01 * seed, "group_sampled_ndcg_at_5": 0.10,
            "group_sampled_pos_ties": 0.30}


def log_group_job(tracker: Tracker, model: str, split: str, seed: int, parent: str) -> None:
    tags = {"groupbench.role": "job", "sweep": tracker.experiment_name, "model": model, "dataset": "camra2011",
            "seed": str(seed), "group_split": split, "config_hash": json.dumps([model, split, seed])}
    params = {"model.name": model, "dataset.name": "camra2011", "seed": seed, "eval.k": 10, "split": split}
    with tracker.run(f"{model}/camra2011/seed{seed}", tags=tags, parent_run_id=parent) as logger:
        logger.log_params(params)
        logger.log_metrics(metrics_of(model, seed))
        if split == "corrected":  # the per-case ranks (the legacy split's runs lack them: no test there)
            logger.log_artifacts({"per_case_sampled.csv": cases_of(model)})


GROUPS = list(range(12))


def cases_of(model: str) -> pd.DataFrame:
    """SVD's least-misery scores put every positive first, its mean ones 7th; group popularity's 6th."""
    ranks = {"svd": {"least_misery": 1, "mean": 7}, "popularity_group": {"model": 6}}[model]
    return pd.concat([pd.DataFrame({"strategy": strategy, "group": GROUPS, "item": 100, "rank": rank, "tied": False})
                      for strategy, rank in ranks.items()], ignore_index=True)


@pytest.fixture(scope="module")
def groups_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("groups")
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}", "groups")
    with tracker.run("sweep", tags={"groupbench.role": "sweep", "sweep": "groups"}) as parent:
        for model in ("svd", "popularity_group"):
            for split in ("corrected", "shipped (legacy)"):
                for seed in SEEDS:
                    log_group_job(tracker, model, split, seed, parent.run_id)
    out = folder / "report"
    report.build_report(tracker.client, "groups", tracker.uri, out, PROV, log_to_parent=False)
    return out, (out / "report.md").read_text(encoding="utf-8")


CORRECTED = "Group recommendation: camra2011, corrected split, sampled (100 negatives)"
LEGACY = "Group recommendation: camra2011, shipped (legacy) split — legacy, sampled (100 negatives)"


def rows(md: str, heading: str) -> dict[str, list[str]]:
    section = md.split(f"### {heading}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ") and "---" not in line}


def test_cells_are_mean_and_sample_std_over_seeds(groups_report):
    _, md = groups_report
    table = tables(md)[CORRECTED].set_index("configuration")
    assert table.at["SVD (mean)", "HR@5"] == "0.3200 ± 0.0200"          # 0.30, 0.32, 0.34
    assert table.at["SVD (mean)", "NDCG@5"] == "0.2100 ± 0.0100"
    assert table.at["SVD (least misery)", "NDCG@5"] == "0.2300 ± 0.0100"
    assert table.at["Group popularity", "HR@5"] == "0.4100 ± 0.0100"
    assert table.at["Group popularity", "NDCG@5"] == "0.1000 ± 0.0000"
    assert table.at["SVD (mean)", "seeds"] == "3"
    assert table.at["Group popularity", "positive ties"] == "30.0%"
    assert list(table.columns[:2]) == ["HR@5", "NDCG@5"]
    # references in their own block under the real models
    names = list(table.index)
    assert names.index("*reference predictors*") < names.index("Group popularity")
    assert max(names.index("SVD (mean)"), names.index("SVD (least misery)")) < names.index("*reference predictors*")


def test_best_real_model_bold_never_a_reference(groups_report):
    _, md = groups_report
    shown = rows(md, CORRECTED)
    assert shown["SVD (mean)"][1].startswith("**")           # best real HR@5, below the reference's 0.41
    assert not shown["Group popularity"][1].startswith("**")
    assert shown["SVD (least misery)"][2].startswith("**")   # best NDCG@5
    assert not shown["SVD (mean)"][2].startswith("**")
    assert not any(c.startswith("**") for c in shown["Group popularity"])


def test_sentence_names_best_and_whether_it_beats_the_reference(groups_report):
    _, md = groups_report
    text = md.split(f"### {CORRECTED}", 1)[1].split("\n### ", 1)[0]
    sentence = next(line for line in text.splitlines() if line.startswith("Best real configuration"))
    assert "SVD (mean) on HR@5" in sentence and "SVD (least misery) on NDCG@5" in sentence
    assert "No real model beats Group popularity on HR@5" in sentence
    assert "SVD (least misery) beats the best reference, Group popularity, on NDCG@5" in sentence


def test_legacy_split_heading_csv_and_no_paired_tests_note(groups_report):
    out, md = groups_report
    assert f"### {LEGACY}" in md
    assert "Paired per-group tests (one unit = one group" in md
    csv = report.read_csv(out / "group_recommendation.csv")
    assert set(csv["split"]) == {"corrected", "shipped (legacy)"}
    cell = csv[(csv["split"] == "corrected") & (csv["configuration"] == "SVD (mean)") & (csv["metric"] == "HR@5")]
    assert cell["mean"].iloc[0] == pytest.approx(0.32) and cell["std"].iloc[0] == pytest.approx(0.02)
    assert cell["n"].iloc[0] == 3
    assert not csv.loc[csv["reference"], "bold"].any()


def test_experiment_without_group_item_metrics_has_no_section(tmp_path):
    tracker = make_sweep(tmp_path, extra=GROUP_EXTRA)   # user-level group metrics only (group_mean_precision_at_10)
    out = tmp_path / "report"
    written = build(tracker, out)
    assert "Group recommendation" not in (out / "report.md").read_text(encoding="utf-8")
    assert out / "group_recommendation.csv" not in written and not (out / "group_recommendation.csv").exists()


def test_findings_cite_best_group_configuration_against_best_reference(groups_report):
    _, md = groups_report
    findings = md.split("## Findings", 1)[1].split("\n## ", 1)[0]
    line = next(line for line in findings.splitlines() if line.startswith("- camra2011, group recommendation"))
    assert "(NDCG@5)" in line and "corrected split, sampled: SVD (least misery) 0.2300" in line
    assert "Group popularity 0.1000" in line and "beats it" in line and "no real model" not in line
    assert "shipped (legacy)" not in line                    # the legacy split only where there is no other
    cells = tables(md)
    for table, row, column in CITATION.findall(line):
        assert cells[table].set_index("configuration").at[row, column].split(" ± ")[0] in line


def test_paired_per_group_test_where_runs_log_per_case_ranks(groups_report):
    out, md = groups_report
    text = md.split(f"### {CORRECTED}", 1)[1].split("\n### ", 1)[0]
    assert "Paired per group (12 groups): SVD (least misery) − Group popularity." in text
    shown = rows(md, CORRECTED)
    assert shown["HR@5"][1:] == ["+1.0000", "[+1.0000, +1.0000]", shown["HR@5"][3], "better"]
    legacy = md.split(f"### {LEGACY}", 1)[1].split("\n### ", 1)[0]
    assert "No paired per-group test: runs without a `per_case_sampled` artifact" in legacy
    tests = report.read_csv(out / "group_recommendation_tests.csv")
    assert set(tests["split"]) == {"corrected"} and set(tests["verdict"]) == {"better"}
    assert tests["groups"].eq(12).all()


def test_a_group_item_experiment_has_no_user_level_sections(groups_report):
    # no run of it has a user-level metric: no main table, no focus-model sweep or significance
    # section, and its group_* metrics appear once, in their own section, not among the group-level
    # metrics of user-level runs (which they used to be)
    _, md = groups_report
    for heading in ("## Main results", "## Tuned results", "## DMTL", "## Significance", "## Group-level metrics"):
        assert heading not in md, heading
    assert md.index("## Findings") < md.index("## Group recommendation")
    assert "Reference predictors (" in md and "oracle" not in md.split("\n## ")[0]  # header lists those that ran


def test_contenders_add_the_best_group_model_against_the_best_aggregated_user_model():
    from benchmark.report.sections.group_recommendation import contenders
    rows = pd.DataFrame({
        "configuration": ["AGREE", "ConsRec", "SVD (mean)", "SVD (least misery)", "Group popularity"],
        "strategy": ["model", "model", "mean", "least_misery", "model"],
        "reference": [False, False, False, False, True], "metric": "NDCG@10",
        "mean": [0.30, 0.35, 0.20, 0.25, 0.33]})
    pairs = [(a["configuration"], b["configuration"]) for a, b in contenders(rows, "NDCG@10")]
    assert pairs == [("ConsRec", "Group popularity"), ("ConsRec", "SVD (least misery)")]
    only_users = rows[rows["strategy"] != "model"].assign(reference=False)
    assert [(a["configuration"], b["configuration"]) for a, b in contenders(only_users, "NDCG@10")] == []


def test_case_metrics_read_the_heldout_protocols_per_group_table(tmp_path):
    from mlflow.tracking import MlflowClient

    from benchmark.report.sections.group_recommendation import case_metrics
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "groups")
    table = pd.DataFrame({"strategy": ["model", "model", "mean"], "group": [3, 4, 3],
                          "recall_at_20": [0.5, 1.0, 0.0], "ndcg_at_20": [0.4, 1.0, 0.0],
                          "recall_at_50": [1.0, 1.0, 0.5], "ndcg_at_50": [0.6, 1.0, 0.2]})
    with tracker.run("weeplaces", tags={"groupbench.role": "job"}) as logger:
        logger.log_artifacts({"per_group_heldout.csv": table})
        run_id = logger.run_id
    missing: list[str] = []
    cases = case_metrics(MlflowClient(tracker.uri), [run_id], "model", "heldout", tmp_path / "dl", missing)
    assert missing == [] and cases["group"].tolist() == [3, 4]
    assert cases["Recall@20"].tolist() == [0.5, 1.0] and cases["NDCG@50"].tolist() == [0.6, 1.0]
