"""The lines a run or a sweep ends with: the headline metrics, then what to run next."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from benchmark.core import console
from benchmark.tracking.tracker import resolve_uri

# (label, [(metric name pattern, short name)]): one line each, shown when the run logged them
HEADLINES = (
    ("rating", [("rmse", "RMSE"), ("mae", "MAE")]),
    ("ranking", [(r"precision_at_(\d+)", "P@{}"), (r"recall_at_(\d+)", "R@{}"), (r"ndcg_at_(\d+)", "NDCG@{}")]),
    # eval.protocol=authors|authors_metrics: the seed paper's authors' keys and formulas (leaky protocol, #26)
    ("authors' rule", [(r"authors_precision_at_(\d+)", "P@{}"), (r"authors_recall_at_(\d+)", "R@{}"),
                       (r"authors_ndcg_at_(\d+)", "NDCG@{}"), ("authors_n_keys", "keys")]),
    ("groups (mean)", [(r"group_mean_precision_at_(\d+)", "P@{}"), (r"group_mean_ndcg_at_(\d+)", "NDCG@{}"),
                       ("group_n_groups", "groups")]),
    ("group sampled", [(r"group_sampled_(?:mean_)?hr_at_5", "HR@5"), (r"group_sampled_(?:mean_)?ndcg_at_5", "NDCG@5"),
                       (r"group_sampled_(?:mean_)?hr_at_10", "HR@10"), (r"group_sampled_(?:mean_)?ndcg_at_10", "NDCG@10"),
                       (r"group_sampled_(?:mean_)?pos_ties", "pos ties")]),
    ("group full", [(r"group_full_(?:mean_)?hr_at_5", "HR@5"), (r"group_full_(?:mean_)?ndcg_at_5", "NDCG@5"),
                    (r"group_full_(?:mean_)?hr_at_10", "HR@10"), (r"group_full_(?:mean_)?ndcg_at_10", "NDCG@10")]),
    ("group held-out", [(rf"group_heldout_(?:masked_)?(?:mean_)?{m}_at_{k}", f"{short}@{k}")
                        for k in (20, 50) for m, short in (("recall", "Recall"), ("ndcg", "NDCG"))]
     + [(r"group_heldout_(?:masked_)?(?:mean_)?n_groups", "groups")]),
    ("profiling", [("profile_accuracy", "accuracy"), ("profile_f1_macro", "macro-F1")]),
    ("time", [("fit_seconds", "fit s"), ("predict_seconds", "predict s")]),
)


def _format(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"


def headline_cells(metrics: dict[str, float]) -> list[tuple[str, list[str]]]:
    """``[("rating", ["RMSE 0.9312", "MAE 0.7352"]), ...]``: the HEADLINES the run logged, by line."""
    rows = []
    for label, wanted in HEADLINES:
        cells = []
        for pattern, short in wanted:
            for name, value in metrics.items():
                found = re.fullmatch(pattern, name)
                if found:
                    cells.append(f"{short.format(*found.groups())} {_format(value)}")
                    break
        if cells and label == "group held-out":  # the ephemeral groups' split, and whether members' items are masked
            masked = any(name.startswith("group_heldout_masked_") for name in metrics)
            label += ", ephemeral split" + (", members' items masked" if masked else "")
        elif cells and label.startswith("group "):  # the group-item protocols: which split, which tie rule
            notes = ["legacy (shipped split)" if metrics.get("group_split_legacy") == 1.0
                     else "leave-one-out split" if metrics.get("group_split_loo") == 1.0 else "corrected split"]
            if metrics.get("group_ties_positive_first") == 1.0:
                notes.append("ties positive_first (legacy)")
            label += ", " + ", ".join(notes)
        if cells:
            note = trivial_note(label, metrics).strip()
            rows.append((label, cells + ([note] if note else [])))
    return rows


def headline(metrics: dict[str, float]) -> list[str]:
    """A few aligned lines (``rating   RMSE 0.9312  MAE 0.7352``) instead of every metric; the run's
    description leads with the same cells (benchmark/run/job.py)."""
    return [(f"  {label:<14}" if len(label) < 14 else f"  {label}: ") + "  ".join(cells)
            for label, cells in headline_cells(metrics)]


def trivial_note(label: str, metrics: dict[str, float]) -> str:
    """After the profiling line: the trivial classifier's accuracy (``profile_trivial_accuracy``: a seen
    user's training group, the majority group otherwise), and whether the model does no better."""
    if label != "profiling" or "profile_trivial_accuracy" not in metrics or "profile_accuracy" not in metrics:
        return ""
    trivial = metrics["profile_trivial_accuracy"]
    matched = metrics["profile_accuracy"] <= trivial + 1e-9
    return (f"  (trivial classifier {_format(trivial)}"
            + (": no better than the trivial classifier, not a result)" if matched else ")"))


def _command(tool: str) -> str:
    """``.venv/bin/mlflow`` when running from a virtual environment under the start dir, else ``tool``."""
    executable = Path(sys.executable).parent / tool
    base = Path(os.environ.get("GROUPBENCH_CWD", os.getcwd())).resolve()
    if sys.prefix != sys.base_prefix and executable.exists():
        try:
            return str(executable.relative_to(base))
        except ValueError:
            return str(executable)
    return tool


UI = "http://127.0.0.1:5000"  # where ``mlflow ui`` serves by default


def runs_table_url(server: str, experiment_id: str) -> str:
    """The experiment's runs table in the MLflow UI at ``server``, in Model training mode (MLflow 3 opens
    an experiment in GenAI mode otherwise)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def next_steps(uri: str, experiment: str, experiment_id: str, run_id: str | None = None, user=None) -> list[str]:
    """The UI command for the store with its runs table's URL, the report command, and (for a run with
    a model) recommend."""
    python = _command("python")
    if uri.startswith("sqlite:///"):
        browse = (f"{_command('mlflow')} ui --backend-store-uri {uri}   # then open "
                  f"{runs_table_url(UI, experiment_id)}")
    else:
        browse = f"open {runs_table_url(uri, experiment_id)}"
    lines = ["next:", f"  browse runs    {browse}",
             f"  report         {python} -m benchmark.report --experiment {experiment}"
             + ("" if uri == _default_uri() else f" --tracking-uri {uri}")]
    if run_id:
        lines.append(f"  top-10         {python} -m benchmark.recommend --run {run_id} --user {user} --k 10"
                     + ("" if uri == _default_uri() else f" --tracking-uri {uri}"))
    return lines


def _default_uri() -> str:

    return resolve_uri(None, os.environ.get("GROUPBENCH_CWD"))


def print_run(name: str, run_id: str, metrics: dict[str, float], uri: str, experiment: str, experiment_id: str,
              model_saved: bool, user=None) -> None:
    """The end of a single run: results, on stdout (the logs are on stderr)."""
    lines = [f"{name}: FINISHED (run {run_id}, experiment {experiment!r})", *headline(metrics)]
    # the results last, so `python -m benchmark ... | tail -3` shows them; what to run next above them
    console.result(*next_steps(uri, experiment, experiment_id, run_id if model_saved else None, user), *lines)
