"""Table artifacts: Parquet by default, CSV on request (artifacts.format), read back either way."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from benchmark.tracking.artifacts import download_table, read_table, write_table
from benchmark.core.errors import ConfigError
from benchmark.run.job import run


def test_write_and_read_round_trip_both_formats(tmp_path: Path):
    frame = pd.DataFrame({"user": [1, 2, 3], "item": [7, 8, 9], "rating": [1.0, 4.5, 5.0],
                          "prediction": [1.25, 3.5, 4.75]})
    for name in ("t.parquet", "t.csv"):
        write_table(frame, tmp_path / name)
        pd.testing.assert_frame_equal(read_table(tmp_path / name), frame)
    assert (tmp_path / "t.parquet").read_bytes()[:4] == b"PAR1"  # a real Parquet file, not CSV renamed
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "user,item,rating,prediction"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_run_logs_tables_in_the_configured_format(make_cfg, tracking_uri, tmp_path, fmt):
    result = run(make_cfg("dataset=synthetic", "model=baseline_only", f"artifacts.format={fmt}"))
    client = MlflowClient(tracking_uri)
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {f"predictions.{fmt}", f"per_user_metrics.{fmt}", f"groups.{fmt}"} <= names
    other = "csv" if fmt == "parquet" else "parquet"
    assert not any(name.endswith(f".{other}") for name in names)
    # the report's reader finds the table whichever format the run used; values are the run's own
    predictions = download_table(client, result.run_id, "predictions", tmp_path / "dl")
    pd.testing.assert_frame_equal(predictions, result.predictions, check_dtype=False)
    per_user = download_table(client, result.run_id, "per_user_metrics", tmp_path / "dl2")
    assert per_user.precision.mean() == pytest.approx(result.metrics["precision_at_10"])


def test_unknown_format_is_refused_before_any_work(make_cfg, tracking_uri):
    with pytest.raises(ConfigError, match=r"artifacts.format=xlsx must be one of parquet, csv"):
        run(make_cfg("dataset=synthetic", "model=baseline_only", "artifacts.format=xlsx"))
    runs = MlflowClient(tracking_uri).search_runs([MlflowClient(tracking_uri).get_experiment_by_name("groupbench")
                                                  .experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
