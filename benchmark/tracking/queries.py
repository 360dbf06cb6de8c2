"""Reading and writing MLflow under load: retries on a locked sqlite store, and run queries."""

from __future__ import annotations

import time

import mlflow
import pandas as pd
from mlflow.entities import ViewType
from mlflow.tracking._tracking_service.utils import _use_tracking_uri


def retry_locked(fn, *args, attempts: int = 8, **kwargs):
    """sqlite allows one writer at a time; parallel jobs retry briefly instead of failing."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # MlflowException wraps sqlite's OperationalError
            if "locked" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2 ** attempt)


def search_all(client, experiment_id: str, filter_string: str = "", view=ViewType.ACTIVE_ONLY) -> list:
    """Every run of the experiment matching ``filter_string`` (MLflow pages results: all pages)."""
    token, runs = None, []
    while True:
        page = retry_locked(client.search_runs, [experiment_id], filter_string=filter_string,
                            run_view_type=view, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def runs_frame(uri: str, experiment_id: str, filter_string: str = "", max_results: int = 10**9) -> pd.DataFrame:
    """``mlflow.search_runs`` on the store at ``uri``: every page, one DataFrame (``run_id``, ``status``,
    ``start_time``, ``metrics.*``, ``params.*``, ``tags.*``; absent values None / NaN).

    ``mlflow.search_runs`` reads the global tracking URI; MLflow's own scoped setter points it at
    ``uri`` for the query and restores the caller's (an unset one stays unset, so no
    ``MLFLOW_TRACKING_URI`` leaks into the environment).
    """
    with _use_tracking_uri(uri):
        return retry_locked(mlflow.search_runs, [experiment_id], filter_string=filter_string,
                            run_view_type=ViewType.ACTIVE_ONLY, max_results=max_results, output_format="pandas")
