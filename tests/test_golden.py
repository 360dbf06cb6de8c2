"""Golden test: the fixed-seed jobs of tests/golden/make_golden.py, re-run through the public
command line (`python -m benchmark ...`), must log exactly the metrics in tests/golden/expected.json
(abs 1e-12; wall-clock timings excluded). It imports nothing from benchmark / models / baselines,
so it survives any reorganisation of their modules; a metric that moves, vanishes or appears fails it.
Regenerate (only for an intended change of results): .venv/bin/python tests/golden/make_golden.py
"""

from __future__ import annotations

import json
import math

import pytest

from tests.golden import make_golden

TOLERANCE = 1e-12


def _differences(name: str, expected: dict[str, float], observed: dict[str, float]) -> list[str]:
    observed = make_golden.keep(observed)
    problems = [f"{name}: metric {key} missing (expected {value!r})"
                for key, value in expected.items() if key not in observed]
    problems += [f"{name}: new metric {key} = {observed[key]!r} (not in expected.json)"
                 for key in observed if key not in expected]
    for key, value in expected.items():
        if key in observed:
            got = observed[key]
            same = (math.isnan(value) and math.isnan(got)) or abs(got - value) <= TOLERANCE
            if not same:
                problems.append(f"{name}: {key} = {got!r}, expected {value!r} (diff {got - value:.3g})")
    return problems


@pytest.mark.slow
def test_golden_metrics_unchanged(tmp_path, monkeypatch):
    golden = json.loads(make_golden.EXPECTED.read_text())
    assert sorted(golden["jobs"]) == sorted(make_golden.JOBS), "job list and expected.json disagree"
    for name, job in golden["jobs"].items():
        # the overrides it was generated with: today's, or today's without make_golden.NEUTRAL_SINCE_GENERATION
        # (trainer.refit=false on the torch jobs: the early-stopping weights, as when it was generated)
        assert job["overrides"] in make_golden.accepted_overrides(name), f"{name}: overrides changed since generation"
    torch_jobs = [name for name in make_golden.JOBS if name.endswith(("-dmtl", "-neural_mf"))]
    assert torch_jobs and all("trainer.refit=false" in make_golden.JOBS[name] for name in torch_jobs)
    monkeypatch.setenv("GROUPBENCH_CACHE_DIR", str(tmp_path / "cache"))   # run_jobs sets it per batch too
    observed = make_golden.run_jobs(tmp_path)
    problems = [problem for name, job in golden["jobs"].items()
                for problem in _differences(name, job["metrics"], observed[name])]
    assert not problems, (f"{len(problems)} golden metric(s) differ from expected.json "
                          f"(made at {golden['header']['commit'][:7]}):\n" + "\n".join(problems))


FAST_JOB = "itmrec-svd"  # the fast tier's golden check: one job of the twelve (the rest: the slow test above)


@pytest.mark.slow
def test_one_golden_job_unchanged(tmp_path, monkeypatch):
    golden = json.loads(make_golden.EXPECTED.read_text())
    assert FAST_JOB in golden["jobs"] and golden["jobs"][FAST_JOB]["overrides"] in make_golden.accepted_overrides(
        FAST_JOB)
    monkeypatch.setenv("GROUPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    observed = make_golden.run_jobs(tmp_path, names=[FAST_JOB], workers=1)
    problems = _differences(FAST_JOB, golden["jobs"][FAST_JOB]["metrics"], observed[FAST_JOB])
    assert not problems, "\n".join(problems)
