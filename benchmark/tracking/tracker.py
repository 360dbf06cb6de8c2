"""MLflow tracking through ``MlflowClient``: one run per job, never left RUNNING.

The default store is ``sqlite:///<absolute path>/mlflow.db`` (the file store is deprecated);
``tracking.uri=http://HOST:PORT`` logs to a tracking server, checked for reachability first.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from benchmark.core.config import REPO
from benchmark.core.errors import GroupbenchError, TrackingError, one_line
from benchmark.tracking.artifacts import write_table
from benchmark.tracking.claims import AlreadyClaimed
from benchmark.tracking.orphans import owner_tags
from benchmark.tracking.queries import retry_locked
from benchmark.tracking.store import checkpoint, prepare_store

log = logging.getLogger(__name__)

MAX_BATCH = 100          # MLflow's limit of params/tags/metrics per log_batch call
MAX_PARAM_LENGTH = 6000  # MLflow 3's limit on a param value
MAX_TAG_LENGTH = 5000


def resolve_uri(uri: str | None, base_dir: str | os.PathLike | None = None) -> str:
    """None -> sqlite:///<base_dir>/mlflow.db; a relative sqlite path is made absolute."""
    base = Path(base_dir or os.getcwd()).resolve()
    if uri in (None, "", "null"):
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{base / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_absolute():
            uri = f"sqlite:///{(base / path).resolve()}"
    if uri.startswith("file:") or "://" not in uri:
        raise TrackingError(f"tracking.uri={uri}: the MLflow file store is deprecated and refused; use "
                            f"sqlite:///path/mlflow.db (the default) or http://HOST:PORT")
    return uri


TIMEOUT_ENV = "GROUPBENCH_TRACKING_TIMEOUT"  # seconds a tracking server has to answer /health
DEFAULT_TIMEOUT = 5.0


def reach_timeout() -> float:
    """The reachability check's timeout: ``$GROUPBENCH_TRACKING_TIMEOUT`` seconds, else 5."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        value = float("nan")
    if not (0 < value < 3600):
        raise TrackingError(f"{TIMEOUT_ENV}={raw!r} must be a number of seconds in (0, 3600); unset it for "
                            f"{DEFAULT_TIMEOUT:g} s")
    return value


def check_reachable(uri: str, timeout: float | None = None) -> None:
    """A tracking server answers ``/health`` within the timeout, or one line naming the URI: a
    command never hangs on MLflow's retries against a server that is not there."""
    if uri.startswith("sqlite:///"):  # its folder and file: benchmark.tracking.store.check_writable
        return
    if uri.startswith(("http://", "https://")):
        timeout = reach_timeout() if timeout is None else timeout
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                return
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(f"tracking server {uri} is unreachable ({getattr(exc, 'reason', exc)}; "
                                f"{timeout:g} s, {TIMEOUT_ENV}); start it (mlflow server --backend-store-uri "
                                f"sqlite:///mlflow.db --host HOST --port PORT) or drop tracking.uri to log to the "
                                f"local sqlite file") from None


def existing_store(uri: str | None, base_dir: str | os.PathLike | None = None) -> str:
    """The resolved URI of a store a read-only command (report, recommend, speed --sweep) reads:
    a sqlite file that must exist (nothing is created, not even its folder), or a server that
    must answer within the timeout. One line naming the URI otherwise."""
    uri = resolve_uri(uri, base_dir)
    path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if path is not None:
        if not path.is_file():
            raise TrackingError(f"tracking store {uri} does not exist; pass --tracking-uri (the store the runs "
                                f"were logged to) or run the job or sweep first")
        return uri
    check_reachable(uri)
    return uri


# The shipped reports (reports/): what the code wrote, not code. A change there (``make reports``
# regenerating them) leaves the commit clean, so every shipped report names one clean commit.
NOT_CODE = ("reports",)


def uncommitted(repo_dir: str | os.PathLike | None = None) -> list[str]:
    """``git status --porcelain`` lines of the tracked files with uncommitted changes, those under
    :data:`NOT_CODE` left out (untracked files never count). Raises OSError/SubprocessError outside git."""
    exclude = [f":(exclude){folder}" for folder in NOT_CODE]
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *exclude],
                          cwd=repo_dir or REPO, capture_output=True, text=True, timeout=10, check=True)
    return [line for line in done.stdout.splitlines() if line.strip()]


def git_commit(repo_dir: str | os.PathLike | None = None) -> str:
    """HEAD's commit (with '-dirty' when tracked code has uncommitted changes: :func:`uncommitted`),
    or 'unknown' outside git."""
    cwd = repo_dir or REPO
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        return head + ("-dirty" if uncommitted(cwd) else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """A thin layer over MlflowClient: experiment lookup, runs with guaranteed end status."""

    def __init__(self, uri: str | None = None, experiment: str = "groupbench", base_dir: str | None = None):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        from mlflow.tracking import MlflowClient

        self.uri = resolve_uri(uri, base_dir)
        check_reachable(self.uri)

        prepare_store(self.uri)  # writable, complete, initialised by one process (benchmark/tracking/store.py)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_name = experiment
        self.experiment_id = self._experiment_id(experiment)

    def _experiment_id(self, name: str) -> str:
        try:
            found = retry_locked(self.client.get_experiment_by_name, name)
            if found is not None:
                return found.experiment_id
            location = None
            if self.uri.startswith("sqlite:///"):
                location = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
            try:
                return retry_locked(self.client.create_experiment, name, artifact_location=location)
            except Exception:
                found = self.client.get_experiment_by_name(name)  # created meanwhile by a parallel job
                if found is None:
                    raise
                return found.experiment_id
        except GroupbenchError:
            raise
        except Exception as exc:
            raise TrackingError(f"tracking store {self.uri}: cannot open experiment {name!r} ({exc}); check "
                                f"tracking.uri and that the store is writable") from None

    @contextmanager
    def run(self, name: str, tags: dict[str, str] | None = None, parent_run_id: str | None = None,
            ) -> Iterator["RunLogger"]:
        """Create a run; mark it FINISHED, or FAILED (with an ``error`` tag) if the body raises."""

        all_tags = {**owner_tags(), **(tags or {})}  # the owner process: orphans are found by it
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = retry_locked(self.client.create_run, self.experiment_id, run_name=name,
                            tags={k: str(v)[:MAX_TAG_LENGTH] for k, v in all_tags.items()})
        logger = RunLogger(self.client, run.info.run_id)
        try:
            yield logger
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, (KeyboardInterrupt, AlreadyClaimed)) else "FAILED"
            message = str(exc) if isinstance(exc, GroupbenchError) else f"{type(exc).__name__}: {exc}"
            try:  # the whole message, on one line: the tag holds exactly the line the user sees
                logger.set_tags({("note" if isinstance(exc, AlreadyClaimed) else "error"):
                                 one_line(message) or type(exc).__name__, "error_type": type(exc).__name__})
            finally:
                retry_locked(self.client.set_terminated, run.info.run_id, status)
                checkpoint(self.uri)
            raise
        else:
            retry_locked(self.client.set_terminated, run.info.run_id, "FINISHED")
            checkpoint(self.uri)  # the finished run is in mlflow.db itself, not only in its -wal


class RunLogger:
    """What a job logs into its run: params, tags, metrics (batched), files and tables."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id
        self.params_logged = False  # MLflow keeps a param's first value: a job logs its params once

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.params_logged = True
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), MAX_BATCH):
            retry_locked(self.client.log_batch, self.run_id, params=items[start:start + MAX_BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:MAX_TAG_LENGTH]) for k, v in tags.items()]
        for start in range(0, len(items), MAX_BATCH):
            retry_locked(self.client.log_batch, self.run_id, tags=items[start:start + MAX_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items() if v is not None]
        for start in range(0, len(items), MAX_BATCH):
            retry_locked(self.client.log_batch, self.run_id, metrics=items[start:start + MAX_BATCH])

    def log_artifacts(self, files: dict[str, Any]) -> None:
        """name -> DataFrame (Parquet or CSV by the name's suffix), dict/list (JSON), str (text), bytes or
        Path (copied), all in one upload."""

        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                path = Path(tmp) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, pd.DataFrame):
                    write_table(content, path)
                elif isinstance(content, (dict, list)):
                    path.write_text(json.dumps(content, indent=2, default=str))
                elif isinstance(content, bytes):
                    path.write_bytes(content)
                elif isinstance(content, Path):
                    path.write_bytes(content.read_bytes())
                else:
                    path.write_text(str(content))
            retry_locked(self.client.log_artifacts, self.run_id, tmp)
