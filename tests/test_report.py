"""The report reads MLflow runs only; every number it writes equals the metric it came from.

Most tests log runs directly (fast, known contents, DMTL variants without training DMTL);
one runs two Surprise models on the synthetic dataset through the real runner.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.report import build as report
from benchmark.tracking.tracker import Tracker

PROV = report.Provenance(command="python -m benchmark.report --experiment smoke", date="2026-01-01 00:00 UTC",
                         uri="sqlite:///test.db", experiment="smoke", commit="test")
SEEDS = (0, 1, 2)
USERS = np.arange(40)
# model configurations: (model, λ, attention, quality shift of the per-user metrics)
CONFIGS = [("dmtl", 0.5, "softmax", 0.10), ("dmtl", 1.0, "softmax", 0.20), ("dmtl", 1.0, "none", 0.05),
           ("dmtl", 1.0, "uniform", 0.0), ("svd", None, None, 0.0), ("knn_basic", None, None, -0.2)]


def per_user(shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)   # same base per seed for every model: a paired design
    base = rng.uniform(0.2, 0.6, len(USERS))
    noise = np.random.default_rng(int(shift * 100) + 500 + 1000 * seed).normal(0, 0.01, len(USERS))
    return pd.DataFrame({"user": USERS, "n_test": 5, "precision": base + shift + noise,
                         "recall": base + shift / 2 + noise, "ndcg": base + shift + 2 * noise,
                         "user_rmse": 1.2 - shift + noise, "user_mae": 0.9 - shift + noise})


def log_job(tracker: Tracker, model: str, lam, attention, shift: float, seed: int, dataset: str = "synthetic",
            parent: str | None = None, fail: bool = False, extra: dict | None = None, grouping_k: int = 5) -> str:
    params = {"model.name": model, "dataset.name": dataset, "seed": seed, "eval.k": 10,
              "split._target_": "benchmark.protocol.split.holdout", "grouping.k": grouping_k}
    if lam is not None:
        params.update({"model.lambda_profile": lam, "model.attention": attention})
    config_hash = json.dumps([model, lam, attention, dataset, seed] + ([grouping_k] if grouping_k != 5 else []))
    tags = {"groupbench.role": "job", "sweep": tracker.experiment_name, "config_hash": config_hash,
            "model": model, "dataset": dataset, "seed": str(seed)}
    table = per_user(shift, seed)
    metrics = {"rmse": float(table["user_rmse"].mean()) + 0.01 * seed, "mae": float(table["user_mae"].mean()),
               "precision_at_10": float(table["precision"].mean()), "recall_at_10": float(table["recall"].mean()),
               "ndcg_at_10": float(table["ndcg"].mean()), "fit_seconds": 1.5 + shift + seed / 10,
               "predict_seconds": 0.1, **(extra or {})}
    if model == "dmtl":
        # val_rmse (the selection metric) ranks the configurations as their test quality does here
        metrics.update({"profile_accuracy": 0.5 + shift + seed / 100, "profile_f1_macro": 0.4 + shift,
                        "val_rmse": 1.0 - shift + seed / 100})
    try:
        with tracker.run(f"{model}/{dataset}/seed{seed}", tags=tags, parent_run_id=parent) as logger:
            logger.log_params(params)
            if fail:
                raise RuntimeError("constructed failure")
            logger.log_metrics(metrics)
            logger.log_artifacts({"per_user_metrics.csv": table})
            return logger.run_id
    except RuntimeError:
        return ""


def make_sweep(tmp_path, fail_one: bool = False, extra: dict | None = None) -> Tracker:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    with tracker.run("sweep", tags={"groupbench.role": "sweep", "sweep": "smoke"}) as parent:
        # as benchmark/sweeps/sweep.py logs them
        parent.log_params({"overrides": "trainer.max_epochs=1",
                           "grids": json.dumps({"smoke": {"model": "dmtl,svd,knn_basic", "seed": "0,1,2"}})})
        for model, lam, attention, shift in CONFIGS:
            for seed in SEEDS:
                failing = fail_one and model == "svd" and seed == 2
                log_job(tracker, model, lam, attention, shift, seed, parent=parent.run_id, fail=failing,
                        extra=extra if model == "dmtl" else None)
    return tracker


def build(tracker: Tracker, out):
    return report.build_report(tracker.client, "smoke", tracker.uri, out, PROV)


GROUP_EXTRA = {"group_mean_precision_at_10": 0.42, "cold_rmse": 1.1, "group_n_groups": 4.0}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One constructed sweep (svd seed 2 FAILED; DMTL logs group-level metrics) and its report."""
    folder = tmp_path_factory.mktemp("sweep")
    tracker = make_sweep(folder, fail_one=True, extra=GROUP_EXTRA)
    out = folder / "report"
    written = build(tracker, out)
    return tracker, out, written


def mlflow_stats(tracker: Tracker) -> pd.DataFrame:
    """mean/std/n per configuration straight from the MLflow client, independent of the report's code."""
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`groupbench.role` = 'job'")
    rows = [{"model": r.data.params["model.name"], "lam": r.data.params.get("model.lambda_profile"),
             "att": r.data.params.get("model.attention"), **r.data.metrics}
            for r in runs if r.info.status == "FINISHED"]
    return pd.DataFrame(rows).fillna({"lam": "", "att": ""}).groupby(["model", "lam", "att"]).agg(
        ["mean", "std", "count"])


def test_report_numbers_equal_mlflow_metrics(sweep):
    tracker, out, written = sweep
    names = {p.name for p in written}
    assert {"report.md", "main_table.csv", "main_table.tex", "lambda_sweep.png", "attention_ablation.png",
            "lambda_sweep.csv", "attention_ablation.csv", "significance.csv", "completeness.csv"} <= names
    for png in ("lambda_sweep.png", "attention_ablation.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    csv = report.read_csv(out / "main_table.csv")
    measured = csv[csv["source"] == "measured"]
    expected = mlflow_stats(tracker)
    assert len(measured) == len(CONFIGS)
    md = (out / "report.md").read_text()
    tex = (out / "main_table.tex").read_text()
    for row in measured.itertuples(index=False):
        lam = "" if pd.isna(row.lambda_profile) else str(row.lambda_profile)
        att = "" if pd.isna(row.attention) else row.attention
        truth = expected.loc[(row.model, lam, att)]
        for metric in ("rmse", "mae", "precision_at_10", "recall_at_10", "ndcg_at_10", "fit_seconds"):
            mean, std, n = (getattr(row, f"{metric}_{s}") for s in ("mean", "std", "n"))
            assert mean == pytest.approx(truth[(metric, "mean")], rel=1e-12, abs=1e-15)
            assert std == pytest.approx(truth[(metric, "std")], rel=1e-12, abs=1e-15)
            assert n == truth[(metric, "count")] == (2 if row.model == "svd" else len(SEEDS))
            decimals = 2 if metric == "fit_seconds" else 4
            mark = "‡" if n < len(SEEDS) else ""
            cell = f"{mean:.{decimals}f} ± {std:.{decimals}f} ({int(n)}{mark})"
            assert cell in md
            assert cell.replace("±", r"$\pm$").replace("‡", r"$^\ddagger$") in tex
        if row.model == "dmtl":
            truth_acc = truth[("profile_accuracy", "mean")]
            assert row.profile_accuracy_mean == pytest.approx(truth_acc, rel=1e-12)
        else:
            assert pd.isna(row.profile_accuracy_mean)
    assert r"\textbf{" in tex and r"\textbf\{" not in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"DMTL ($\lambda$=1, softmax)" in tex
    # labels and provenance
    assert "DMTL (λ=1, softmax)" in md and "DMTL (λ=0.5, softmax)" in md and "| SVD |" in md
    for path in (out / "report.md", out / "main_table.csv", out / "main_table.tex", out / "significance.csv"):
        text = path.read_text()
        assert PROV.command in text and PROV.date in text and PROV.uri in text and "'smoke'" in text
    # bold marks the best mean: highest NDCG@10 is DMTL (λ=1, softmax) (largest constructed shift)
    best = measured.loc[measured["ndcg_at_10_mean"].idxmax()]
    assert best.configuration == "DMTL (λ=1, softmax)"
    assert f"**{best.ndcg_at_10_mean:.4f} ± {best.ndcg_at_10_std:.4f} (3)**" in md
    worst = measured.loc[measured["ndcg_at_10_mean"].idxmin()]
    assert f"**{worst.ndcg_at_10_mean:.4f}" not in md
    # logged into the sweep's parent run
    parent = tracker.client.search_runs([tracker.experiment_id], "tags.`groupbench.role` = 'sweep'")[0]
    logged = {a.path for a in tracker.client.list_artifacts(parent.info.run_id, "report")}
    assert "report/report.md" in logged and "report/main_table.csv" in logged


def test_lambda_and_ablation_tables(sweep):
    _, out, _ = sweep
    table = report.read_csv(out / "lambda_sweep.csv")
    softmax = table[table["attention"] == "softmax"].set_index("lambda_profile")
    assert list(softmax.index) == [0.5, 1.0]
    assert softmax.loc[1.0, "ndcg_at_10_mean"] > softmax.loc[0.5, "ndcg_at_10_mean"]
    ablation = report.read_csv(out / "attention_ablation.csv")
    assert sorted(ablation["attention"]) == ["none", "softmax", "uniform"]
    assert set(ablation["lambda_profile"]) == {1.0}
    assert (ablation["ndcg_at_10_n"] == len(SEEDS)).all()


def test_significance_direction_and_holm(sweep):
    _, out, _ = sweep
    sig = report.read_csv(out / "significance.csv")
    assert set(sig["reference"]) == {"DMTL (λ=1, softmax)"}
    assert set(sig["baseline"]) == {"SVD", "KNNBasic"}
    # one pair per user: each user's values averaged over the seeds both ran (SVD lost seed 2)
    n = sig.set_index(["baseline", "metric"])
    assert (n.loc["KNNBasic", "n"] == len(USERS)).all() and (n.loc["KNNBasic", "n_seeds"] == 3).all()
    assert (n.loc["SVD", "n"] == len(USERS)).all() and (n.loc["SVD", "n_seeds"] == 2).all()
    assert set(sig["metric"]) == {"precision", "recall", "ndcg", "user_rmse"}
    assert (sig["verdict"] == "better").all()
    assert (sig["wilcoxon_p_holm"] < 1e-6).all()
    # Holm across every baseline x metric of the dataset: one family
    for _, group in sig.groupby("dataset"):
        assert len(group) == 2 * 4
        np.testing.assert_allclose(group["wilcoxon_p_holm"], report.holm(group["wilcoxon_p"].to_numpy()))
        np.testing.assert_allclose(group["t_p_holm"], report.holm(group["t_p"].to_numpy()))
    # the difference and its Wilcoxon p recomputed from the logged per-user tables, averaged per user
    dmtl = np.mean([per_user(0.20, seed)["precision"] for seed in (0, 1)], axis=0)
    svd_values = np.mean([per_user(0.0, seed)["precision"] for seed in (0, 1)], axis=0)
    svd = sig[(sig["baseline"] == "SVD") & (sig["metric"] == "precision")].iloc[0]
    assert svd["mean_diff"] == pytest.approx(float(np.mean(dmtl - svd_values)), abs=1e-12)
    assert svd["wilcoxon_p"] == pytest.approx(stats.wilcoxon(dmtl - svd_values).pvalue, rel=1e-9)
    assert svd["ci_low"] < svd["mean_diff"] < svd["ci_high"]
    assert svd["ci_high"] - svd["ci_low"] < 0.02  # noise sd 0.01 on 40 users: a narrow interval
    report_md = (out / "report.md").read_text()
    assert "one pair per user" in report_md and "Holm across all baselines × metrics" in report_md
    assert "▲" in report_md
    # the header names the sweep's overrides (the constructed parent run logged trainer.max_epochs=1)
    assert "Sweep overrides (latest sweep run): `trainer.max_epochs=1`." in report_md


def test_failed_job_is_named_in_completeness(sweep):
    _, out, _ = sweep
    missing = report.read_csv(out / "completeness.csv")
    assert len(missing) == 1
    row = missing.iloc[0]
    assert (row["configuration"], row["dataset"], row["seed"], row["status"]) == ("SVD", "synthetic", 2, "FAILED")
    md = (out / "report.md").read_text()
    section = md.split("## Completeness")[1]
    assert "SVD" in section and "FAILED" in section and "constructed failure" in section
    assert "Expected seeds per cell: 3 (seed values of sweep run" in section
    csv = report.read_csv(out / "main_table.csv")
    assert csv.loc[csv["configuration"] == "SVD", "rmse_n"].iloc[0] == 2
    assert "(2‡)" in md  # n below the sweep's 3 seeds is marked


def test_group_metrics_go_to_a_secondary_table(sweep):
    _, out, _ = sweep
    md = (out / "report.md").read_text()
    assert "## Group-level metrics: synthetic" in md and "## Cold-start metrics: synthetic" in md
    assert "0.4200 ± 0.0000 (3)" in md and "1.1000 ± 0.0000 (3)" in md
    assert "| mean P@10 ↑ |" in md and "| RMSE (pooled) ↓ |" in md.split("## Cold-start metrics")[1]
    assert "group_n_groups" not in md  # a count, not a score
    secondary = report.read_csv(out / "secondary_metrics.csv")
    assert all(c.startswith("DMTL") for c in secondary["configuration"])
    assert (secondary["group_mean_precision_at_10_mean"] == 0.42).all()


def test_resumed_sweep_keeps_latest_finished_run(sweep, tmp_path):
    tracker, _, _ = sweep
    # a copy of the store (its artifacts stay where they are): the resume writes only to the copy
    shutil.copy(tracker.uri[len("sqlite:///"):], tmp_path / "mlflow.db")
    resumed = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    # a second invocation reruns only the failed job, and it now finishes
    with resumed.run("sweep", tags={"groupbench.role": "sweep", "sweep": "smoke"}) as parent:
        assert log_job(resumed, "svd", None, None, 0.0, 2, parent=parent.run_id)
    out = tmp_path / "report"
    build(resumed, out)
    assert report.read_csv(out / "completeness.csv").empty
    csv = report.read_csv(out / "main_table.csv")
    assert csv.loc[csv["configuration"] == "SVD", "rmse_n"].iloc[0] == 3
    # the newest parent run receives the report
    logged = {a.path for a in resumed.client.list_artifacts(parent.run_id, "report")}
    assert "report/report.md" in logged


def test_paper_reference_row_is_marked_reported(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    for seed in SEEDS[:2]:
        log_job(tracker, "dmtl", 1.0, "softmax", 0.1, seed, dataset="ml100k")
        log_job(tracker, "svd", None, None, 0.0, seed, dataset="ml100k")
    log_job(tracker, "slope_one", None, None, 0.0, 0, dataset="ml100k")  # seed 1 never ran
    out = tmp_path / "report"
    build(tracker, out)
    missing = report.read_csv(out / "completeness.csv")
    assert missing[["configuration", "seed", "status"]].values.tolist() == [["SlopeOne", 1, "MISSING (no run)"]]
    csv = report.read_csv(out / "main_table.csv")
    paper = csv[csv["source"] == "reported"].iloc[0]
    assert paper["configuration"] == report.PAPER_LABEL
    assert (paper["precision_at_10_mean"], paper["recall_at_10_mean"]) == (0.6867, 0.8063)
    md = (out / "report.md").read_text()
    assert "| DMTL (paper, reported) † |" in md and "0.6867 †" in md and "unpublished protocol" in md
    assert "**0.6867" not in md  # never the bold best
    assert r"$^\dagger$" in (out / "main_table.tex").read_text()


def test_unknown_experiment_is_a_one_line_error(sweep, tmp_path, caplog):
    tracker, _, _ = sweep
    code = report.main(["--experiment", "paper", "--tracking-uri", tracker.uri, "--out", str(tmp_path / "r")])
    assert code == 2
    assert not (tmp_path / "r").exists()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "'paper' not found" in errors[0] and "\n" not in errors[0]
    code = report.main(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(tmp_path / "r")])
    assert code == 2 and not (tmp_path / "none.db").exists()


@pytest.mark.slow
def test_report_from_real_runner_runs(make_cfg, tracking_uri, tmp_path):
    """Two Surprise models x 2 seeds on the synthetic data through benchmark.run.job.run."""
    from benchmark.run.job import run

    tracker = Tracker(tracking_uri, "smoke")
    with tracker.run("sweep", tags={"groupbench.role": "sweep", "sweep": "smoke"}) as parent:
        for model in ("baseline_only", "slope_one", "oracle", "constant"):
            for seed in (0, 1):
                cfg = make_cfg(f"model={model}", "dataset=synthetic", f"seed={seed}", "tracking.experiment=smoke")
                run(cfg, tracker=tracker, parent_run_id=parent.run_id,
                    tags={"groupbench.role": "job", "sweep": "smoke"})
    out = tmp_path / "out"
    code = report.main(["--experiment", "smoke", "--tracking-uri", tracking_uri, "--out", str(out)])
    assert code == 0
    csv = report.read_csv(out / "main_table.csv")
    assert set(csv["configuration"]) == {"BaselineOnly", "SlopeOne", "Oracle", "ConstantTop"}
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`groupbench.role` = 'job'")
    for row in csv.itertuples(index=False):
        for metric in ("rmse", "precision_at_10", "ndcg_at_10"):
            values = [r.data.metrics[metric] for r in runs if r.data.params["model.name"] == row.model]
            assert getattr(row, f"{metric}_mean") == pytest.approx(np.mean(values), rel=1e-12)
            assert getattr(row, f"{metric}_std") == pytest.approx(np.std(values, ddof=1), rel=1e-12)
            assert getattr(row, f"{metric}_n") == 2
    md = (out / "report.md").read_text()
    assert "No DMTL runs in this experiment." in md
    assert report.read_csv(out / "completeness.csv").empty
    # every cell has 2 seeds: n is said once, not in each cell
    assert "over n = 2 seed(s) each" in md and "(2)" not in md.split("## Main results: synthetic")[1].split("##")[0]
    # references: their own block, never in the main table's rows; the calibration note where one wins
    main_rows = md.split("## Main results: synthetic")[1].split("## Reference predictors")[0]
    first_cells = [line.split("|")[1].strip() for line in main_rows.splitlines() if line.startswith("| ")]
    assert not any("Oracle" in c or "Constant" in c for c in first_cells)
    assert "Oracle" not in main_rows  # the oracle is no trivial reference: not in the last row either
    block = md.split("## Reference predictors: synthetic")[1].split("\n## ")[0]
    assert "| Oracle (true rating) |" in block and "| Constant (top of scale) |" in block
    oracle = csv[csv["model"] == "oracle"].iloc[0]
    assert oracle["rmse_mean"] == 0.0 and "| Oracle (true rating) | 0.0000 |" in block
    constant_r = csv.loc[csv["model"] == "constant", "recall_at_10_mean"].iloc[0]
    real_r = csv.loc[~csv["model"].isin(["oracle", "constant"]), "recall_at_10_mean"]
    if (real_r < constant_r).any():
        assert "- **R@10**: Constant (top of scale) (" in block and "measures calibration" in block
    # full-catalogue table, group sizes and the header's provenance
    assert "## Full-catalogue ranking: synthetic" in md
    full = report.read_csv(out / "full_catalogue.csv")
    ndcg = [r.data.metrics["full_ndcg_at_10"] for r in runs if r.data.params["model.name"] == "slope_one"]
    assert full.loc[full["configuration"] == "SlopeOne", "full_ndcg_at_10_mean"].iloc[0] == pytest.approx(np.mean(ndcg))
    assert "| Oracle (reference) |" in md
    assert "## Group structure" in md and "singleton share" in md
    assert "Package versions" in md and "torch " in md and "scikit-surprise" in md and "Python 3" in md


def test_seed_count_of_a_sweep_invocation():
    class Parent:
        def __init__(self, params):
            self.data = type("Data", (), {"params": params})()

    grids = json.dumps({"lambda": {"seed": "0,1,2,3,4"}, "smoke": {"model": "svd"}})
    assert report.sweep_seed_count(Parent({"grids": grids, "overrides": "(none)"})) == 5
    assert report.sweep_seed_count(Parent({"grids": grids, "overrides": "dataset=ml100k seed=0"})) == 1
    assert report.sweep_seed_count(Parent({"grids": grids, "overrides": "seed=range(0,3)"})) == 3
    assert report.sweep_seed_count(Parent({})) is None


def test_default_experiment_is_paper_else_the_latest_sweep(sweep, tmp_path):
    tracker, _, _ = sweep
    out = tmp_path / "default"
    # no 'paper' experiment in this store: the latest sweep's experiment ('smoke') is reported
    assert report.main(["--tracking-uri", tracker.uri, "--out", str(out), "--no-log"]) == 0
    assert "experiment `smoke`" in (out / "report.md").read_text()
    Tracker(tracker.uri, "paper")  # once a paper experiment exists it is the default
    assert report.default_experiment(tracker.client) == "paper"


def test_k_grid_variants_stay_out_of_the_lambda_sweep():
    from benchmark.report.sections.groups import modal_grouping

    runs = pd.DataFrame({"dataset": ["ml100k"] * 4 + ["itmrec"] * 2,
                         "config": [{"grouping.k": "250"}, {"grouping.k": "250"}, {"grouping.k": "20"},
                                    {"grouping.k": "50"}, {"grouping.k": "40"}, {"grouping.k": "40"}]})
    kept = modal_grouping(runs)
    assert kept.index.tolist() == [0, 1, 4, 5]


@pytest.mark.slow
def test_header_lists_the_runs_code_versions_and_flags_a_mix(tmp_path):
    """The header names the git_commit tags of the runs used (not only the commit that built the report),
    with their run counts, and warns when they differ (#23 item 5)."""
    tracker = make_sweep(tmp_path)
    jobs = tracker.client.search_runs([tracker.experiment_id], "tags.`groupbench.role` = 'job'")
    for n, job in enumerate(sorted(jobs, key=lambda r: r.info.run_id)):
        tracker.client.set_tag(job.info.run_id, "git_commit", "a" * 40 if n % 3 else "b" * 40 + "-dirty")
    build(tracker, tmp_path / "mixed")
    header = (tmp_path / "mixed" / "report.md").read_text().split("## ")[0]
    n_b = len(range(0, len(jobs), 3))
    assert (f"Code versions of the {len(jobs)} runs used (their `git_commit` tags): `{'a' * 40}` "
            f"({len(jobs) - n_b} runs), `{'b' * 40}-dirty` ({n_b} runs).") in header
    assert "**Warning: this report mixes 2 code versions**" in header and "`-dirty`" in header
    assert "% Code versions of the" in (tmp_path / "mixed" / "main_table.tex").read_text()

    for job in jobs:  # one version: listed, no warning
        tracker.client.set_tag(job.info.run_id, "git_commit", "c" * 40)
    build(tracker, tmp_path / "one")
    header = (tmp_path / "one" / "report.md").read_text().split("## ")[0]
    assert f"(their `git_commit` tags): `{'c' * 40}` ({len(jobs)} runs)." in header and "Warning" not in header
