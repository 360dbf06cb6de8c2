"""#30 items 1-3: the report opens with Findings that cite their cells; a trivial score is never a win;
configurations that are really one are one row and one member of the significance family."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.evaluation.base import EvalContext, profiling, trivial_groups
from benchmark.protocol.grouping import Groups
from benchmark.run import summary
from benchmark.tracking.tracker import Tracker
from tests.test_report import CONFIGS, SEEDS, build, log_job, report

CITATION = re.compile(r"\(cell: «([^»]*)» / «([^»]*)» / «([^»]*)»\)")


def tables(md: str) -> dict[str, pd.DataFrame]:
    """Every Markdown table of the report under its heading (``##`` or ``###``, without the hashes)."""
    found, heading, rows = {}, None, []
    for line in md.splitlines() + [""]:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|"):
            rows.append([cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")])
        elif rows:
            if heading not in found:
                found[heading] = pd.DataFrame([r for r in rows[2:]], columns=rows[0])
            rows = []
    return found


def cell(tabs: dict[str, pd.DataFrame], table: str, row: str, column: str) -> str:
    frame = tabs[table]
    match = frame.loc[frame.iloc[:, 0] == row, column]
    assert len(match) == 1, (table, row, column)
    return match.iloc[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The constructed sweep of test_report plus: SVD and DMTL (λ=1, softmax) again at grouping.k=10 (same
    per-user values), the control (neural MF), and a trivial reference (item mean) that beats every model on
    P@10 only; DMTL logs its trivial classifier's profiling accuracy, matched by the λ=0.5 configuration."""
    folder = tmp_path_factory.mktemp("findings")
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}", "smoke")
    with tracker.run("sweep", tags={"groupbench.role": "sweep", "sweep": "smoke"}) as parent:
        for model, lam, attention, shift in CONFIGS + [("neural_mf", None, None, 0.05), ("item_mean", None, None, -0.3)]:
            for seed in SEEDS:
                trivial = ({"profile_trivial_accuracy": 0.6 + seed / 100} if model == "dmtl" else
                           {"precision_at_10": 0.99} if model == "item_mean" else
                           {"ties_at_10": 0.2 + seed / 10} if model == "knn_basic" else None)
                log_job(tracker, model, lam, attention, shift, seed, parent=parent.run_id, extra=trivial)
                if (model, lam, attention) in (("svd", None, None), ("dmtl", 1.0, "softmax")):
                    log_job(tracker, model, lam, attention, shift, seed, parent=parent.run_id, extra=trivial,
                            grouping_k=10)
    out = folder / "report"
    build(tracker, out)
    return tracker, out, (out / "report.md").read_text()


def test_findings_come_first_and_each_cites_its_cell(built):
    _, out, md = built
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Findings"
    findings = md.split("## Findings")[1].split("\n## ")[0]
    tabs = tables(md)
    bullets = [line for line in findings.splitlines() if line.startswith("- ")]
    assert bullets and all(CITATION.search(b) for b in bullets)  # every finding cites a cell
    checked = 0
    for bullet in bullets:
        start = 0
        for found in CITATION.finditer(bullet):
            clause, start = bullet[start:found.start()], found.end()
            text = cell(tabs, *found.groups())
            if found.group(1).startswith("Significance"):
                assert text.split(" ▲")[0].split(" ▼")[0] in clause  # the difference and its CI, as shown
            else:
                number = re.search(r"[-+]?\d+\.\d+", text).group(0)
                assert number in clause, (clause, text)
            checked += 1
    assert checked >= 6

    # the best ranking configuration: its mean and 95% t-interval over seeds, recomputed from main_table.csv
    main = report.read_csv(out / "main_table.csv")
    real = main[(main["source"] == "measured") & ~main["model"].isin(["item_mean"])]
    best = real.loc[real["ndcg_at_10_mean"].idxmax()]
    half = stats.t.ppf(0.975, 2) * best["ndcg_at_10_std"] / np.sqrt(3)
    line = next(b for b in bullets if "ranking (NDCG@10 ↑): best" in b)
    assert (f"best {best['configuration']}, {best['ndcg_at_10_mean']:.4f} (95% CI over 3 seeds "
            f"{best['ndcg_at_10_mean'] - half:.4f} to {best['ndcg_at_10_mean'] + half:.4f})") in line
    # the focus model against its declared control (meta.control: neural MF), Holm p from significance.csv
    sig = report.read_csv(out / "significance.csv")
    control = next(b for b in bullets if "NeuralMF (its declared control" in b)
    row = sig[(sig["baseline"] == "NeuralMF") & (sig["metric"] == "ndcg")].iloc[0]
    assert f"NDCG@10 ↑ {row['mean_diff']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" in control
    assert f"(Holm p {row['wilcoxon_p_holm']:.2g})" in control
    assert any("the strongest baseline" in b for b in bullets)
    # the trivial reference beating every model on P@10 is a caveat
    assert any("P@10 ↑: the trivial reference Item mean attains" in b for b in bullets)
    # ties at the cut-off (k-NN: 20-40 % of users over the seeds, mean 30 %): a caveat citing the ties table
    tie = next(b for b in bullets if "tie across the 10-th position" in b)
    assert "30.0%" in tie and "«Ties at the cut-off: synthetic»" in tie and "«test items»" in tie


def test_trivial_profiling_score_is_never_bold(built):
    _, _, md = built
    main = tables(md)["Main results: synthetic"]
    raw = md.split("## Main results: synthetic")[1].split("\n## ")[0]
    column = "Profiling acc. ↑"
    # λ=0.5: 0.5 + 0.1 + seed/100 = trivial 0.6 + seed/100: matched; λ=1 softmax beats it
    matched = cell({"t": main}, "t", "DMTL (λ=0.5, softmax)", column)
    assert "(= trivial 0.6100)" in matched and f"**{matched.split(' (')[0]}" not in raw
    assert "**0.7100 ± 0.0100 (trivial 0.6100)**" in raw  # the best, beating its trivial classifier: bold
    below = [c for c in main[column] if "< trivial" in c]  # worse than the trivial classifier: said so, never bold
    assert below and all(float(c.split(" ±")[0]) < float(c.split("< trivial ")[1].rstrip(")")) for c in below)
    # P@10: the item-mean reference beats every model: the last row shows it, nothing in the column is bold
    assert cell({"t": main}, "t", "best trivial reference", "P@10 ↑").endswith("(Item mean)")
    p10 = list(main.columns).index("P@10 ↑")
    assert not any(line.split("|")[p10 + 1].strip().startswith("**") for line in raw.splitlines()
                   if line.startswith("| "))


def test_configurations_that_are_one_are_merged(built):
    _, out, md = built
    main = report.read_csv(out / "main_table.csv")
    labels = list(main["configuration"])
    # SVD's user-level metrics do not depend on grouping.k (it does not read the groups): one row
    assert labels.count("SVD") == 1 and not any(label.startswith("SVD [") for label in labels)
    # DMTL's do (its profiling head trains on the groups): two rows, told apart by the suffix
    assert "DMTL (λ=1, softmax) [k=5]" in labels and "DMTL (λ=1, softmax) [k=10]" in labels
    assert "`[k=…]` is `grouping.k`" in md and "**SVD** is one row for `grouping.k` ∈ {5, 10}" in md
    sig = report.read_csv(out / "significance.csv")
    pairs = sig[["baseline", "metric"]].apply(tuple, axis=1)
    assert not pairs.duplicated().any() and set(sig["baseline"]) == {"SVD", "KNNBasic", "NeuralMF"}
    assert len(sig) == 3 * sig["metric"].nunique()  # the family: each distinct configuration once
    # the group-level tables keep both groupings (they do depend on them)
    assert "SVD [k=10]" not in md.split("## Findings")[1].split("## Reference predictors")[0]


def test_merge_refuses_different_values(tmp_path):
    """Safety net: SVD at grouping.k=10 with other per-user values stays two rows."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    for seed in SEEDS[:2]:
        log_job(tracker, "svd", None, None, 0.0, seed)
        log_job(tracker, "svd", None, None, 0.05, seed, grouping_k=10)
    build(tracker, tmp_path / "r")
    labels = set(report.read_csv(tmp_path / "r" / "main_table.csv")["configuration"])
    assert labels == {"SVD [k=5]", "SVD [k=10]"}


class Profiler:
    name = "profiler"

    def __init__(self, answer):
        self.answer = answer

    def predict_groups(self, users):
        return np.array([self.answer(u) for u in users])

    def predict(self, pairs):
        return np.zeros(len(pairs))


def test_trivial_classifier_is_the_training_group_or_the_majority():
    labels = pd.Series([0, 0, 1, 2], index=[10, 11, 12, 13])   # user 13 has no training rating
    groups = Groups(labels=labels, k=3, method="kmeans")
    train = pd.DataFrame({"user": [10, 11, 12, 10], "item": [1, 2, 3, 4], "rating": [4.0] * 4})
    test = pd.DataFrame({"user": [10, 12, 13, 13], "item": [5, 6, 7, 8], "rating": [4.0] * 4,
                         "prediction": [4.0] * 4})
    ctx = EvalContext(dataset=None, train=train, predictions=test, groups=groups,
                      model=Profiler(lambda u: 1), config={"k": 10, "threshold": 4})
    # seen users 10, 12: their own group; unseen 13: the training users' majority group (0)
    assert trivial_groups(ctx, test["user"].to_numpy()).tolist() == [0, 1, 0, 0]
    metrics = profiling(ctx).metrics
    assert metrics["profile_trivial_accuracy"] == pytest.approx(2 / 4)  # rows of 10 and 12 right
    assert metrics["profile_accuracy"] == pytest.approx(1 / 4)          # only user 12 is in group 1


def test_console_says_a_profiling_score_is_trivial():
    line = "\n".join(summary.headline({"profile_accuracy": 1.0, "profile_trivial_accuracy": 1.0}))
    assert "accuracy 1" in line and "no better than the trivial classifier" in line
    line = "\n".join(summary.headline({"profile_accuracy": 0.9, "profile_trivial_accuracy": 0.5}))
    assert "trivial classifier 0.5000" in line and "no better" not in line


def test_narrowed_sweep_description_counts_the_jobs_that_ran():
    from benchmark.tracking.provenance import describe_experiment

    grids = {"lambda": {"model.lambda_profile": "0,0.1,0.5,1,2,5,10", "seed": "0,1,2,3,4", "dataset": "ml100k,itmrec"}}
    text = describe_experiment("lambda", "lambda", grids, overrides="dataset=ml100k seed=0", jobs=7)
    assert "`dataset=ml100k seed=0` narrows or overrides them: 7 job(s), not the full grids" in text
    assert "narrows" not in describe_experiment("lambda", "lambda", grids, jobs=70) and "70 job(s)" in \
        describe_experiment("lambda", "lambda", grids, jobs=70)
