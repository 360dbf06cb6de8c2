"""``python -m benchmark.report``: MLflow runs of one sweep -> tables, plots, significance tests.

It never trains: it reads the experiment's job runs (tag ``groupbench.role=job``), their
params, metrics and ``per_user_metrics.csv`` artifacts, and writes into ``--out``
(default ``outputs/reports/<experiment>/``, git-ignored; a folder git tracks, such as the shipped
``reports/paper/``, only from a checkout without uncommitted changes: benchmark/report/destination.py):

- ``report.md``           every section below, with the provenance line on top, then "Reproducing the paper"
                          (``sections/reproduction.py``: the ``paper_protocol`` experiment of the same store,
                          when it has runs: the paper report only), then the Findings
                          (``sections/findings.py``: what the tables found, each citing its cell);
- ``main_table.csv|.tex`` one row per model configuration and dataset, mean / std / n over seeds;
- ``<file>_sweep.csv|.png``, ``<file>_ablation.csv|.png`` for the focus model's swept parameters
  (``meta`` of conf/model/<name>.yaml; DMTL: ``lambda_sweep``, ``attention_ablation``);
- ``significance.csv``    the focus model's best configuration against every baseline, paired per user;
- ``secondary_metrics.csv`` group-level (``group_*``) and cold-start (``cold_*``) metrics, if logged;
- ``group_recommendation.csv`` group-item runs: per dataset, group split and protocol, mean / std / n over seeds;
- ``group_recommendation_tests.csv`` their best real configuration against the best reference, paired per group
                          (sampled protocol: the runs' ``per_case_sampled`` ranks);
- ``ties.csv``            every configuration whose share of queries with a tie at the cut-off is above 5 %;
- ``completeness.csv``    every cell whose seeds lack a FINISHED run;
- ``paper_protocol.csv``, ``protocol_ablation_<dataset>.csv`` the reproduction under the authors' protocol;
- ``group_reproduction.csv``, ``group_reproduction_verdicts.csv`` the group recommenders' reproductions
                          (``+reproduction=<name>`` runs; ``sections/group_reproduction.py``): reported, reproduced,
                          difference, tolerance and verdict, beside this harness's protocol.

Each section is a module of :mod:`benchmark.report.sections`; :func:`build_report` composes them.
Resumed sweeps keep results in runs of earlier invocations, so runs are collected by experiment
and the latest FINISHED run per ``config_hash`` is kept. Every file states the command, the
date, the tracking store and the experiment it came from; the files are also logged under
``report/`` in the latest sweep parent run.

This module is also the report's API: what callers and tests use is re-exported here (``__all__``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from benchmark.core import console
from benchmark.core.cli import ArgumentParser, writable_folder
from benchmark.core.errors import GroupbenchError
from benchmark.report.collect import Collected, collect, sweep_seed_count
from benchmark.report.commits import commit_lines
from benchmark.report.context import Context
from benchmark.report.destination import check_out, default_out, shown_store
from benchmark.report.format import Provenance, read_csv
from benchmark.report.merge import merge_configurations
from benchmark.report.sections import (
    catalogue,
    completeness,
    findings,
    group_recommendation,
    group_reproduction,
    groups,
    header,
    reproduction,
    secondary,
    significance,
    swept,
    ties,
    tuning,
)
from benchmark.report.sections import main as main_section
from benchmark.report.sections.significance import best_configuration
from benchmark.report.selection import fill_val_rmse, tuned_trials
from benchmark.report.stats import holm
from benchmark.report.tables import MAIN_COLUMNS, PAPER_LABEL, main_table, same_n
from benchmark.tracking.queries import retry_locked
from benchmark.tracking.store import prepare_store
from benchmark.tracking.tracker import existing_store, git_commit

__all__ = ["PAPER_LABEL", "Collected", "Provenance", "best_configuration", "build_report", "collect",
           "default_experiment", "fill_val_rmse", "holm", "main", "main_table", "read_csv", "sweep_seed_count"]

log = logging.getLogger("benchmark.report")

# report.md, in this order; each section writes its own files (benchmark/report/sections/__init__.py)
SECTIONS = (header.section, reproduction.section, group_reproduction.section, findings.section, main_section.section, swept.section, significance.section,
            tuning.section, secondary.section, catalogue.section, group_recommendation.section, ties.section, groups.section, completeness.section)
# the findings cite the other sections' tables, so they are computed last (and shown second)
LAST = (findings.section,)
# the sections of user-level results (rating and ranking per user, the focus model's sweeps and tests)
USER_LEVEL_SECTIONS = (main_section.section, swept.section, significance.section)


def user_level(col) -> bool:
    """Whether any run has a user-level metric (RMSE, or a per-user ranking metric at the cut-off)."""
    present = [m for m in ("rmse", f"ndcg_at_{col.k}", f"precision_at_{col.k}") if m in col.runs.columns]
    return bool(present) and bool(col.runs[present].notna().any().any())
DEFAULT_EXPERIMENT = "paper"


def build_report(client, experiment: str, uri: str, out: Path, prov: Provenance,
                 log_to_parent: bool = True) -> list[Path]:
    col = collect(client, experiment, uri)
    col.runs = fill_val_rmse(client, col.runs)
    col.all_runs = col.runs  # group-level tables: every configuration
    col.runs, col.merges = merge_configurations(col.runs, col.metrics)  # user-level tables: one row per distinct one
    out.mkdir(parents=True, exist_ok=True)
    main = main_table(col)
    show_n = not same_n(main_section.real_rows(main), MAIN_COLUMNS, col.k, col.expected_seeds)
    ctx = Context(client=client, uri=uri, experiment=experiment, col=col, main=main, out=out, prov=prov,
                  trials=tuned_trials(col.runs), show_n=show_n,
                  header=header.header_lines(client, col.parent_run_id)  # runs' code, reproductions' too
                  + commit_lines(pd.concat([col.runs, col.reproductions], ignore_index=True)
                                 if col.reproductions is not None and len(col.reproductions) else col.runs))
    # an experiment of group-item runs only (+sweep=groups) has no user-level metric: no user-level sections
    shown = [s for s in SECTIONS if user_level(col) or s not in USER_LEVEL_SECTIONS]
    parts = {section: section(ctx) for section in shown if section not in LAST}
    parts.update({section: section(ctx) for section in LAST})
    md = [line for section in shown for line in parts[section]]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    ctx.written.insert(0, out / "report.md")

    if log_to_parent and col.parent_run_id:
        retry_locked(client.log_artifacts, col.parent_run_id, str(out), "report")
        log.info("report logged as artifacts report/ of sweep run %s", col.parent_run_id)
    elif log_to_parent:
        log.warning("no sweep parent run (tag groupbench.role=sweep) in %r: report not logged to MLflow", experiment)
    return ctx.written


def default_experiment(client) -> str:
    """``paper`` when that sweep has run; else the experiment of the most recent sweep parent run
    (so ``+sweep=smoke`` then ``python -m benchmark.report`` reports the smoke sweep)."""
    if retry_locked(client.get_experiment_by_name, DEFAULT_EXPERIMENT) is not None:
        return DEFAULT_EXPERIMENT
    experiments = [e.experiment_id for e in retry_locked(client.search_experiments)]
    latest = retry_locked(client.search_runs, experiments, filter_string="tags.`groupbench.role` = 'sweep'",
                          order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
    if not latest:
        return DEFAULT_EXPERIMENT  # collect() then says it is missing and how to make it
    name = client.get_experiment(latest[0].info.experiment_id).name
    log.info("no %r experiment: reporting the latest sweep's, %r", DEFAULT_EXPERIMENT, name)
    return name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m benchmark.report", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=None,
                        help="MLflow experiment (= sweep name); default: paper, or the latest sweep's when no "
                             "paper sweep has run")
    parser.add_argument("--tracking-uri", default=None,
                        help="tracking store; default: $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--out", default=None,
                        help="output folder; default: outputs/reports/<experiment>/ (git-ignored); a folder git "
                             "tracks (reports/paper) needs a checkout without uncommitted changes")
    parser.add_argument("--no-log", action="store_true", help="do not log the report into the sweep's parent run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)  # a bad argument is one line too (benchmark.core.cli)
        uri = existing_store(args.tracking_uri)  # never created here; a server answers within the timeout
        prepare_store(uri)  # a file that is not a complete MLflow store is refused in one line
        client = MlflowClient(tracking_uri=uri)
        args.experiment = args.experiment or default_experiment(client)
        prov = Provenance(command=shlex.join(["python", "-m", "benchmark.report", *argv]),
                          date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), uri=shown_store(uri),
                          experiment=args.experiment, commit=git_commit())
        out = Path(args.out) if args.out else default_out(args.experiment)
        writable_folder("--out", out)  # one line naming it, never a traceback
        check_out(out, args.experiment)  # a folder git tracks: from a clean checkout only
        written = build_report(client, args.experiment, uri, out, prov, log_to_parent=not args.no_log)
    except GroupbenchError as exc:
        log.error("error: %s", exc)
        return 2
    console.result(*(f"wrote {path}" for path in written))  # the result: on stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
