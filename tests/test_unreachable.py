"""Every entry point that reads a tracking store fails in one line, fast, on a server that is not
there (#28 item 3): ``report``, ``recommend`` and ``speed --sweep`` used to hang ~250 s on MLflow's
retries, then print a traceback or a wrong message. Nothing listens on port 9 (discard) here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEAD = "http://127.0.0.1:9"

COMMANDS = {
    "recommend": ["-m", "benchmark.recommend", "--run", "0123abcd", "--user", "1", "--tracking-uri", DEAD],
    "report": ["-m", "benchmark.report", "--experiment", "paper", "--tracking-uri", DEAD, "--no-log"],
    "speed --sweep": ["-m", "benchmark.speed", "--sweep", "paper", "--tracking-uri", DEAD],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_unreachable_server_is_one_line_and_exit_2_within_seconds(name: str, tmp_path: Path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "GROUPBENCH_TRACKING_TIMEOUT": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, *COMMANDS[name]], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    elapsed = time.monotonic() - started
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and DEAD in lines[0] and "unreachable" in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert elapsed < 60, f"{name} took {elapsed:.0f} s"  # imports included; the hang was ~250 s
    assert not list(tmp_path.iterdir())  # a read-only command creates nothing


@pytest.mark.slow
def test_a_missing_sqlite_store_is_not_created_by_a_read_only_command(tmp_path: Path):
    missing = tmp_path / "typo" / "mlflow.db"
    done = subprocess.run([sys.executable, "-m", "benchmark.recommend", "--run", "0123abcd", "--user", "1",
                           "--tracking-uri", f"sqlite:///{missing}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "typo").exists()


def test_the_timeout_setting_is_checked(monkeypatch):
    from benchmark.core.errors import TrackingError
    from benchmark.tracking.tracker import TIMEOUT_ENV, reach_timeout

    monkeypatch.setenv(TIMEOUT_ENV, "3.5")
    assert reach_timeout() == 3.5
    for bad in ("nan", "-1", "0", "soon"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(TrackingError, match=TIMEOUT_ENV):
            reach_timeout()


def test_an_unwritable_report_folder_is_one_line(tmp_path: Path):
    """``report --out`` in a place that cannot be written: one line naming it, exit 2 (#28 item 6)."""
    from hydra import compose, initialize_config_dir

    from benchmark.report.build import main
    from benchmark.run.job import run
    from tests.conftest import CONF

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"tracking.uri={uri}", "dataset=synthetic",
                                                       "model=baseline_only", "tracking.experiment=one"])
    run(cfg)
    assert main(["--experiment", "one", "--tracking-uri", uri, "--out", "/proc/groupbench-report", "--no-log"]) == 2
