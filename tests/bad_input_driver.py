"""Runs many ``python -m benchmark`` command lines in one process, each in a forked child.

Used by tests/test_reliability.py: importing torch, MLflow, Hydra and pandas costs seconds per
process, so the parent imports them once and forks a child per case; each child is a fresh
``python -m benchmark`` as far as the harness can tell (its own argv, environment, stderr file,
exit code). Usage: ``python tests/bad_input_driver.py cases.json results.json`` where a case is
``{"argv": [...], "env": {...}, "cwd": "..."}``; results hold ``rc`` and ``stderr`` per case.
"""

from __future__ import annotations

import json
import os
import sys
import time

PARALLEL = 2  # children at a time (the suite's machine has 2 cores)


def child(case: dict, stderr_path: str) -> None:
    """Become ``python -m benchmark <argv>`` with stderr (and stdout) in a file; never returns."""
    code = 1
    try:
        fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 2)
        os.dup2(fd, 1)
        os.chdir(case["cwd"])
        for key, value in case.get("env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.environ["GROUPBENCH_CWD"] = case["cwd"]
        sys.argv = ["benchmark", *case["argv"]]
        import runpy

        try:
            runpy.run_module("benchmark", run_name="__main__", alter_sys=True)  # as `python -m benchmark`
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(cases_path: str, results_path: str) -> None:
    import benchmark.run.job  # noqa: F401  (torch, MLflow, Hydra, pandas, Surprise: imported once)
    import benchmark.sweeps.sweep  # noqa: F401
    import hydra  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    from benchmark.tracking.store import _alembic_head

    configure_mappers()  # MLflow's ORM set up once (seconds), not in every child
    _alembic_head()

    cases = json.loads(open(cases_path).read())
    results: list[dict] = [{} for _ in cases]
    running: dict[int, tuple[int, str, float]] = {}
    pending = list(range(len(cases)))
    while pending or running:
        while pending and len(running) < PARALLEL:
            index = pending.pop(0)
            path = f"{results_path}.{index}.stderr"
            pid = os.fork()
            if pid == 0:
                child(cases[index], path)
            running[pid] = (index, path, time.perf_counter())
        pid, status = os.wait()
        index, path, started = running.pop(pid)
        results[index] = {"rc": os.waitstatus_to_exitcode(status), "stderr": open(path).read(),
                          "seconds": time.perf_counter() - started}
    with open(results_path, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
