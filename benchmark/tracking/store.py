"""The sqlite tracking store's first use, made safe against kills, races and read-only folders.

MLflow creates a sqlite store's tables (an alembic migration of a few seconds) in place, the
first time a client touches it: a process killed meanwhile left a half-made file that every later
command refused ("out-of-date database schema", "table ... already exists"), and two sweeps
started together on a fresh store both ran the migration. Here the first use

* checks the folder and the file are writable (a one-line error at once, not a hang);
* takes an exclusive lock on ``<store>.lock`` beside the file, so one process initialises;
* builds the tables in a temporary file beside the store and renames it into place: a kill at
  any moment leaves either no store or a complete one (never a partial one), and the next use
  removes the killed process's ``.<store>.init-<pid>`` temporary and starts again;
* never deletes or rewrites a file that exists under the store's name. Only an empty (0-byte) file
  is replaced; any other file that is not an MLflow store at this MLflow's schema is refused in one
  line: a foreign sqlite database ("not an MLflow store"), an MLflow store at an older schema
  (with the ``mlflow db upgrade`` command to run, runs or no runs) or at a newer one.

The same lock serialises job claims (:mod:`benchmark.tracking.claims`). Servers (``http://``) manage
their own database and are left alone.

Every sqlite connection this process opens runs in write-ahead-log mode with
``synchronous=NORMAL`` (:func:`_sqlite_pragmas`): a commit appends to ``mlflow.db-wal`` without
waiting for the disk (an fsync of ~4 ms here; a job commits ~25 times), readers (``mlflow ui``,
the report) no longer block writers, and a killed process loses nothing it committed; only an OS
crash or power cut could drop the last commits, never corrupt the store. Each run's end folds the
log back into ``mlflow.db`` (:func:`checkpoint`), so the file alone holds every finished run: a
copy of ``mlflow.db`` without its ``-wal`` is complete.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sqlite3
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from benchmark.core.errors import TrackingError, one_line

log = logging.getLogger(__name__)

LOCK_WAIT_SECONDS = 120.0   # another process initialising a store takes seconds; a stuck one is reported
_ready: set[str] = set()   # stores checked by this process


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def store_lock(uri: str, wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """An exclusive lock on ``<store>.lock`` (a no-op for a tracking server); released on any exit,
    a kill included: ``filelock``'s Unix lock is an ``flock``, which the kernel drops with the
    process (its soft, file-exists fallback is turned off: a killed holder would leave it locked)."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    lock = FileLock(_lock_path(path), fallback_to_soft=False)
    try:
        lock.acquire(timeout=wait, poll_interval=0.05)
    except Timeout:
        raise TrackingError(f"tracking store {path}: {_lock_path(path)} has been locked for {wait:.0f} s "
                            f"by another process; wait for it or stop it") from None
    try:
        yield
    finally:
        lock.release()


def check_writable(path: Path) -> None:
    """Fail at once, in one line, when the store's folder or file cannot be written."""
    fix = f"make {path.parent} writable, or set tracking.uri=sqlite:////a/writable/folder/mlflow.db"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"tracking store {path}: cannot create its folder ({exc.strerror or exc}); {fix}") from None
    probe = path.parent / f".{path.name}.write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
        if path.exists():
            with open(path, "r+b"):
                pass
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError("read-only file")
    except OSError as exc:
        raise TrackingError(f"tracking store {path} is not writable ({exc.strerror or exc}); {fix}") from None


@functools.lru_cache(maxsize=1)
def _migrations() -> tuple[frozenset[str], frozenset[str]]:
    """(every schema revision MLflow's migrations define, every revision one names as its
    ``down_revision``), read off the migration files' text (alembic's ScriptDirectory imports them
    all: seconds)."""
    import mlflow.store

    folder = Path(mlflow.store.__file__).parent / "db_migrations" / "versions"
    revisions, parents = set(), set()
    for script in folder.glob("*.py"):
        text = script.read_text(encoding="utf-8")
        revisions.update(re.findall(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.M))
        parents.update(re.findall(r"^down_revision\s*=\s*['\"](\w+)['\"]", text, re.M))
    return frozenset(revisions), frozenset(parents)


@functools.lru_cache(maxsize=1)
def _alembic_head() -> str:
    """MLflow's newest schema revision: the revision no migration names as its ``down_revision``."""
    revisions, parents = _migrations()
    heads = revisions - parents
    if len(heads) != 1:  # an unexpected layout: ask alembic
        from alembic.script import ScriptDirectory
        from mlflow.store.db.utils import _get_alembic_config

        return ScriptDirectory.from_config(_get_alembic_config("sqlite://")).get_current_head()
    return next(iter(heads))


def store_state(path: Path) -> str:
    """``missing`` (no file, or an empty one), ``ready`` (MLflow's tables at this MLflow's head
    revision), ``outdated`` (an MLflow store at an older revision, with or without runs), ``newer``
    (an MLflow store at a revision this MLflow does not know) or ``foreign`` (a sqlite database
    without MLflow's ``alembic_version`` table: somebody else's file). Read-only: the file is never
    written."""
    if not path.exists() or path.stat().st_size == 0:
        return "missing"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
            version = (db.execute("select version_num from alembic_version").fetchall()
                       if "alembic_version" in tables else [])
    except sqlite3.DatabaseError as exc:
        raise TrackingError(f"tracking store {path} is not a readable sqlite database ({exc}); move it away "
                            f"or set tracking.uri to another file") from None
    if not version or "experiments" not in tables:
        return "foreign"
    if version[0][0] == _alembic_head():
        return "ready"
    return "outdated" if version[0][0] in _migrations()[0] else "newer"


def refuse(path: Path, state: str) -> None:
    """The one-line error for a file under the store's name that is not a usable store (never deleted)."""
    fix = "or set tracking.uri=sqlite:////another/file.db"
    if state == "foreign":
        raise TrackingError(f"tracking store {path} is a sqlite database but not an MLflow store (no MLflow "
                            f"schema); it is left untouched: name another file, {fix}")
    if state == "outdated":
        raise TrackingError(f"tracking store {path} is an MLflow store at an older schema; upgrade it with "
                            f"`mlflow db upgrade sqlite:///{path}` (back it up first), {fix}")
    if state == "newer":
        raise TrackingError(f"tracking store {path} was made by a newer MLflow (unknown schema revision); "
                            f"use that MLflow's version, {fix}")


def _create(path: Path) -> None:
    """Build MLflow's tables in a temporary file beside ``path``, then rename it into place."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    temporary = path.with_name(f".{path.name}.init-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    store = SqlAlchemyStore(f"sqlite:///{temporary}", (path.parent / "mlartifacts").as_uri())
    store.engine.dispose()
    os.replace(temporary, path)


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary stores of processes killed while initialising (the lock is held: none is in use)."""
    for stale in path.parent.glob(f".{path.name}.init-*"):
        stale.unlink(missing_ok=True)


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    """SQLAlchemy ``connect`` hook: WAL journal and synchronous=NORMAL on sqlite connections only."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # persistent in the file; a no-op once set
        cursor.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:  # e.g. a read-only store: it keeps its journal, reads still work
        log.debug("sqlite pragmas not applied: %s", exc)
    finally:
        cursor.close()


def checkpoint(uri: str) -> None:
    """Fold the write-ahead log into the sqlite file (PASSIVE: never waits for other connections)."""
    path = sqlite_path(uri)
    if path is None:
        return
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error as exc:  # best effort: the log still holds the commits
        log.debug("sqlite checkpoint of %s skipped: %s", path, exc)


@functools.lru_cache(maxsize=1)
def install_sqlite_pragmas() -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "connect", _sqlite_pragmas)


def prepare_store(uri: str) -> None:
    """Make a sqlite store ready for MlflowClient: writable, complete, made by one process only."""
    path = sqlite_path(uri)
    if path is None or uri in _ready:
        return
    install_sqlite_pragmas()
    check_writable(path)
    state = store_state(path)
    refuse(path, state)
    if state != "ready":
        with store_lock(uri):
            _remove_stale_temporaries(path)
            state = store_state(path)  # another process may have made it while we waited
            refuse(path, state)
            if state != "ready":  # missing: no file, or an empty one (nothing in it to lose)
                log.info("creating the tracking store %s", path)
                try:
                    _create(path)
                except Exception as exc:
                    raise TrackingError(f"tracking store {path}: cannot create it ({one_line(exc)}); check the "
                                        f"folder is writable and has space") from None
    _ready.add(uri)
