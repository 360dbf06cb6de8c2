"""``hydra/launcher=ray`` on a real local Ray cluster, logging to a real ``mlflow server``.

The cluster is started as users start one (``ray start --head``) on 127.0.0.1 with a free port
and its own temp folder; its processes share one process group, stopped at the end even when
the test fails (never ``ray stop``, which would stop every Ray cluster of the machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_sweeps import check_sweep, free_port, harness, mlflow_server, planned, runs  # noqa: F401 (fixture)

pytest.importorskip("ray", reason="the Ray launcher test needs ray (pip install -e '.[test]')")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture
def ray_home(tmp_path: Path, monkeypatch) -> Path:
    """A HOME of the test's own for every Ray process: Ray 2.5x keeps a token in ~/.ray/auth_token
    (written by any local ``ray.init``) and turns token authentication on whenever it finds one,
    so the user's home must neither change this test nor be changed by it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    return home


@pytest.fixture
def ray_cluster(tmp_path: Path, ray_home: Path):
    """A one-node Ray cluster (head) on 127.0.0.1; yields its address HOST:PORT."""
    port = free_port()
    # Ray's unix socket paths must stay under 108 characters: a short folder of its own in /tmp
    temp = Path(tempfile.mkdtemp(prefix="gbray"))
    log_path = tmp_path / "ray.log"
    log = log_path.open("w")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
         "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp}", "--block"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text():
            assert head.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "ray start did not finish in 120 s"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        # the head and everything it spawned (GCS, raylet, workers) share its process group
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if _group_alive(head.pid):
                os.killpg(head.pid, sig)
            deadline = time.monotonic() + wait
            while _group_alive(head.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        head.wait(timeout=5)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_cluster_runs_the_smoke_sweep(tmp_path: Path, ray_cluster: str, mlflow_server: str) -> None:
    done = harness(tmp_path, "+sweep=smoke", "hydra/launcher=ray", f"hydra.launcher.address={ray_cluster}",
                   uri=mlflow_server)
    assert done.returncode == 0, done.stderr[-3000:]
    parents, jobs = runs(mlflow_server, "smoke")
    assert len(parents) == 1
    children = check_sweep(parents[0], jobs, "smoke", finished=2)  # every job FINISHED under the one parent
    assert {c.data.params["model.name"] for c in children} == {"dmtl", "svd"}
    assert all(c.info.status == "FINISHED" and "rmse" in c.data.metrics for c in children)
    assert "RayLauncher" in parents[0].data.params["launcher"]
    # the jobs ran in Ray worker processes (Ray prefixes their log lines), not in the sweep process
    assert output_of(done).count("(_run_on_worker pid=") >= 2
    assert "Connecting to existing Ray cluster" in output_of(done)


def test_the_ray_launcher_plans_a_sweep_without_starting_ray(tmp_path: Path) -> None:
    """The fast tier's Ray check: the launcher plugin is found and set up; a dry run starts no Ray
    instance and creates no store."""
    jobs = planned(tmp_path, "+sweep=smoke", "hydra/launcher=ray")
    assert sorted(jobs.values()) == ["dmtl/synthetic/seed0", "svd/synthetic/seed0"]
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.glob("**/ray_*"))


def output_of(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr
