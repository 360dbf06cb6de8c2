"""The Dataset every loader returns, and the file checks every loader shares.

A loader reads only files whose sha256 it knows; each is verified before parsing, so a
truncated or edited file is refused with the expected and found hash, never silently read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from benchmark.core.errors import DataError, one_line

if TYPE_CHECKING:  # group_item imports this module: the annotation only, no import cycle at run time
    from benchmark.data.group_item import GroupItemData

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Ratings plus side information, in the harness's canonical column names.

    ratings:        columns ``user, item, rating`` (one row per distinct user-item pair).
    user_features:  index = user id, numeric columns (side features only, no ratings).
    item_features:  index = item id, numeric columns (e.g. ML-100K's 19 genre flags).
    groups:         real group membership, columns ``group, user`` (ITM-Rec), else None.
    group_ratings:  real group ratings, columns ``group, item, rating`` (ITM-Rec), else None.
    files_sha256:   every file read, name -> sha256; ``sha256`` combines them into one tag.
    notes:          how the loader handled the data's quirks, logged with each run.
    item_titles:    index = item id, the item's title (ML-100K movies, ITM-Rec topics), else None.
    group_item:     user and group interactions with their shipped splits and negatives (CAMRa2011,
                    Mafengwo, MafengwoS, Weeplaces: ``benchmark/data/group_item.py``), else None.
    """

    name: str
    ratings: pd.DataFrame
    user_features: pd.DataFrame
    item_features: pd.DataFrame
    rating_scale: tuple[float, float]
    files_sha256: dict[str, str] = field(default_factory=dict)
    groups: pd.DataFrame | None = None
    group_ratings: pd.DataFrame | None = None
    notes: dict[str, str] = field(default_factory=dict)
    item_titles: pd.Series | None = None
    group_item: GroupItemData | None = None

    @property
    def sha256(self) -> str:
        """One hash over the files read (name and content hash), the run's dataset tag."""
        joined = "\n".join(f"{name}:{digest}" for name, digest in sorted(self.files_sha256.items()))
        return hashlib.sha256(joined.encode()).hexdigest()

    @property
    def n_users(self) -> int:
        return len(self.user_features)

    @property
    def n_items(self) -> int:
        return len(self.item_features)

    def summary(self) -> str:
        r = self.ratings
        return (f"{self.name}: {len(r):,} ratings, {r.user.nunique():,} users with ratings "
                f"({self.n_users:,} in all), {r.item.nunique():,} items ({self.n_items:,} in all)")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_root(root: str | os.PathLike | None) -> Path:
    """data.root, else $GROUPBENCH_DATA, else the user cache dir; relative paths are made absolute."""
    if root in (None, "", "null"):
        root = os.environ.get("GROUPBENCH_DATA") or None
    if root is None:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(cache) / "groupbench"
    path = Path(root).expanduser()
    if not path.is_absolute():  # relative to where the command started, even if Hydra changed dirs
        path = Path(os.environ.get("GROUPBENCH_CWD", os.getcwd())) / path
    return path.resolve()


def verify_file(path: Path, expected_sha256: str, *, verify: bool = True) -> str:
    """Check that ``path`` exists and has the expected sha256; return its hash."""
    if not path.is_file():
        raise DataError(f"data file {path} not found; set data.root (or GROUPBENCH_DATA) to the folder "
                        f"holding {path.parent.name}/, or rerun with data.download=true")
    digest = sha256_of(path)
    if verify and digest != expected_sha256:
        raise DataError(f"data file {path}: sha256 mismatch (expected {expected_sha256}, found {digest}, "
                        f"{path.stat().st_size} bytes): the file is corrupt or truncated; delete "
                        f"{path.parent} and rerun with data.download=true, or restore the original file")
    if not verify and digest != expected_sha256:
        log.warning("data file %s differs from the pinned sha256 (data.verify=false): results are not "
                    "comparable with published ones", path)
    return digest


def ensure_files(folder: Path, names, dataset: str, download_missing: bool, fetch: Callable[[], None]) -> Path:
    """Return ``folder`` once every file in ``names`` is there, calling ``fetch`` (download and
    extract) if files are missing and downloading is allowed; else a one-line error."""
    for path in (folder.parent, folder):  # e.g. GROUPBENCH_DATA naming a file: no folder can be made there
        if path.exists() and not path.is_dir():
            raise DataError(f"data root {path} is a file, not a folder; set data.root (or GROUPBENCH_DATA) to the "
                            f"folder holding {folder.name}/ (or to an empty folder to download into)")
    missing = [name for name in names if not (folder / name).is_file()]
    if missing and not download_missing:
        raise DataError(f"dataset {dataset} not found: {folder}/{missing[0]} is missing; set data.root or "
                        f"GROUPBENCH_DATA to a folder holding {folder.name}/, or rerun with data.download=true")
    if missing:
        fetch()
    return folder


def download(url: str, target: Path, *, md5: str | None = None, sha256: str | None = None) -> Path:
    """Download ``url`` to ``target`` (atomically) and check its hash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    log.info("downloading %s -> %s", url, target)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"cannot download {url} ({exc}); check the network, or place the files under "
                        f"data.root / GROUPBENCH_DATA by hand and set data.download=false") from None
    for algo, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        found = hashlib.new(algo, partial.read_bytes()).hexdigest()
        if found != expected:
            partial.unlink(missing_ok=True)
            raise DataError(f"download {url}: {algo} mismatch (expected {expected}, found {found}); "
                            f"the upstream file changed or the transfer broke, retry or fetch it by hand")
    partial.replace(target)
    return target


def safe_extract(archive: Path, target: Path, members: dict[str, str] | None = None,
                 sha256: dict[str, str] | None = None) -> None:
    """Extract a zip after checking every entry, so a refused archive writes nothing.

    ``members`` maps archive names to output names (relative to target); None extracts all.
    ``sha256`` maps output names to their pinned sha256 (the archive's own hash may be unknown).
    Refused: an entry landing outside ``target`` (zip-slip), a file under a path that is a file
    (in the archive or on disk), a pinned file whose content differs, a broken entry.
    """
    target = target.resolve()
    unsafe = f"the archive is unsafe or corrupt, delete {archive} and download it again"
    chosen: list[tuple[zipfile.ZipInfo, Path]] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir() or (members is not None and info.filename not in members):
                    continue
                name = members[info.filename] if members is not None else info.filename
                out = (target / name).resolve()
                if not out.is_relative_to(target):
                    raise DataError(f"archive {archive}: entry {info.filename!r} would extract outside {target}; {unsafe}")
                chosen.append((info, out))
            files = {out for _, out in chosen}
            for info, out in chosen:
                for parent in out.parents:
                    if parent == target or not parent.is_relative_to(target):
                        break
                    if parent in files or (parent.exists() and not parent.is_dir()):
                        raise DataError(f"archive {archive}: entry {info.filename!r} lies under {parent}, which is a "
                                        f"file; {unsafe}")
            contents = {}
            for info, out in chosen:  # read and check everything before writing anything
                data = zf.read(info)
                rel = out.relative_to(target).as_posix()
                expected = (sha256 or {}).get(rel)
                if expected is not None and hashlib.sha256(data).hexdigest() != expected:
                    raise DataError(f"archive {archive}: {rel} has sha256 {hashlib.sha256(data).hexdigest()}, "
                                    f"expected {expected}; {unsafe}")
                contents[out] = data
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise DataError(f"archive {archive}: cannot read it ({one_line(exc)}); {unsafe}") from None
    for out, data in contents.items():
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".part")
        partial.write_bytes(data)
        partial.replace(out)


def parse_table(path: Path, *, sep: str, names: list[str], numeric: list[str],
                encoding: str = "utf-8", header: bool = False, expected_rows: int | None = None,
                strip_names: bool = False) -> pd.DataFrame:
    """Read a delimited file as text and check every row: field count, numeric fields.

    A malformed row is reported with the file and its 1-based line number. Reading as text
    first and converting afterwards keeps the check vectorised (no per-row Python).
    """
    try:
        frame = pd.read_csv(path, sep=sep, header=0 if header else None, dtype=str, encoding=encoding,
                            keep_default_na=False, engine="c", quoting=3 if sep != "," else 0,
                            on_bad_lines="error")
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} is empty; restore the original file "
                        f"(delete it and rerun with data.download=true)") from None
    except pd.errors.ParserError as exc:  # pandas' message may span lines: the error is one
        raise DataError(f"data file {path}: malformed row ({one_line(exc)}); restore the original file "
                        f"(delete it and rerun with data.download=true)") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"data file {path}: not {encoding} text ({one_line(exc)}); restore the original file") from None
    first_line = 2 if header else 1
    if header:
        columns = [c.strip() for c in frame.columns] if strip_names else list(frame.columns)
        missing = [n for n in names if n not in columns]
        if missing:
            raise DataError(f"data file {path}: header lacks {missing} (found {list(frame.columns)}); "
                            f"restore the original file")
        frame.columns = columns
        frame = frame[names]
    else:
        if frame.shape[1] != len(names):
            raise DataError(f"data file {path}: expected {len(names)} fields per row, found "
                            f"{frame.shape[1]}; restore the original file")
        frame.columns = names
    for column in numeric:
        values = pd.to_numeric(frame[column].str.strip(), errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            row = int(bad[0])
            raise DataError(f"data file {path}, line {row + first_line}: field {column!r} is "
                            f"{frame[column].iloc[row]!r}, expected a number; restore the original file")
        frame[column] = values
    if expected_rows is not None and len(frame) != expected_rows:
        raise DataError(f"data file {path}: expected {expected_rows} rows, found {len(frame)} "
                        f"(truncated or extended); restore the original file")
    return frame


def check_values(path: Path, frame: pd.DataFrame, column: str, ok: pd.Series, expected: str,
                 first_line: int = 1) -> None:
    """Refuse the first row where ``ok`` is False, naming the file, line, field and expectation."""
    bad = np.flatnonzero(~ok.to_numpy(dtype=bool))
    if len(bad):
        row = int(bad[0])
        value = frame[column].iloc[row]
        value = value.item() if hasattr(value, "item") else value  # numpy scalar -> plain repr
        raise DataError(f"data file {path}, line {row + first_line}: field {column!r} is "
                        f"{value!r}, expected {expected}; restore the original file")
