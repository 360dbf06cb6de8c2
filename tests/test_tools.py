"""The measuring tools under the entry points' contract (#28 item 4): ``python -m benchmark.speed``
and ``python -m benchmark.scale`` refuse a bad value in one line with exit 2 before anything runs
(the cases are in the bad-input table, tests/bad_inputs.py), exit 1 when every job failed, and
still measure as docs/performance.md documents."""

from __future__ import annotations

import pytest

from benchmark import scale, speed
from benchmark.core.errors import TrainingError


def test_speed_exits_1_when_every_job_failed(monkeypatch, capsys, tmp_path):
    def fails(cfg, *args, **kwargs):
        raise TrainingError(f"{cfg.model.name} diverged")

    monkeypatch.setattr(speed, "run", fails)
    with pytest.raises(SystemExit) as exited:
        speed.main(["--models", "svd,baseline_only", "--skip-pairwise", "dataset=synthetic",
                    f"data.root={tmp_path}"])
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert "  svd: FAILED svd diverged" in captured.out and "  baseline_only: FAILED" in captured.out
    (line,) = [line for line in captured.err.splitlines() if " INFO mlflow." not in line]  # its temporary store's
    assert line.startswith("error: every job failed, nothing was measured: svd: svd diverged; baseline_only:")


def test_scale_exits_1_when_every_job_failed(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(scale, "run_isolated", lambda job, timeout: {"error": "MemoryError: boom"})
    with pytest.raises(SystemExit) as exited:
        scale.main(["--sizes", "5000", "--models", "svd", "--out", str(tmp_path)])
    assert exited.value.code == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if " INFO mlflow." not in line]
    assert line.startswith("error: every job failed, nothing was measured") and "svd at 5,000: MemoryError" in line


def test_a_bad_set_never_starts_a_job(monkeypatch, capsys, tmp_path):
    """--set model=foo used to be ignored (the tool's own model= came later) and SVD measured."""
    monkeypatch.setattr(scale, "run_isolated", lambda *a, **k: pytest.fail("a job was started"))
    cases = {"model=foo": ["--set", "model=foo"], "eval.k='abc'": ["--set", "eval.k=abc"],
             "--memory-limit-gb nan": ["--memory-limit-gb", "nan"], "--sizes 0": ["--sizes", "0"]}
    for named, argv in cases.items():
        with pytest.raises(SystemExit) as exited:
            scale.main(["--sizes", "5000", "--models", "svd", "--out", str(tmp_path), *argv])
        assert exited.value.code == 2, argv
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: {named}"), (argv, line)
    assert not list(tmp_path.iterdir())


def test_speed_still_measures_a_job(capsys):
    figures = speed.main(["--models", "svd", "--skip-pairwise", "dataset=synthetic"])
    assert figures["svd_fit"] > 0 and 0 < figures["svd_outside_share"] < 1
    assert "  svd: " in capsys.readouterr().out


def test_speed_composes_a_group_item_job_as_the_runner_does():
    """benchmark.speed times a group-item dataset's job with its own split and grouping (the runner's
    dataset_defaults), not the user-level holdout and KMeans it cannot run."""
    from benchmark.speed import compose_config
    cfg = compose_config(["dataset=mafengwo", "model=popularity_group"])
    assert cfg.split._target_.endswith("group_split.corrected") and cfg.grouping._target_.endswith("grouping.members")
    assert compose_config(["dataset=ml100k"]).split._target_.endswith("split.holdout")
