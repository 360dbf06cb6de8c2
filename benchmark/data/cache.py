"""On-disk cache of a job's model-independent protocol work: loading, the split, the grouping.

Every job of a sweep on the same dataset and seed repeats the same work before its model
sees any data: parsing the files, splitting, and KMeans grouping (``n_init`` runs). Here it
is computed once and reused across the jobs of a sweep, across sweeps, and by parallel
workers (joblib, Slurm on a shared file system). ``cache.enabled=false`` recomputes it all;
``cache.dir`` moves it (default ``~/.cache/groupbench/protocol``; deleting it is always safe).

Keys (sha256 of JSON): every entry's key holds ``PROTOCOL_VERSION``, the sha256 of the source
files of the code that computes it (the loader's, split's and grouping's modules and the
loaders' shared base), and the pandas / numpy / scikit-learn / Python versions, plus:
  * dataset: the data files' sha256, verified on every run before the lookup (a corrupt file
    is refused as without the cache), and the loader's config;
  * split:   the dataset's identity (files' sha256, loader config), the split config, the seed;
  * groups:  the split's key, the fold, the grouping config, the seed.
So a changed file, config value, seed or protocol code makes a new entry: one is never stale.
Bump ``PROTOCOL_VERSION`` when protocol behaviour changes outside those source files (e.g. a
helper module they import).

A loader is cached when its module names its files the way the built-in loaders do
(``FOLDER``, ``SHA256`` and ``fetch(root, download)``); another loader (generated data) is
run every time, and its split and groups are still cached, keyed by ``Dataset.sha256``.

Writers compute under a per-key file lock (``filelock``; a waiting worker then reads the first
one's entry instead of computing it again) and publish with a temporary file in the same
folder plus ``os.replace``, so a reader never sees a partial entry. Each entry is an envelope
``{"kind", "key", "value"}``: a read checks the kind, the full key digest (the file name is not
trusted) and, where the caller names one, the value's type; an entry that fails any check
(truncated, another pickle copied over it, a value of the wrong type) is recomputed and rewritten,
never used. Entries are pickles, and a pickle runs code when it is loaded: ``cache.dir`` must be a
folder only you write to (the default is your own ``~/.cache``), as with any pickle cache.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import pandas as pd
import sklearn
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from benchmark.data.base import Dataset, resolve_root, verify_file

log = logging.getLogger(__name__)

# Bump when protocol behaviour changes in code whose source is not hashed into the keys.
PROTOCOL_VERSION = 2  # 2: entries are checked envelopes
T = TypeVar("T")


def default_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "groupbench" / "protocol"


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def source_sha256(*targets: str) -> dict[str, str]:
    """sha256 of the source file of each ``_target_``'s module (and of the loaders' shared base)."""
    modules = {target.rsplit(".", 1)[0] for target in targets} | {"benchmark.data.base"}
    hashes = {}
    for name in sorted(modules):
        path = inspect.getsourcefile(importlib.import_module(name))
        hashes[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else "unknown"
    return hashes


def data_files_sha256(cfg: DictConfig) -> dict[str, str] | None:
    """The loader's files' sha256, each verified against its pinned hash (as the loader does);
    None when the loader's module does not name its files (FOLDER, SHA256, fetch)."""
    module = importlib.import_module(cfg.dataset.loader._target_.rsplit(".", 1)[0])
    if not all(hasattr(module, name) for name in ("FOLDER", "SHA256", "fetch")):
        return None
    folder = module.fetch(resolve_root(cfg.data.root), cfg.data.download)
    return {f"{module.FOLDER}/{name}": verify_file(folder / name, sha, verify=cfg.data.verify)
            for name, sha in module.SHA256.items()}


class ProtocolCache:
    """One job's view of the cache: computes its keys from the job's config, remembers outcomes."""

    def __init__(self, cfg: DictConfig):
        node = cfg.get("cache") or {}
        self.enabled = bool(node.get("enabled", True))
        directory = node.get("dir")
        path = Path(directory).expanduser() if directory else default_dir()
        if not path.is_absolute():  # relative to where the command started, as data.root
            path = Path(os.environ.get("GROUPBENCH_CWD", os.getcwd())) / path
        self.directory = path
        self.cfg = cfg
        resolved = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731
        self.base = {
            "protocol_version": PROTOCOL_VERSION,
            "source": source_sha256(cfg.dataset.loader._target_, cfg.split._target_, cfg.grouping._target_),
            "libraries": {"pandas": pd.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__,
                          "python": list(sys.version_info[:2])},
            "loader": resolved(cfg.dataset.loader),
        }
        self.split_config, self.grouping_config = resolved(cfg.split), resolved(cfg.grouping)
        self.outcomes: dict[str, str] = {}
        self._dataset_key: dict[str, Any] | None = None

    # ------------------------------------------------------------------ the three entries

    def dataset(self, load: Callable[[], Dataset]) -> Dataset:
        files = data_files_sha256(self.cfg)
        if files is None:  # a loader that does not name its files: run it; key later parts on its hash
            dataset = load()
            self.outcomes["dataset"] = "uncached"
            self._dataset_key = {**self.base, "dataset_sha256": dataset.sha256}
            return dataset
        self._dataset_key = {**self.base, "files_sha256": files}
        return self.get("dataset", self._dataset_key, load, lambda value: isinstance(value, Dataset))

    def splits(self, compute: Callable[[], T], expected: Callable[[Any], bool] | None = None) -> T:
        return self.get("split", self.split_key(), compute, expected)

    def groups(self, fold: int, compute: Callable[[], T], expected: Callable[[Any], bool] | None = None) -> T:
        key = {**self.split_key(), "fold": fold, "grouping": self.grouping_config}
        return self.get("groups", key, compute, expected)

    def split_key(self) -> dict[str, Any]:
        assert self._dataset_key is not None, "dataset() comes first"
        return {**self._dataset_key, "split": self.split_config, "seed": self.cfg.seed}

    def summary(self) -> str:
        """e.g. ``dataset=hit split=hit groups=miss`` (a run tag), ``off`` when disabled."""
        return " ".join(f"{kind}={outcome}" for kind, outcome in self.outcomes.items()) if self.enabled else "off"

    # ------------------------------------------------------------------ storage

    def path(self, kind: str, key: dict[str, Any]) -> Path:
        return self.directory / kind / f"{digest({'kind': kind, **key})}.pkl"

    def get(self, kind: str, key: dict[str, Any], compute: Callable[[], T],
            expected: Callable[[Any], bool] | None = None) -> T:
        """The entry of (kind, key), else ``compute()`` stored under it. ``expected(value)`` says
        whether a stored value is of the right type; one that is not is recomputed."""
        if not self.enabled:
            return compute()
        path = self.path(kind, key)
        check = (kind, digest({"kind": kind, **key}), expected)
        value = self._read(path, *check)
        if value is not None:
            self._note(kind, "hit")
            return value
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(f"{path}.lock")
            lock.acquire()
        except OSError as exc:  # a read-only or full cache folder slows a job down, never fails it
            log.warning("protocol cache: cannot write under %s (%s); computing without the cache "
                        "(set cache.dir to a writable folder, or cache.enabled=false)", self.directory, exc)
            self._note(kind, "unwritable")
            return compute()
        try:
            value = self._read(path, *check)  # another worker may have written it while we waited
            if value is not None:
                self._note(kind, "hit")
                return value
            value = compute()
            try:
                self._write(path, {"kind": kind, "key": check[1], "value": value})
            except OSError as exc:
                log.warning("protocol cache: cannot write %s (%s); going on without it", path, exc)
        finally:
            lock.release()
        self._note(kind, "miss")
        return value

    def _note(self, kind: str, outcome: str) -> None:
        previous = self.outcomes.get(kind)  # groups: one entry per fold
        self.outcomes[kind] = outcome if previous in (None, outcome) else "mixed"

    @staticmethod
    def _read(path: Path, kind: str, key_digest: str, expected: Callable[[Any], bool] | None) -> Any:
        """The entry's value, or None (absent, unreadable, or not the entry of this kind and key)."""
        try:
            with open(path, "rb") as handle:
                entry = pickle.load(handle)
        except FileNotFoundError:
            return None
        except Exception as exc:  # an unreadable entry (e.g. written by another pandas): recompute it
            log.warning("protocol cache: ignoring unreadable %s (%s); recomputing it", path, exc)
            return None
        if not (isinstance(entry, dict) and entry.get("kind") == kind and entry.get("key") == key_digest
                and "value" in entry):
            log.warning("protocol cache: %s is not the %s entry its name says; recomputing it", path, kind)
            return None
        if expected is not None and not expected(entry["value"]):
            log.warning("protocol cache: %s holds a %s, not a %s entry; recomputing it", path,
                        type(entry["value"]).__name__, kind)
            return None
        return entry["value"]

    @staticmethod
    def _write(path: Path, value: Any) -> None:
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp", delete=False)
        try:
            with handle:
                pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(handle.name, path)
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
