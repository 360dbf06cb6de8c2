"""A console you can pipe (benchmark/core/console.py): results and ``next:`` on stdout, logs on stderr,
progress bars only on a terminal, ``-v`` as ``verbose=true``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core import console

TIMEOUT = 600


@pytest.mark.slow
def test_a_run_prints_results_on_stdout_and_logs_on_stderr(tmp_path: Path) -> None:
    """``python -m benchmark ... | tail -3``: the pipe gets the headline (after the next commands); the logs
    (and no progress bar: stderr is a file here) stay on stderr."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    # DMTL: it draws a per-epoch progress bar when stderr is a terminal (trainer.progress=true, the default)
    done = subprocess.run([sys.executable, "-m", "benchmark", "model=dmtl", "dataset=synthetic",
                           "trainer.max_epochs=3", f"tracking.uri={uri}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    out, err = done.stdout.splitlines(), done.stderr
    (run,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("groupbench").experiment_id])
    # the next commands first, the last one naming this run; then the results: the run's line and its
    # headline, RMSE as MLflow holds it
    finished = out.index(f"dmtl · synthetic · s0: FINISHED (run {run.info.run_id}, experiment 'groupbench')")
    assert out[0] == "next:" and any(line.split()[0] == "top-10" and run.info.run_id in line
                                     for line in out[:finished])
    rating = next(line for line in out[finished:] if line.lstrip().startswith("rating"))
    assert f"RMSE {run.data.metrics['rmse']:.4f}" in rating
    # `| tail -3`: results only (the headline lines after the FINISHED line)
    assert len(out) - finished > 3 and "next:" not in out[-3:], out
    assert not any("][INFO]" in line for line in out)  # no log line on stdout
    # the logs: on stderr, never the results; no progress bar drawn into a file
    assert "synthetic: 6,000 ratings" in err and "][INFO]" in err
    assert "next:" not in err and "FINISHED" not in err
    assert "\r" not in err and "epoch/s" not in err and "s/epoch" not in err


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_bars_only_on_a_terminal(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    assert console.progress() and console.progress(True) and not console.progress(False)
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    assert not console.progress() and not console.progress(True)


def test_v_is_the_verbose_override() -> None:
    assert console.expand_flags(["+sweep=smoke", "-v", "seed=0"]) == ["+sweep=smoke", "verbose=true", "seed=0"]
    assert console.expand_flags(["--verbose"]) == ["verbose=true"]
    assert console.expand_flags(["model=svd", "hydra.verbose=true"]) == ["model=svd", "hydra.verbose=true"]
