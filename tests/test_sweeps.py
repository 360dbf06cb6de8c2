"""Sweeps end to end: ``python -m benchmark +sweep=...`` as subprocesses on synthetic data.

Each test runs the harness in ``tmp_path`` with its own sqlite store (or a real ``mlflow server``)
and checks what MLflow holds afterwards: one parent run per invocation, nested job runs, resume
by config hash, isolated failures, and the parallel and cluster launchers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from benchmark.core.config import RESULT_KEYS
from benchmark.tracking.provenance import MAX_TAGS, visible_tags

TIMEOUT = 600  # per subprocess; a hang fails the test instead of the suite


def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def harness(tmp_path: Path, *overrides: str, uri: str | None = None, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "benchmark", *overrides, f"tracking.uri={uri or sqlite_uri(tmp_path)}"]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT, **popen)


def output(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


def finished_jobs(db: Path) -> int:
    """FINISHED job runs, read with sqlite3 read-only: an MlflowClient could race the sweep's
    creation of the store's tables."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute(
                "select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
                "where t.key = 'groupbench.role' and t.value = 'job' and r.status = 'FINISHED'").fetchone()[0]
    except sqlite3.Error:  # tables not created yet, or locked
        return 0


def runs(uri: str, experiment: str) -> tuple[list, list]:
    """(parents, jobs) of an experiment, oldest first."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment!r} missing in {uri}"
    all_runs = client.search_runs([found.experiment_id], run_view_type=ViewType.ALL, max_results=1000,
                                  order_by=["attributes.start_time ASC"])
    parents = [r for r in all_runs if r.data.tags.get("groupbench.role") == "sweep"]
    jobs = [r for r in all_runs if r.data.tags.get("groupbench.role") == "job"]
    assert len(parents) + len(jobs) == len(all_runs), "a run without groupbench.role"
    return parents, jobs


def planned(tmp_path: Path, *overrides: str) -> dict[str, str]:
    """config_hash -> run name of a sweep's jobs, from the sweeper's dry run (nothing is logged)."""
    done = harness(tmp_path, *overrides, "hydra.sweeper.dry_run=true")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("sweep ")):]
    jobs = dict(line.split()[:2] for line in lines[1:])
    assert lines[0].split()[2] == str(len(jobs)), done.stdout
    return jobs


def check_sweep(parent, jobs, name: str, finished: int, failed: int = 0, skipped: int = 0) -> list:
    """The parent's tags and counts, and that its children point to it; returns the children."""
    assert parent.info.run_name == f"sweep:{name}"
    assert parent.data.tags["sweep"] == name
    assert parent.info.status == ("FAILED" if failed else "FINISHED")
    metrics = parent.data.metrics
    assert (metrics["n_jobs"], metrics["n_finished"], metrics["n_failed"], metrics["n_skipped"]) == \
        (finished + failed + skipped, finished, failed, skipped)
    assert metrics["wall_seconds"] > 0
    assert "overrides" in parent.data.params
    children = [j for j in jobs if j.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == finished + failed
    for child in children:
        tags = child.data.tags
        # params hold the result-deciding config only: no sweep bookkeeping, paths or tracking settings
        assert child.data.params and all(key.split(".")[0] in RESULT_KEYS for key in child.data.params), \
            sorted(child.data.params)
        assert not any(key.startswith("config.") for key in tags)  # the config is the config.yaml artifact
        assert len(visible_tags(tags)) <= MAX_TAGS, sorted(visible_tags(tags))
        assert tags["sweep"] == name
        assert len(tags["config_hash"]) == 16 and tags["git_commit"]
        varies = json.loads(tags["varies"])
        assert varies["dataset"] == "synthetic" and varies["model"] == child.data.params["model.name"]
        if child.info.status == "FINISHED":
            assert len(tags["dataset_sha256"]) == 64
    return children


@pytest.mark.slow
def test_only_runs_the_named_grids_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    """hydra.sweeper.only=groups: +sweep=tuned's group part alone (seed 0, CAMRa2011 and Mafengwo, the rating
    models left out on Mafengwo); an unknown grid: one line, exit 2."""
    groups = planned(tmp_path, "+sweep=tuned", "hydra.sweeper.only=groups")
    assert {name.split("/")[1] for name in groups.values()} == {"camra2011", "mafengwo"}
    assert {name.split("/")[2] for name in groups.values()} == {"seed0"}
    assert "agree/camra2011/seed0" in groups.values() and "svd/mafengwo/seed0" not in groups.values()
    both = planned(tmp_path, "+sweep=tuned", "hydra.sweeper.only=[tuned,groups]")
    assert set(groups) < set(both) and len(both) == len(groups) + 240
    done = harness(tmp_path, "+sweep=tuned", "hydra.sweeper.only=nope", "hydra.sweeper.dry_run=true")
    assert done.returncode == 2
    assert "error: hydra.sweeper.only=nope: sweep tuned has no grid nope; its grids are tuned, groups" in output(done)
    assert "Traceback" not in output(done)


@pytest.mark.slow
def test_plan_sizes_narrowing_and_dedupe(tmp_path: Path) -> None:
    """Grid sizes from the sweep files; command-line overrides narrow; paper runs each config once."""
    narrowed = planned(tmp_path, "+sweep=lambda", "dataset=ml100k", "seed=0")
    assert sorted(narrowed.values()) == ["dmtl/ml100k/seed0"] * 7
    paper = planned(tmp_path, "+sweep=paper")  # the lambda, attention, baselines, references, group_k files
    # λ grid 70 + attention grid 60 less its 20 softmax jobs at λ ∈ {0, 0.1} (already in the λ grid)
    # + baselines 170 (12 Surprise + 4 LensKit + neural_mf), each fitted once per dataset and seed (not once per
    # λ) + 6 references x 2 datasets x 5 seeds + K ∈ {20, 50} for DMTL and SVD on ml100k (K = 250 is ml100k's
    # default, already planned)
    assert len(paper) == 70 + 40 + 170 + 60 + 20
    assert set(narrowed) <= set(paper)
    models = Counter(name.split("/")[0] for name in paper.values())
    assert models.pop("dmtl") == 110 + 10
    assert models.pop("svd") == 2 * 5 + 10
    assert len(models) == 16 + 6 and "neural_mf" in models and set(models.values()) == {2 * 5}
    assert not (tmp_path / "mlflow.db").exists(), "a dry run logged something"


@pytest.mark.parametrize("grid, arguments", [
    ({"model.lambda_profile": [0, 0.1, 0.5], "seed": "0,1", "dataset": "ml100k,itmrec"}, ["seed=0,3", "eval.k=5"]),
    ({"model": "svd,knn_basic", "seed": [0]}, ["trainer.max_epochs=range(1,4)", "+sweep=smoke", "model=dmtl"]),
    ({}, ["dataset=synthetic"]),
])
def test_grid_expansion_is_hydras_basic_sweeper(grid, arguments) -> None:
    """The public-API expansion (benchmark/sweeps/plan.py) gives the jobs Hydra's own basic sweeper
    gives, in the same order (Hydra's lives in hydra._internal, so the harness does not import it)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from benchmark.sweeps import plan

    parser = OverridesParser.create()
    jobs = plan.expand(grid, arguments, parser)
    hydra_jobs = BasicSweeper.split_arguments(parser.parse_overrides(plan._grid_overrides(grid) + arguments), None)[0]
    assert [overrides for overrides, _ in jobs] == hydra_jobs
    swept = {key for key in grid} | {a.split("=")[0] for a in arguments if "," in a or "range(" in a}
    assert all(set(varies) == swept for _, varies in jobs)


@pytest.mark.slow
def test_composer_gives_hydras_config_and_finds_groups_by_public_api() -> None:
    """One compose per set of group choices, values applied after: the config a full compose gives."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from benchmark.sweeps.plan import Composer
    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        calls: list[list[str]] = []
        full = lambda overrides: calls.append(overrides) or compose(config_name="config", overrides=overrides)  # noqa: E731
        composer = Composer(full, OverridesParser.create(config_loader=loader), loader)
        for key in ("model", "dataset", "hydra/launcher", "sweep", "model.params.k", "seed", "trainer.lr", "nope/x"):
            assert composer.is_group(key) == loader.repository.group_exists(key), key
        for overrides in (["model=svd", "dataset=synthetic", "seed=3", "model.params.n_factors=7"],
                          ["model=svd", "dataset=synthetic", "seed=4", "eval.k=5"],
                          ["model=dmtl", "model.lambda_profile=0.5", "+extra=1"]):
            assert composer(overrides) == compose(config_name="config", overrides=overrides), overrides
        # the first two share their group choices: one full compose for both, none for values
        assert calls[:2] == [["model=svd", "dataset=synthetic"], ["model=dmtl", "model.lambda_profile=0.5", "+extra=1"]]


@pytest.mark.slow
def test_smoke_sweep_then_rerun_skips_everything(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    expected = planned(tmp_path, "+sweep=smoke")
    assert sorted(name.split("/")[0] for name in expected.values()) == ["dmtl", "svd"]

    first = harness(tmp_path, "+sweep=smoke")
    assert first.returncode == 0, first.stderr[-3000:]
    parents, jobs = runs(uri, "smoke")
    assert len(parents) == 1
    children = check_sweep(parents[0], jobs, "smoke", finished=2)
    assert {c.data.tags["config_hash"] for c in children} == set(expected)  # the sweeper's hash is the runner's
    assert all(c.info.status == "FINISHED" for c in children)
    # the trainer's settings are DMTL's params (model.trainer.*), once; SVD does not read them
    assert {c.data.params["model.name"]: c.data.params.get("model.trainer.max_epochs") for c in children} == \
        {"dmtl": "20", "svd": None}
    assert {c.info.run_name for c in children} == {"dmtl · synthetic · s0", "svd · synthetic · s0"}
    # one line a job on stderr by default (-v adds the launcher's and the jobs' own: the test below)
    progress = [line for line in first.stderr.splitlines() if "] FINISHED " in line]
    assert len(progress) == 2 and all("/2] FINISHED" in line and "rmse=" in line for line in progress)
    assert [line for line in first.stderr.splitlines() if "][benchmark." in line] == progress, first.stderr
    assert " : model=" not in first.stderr and "6,000 ratings" not in first.stderr
    # the results and what to run next: on stdout
    assert "sweep smoke: 2 jobs: 2 finished, 0 failed, 0 skipped" in first.stdout
    assert "mlflow ui --backend-store-uri " + uri in first.stdout and "next:" not in first.stderr

    second = harness(tmp_path, "+sweep=smoke")
    assert second.returncode == 0, second.stderr[-3000:]
    parents, jobs = runs(uri, "smoke")
    assert len(parents) == 2 and len(jobs) == 2  # nothing ran again
    check_sweep(parents[1], jobs, "smoke", finished=0, skipped=2)


@pytest.mark.slow
def test_killed_sweep_resumes_with_each_config_once(tmp_path: Path) -> None:
    """SIGTERM mid-sweep, then the same command: every config FINISHED exactly once."""
    uri = sqlite_uri(tmp_path)
    sweep = ("+sweep=smoke", "model=svd,baseline_only", "seed=0,1,2")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen([sys.executable, "-m", "benchmark", *sweep, f"tracking.uri={uri}"], cwd=tmp_path,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    finished_before = 0
    deadline = time.monotonic() + TIMEOUT
    try:
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            finished_before = finished_jobs(tmp_path / "mlflow.db")
            if finished_before >= 2:
                process.send_signal(signal.SIGTERM)
                break
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert 2 <= finished_before < 6, "the sweep was not interrupted half-way"
    assert process.returncode != 0, stderr[-3000:]
    parents, _ = runs(uri, "smoke")
    assert [p.info.status for p in parents] == ["KILLED"]  # not left RUNNING

    resumed = harness(tmp_path, *sweep)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    parents, jobs = runs(uri, "smoke")
    finished = Counter(j.data.tags["config_hash"] for j in jobs if j.info.status == "FINISHED")
    assert len(finished) == 6 and set(finished.values()) == {1}
    assert all(j.info.status in ("FINISHED", "KILLED") for j in jobs)
    skipped = parents[1].data.metrics["n_skipped"]
    assert skipped >= finished_before
    check_sweep(parents[1], jobs, "smoke", finished=6 - int(skipped), skipped=int(skipped))

    forced = harness(tmp_path, *sweep[:2], "seed=0", "resume=false")  # resume=false reruns
    assert forced.returncode == 0, forced.stderr[-3000:]
    _, jobs = runs(uri, "smoke")
    assert sum(j.info.status == "FINISHED" for j in jobs) == 8


@pytest.mark.slow
def test_failing_job_is_failed_while_siblings_finish(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    # grouping.k=1000 > the 300 users: only the data can refuse it, inside the job (a value that is
    # wrong whatever the data, such as eval.k=0, is refused before the sweep starts: test_reliability)
    done = harness(tmp_path, "+sweep=smoke", "model=svd", "grouping.k=5,1000", "-v")
    assert done.returncode == 1, done.stderr[-3000:]
    parents, jobs = runs(uri, "smoke")
    children = check_sweep(parents[0], jobs, "smoke", finished=1, failed=1)
    status = {json.loads(c.data.tags["varies"])["grouping.k"]: c for c in children}
    assert status["5"].info.status == "FINISHED"
    assert status["1000"].info.status == "FAILED" and "grouping.k=1000" in status["1000"].data.tags["error"]
    assert "grouping.k=1000" in parents[0].data.tags["error"]
    # each job line shows its swept value
    lines = [line for line in output(done).splitlines() if "/2] " in line]
    assert any("FINISHED svd synthetic seed=0 k=5 rmse=" in line for line in lines), lines
    assert any("FAILED svd synthetic seed=0 k=1000 rmse=-" in line for line in lines), lines
    summary = [line for line in output(done).splitlines() if "FAILED svd/synthetic/seed0" in line]
    assert summary and "grouping.k=1000" in summary[-1]
    # -v: the launcher's line per job (without the sweep's bookkeeping) and each job's own log lines
    launched = [line for line in done.stderr.splitlines() if " : model=" in line]
    assert len(launched) == 2 and not any("sweep_run" in line or "SWEEP_RUN" in line for line in launched)
    assert done.stderr.count("synthetic: 6,000 ratings") == 2


@pytest.mark.slow
def test_joblib_two_workers_on_one_sqlite_store(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    done = harness(tmp_path, "+sweep=smoke", "model=svd,baseline_only", "seed=0,1", "hydra/launcher=joblib",
                   "hydra.launcher.n_jobs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    parents, jobs = runs(uri, "smoke")
    children = check_sweep(parents[0], jobs, "smoke", finished=4)
    assert len({c.data.tags["config_hash"] for c in children}) == 4  # nothing lost, nothing twice
    assert all(c.info.status == "FINISHED" and "rmse" in c.data.metrics for c in children)
    assert "JoblibLauncher" in parents[0].data.params["launcher"]
    # the sweep timing of python -m benchmark.speed --sweep, against the runs' own figures
    from benchmark import speed

    assert parents[0].data.params["launcher_workers"] == "2"
    figures = speed.main(["--sweep", "smoke", "--tracking-uri", uri])
    fit_predict = sum(c.data.metrics["stage_fit_seconds"] + c.data.metrics["stage_predict_seconds"] for c in children)
    assert figures["workers"] == 2 and figures["fit_predict_seconds"] == pytest.approx(fit_predict)
    assert figures["wall_over_fit_predict_per_worker"] == pytest.approx(
        parents[0].data.metrics["wall_seconds"] / (fit_predict / 2))


@pytest.mark.slow
def test_sweep_timing_counts_tuned_jobs_under_their_studies(tmp_path: Path) -> None:
    # a tuned job is the child of its study, the study the sweep's child: speed --sweep must count
    # it (it used to count the studies as jobs, with no stage time, and miss every tuned job)
    from mlflow.tracking import MlflowClient

    from benchmark import speed

    uri = sqlite_uri(tmp_path)
    done = harness(tmp_path, "+sweep=smoke", "model=svd,constant", "tune.enabled=true", "tune.trials=2")
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("smoke")
    every = client.search_runs([experiment.experiment_id], max_results=1000)
    parent = next(r for r in every if r.data.tags.get("groupbench.role") == "sweep")
    studies = [r for r in every if r.data.tags.get("groupbench.role") == "study"]
    jobs = [r for r in every if r.data.tags.get("groupbench.role") == "job"]
    assert len(studies) == 1 and len(jobs) == 2  # svd is tuned, the constant reference is not
    assert {j.data.tags["mlflow.parentRunId"] for j in jobs} == {parent.info.run_id, studies[0].info.run_id}
    figures = speed.main(["--sweep", "smoke", "--tracking-uri", uri])
    fit_predict = sum(j.data.metrics["stage_fit_seconds"] + j.data.metrics["stage_predict_seconds"] for j in jobs)
    tuning = studies[0].data.metrics["tuning_seconds"]
    assert (figures["jobs"], figures["studies"]) == (2, 1)
    assert figures["fit_predict_seconds"] == pytest.approx(fit_predict) and tuning > 0
    assert figures["tuning_seconds"] == pytest.approx(tuning)
    assert figures["wall_over_fit_predict_per_worker"] == pytest.approx(
        parent.data.metrics["wall_seconds"] / (fit_predict + tuning))


@pytest.mark.slow
def test_submitit_local_runs_a_smoke_sweep(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    done = harness(tmp_path, "+sweep=smoke", "model=svd,baseline_only", "hydra/launcher=submitit_local",
                   "hydra.launcher.timeout_min=10")
    assert done.returncode == 0, done.stderr[-3000:]
    parents, jobs = runs(uri, "smoke")
    children = check_sweep(parents[0], jobs, "smoke", finished=2)
    assert {c.data.params["model.name"] for c in children} == {"svd", "baseline_only"}
    assert "LocalLauncher" in parents[0].data.params["launcher"]
    assert list(tmp_path.glob("multirun/*/*/.submitit")), "submitit's job folders are missing"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real ``mlflow server`` on 127.0.0.1 with a sqlite backend in tmp_path, stopped afterwards."""
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not come up in 120 s"
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's own process group (it forks workers)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_mlflow_server_receives_a_smoke_sweep(tmp_path: Path, mlflow_server: str) -> None:
    done = harness(tmp_path, "+sweep=smoke", "model=svd,baseline_only", uri=mlflow_server)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()
    parents, jobs = runs(mlflow_server, "smoke")
    children = check_sweep(parents[0], jobs, "smoke", finished=2)
    from mlflow.tracking import MlflowClient

    artifacts = {a.path for a in MlflowClient(tracking_uri=mlflow_server).list_artifacts(children[0].info.run_id)}
    assert {"config.yaml", "predictions.parquet"} <= artifacts
    rerun = harness(tmp_path, "+sweep=smoke", "model=svd,baseline_only", uri=mlflow_server)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    parents, jobs = runs(mlflow_server, "smoke")
    assert len(jobs) == 2 and parents[1].data.metrics["n_skipped"] == 2
