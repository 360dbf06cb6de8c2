"""Runs many ``python -m <entry point>`` command lines in one process, each in a forked child.

Used by tests/test_reliability.py for the bad-input table (tests/bad_inputs.py): importing torch,
MLflow, Hydra and pandas costs seconds per process, so the parent imports them once and forks a
child per case; each child is a fresh ``python -m benchmark`` (or ``benchmark.report``,
``benchmark.recommend``, ``benchmark.speed``, ``benchmark.scale``) as far as the harness can tell
(its own argv, environment, stderr file, exit code). Usage: ``python tests/bad_input_driver.py
cases.json results.json`` where a case is ``{"module": "benchmark", "argv": [...], "env": {...},
"cwd": "..."}``; results hold ``rc``, ``stderr`` and ``seconds`` per case.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

PARALLEL = 2  # children at a time (the suite's machine has 2 cores)
# seconds a case may take: one that runs past it (a measurement started instead of refused) is killed
# with its process group and reported, rather than holding up the whole table
CASE_TIMEOUT = float(os.environ.get("BAD_INPUT_CASE_TIMEOUT", "120"))


def child(case: dict, stderr_path: str) -> None:
    """Become ``python -m benchmark <argv>`` with stderr (and stdout) in a file; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group: a timed-out case is killed with what it started
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
        if os.environ.get("PYTHONWARNINGS") == "ignore":  # read at start-up only: the child's own setting
            import warnings

            warnings.simplefilter("ignore")
        module = case.get("module", "benchmark")
        sys.argv = [module, *case["argv"]]
        import runpy

        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)  # as `python -m <module>`
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
    import hydra  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    import benchmark.report.build  # noqa: F401  (each entry point's libraries, not the module it runs as __main__)
    import benchmark.run.job  # noqa: F401  (torch, MLflow, Hydra, pandas, Surprise: imported once)
    import benchmark.sweeps.sweep  # noqa: F401
    import benchmark.timing  # noqa: F401
    from benchmark.tracking.store import _alembic_head

    configure_mappers()  # MLflow's ORM set up once (seconds), not in every child
    _alembic_head()

    cases = json.loads(open(cases_path).read())
    results: list[dict] = [{} for _ in cases]
    running: dict[int, tuple[int, str, float]] = {}
    killed: set[int] = set()
    pending = list(range(len(cases)))
    while pending or running:
        while pending and len(running) < PARALLEL:
            index = pending.pop(0)
            path = f"{results_path}.{index}.stderr"
            pid = os.fork()
            if pid == 0:
                child(cases[index], path)
            running[pid] = (index, path, time.perf_counter())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for child_pid, (index, path, started) in running.items():
                if time.perf_counter() - started > CASE_TIMEOUT and child_pid not in killed:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child_pid, signal.SIGKILL)
                    killed.add(child_pid)
            time.sleep(0.02)
            continue
        index, path, started = running.pop(pid)
        stderr = open(path).read() + (f"\n(killed after {CASE_TIMEOUT:g} s)" if pid in killed else "")
        results[index] = {"rc": os.waitstatus_to_exitcode(status), "stderr": stderr,
                          "seconds": time.perf_counter() - started}
    with open(results_path, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
