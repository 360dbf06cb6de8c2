"""The bad-input table (README.md, "Errors"): every entry point, each case one command line.

A case is (entry point, name, argv, env, the text its error line must hold). tests/test_reliability.py
(``test_bad_inputs_one_line_exit_2_failed_run``) runs every case in a forked child of one driver
process (tests/bad_input_driver.py) and checks each: exit code 2, exactly one error line on stderr
(:func:`error_lines`), no traceback, and, for ``benchmark`` and ``+sweep`` where the store is
reachable, a FAILED run whose ``error`` tag holds that whole line's message, and no other run. The
read-only commands (``report``, ``recommend``, ``speed --sweep``) and the measuring tools
(``speed``, ``scale``, which run their jobs in a temporary store) write nothing to the store, and
a path named in ``absent`` (a mistyped store) is never created.

Entry points: ``benchmark`` (one run), ``sweep`` (``+sweep=NAME`` and ``-m``), ``report``,
``recommend``, ``speed``, ``scale``: :data:`MODULES` gives each one's ``python -m`` module.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import CONF, data_root

SVD = ["model=svd", "dataset=synthetic"]
DMTL = ["model=dmtl", "dataset=synthetic", "trainer.max_epochs=2", "trainer.progress=false"]
DEAD = "http://127.0.0.1:9"  # nothing listens on port 9 (discard)
QUICK = {"GROUPBENCH_TRACKING_TIMEOUT": "2"}  # an unreachable server is refused within 2 s

MODULES = {"benchmark": "benchmark", "sweep": "benchmark", "report": "benchmark.report",
           "recommend": "benchmark.recommend", "speed": "benchmark.speed", "scale": "benchmark.scale"}
LOGS_A_FAILED_RUN = ("benchmark", "sweep")  # where the store is reachable; the others write nothing


@dataclass
class Case:
    entry: str                       # a key of MODULES
    name: str
    argv: list[str]
    env: dict[str, str | None]
    expected: str                    # text the one error line holds
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards

    @property
    def failed_run(self) -> bool:
        """A FAILED run holds the line: a run or a sweep whose store (the table's) is reachable."""
        return self.entry in LOGS_A_FAILED_RUN and not any(a.startswith("tracking.uri=") for a in self.argv)


def ml100k_with(folder: Path, u_data: str) -> Path:
    """A data root whose ml-100k/ has the real u.user and u.item and the given u.data."""
    target = folder / "ml-100k"
    target.mkdir(parents=True)
    for name in ("u.user", "u.item"):
        shutil.copy(data_root() / "ml-100k" / name, target / name)
    (target / "u.data").write_text(u_data)
    return folder


def error_lines(stderr: str) -> list[str]:
    """Lines that are not INFO/WARNING log records: the error contract allows exactly one."""
    return [line for line in stderr.splitlines()
            if line.strip() and "][INFO] - " not in line and "][WARNING] - " not in line]


def cases(tmp: Path, uri: str) -> list[Case]:
    """Every case, entry point by entry point; ``uri``: the table's store (it exists, with no run)."""
    table: dict[str, list[tuple]] = {
        "benchmark": benchmark_cases(tmp),
        "sweep": sweep_cases(tmp),
        "report": report_cases(tmp, uri),
        "recommend": recommend_cases(tmp, uri),
        "speed": speed_cases(tmp, uri),
        "scale": scale_cases(tmp),
    }
    return [Case(entry, *row) for entry, rows in table.items() for row in rows]


def benchmark_cases(tmp: Path) -> list[tuple]:
    """``python -m benchmark``: (name, argv, env, expected); issue 14's cases and more."""
    real = (data_root() / "ml-100k" / "u.data").read_text().splitlines(keepends=True)
    truncated = tmp / "truncated"
    shutil.copytree(data_root() / "ml-100k", truncated / "ml-100k",
                    ignore=shutil.ignore_patterns("u[0-9ab]*.base", "u[0-9ab]*.test"))
    (truncated / "ml-100k" / "u.data").write_text("".join(real[:500]))
    a_file = tmp / "not-a-folder"
    a_file.write_text("x")
    roots = {
        "empty": ml100k_with(tmp / "empty", ""),
        "fields": ml100k_with(tmp / "fields", "".join(real[:3]) + "1\t2\t3\t4\t5\n" + "".join(real[3:20])),
        "text": ml100k_with(tmp / "text", "".join(real[:7]) + "1\t2\tfive\t881250949\n" + "".join(real[7:20])),
        # whole files with one row changed: the row count is right, the value is not
        "range": ml100k_with(tmp / "range", "".join(real[:4]) + "1\t2\t9\t881250949\n" + "".join(real[5:])),
        "user": ml100k_with(tmp / "user", "".join(real[:4]) + "5000\t2\t3\t881250949\n" + "".join(real[5:])),
        # line 6 rates line 1's (user, item) pair again; the row count stays 100,000
        "duplicate": ml100k_with(tmp / "duplicate", "".join(real[:5]) + "\t".join(real[0].split("\t")[:2])
                                  + "\t4\t881250949\n" + "".join(real[6:])),
    }
    ml = ["model=svd", "dataset=ml100k", "data.verify=false", "data.download=false"]
    return [
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
            # tracking stores that cannot be used: one line, exit 2, no run anywhere
            ("file store", [*SVD, "tracking.uri=file:///tmp/mlruns"], {}, "file store is deprecated"),
            ("unreachable server", [*SVD, "tracking.uri=http://127.0.0.1:9"], {}, "is unreachable"),
        # issue 28, item 5: a hydra/ group choice is checked like the others
        ("hydra/launcher=nosuch", [*SVD, "hydra/launcher=nosuch"], {}, "hydra/launcher=nosuch is not a hydra/launcher name"),
    ]


def foreign_sqlite(path: Path) -> Path:
    """A sqlite database of the user's, not an MLflow store."""
    with sqlite3.connect(path) as connection:
        connection.execute("create table secrets (id integer)")
    return path


def sweep_cases(tmp: Path) -> list[tuple]:
    """``python -m benchmark +sweep=NAME`` and ``-m``: refused before any job runs, as a single run is
    (issue 28, item 5: path-like group values, a model file outside conf/, a sweep, model or launcher
    that does not exist: each one line, exit 2, a FAILED run ``sweep:<name>``)."""
    outside = tmp / "outside"
    outside.mkdir()
    shutil.copy(CONF / "model" / "svd.yaml", outside / "evil.yaml")
    escape = os.path.relpath(outside / "evil", CONF / "model")  # conf/model/<escape>.yaml is outside conf/
    return [
        ("eval.k=abc", ["+sweep=smoke", "eval.k=abc"], {}, "eval.k='abc'"),
        ("seed=true", ["+sweep=smoke", "seed=true"], {}, "seed=true"),
        ("model=foo,svd", ["+sweep=smoke", "model=foo,svd"], {}, "model=foo is not a model name"),
        ("+sweep=../sweep/smoke", ["+sweep=../sweep/smoke"], {}, "sweep=../sweep/smoke is not a sweep name"),
        ("+sweep=nosuch", ["+sweep=nosuch"], {}, "sweep=nosuch is not a sweep name"),
        ("model=foo", ["+sweep=smoke", "model=foo"], {}, "model=foo is not a model name"),
        ("dataset=../dataset/itmrec", ["+sweep=smoke", "dataset=../dataset/itmrec"], {},
         "dataset=../dataset/itmrec is not a dataset name"),
        ("a model file outside conf/", ["+sweep=smoke", f"model={escape}"], {}, f"model={escape} is not a model name"),
        ("hydra/launcher=nosuch", ["+sweep=smoke", "hydra/launcher=nosuch"], {},
         "hydra/launcher=nosuch is not a hydra/launcher name"),
        ("grid value: a path", ["+sweep=smoke", "hydra.sweeper.params.dataset=../dataset/itmrec"], {},
         "sweep smoke: dataset=../dataset/itmrec is not a dataset name"),
        ("grid value: a model that does not exist", ["+sweep=smoke", "hydra.sweeper.params.model='svd,nosuch'"], {},
         "sweep smoke: model=nosuch is not a model name"),
        ("a sweep over hydra.*", ["+sweep=smoke", "hydra.sweeper.params.model=svd,nosuch"], {},
         "Hydra's own configuration cannot be swept"),
        ("-m model=foo,svd", ["-m", "model=foo,svd", "dataset=synthetic"], {}, "model=foo is not a model name"),
        ("-m dataset=../x", ["--multirun", "model=svd", "dataset=../x"], {}, "dataset=../x is not a dataset name"),
        ("malformed override", ["+sweep=smoke", "seed=[0"], {}, "does not compose"),
        ("trainer.lr=0", ["+sweep=smoke", "trainer.lr=0"], {}, "trainer.lr=0 must be a finite number > 0"),
        ("model.params.n_factors=-5", ["+sweep=smoke", "model=svd", "model.params.n_factors=-5"], {},
         "model.params.n_factors=-5"),
        ("unreachable server", ["+sweep=smoke", f"tracking.uri={DEAD}"], QUICK, "is unreachable"),
    ]


def report_cases(tmp: Path, uri: str) -> list[tuple]:
    """``python -m benchmark.report``: a read-only command (its store is never created)."""
    typo = tmp / "report-typo"
    dirty = tmp / "dirty-checkout"  # a folder git tracks, in a checkout with uncommitted code
    dirty.mkdir()
    (dirty / "code.py").write_text("x = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "init"]):
        subprocess.run([*git, *args], cwd=dirty, check=True, capture_output=True)
    (dirty / "code.py").write_text("x = 2\n")
    return [
        ("unknown flag", ["--bogus"], {}, "unrecognized arguments: --bogus"),
        ("flag without its value", ["--experiment"], {}, "argument --experiment: expected one argument"),
        ("experiment not found", ["--experiment", "nosuch", "--tracking-uri", uri, "--no-log"], {},
         "experiment 'nosuch' not found"),
        ("mistyped store path", ["--tracking-uri", f"sqlite:///{typo}/mlflow.db", "--no-log"], {}, "does not exist",
         [str(typo)]),
        ("unreachable server", ["--tracking-uri", DEAD, "--no-log"], QUICK, "is unreachable"),
        ("file store", ["--tracking-uri", "file:///tmp/mlruns", "--no-log"], {}, "file store is deprecated"),
        ("a sqlite file that is not a store", ["--tracking-uri", f"sqlite:///{foreign_sqlite(tmp / 'report.db')}",
                                               "--no-log"], {}, "not an MLflow"),
        ("--out unwritable", ["--experiment", "x", "--tracking-uri", uri, "--out", "/proc/groupbench-report",
                              "--no-log"], {}, "--out /proc/groupbench-report is not a writable folder"),
        ("--out tracked by git, uncommitted code", ["--experiment", "x", "--tracking-uri", uri, "--out",
                                                    str(dirty / "reports" / "x"), "--no-log"], {},
         "is tracked by git in " + str(dirty) + ", which has uncommitted changes (code.py)", [str(dirty / "reports")]),
    ]


def recommend_cases(tmp: Path, uri: str) -> list[tuple]:
    """``python -m benchmark.recommend``: a read-only command."""
    typo = tmp / "recommend-typo"
    return [
        ("run not found", ["--run", "0123abcd", "--user", "1", "--tracking-uri", uri], {}, "run '0123abcd' not found"),
        ("--k 0", ["--run", "0123abcd", "--user", "1", "--k", "0", "--tracking-uri", uri], {},
         "--k 0 must be an integer >= 1"),
        ("--k abc", ["--run", "0123abcd", "--user", "1", "--k", "abc"], {}, "argument --k: invalid int value: 'abc'"),
        ("--user abc", ["--run", "0123abcd", "--user", "abc"], {}, "argument --user: invalid int value: 'abc'"),
        ("no --run", ["--user", "1"], {}, "the following arguments are required: --run"),
        ("--user and --group", ["--run", "x", "--user", "1", "--group", "2"], {},
         "argument --group: not allowed with argument --user"),
        ("--strategy foo", ["--run", "x", "--group", "1", "--strategy", "foo"], {}, "argument --strategy: invalid choice"),
        ("mistyped store path", ["--run", "0123abcd", "--user", "1", "--tracking-uri", f"sqlite:///{typo}/mlflow.db"],
         {}, "does not exist", [str(typo)]),
        ("unreachable server", ["--run", "0123abcd", "--user", "1", "--tracking-uri", DEAD], QUICK, "is unreachable"),
    ]


def speed_cases(tmp: Path, uri: str) -> list[tuple]:
    """``python -m benchmark.speed`` (issue 28, item 4): every value checked before anything runs; each
    Hydra override checked as a single run's, for every model measured."""
    typo = tmp / "speed-typo"
    return [
        ("model=foo", ["model=foo"], {}, "model=foo: python -m benchmark.speed sets model itself; use --models"),
        ("model=svd (--models chooses)", ["model=svd"], {}, "sets model itself"),
        ("--models foo", ["--models", "foo"], {}, "--models: no conf/model/<name>.yaml for ['foo']"),
        ("--models a path", ["--models", "../../x"], {}, "--models: no conf/model/<name>.yaml for ['../../x']"),
        ("--models ''", ["--models", ""], {}, "--models '' names no model"),
        ("dataset=nosuch", ["--models", "svd", "dataset=nosuch"], {}, "dataset=nosuch is not a dataset name"),
        ("eval.k=abc", ["--models", "svd", "eval.k=abc"], {}, "eval.k='abc' must be an integer"),
        ("seed=-1", ["seed=-1"], {}, "seed=-1 must be an integer >= 0"),
        ("unknown key", ["--models", "svd", "foo=1"], {}, "does not compose"),
        ("sweep value", ["--models", "svd", "seed=0,1"], {}, "does not compose"),
        ("a model's own key", ["--models", "svd", "model.params.n_factors=-5"], {}, "model.params.n_factors=-5"),
        ("a key one model lacks", ["--models", "svd,dmtl", "model.params.n_factors=5"], {}, "(in the dmtl job)"),
        ("tracking.uri", ["tracking.uri=sqlite:///x.db"], {}, "sets tracking.uri itself"),
        ("unknown flag", ["--bogus"], {}, "unrecognized arguments: --bogus"),
        ("--workers abc", ["--sweep", "smoke", "--workers", "abc"], {}, "argument --workers: invalid int value"),
        ("--workers -1", ["--sweep", "smoke", "--workers", "-1", "--tracking-uri", uri], {},
         "--workers -1 must be an integer >= 1"),
        ("--workers 0", ["--sweep", "smoke", "--workers", "0", "--tracking-uri", uri], {}, "--workers 0"),
        ("--workers without --sweep", ["--workers", "2"], {}, "--workers: for --sweep only"),
        ("--tracking-uri without --sweep", ["--tracking-uri", uri], {}, "--tracking-uri: for --sweep only"),
        ("overrides with --sweep", ["--sweep", "smoke", "eval.k=3", "--tracking-uri", uri], {},
         "eval.k=3: job mode only"),
        ("--sweep ''", ["--sweep", ""], {}, "--sweep needs the sweep's experiment name"),
        ("--sweep not found", ["--sweep", "nosuch", "--tracking-uri", uri], {}, "no MLflow experiment 'nosuch'"),
        ("--sweep, mistyped store path", ["--sweep", "smoke", "--tracking-uri", f"sqlite:///{typo}/mlflow.db"], {},
         "does not exist", [str(typo)]),
        ("--sweep, unreachable server", ["--sweep", "smoke", "--tracking-uri", DEAD], QUICK, "is unreachable"),
        ("--sweep, a sqlite file that is not a store",
         ["--sweep", "smoke", "--tracking-uri", f"sqlite:///{foreign_sqlite(tmp / 'speed.db')}"], {}, "not an MLflow"),
    ]


def scale_cases(tmp: Path) -> list[tuple]:
    """``python -m benchmark.scale`` (issue 28, item 4): every value checked before any job starts;
    each ``--set`` checked as a single run's, for every job's config."""
    not_json = tmp / "not.json"
    not_json.write_text("{")
    wrong = tmp / "wrong.json"
    wrong.write_text('{"results": 3}')
    good = tmp / "good.json"
    good.write_text('{"machine": "m", "argv": [], "results": []}')
    out = ["--out", str(tmp / "scale-out")]  # a case that passed would write here, never in the repository
    return [
        ("--sizes abc", ["--sizes", "abc", *out], {}, "--sizes abc: not a number of ratings"),
        ("--sizes 0", ["--sizes", "0", *out], {}, "--sizes 0: not a number of ratings"),
        ("--sizes -5k", ["--sizes=-5k", *out], {}, "--sizes -5k"),
        ("--sizes nan", ["--sizes", "nan", *out], {}, "--sizes nan"),
        ("--sizes 1.5", ["--sizes", "1.5", *out], {}, "--sizes 1.5"),
        ("--sizes ''", ["--sizes", "", *out], {}, "--sizes names no size"),
        ("--sizes 10", ["--sizes", "10", *out], {}, "--sizes 10: fewer ratings than the 50 users"),
        ("--groups -3", ["--groups", "-3", *out], {}, "--groups -3 must be an integer >= 1"),
        ("--groups abc", ["--groups", "abc", *out], {}, "argument --groups: invalid int value"),
        ("--group-size 0", ["--group-size", "0", *out], {}, "--group-size 0 must be an integer >= 2"),
        ("--epochs -1", ["--epochs", "-1", *out], {}, "--epochs -1 must be an integer >= 1"),
        ("--epochs 0", ["--epochs", "0", *out], {}, "--epochs 0"),
        ("--memory-limit-gb nan", ["--memory-limit-gb", "nan", *out], {}, "--memory-limit-gb nan must be a finite"),
        ("--memory-limit-gb -1", ["--memory-limit-gb", "-1", *out], {}, "--memory-limit-gb -1"),
        ("--timeout inf", ["--timeout", "inf", *out], {}, "--timeout inf must be a finite number > 0"),
        ("--models foo", ["--models", "foo", *out], {}, "--models: unknown model 'foo'"),
        ("--format xml", ["--format", "xml", *out], {}, "argument --format: invalid choice: 'xml'"),
        ("unknown flag", ["--bogus", *out], {}, "unrecognized arguments: --bogus"),
        ("--set model=foo", ["--set", "model=foo", *out], {},
         "model=foo: python -m benchmark.scale sets model itself; use --models"),
        ("--set dataset=ml100k", ["--set", "dataset=ml100k", *out], {}, "sets dataset itself"),
        ("--set dataset.loader.n_ratings", ["--set", "dataset.loader.n_ratings=5", *out], {},
         "sets dataset.loader.n_ratings itself"),
        ("--set trainer.max_epochs with --epochs", ["--epochs", "1", "--set", "trainer.max_epochs=3", *out], {},
         "set by --epochs"),
        ("--set eval.k=abc", ["--set", "eval.k=abc", *out], {}, "eval.k='abc' must be an integer"),
        ("--set grouping=nosuch", ["--set", "grouping=nosuch", *out], {}, "grouping=nosuch is not a grouping name"),
        ("--set trainer.lr=-1", ["--set", "trainer.lr=-1", *out], {}, "trainer.lr=-1"),
        ("--set without =", ["--set", "foo", *out], {}, "does not compose"),
        ("--set a model's key", ["--models", "svd", "--set", "model.params.n_factors=-5", *out], {},
         "(in the harness job)"),
        ("--from-json missing", ["--from-json", str(tmp / "missing.json"), *out], {}, "cannot be read"),
        ("--from-json not JSON", ["--from-json", str(not_json), *out], {}, "not JSON"),
        ("--from-json not a scale.json", ["--from-json", str(wrong), *out], {}, "not a scale.json"),
        ("--from-json with --sizes", ["--from-json", str(good), "--sizes", "1m", *out], {},
         "--sizes: --from-json runs nothing"),
        ("--out unwritable", ["--out", "/proc/groupbench-scale"], {}, "--out /proc/groupbench-scale is not a writable"),
    ]
