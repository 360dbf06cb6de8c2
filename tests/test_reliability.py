"""Reliability (issue 14; over 400 lines: the bad-input table and the fault tests share their helpers):
one error contract for every bad input; the store survives kills;
resume and concurrent sweeps never duplicate a result or trust one computed on other data.

The bad-input table runs ``python -m benchmark`` once per case, in forked children of one driver
process (tests/bad_input_driver.py), and checks each: exit code 2, exactly one error line on
stderr, no traceback, and a FAILED run whose ``error`` tag holds that whole line's message
(where a store is reachable). The fault and concurrency tests run real subprocesses on synthetic
data and send real signals.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import CONF, REPO, data_root

TIMEOUT = 300
SVD = ["model=svd", "dataset=synthetic"]
DMTL = ["model=dmtl", "dataset=synthetic", "trainer.max_epochs=2", "trainer.progress=false"]


def _ml100k_with(folder: Path, u_data: str) -> Path:
    """A data root whose ml-100k/ has the real u.user and u.item and the given u.data."""
    target = folder / "ml-100k"
    target.mkdir(parents=True)
    for name in ("u.user", "u.item"):
        shutil.copy(data_root() / "ml-100k" / name, target / name)
    (target / "u.data").write_text(u_data)
    return folder


def bad_inputs(tmp: Path) -> list[tuple[str, list[str], dict, str | None]]:
    """(case id, argv, env, expected text of the error) — every case of issue 14 and more."""
    real = (data_root() / "ml-100k" / "u.data").read_text().splitlines(keepends=True)
    truncated = tmp / "truncated"
    shutil.copytree(data_root() / "ml-100k", truncated / "ml-100k",
                    ignore=shutil.ignore_patterns("u[0-9ab]*.base", "u[0-9ab]*.test"))
    (truncated / "ml-100k" / "u.data").write_text("".join(real[:500]))
    a_file = tmp / "not-a-folder"
    a_file.write_text("x")
    roots = {
        "empty": _ml100k_with(tmp / "empty", ""),
        "fields": _ml100k_with(tmp / "fields", "".join(real[:3]) + "1\t2\t3\t4\t5\n" + "".join(real[3:20])),
        "text": _ml100k_with(tmp / "text", "".join(real[:7]) + "1\t2\tfive\t881250949\n" + "".join(real[7:20])),
        # whole files with one row changed: the row count is right, the value is not
        "range": _ml100k_with(tmp / "range", "".join(real[:4]) + "1\t2\t9\t881250949\n" + "".join(real[5:])),
        "user": _ml100k_with(tmp / "user", "".join(real[:4]) + "5000\t2\t3\t881250949\n" + "".join(real[5:])),
        # line 6 rates line 1's (user, item) pair again; the row count stays 100,000
        "duplicate": _ml100k_with(tmp / "duplicate", "".join(real[:5]) + "\t".join(real[0].split("\t")[:2])
                                  + "\t4\t881250949\n" + "".join(real[6:])),
    }
    ml = ["model=svd", "dataset=ml100k", "data.verify=false", "data.download=false"]
    outside = tmp / "outside"
    outside.mkdir()
    shutil.copy(CONF / "model" / "svd.yaml", outside / "evil.yaml")
    escape = os.path.relpath(outside / "evil", CONF / "model")  # conf/model/<escape>.yaml is outside conf/
    cases = [
        # config-group choices that Hydra itself used to report (exit 1)
        ("model=foo", ["model=foo"], {}, "model=foo is not a model name"),
        ("dataset=../../etc", ["dataset=../../etc"], {}, "dataset=../../etc is not a dataset name"),
        ("split=nope", ["split=nope", *SVD[:1]], {}, "split=nope is not a split name"),
        ("grouping=../x", ["grouping=../x"], {}, "grouping=../x is not a grouping name"),
        ("unknown key", [*SVD, "foo=1"], {}, "does not compose"),
        ("sweep value without -m", [*SVD, "seed=0,1"], {}, "does not compose"),
        # types and ranges, before any data work
        ("eval.k=abc", [*SVD, "eval.k=abc"], {}, "eval.k='abc' must be an integer"),
        ("eval.k=0", [*SVD, "eval.k=0"], {}, "eval.k=0 must be an integer >= 1"),
        ("eval.k=-3", [*SVD, "eval.k=-3"], {}, "eval.k=-3"),
        ("eval.k=2.5", [*SVD, "eval.k=2.5"], {}, "eval.k=2.5"),
        ("eval.threshold=abc", [*SVD, "eval.threshold=abc"], {}, "eval.threshold='abc' must be a finite number"),
        ("eval.threshold=nan", [*SVD, "eval.threshold=nan"], {}, "eval.threshold=nan"),
        ("eval.threshold=-1", [*SVD, "eval.threshold=-1"], {}, "eval.threshold=-1 is outside the rating scale"),
        ("eval.threshold=7", [*SVD, "eval.threshold=7"], {}, "eval.threshold=7 is outside the rating scale"),
        ("seed=true", [*SVD, "seed=true"], {}, "seed=true must be an integer"),
        ("seed=-1", [*SVD, "seed=-1"], {}, "seed=-1 must be an integer >= 0"),
        ("seed=abc", [*SVD, "seed=abc"], {}, "seed='abc'"),
        ("seed=1.5", [*SVD, "seed=1.5"], {}, "seed=1.5"),
        # trainer.* is checked whatever the model (a baseline ignores it, but a typo is still a typo)
        ("trainer.lr=abc", [*DMTL, "trainer.lr=abc"], {}, "trainer.lr='abc' must be a finite number"),
        ("trainer.lr=0", [*SVD, "trainer.lr=0"], {}, "trainer.lr=0 must be a finite number > 0"),
        ("trainer.lr=-1", [*SVD, "trainer.lr=-1"], {}, "trainer.lr=-1"),
        ("trainer.batch_size=0", [*SVD, "trainer.batch_size=0"], {}, "trainer.batch_size=0"),
        ("trainer.max_epochs=abc", [*SVD, "trainer.max_epochs=abc"], {}, "trainer.max_epochs='abc'"),
        ("trainer.patience=-1", [*SVD, "trainer.patience=-1"], {}, "trainer.patience=-1"),
        ("trainer.val_size=1.5", [*SVD, "trainer.val_size=1.5"], {}, "trainer.val_size=1.5"),
        ("trainer.weight_decay=-0.1", [*SVD, "trainer.weight_decay=-0.1"], {}, "trainer.weight_decay=-0.1"),
        ("svd n_factors=-5", [*SVD, "model.params.n_factors=-5"], {}, "model.params.n_factors=-5"),
        ("svd n_epochs=abc", [*SVD, "model.params.n_epochs=abc"], {}, "model.params.n_epochs='abc'"),
        ("svd lr_all=-1", [*SVD, "model.params.lr_all=-1"], {}, "model.params.lr_all=-1"),
        ("knn k=0", ["model=knn_basic", "dataset=synthetic", "model.params.k=0"], {}, "model.params.k=0"),
        ("dmtl lambda=-1", [*DMTL, "model.lambda_profile=-1"], {}, "model.lambda_profile=-1"),
        ("dmtl attention=bogus", [*DMTL, "model.attention=bogus"], {}, "model.attention='bogus'"),
        ("data.verify=maybe", [*SVD, "data.verify=maybe"], {}, "data.verify='maybe' must be true or false"),
        ("data.download=3", [*SVD, "data.download=3"], {}, "data.download=3"),
        ("eval.cold_threshold=-2", [*SVD, "eval.cold_threshold=-2"], {}, "eval.cold_threshold=-2"),
        ("eval.group.min_raters=0", [*SVD, "eval.group.min_raters=0"], {}, "eval.group.min_raters=0"),
        ("eval.group.aggregations=[foo]", [*SVD, "eval.group.aggregations=[foo]"], {}, "eval.group.aggregations"),
        ("split.test_size=2", [*SVD, "split.test_size=2"], {}, "split.test_size=2"),
        ("split.n_folds=1", [*SVD, "split=kfold", "split.n_folds=1"], {}, "split.n_folds=1"),
        ("synthetic n_groups=0", [*SVD, "dataset.loader.n_groups=0"], {}, "dataset.loader.n_groups=0"),
        # issue 28, item 6: values that used to pass the schema
        ("tune.enabled=maybe", [*SVD, "tune.enabled=maybe"], {}, "tune.enabled='maybe' must be true or false"),
        ("eval.full_catalogue=maybe", [*SVD, "eval.full_catalogue=maybe"], {}, "eval.full_catalogue='maybe'"),
        ("cache.enabled=maybe", [*SVD, "cache.enabled=maybe"], {}, "cache.enabled='maybe'"),
        ("seed=2**32", [*SVD, f"seed={2**32}"], {}, f"seed={2**32} must be an integer >= 0 and <= {2**32 - 1}"),
        ("tune.sampler_seed=-1", [*SVD, "tune.sampler_seed=-1"], {}, "tune.sampler_seed=-1"),
        ("tune.val_size=2", [*SVD, "tune.val_size=2"], {}, "tune.val_size=2 must be"),
        ("tune.trials=0", [*SVD, "tune.trials=0"], {}, "tune.trials=0"),
        ("synthetic noise=nan", [*SVD, "dataset.loader.noise=nan"], {}, "dataset.loader.noise=nan"),
        ("u.data duplicate pair, verify off", [*ml, f"data.root={roots['duplicate']}"], {},
         "line 6: field 'item' is"),
        ("tracking.uri unwritable", [*SVD, "tracking.uri=sqlite:////proc/groupbench/mlflow.db"], {},
         "tracking store /proc/groupbench/mlflow.db: cannot create its folder"),
        # divergence: a learning rate far too high trains to garbage without a NaN
        ("trainer.lr=1e6 diverges", [*DMTL, "trainer.lr=1e6"], {}, "dmtl diverged"),
        # data
        ("empty u.data, verify off", [*ml, f"data.root={roots['empty']}"], {}, "u.data is empty"),
        ("u.data row with 5 fields", [*ml, f"data.root={roots['fields']}"], {}, "malformed row"),
        ("u.data rating 'five'", [*ml, f"data.root={roots['text']}"], {}, "line 8: field 'rating' is 'five'"),
        ("u.data rating 9", [*ml, f"data.root={roots['range']}"], {}, "line 5: field 'rating' is 9,"),
        ("u.data unknown user", [*ml, f"data.root={roots['user']}"], {}, "line 5: field 'user' is 5000"),
        ("u.data truncated, verify on", ["model=svd", "dataset=ml100k", f"data.root={truncated}"], {},
         "sha256 mismatch"),
        ("data root missing, no download", ["model=svd", "dataset=ml100k", f"data.root={tmp / 'none'}",
                                            "data.download=false"], {}, "dataset ml100k not found"),
        ("GROUPBENCH_DATA is a file", ["model=svd", "dataset=ml100k"], {"GROUPBENCH_DATA": str(a_file)},
         "is a file, not a folder"),
        # sweeps: refused before any job runs, as a single run is (#28 item 5)
        ("sweep eval.k=abc", ["+sweep=smoke", "eval.k=abc"], {}, "eval.k='abc'"),
        ("sweep model=foo,svd", ["+sweep=smoke", "model=foo,svd"], {}, "model=foo is not a model name"),
        ("sweep seed=true", ["+sweep=smoke", "seed=true"], {}, "seed=true"),
        ("+sweep=../sweep/smoke", ["+sweep=../sweep/smoke"], {}, "sweep=../sweep/smoke is not a sweep name"),
        ("+sweep=nosuch", ["+sweep=nosuch"], {}, "sweep=nosuch is not a sweep name"),
        ("sweep model=foo", ["+sweep=smoke", "model=foo"], {}, "model=foo is not a model name"),
        ("sweep dataset=../dataset/itmrec", ["+sweep=smoke", "dataset=../dataset/itmrec"], {},
         "dataset=../dataset/itmrec is not a dataset name"),
        ("sweep: a model file outside conf/", ["+sweep=smoke", f"model={escape}"], {},
         f"model={escape} is not a model name"),
        ("sweep hydra/launcher=nosuch", ["+sweep=smoke", "hydra/launcher=nosuch"], {},
         "hydra/launcher=nosuch is not a hydra/launcher name"),
        ("sweep grid value: a path", ["+sweep=smoke", "hydra.sweeper.params.dataset=../dataset/itmrec"], {},
         "sweep smoke: dataset=../dataset/itmrec is not a dataset name"),
        ("sweep grid value: no such model", ["+sweep=smoke", "hydra.sweeper.params.model='svd,nosuch'"], {},
         "sweep smoke: model=nosuch is not a model name"),
        ("sweep over hydra.*", ["+sweep=smoke", "hydra.sweeper.params.model=svd,nosuch"], {},
         "Hydra's own configuration cannot be swept"),
        ("-m model=foo,svd", ["-m", "model=foo,svd", "dataset=synthetic"], {}, "model=foo is not a model name"),
        ("-m dataset=../x", ["--multirun", "model=svd", "dataset=../x"], {}, "dataset=../x is not a dataset name"),
        ("sweep malformed override", ["+sweep=smoke", "seed=[0"], {}, "does not compose"),
        ("hydra/launcher=nosuch", [*SVD, "hydra/launcher=nosuch"], {}, "hydra/launcher=nosuch is not a hydra/launcher"),
        # tracking stores that cannot be used: one line, exit 2, no run anywhere
        ("file store", [*SVD, "tracking.uri=file:///tmp/mlruns"], {}, "file store is deprecated"),
        ("unreachable server", [*SVD, "tracking.uri=http://127.0.0.1:9"], {}, "is unreachable"),
    ]
    return cases


def error_lines(stderr: str) -> list[str]:
    """Lines that are not INFO/WARNING log records: the error contract allows exactly one."""
    return [line for line in stderr.splitlines()
            if line.strip() and "][INFO] - " not in line and "][WARNING] - " not in line]


def test_bad_inputs_one_line_exit_2_failed_run(tmp_path: Path):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from benchmark.tracking.store import prepare_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepare_store(uri)  # created once here: the children's logs then hold no store-creation lines
    cases = bad_inputs(tmp_path)
    assert len(cases) >= 40
    runs = []
    for number, (_, argv, env, _) in enumerate(cases):
        has_uri = any(a.startswith("tracking.uri=") for a in argv)
        runs.append({"argv": [*argv, *([] if has_uri else [f"tracking.uri={uri}"]),
                              f"tracking.experiment=case{number}"],
                     "env": {"GROUPBENCH_DATA": str(data_root()), "HYDRA_FULL_ERROR": "1",
                             "PYTHONWARNINGS": "ignore", "MLFLOW_TRACKING_URI": None, **env},
                     "cwd": str(tmp_path)})
    (tmp_path / "cases.json").write_text(json.dumps(runs))
    done = subprocess.run([sys.executable, str(REPO / "tests" / "bad_input_driver.py"), str(tmp_path / "cases.json"),
                           str(tmp_path / "results.json")], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())

    client = MlflowClient(tracking_uri=uri)
    problems = []
    for number, ((name, argv, _, expected), result) in enumerate(zip(cases, results)):
        stderr, lines = result["stderr"], error_lines(result["stderr"])
        if result["rc"] != 2 or "Traceback" in stderr or len(lines) != 1 or expected not in lines[0]:
            problems.append(f"{name}: rc={result['rc']} error lines={lines!r}\n{stderr[-1500:]}")
            continue
        message = lines[0].split("error: ", 1)[1]
        experiment = client.get_experiment_by_name(f"case{number}")
        reachable = not any(a.startswith("tracking.uri=") for a in argv)
        if not reachable:
            assert experiment is None, name
            continue
        found = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL) if experiment else []
        failed = [r for r in found if r.info.status == "FAILED"]
        if len(failed) != 1 or failed[0].data.tags.get("error") != message or \
                any(r.info.status == "RUNNING" for r in found):
            problems.append(f"{name}: runs {[(r.info.status, r.data.tags.get('error')) for r in found]} "
                            f"vs line {message!r}")
    assert not problems, "\n\n".join(problems)


# ------------------------------------------------------------------------------------- faults

SWEEP = ["+sweep=smoke", "model=svd,baseline_only"]  # 2 fast jobs on synthetic data


def start(tmp_path: Path, *overrides: str, db: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "GROUPBENCH_DATA": str(data_root())}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "benchmark", *overrides, f"tracking.uri=sqlite:///{db or tmp_path / 'mlflow.db'}"]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=TIMEOUT)
    return process.returncode, stderr


def job_statuses(db: Path) -> list[tuple[str, str, str]]:
    """(status, config_hash, dataset_sha256) of every job run, read-only (the store may be half-made)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute(
                "select r.status, coalesce(h.value, ''), coalesce(d.value, '') from runs r "
                "join tags t on t.run_uuid = r.run_uuid and t.key = 'groupbench.role' and t.value = 'job' "
                "left join tags h on h.run_uuid = r.run_uuid and h.key = 'config_hash' "
                "left join tags d on d.run_uuid = r.run_uuid and d.key = 'dataset_sha256'").fetchall()
    except sqlite3.Error:
        return []


def wait_for(condition, process: subprocess.Popen, what: str, limit: float = TIMEOUT) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert process.poll() is None, f"the process ended before {what}: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def assert_complete(db: Path, n_configs: int) -> None:
    """Every configuration FINISHED exactly once, nothing RUNNING, and MLflow opens the store."""
    from mlflow.tracking import MlflowClient

    statuses = job_statuses(db)
    finished = [(h, d) for status, h, d in statuses if status == "FINISHED"]
    assert len(finished) == len(set(finished)) == n_configs, statuses
    assert all(status != "RUNNING" for status, _, _ in statuses), statuses
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    assert {e.name for e in client.search_experiments()} >= {"smoke"}
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_sigterm_during_store_setup_then_rerun_completes(tmp_path: Path):
    db = tmp_path / "mlflow.db"
    process = start(tmp_path, *SWEEP)
    temporaries = lambda: list(tmp_path.glob(".mlflow.db.init-*"))  # noqa: E731
    wait_for(lambda: temporaries() or db.exists(), process, "store setup to begin")
    time.sleep(0.3)  # inside MLflow's table creation (about 1-3 s)
    process.send_signal(signal.SIGTERM)
    code, stderr = finish(process)
    # one line, no traceback (#28 item 7: it was a 40-line KeyboardInterrupt traceback)
    assert code == 130 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip() and " INFO mlflow." not in line
             and "creating the tracking store" not in line]  # MLflow's and the store's progress lines
    assert len(lines) == 1 and "sweep smoke interrupted: rerun the same command to resume" in lines[0], stderr
    # the store is either absent or complete, never half-made
    assert not db.exists() or job_statuses(db) is not None
    code, stderr = finish(start(tmp_path, *SWEEP))
    assert code == 0, stderr[-3000:]
    assert_complete(db, 2)
    assert not temporaries()


def test_an_interrupt_python_would_ignore_is_raised_again(monkeypatch):
    """SIGTERM raises KeyboardInterrupt in whatever code runs; in a weakref callback or a ``__del__``
    (SQLAlchemy's, during store creation) Python prints "Exception ignored" and goes on, and the sweep
    ran to its end. The sweeper's hook raises it again in the code that runs next (#28 item 7)."""
    import weakref

    from benchmark.sweeps import sweep

    class Thing:
        pass

    def callback(_):
        raise KeyboardInterrupt("signal 15")

    monkeypatch.setattr(sys, "unraisablehook", sweep._redeliver_interrupt)
    previous = signal.getsignal(signal.SIGALRM)
    try:
        thing = Thing()
        ref = weakref.ref(thing, callback)  # its callback runs when thing goes
        with pytest.raises(KeyboardInterrupt):
            del thing  # the callback's KeyboardInterrupt is ignored by Python here ...
            time.sleep(5)  # ... and raised again within 50 ms
        assert ref() is None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]


@pytest.mark.parametrize("tables", [["create table secrets (id integer)", "insert into secrets values (42)"],
                                    ["create table secrets (id integer)", "create table experiments (id integer)"]],
                         ids=["user table", "tables named like MLflow's, no schema"])
def test_foreign_sqlite_file_survives_byte_for_byte(tmp_path: Path, tables: list[str]):
    """A sqlite database that is not an MLflow store, named as the store, is refused (rc 2, one line)
    by the job and by the report, and is never deleted or rewritten."""
    from benchmark.report.build import main as report_main

    db = tmp_path / "precious.db"
    with sqlite3.connect(db) as connection:
        for statement in tables:
            connection.execute(statement)
    before = db.read_bytes()
    code, stderr = finish(start(tmp_path, "model=baseline_only", "dataset=synthetic", db=db))
    assert code == 2, stderr[-3000:]
    errors = _error_lines(stderr)
    assert len(errors) == 1 and "not an MLflow store" in errors[0] and str(db) in errors[0], stderr[-3000:]
    assert db.read_bytes() == before
    assert report_main(["--tracking-uri", f"sqlite:///{db}", "--out", str(tmp_path / "report")]) == 2
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("precious")) == ["precious.db"]


def test_mlflow_store_without_runs_at_an_older_schema_survives(tmp_path: Path):
    """An MLflow store with zero runs at an older schema revision is refused with the upgrade command
    (it used to be taken for a half-made store and deleted); one at the head revision is used as is."""
    from mlflow.tracking import MlflowClient

    from benchmark.core.errors import TrackingError
    from benchmark.tracking.store import _migrations, prepare_store, store_state

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    prepare_store(uri)
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("kept")
    assert store_state(db) == "ready" and not client.search_runs([client.get_experiment_by_name("kept").experiment_id])
    older = sorted(_migrations()[1])[0]  # a revision some migration follows: not the head
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as connection:
        connection.execute("update alembic_version set version_num = ?", (older,))
        connection.execute("pragma wal_checkpoint(truncate)")
    before = db.read_bytes()
    from benchmark.tracking import store as store_module
    store_module._ready.discard(uri)
    assert store_state(db) == "outdated"
    with pytest.raises(TrackingError, match=r"older schema; upgrade it with `mlflow db upgrade"):
        prepare_store(uri)
    assert db.read_bytes() == before
    with sqlite3.connect(db) as connection:
        connection.execute("update alembic_version set version_num = 'f00dfeed1234'")
    assert store_state(db) == "newer"
    with pytest.raises(TrackingError, match="newer MLflow"):
        prepare_store(uri)
    assert db.exists() and store_state(db) == "newer"


def test_empty_file_named_as_store_becomes_a_store(tmp_path: Path):
    """A 0-byte file (``touch mlflow.db``) holds nothing to lose: it is made a store."""
    from benchmark.tracking.store import prepare_store, store_state

    db = tmp_path / "mlflow.db"
    db.touch()
    prepare_store(f"sqlite:///{db}")
    assert store_state(db) == "ready"


def test_sigkill_mid_job_then_rerun_marks_orphan_killed(tmp_path: Path):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    single = ["model=svd", "dataset=synthetic", "model.params.n_epochs=100", "tracking.experiment=smoke"]
    process = start(tmp_path, *single)
    wait_for(lambda: any(s == "RUNNING" for s, _, _ in job_statuses(db)), process, "the job to start")
    process.kill()
    process.wait(timeout=TIMEOUT)
    assert [s for s, _, _ in job_statuses(db)] == ["RUNNING"]
    code, stderr = finish(start(tmp_path, *single))
    assert code == 0, stderr[-3000:]
    assert_complete(db, 1)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], run_view_type=ViewType.ALL)
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) == 1 and killed[0].data.tags["note"].startswith("orphan: its process")


def test_sigkill_mid_sweep_then_rerun_completes(tmp_path: Path):
    db = tmp_path / "mlflow.db"
    process = start(tmp_path, *SWEEP)
    wait_for(lambda: any(s == "FINISHED" for s, _, _ in job_statuses(db)), process, "the first job to finish")
    process.kill()
    process.wait(timeout=TIMEOUT)
    code, stderr = finish(start(tmp_path, *SWEEP))
    assert code == 0, stderr[-3000:]
    assert_complete(db, 2)
    assert "marked KILLED" in stderr  # the killed sweep's parent run (and any job) was an orphan


@pytest.mark.parametrize("initialised", [False, True], ids=["fresh store", "initialised store"])
def test_two_sweeps_at_once_never_finish_a_configuration_twice(tmp_path: Path, initialised: bool):
    from benchmark.tracking.store import prepare_store

    db = tmp_path / "mlflow.db"
    if initialised:
        prepare_store(f"sqlite:///{db}")
    sweep = [*SWEEP, "seed=0,1"]  # 4 configurations, both sweeps want all of them
    first, second = start(tmp_path, *sweep), start(tmp_path, *sweep)
    (code1, err1), (code2, err2) = finish(first), finish(second)
    assert code1 == 0, err1[-3000:]
    assert code2 == 0, err2[-3000:]
    assert_complete(db, 4)


# --------------------------------------------------------------------------- stores and files

def _make_read_only(path: Path) -> bool:
    """chmod a-w, plus the immutable flag when running as root (root ignores permissions)."""
    path.chmod(0o555 if path.is_dir() else 0o444)
    if os.geteuid() != 0:
        return True
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


def _undo_read_only(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755 if path.is_dir() else 0o644)


PROBE = """import sys, time
from benchmark.tracking.store import prepare_store
started = time.perf_counter()
try:
    prepare_store(sys.argv[1])
except Exception as exc:
    print(exc)
print(time.perf_counter() - started)
"""


@pytest.mark.parametrize("what", ["folder", "file"])
def test_read_only_store_fails_fast_in_one_line(tmp_path: Path, what: str):
    from benchmark.tracking.store import prepare_store

    folder = tmp_path / "store"
    folder.mkdir()
    db = folder / "mlflow.db"
    if what == "file":
        prepare_store(f"sqlite:///{db}")
    target = folder if what == "folder" else db
    if not _make_read_only(target):
        _undo_read_only(target)
        pytest.skip("cannot make a path read-only for root here (chattr +i refused)")
    try:
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "GROUPBENCH_DATA": str(data_root())}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PROBE, f"sqlite:///{db}"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        message, seconds = done.stdout.strip().splitlines()
        assert "is not writable" in message and float(seconds) < 5, done.stdout + done.stderr
        done = subprocess.run([sys.executable, "-m", "benchmark", *SVD, f"tracking.uri=sqlite:///{db}"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert time.perf_counter() - started < 120, "hung"
        lines = error_lines(done.stderr)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert len(lines) == 1 and f"tracking store {db} is not writable" in lines[0], done.stderr
    finally:
        _undo_read_only(target)


def test_report_output_stays_under_its_folder():
    from benchmark.report.results import safe_name

    for name in ("../../x", "/etc/passwd", "..", "a/../../b", "~root", ""):
        cleaned = safe_name(name)
        assert cleaned and "/" not in cleaned and cleaned not in (".", "..") and not cleaned.startswith(".")
    assert safe_name("paper") == "paper" and safe_name("../../x") == "x"


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("entries, sha256, message", [
    ({"a.txt": b"ok", "../evil.txt": b"x"}, None, "outside"),
    ({"a.txt": b"ok", "data": b"file", "data/inner.txt": b"x"}, None, "which is a file"),
    ({"a.txt": b"ok", "b.txt": b"tampered"}, {"b.txt": "0" * 64}, "has sha256"),
], ids=["zip-slip", "file under a file", "pinned sha256"])
def test_extraction_checks_every_entry_before_writing_any(tmp_path: Path, entries, sha256, message):
    from benchmark.data.base import safe_extract
    from benchmark.core.errors import DataError

    archive = _zip(tmp_path / "archive.zip", entries)
    target = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        safe_extract(archive, target, sha256=sha256)
    assert not target.exists() or not any(target.rglob("*"))  # a.txt, before the bad entry, is not written


def test_divergence_is_refused_against_the_training_mean():
    from benchmark.evaluation.divergence import check_not_diverged
    from benchmark.core.errors import TrainingError

    check_not_diverged("m", 0.9, 1.2)  # better than the mean: fine
    with pytest.raises(TrainingError, match=r"m diverged: validation rating MSE 1.6 is worse than 1.25x the "
                                            r"training mean's 1.2"):
        check_not_diverged("m", 1.6, 1.2)
    with pytest.raises(TrainingError, match="diverged"):
        check_not_diverged("m", float("nan"), 1.2)


# ------------------------------------------------------------------------- results and data

def test_resume_does_not_reuse_a_result_on_other_data(tmp_path: Path):
    """Issue 14's case: a sweep FINISHED on edited data (data.verify=false); the same command on the
    pinned data must run again, not skip, and both results stay apart by dataset_sha256."""
    real = (data_root() / "ml-100k" / "u.data").read_text().splitlines(keepends=True)
    user, item, rating, stamp = real[0].split("\t")
    other = 1 if int(rating) != 1 else 2
    edited = _ml100k_with(tmp_path / "edited", "".join([f"{user}\t{item}\t{other}\t{stamp}", *real[1:]]))
    sweep = ["-m", "model=normal_predictor", "dataset=ml100k", "tracking.experiment=smoke"]
    code, stderr = finish(start(tmp_path, *sweep, "data.verify=false", f"data.root={edited}"))
    assert code == 0, stderr[-3000:]
    code, stderr = finish(start(tmp_path, *sweep, f"data.root={data_root()}"))
    assert code == 0, stderr[-3000:]
    assert "0 already FINISHED" in stderr
    finished = [(h, d) for s, h, d in job_statuses(tmp_path / "mlflow.db") if s == "FINISHED"]
    assert len(finished) == 2 and finished[0][0] == finished[1][0] and finished[0][1] != finished[1][1]


def test_report_keeps_one_result_per_config_and_data_on_the_latest_data():
    import pandas as pd

    from benchmark.report.results import latest_results

    runs = pd.DataFrame({"config_hash": ["a", "a", "b", "a", "c"], "dataset": ["ml", "ml", "ml", "ml", "it"],
                         "dataset_sha256": ["bad", "good", "good", "good", "x"], "start_time": [1, 2, 3, 4, 5],
                         "run_id": ["r1", "r2", "r3", "r4", "r5"]})
    kept = latest_results(runs)
    assert sorted(kept["run_id"]) == ["r3", "r4", "r5"]  # r1 on other data, r2 superseded by r4


def test_a_weak_fit_is_tagged_a_far_worse_one_diverged():
    """Worse than the mean but within DIVERGED_FACTOR: kept and tagged (undertrained when still
    improving at its last epoch); beyond it, or not finite: diverged."""
    from types import SimpleNamespace

    from benchmark.evaluation.divergence import DIVERGED_FACTOR, check_model
    from benchmark.core.errors import TrainingError

    def model(val_losses, best, val_mse, trivial):
        history = [{"epoch": e, "val_rating_loss": v} for e, v in enumerate(val_losses, 1)]
        return SimpleNamespace(name="m", history=history, best_epoch=best,
                               validation_scores=lambda: (val_mse, trivial))

    assert check_model(model([1.9, 1.5], 2, 1.5, 1.45)) == {"worse_than_mean": "true", "undertrained": "true"}
    assert check_model(model([1.4, 1.5], 1, 1.5, 1.45)) == {"worse_than_mean": "true"}
    assert check_model(model([1.9, 1.2], 2, 1.2, 1.45)) == {}
    with pytest.raises(TrainingError, match="diverged"):
        check_model(model([9.0, 4.0], 2, 4.0, 1.45))                    # improving, but far worse
    with pytest.raises(TrainingError, match="diverged"):
        check_model(model([1.4, 1.5], 1, DIVERGED_FACTOR * 1.45 + 0.01, 1.45))


def test_sqlite_store_commits_through_a_write_ahead_log(tmp_path: Path):
    """Runs logged through the Tracker leave the store in WAL mode (commits without an fsync each);
    a plain sqlite reader (another process, e.g. mlflow ui) sees every committed run, and so does a
    copy of the file alone: each run's end checkpoints the log into it."""
    from benchmark.tracking.tracker import Tracker

    store = tmp_path / "mlflow.db"
    tracker = Tracker(f"sqlite:///{store}", "wal")
    for n in range(3):
        with tracker.run(f"run{n}") as logger:
            logger.log_metrics({"x": float(n)})
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0] == 3
    # the file alone (copied without its -wal, the tracker still open) holds every finished run
    shutil.copy(store, tmp_path / "copy.db")
    assert not (tmp_path / "copy.db-wal").exists()
    with sqlite3.connect(tmp_path / "copy.db") as db:
        assert db.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0] == 3
        assert db.execute("select count(*) from metrics where key = 'x'").fetchone()[0] == 3
