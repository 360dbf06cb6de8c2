"""Real group-item data (CAMRa2011, Mafengwo, MafengwoS, Weeplaces): the container and shared parsers.

The loaders (``camra2011``, ``mafengwo``, ``weeplaces``) read the processed files the group
recommendation literature ships (AGREE, ConsRec, GroupIM) into a ``GroupItemData`` held by
``Dataset.group_item``; ``Dataset.ratings`` holds the user-train interactions and
``Dataset.groups`` the memberships, so code that reads a ``Dataset`` keeps working.

Files are checked row by row (vectorised): a malformed row, an id outside the dataset's declared
range, a group without members, a negative list of the wrong shape is a one-line ``DataError``
naming the file (and line). The content defects the pinned negative lists are known to have
(the test item among its negatives, repeats, training positives, Mafengwo's ids outside the
group-item catalogue) are counted by ``negative_defects``, never refused: the shipped split is
offered as a labelled legacy protocol, and its defects are facts that protocol must state.

This module's parsing decides what every group-item loader returns, but the protocol cache hashes
only the loader module and ``base``: bump ``cache.PROTOCOL_VERSION`` when behaviour here changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.core.errors import DataError
from benchmark.data.base import Dataset, check_values, download, ensure_files, parse_table, verify_file

N_NEGATIVES = 100
RESTORE = "restore the original file (delete it and rerun with data.download=true)"


@dataclass
class GroupItemData:
    """Interactions of users and of groups with items, ids 0-based and dense.

    members:        ``group, user``, one row per membership.
    user_train/user_test, group_train/group_test: ``user|group, item`` plus ``rating`` for explicit
                    data (CAMRa2011, 0-100). Training parts hold one row per pair (see the loader's
                    duplicates rule); test parts keep the file's rows, aligned with the negatives.
    user_negatives/group_negatives: int64 arrays (len(test), 100), row k the shipped sampled
                    negatives of test row k; None where the dataset ships none (Weeplaces).
    user_val, user_val_foldin, user_test_foldin, group_val: Weeplaces' strong-generalisation parts
                    (held-out ``*_ui_te`` in user_val/user_test, fold-in ``*_ui_tr``), else None.
    group_items:    size of the id range group files use (Mafengwo: 539, ids 0-538), else None.
    side:           side information, e.g. ``user_follow`` (user, followee), ``item_semantic``.
    """

    members: pd.DataFrame
    user_train: pd.DataFrame
    user_test: pd.DataFrame
    group_train: pd.DataFrame
    group_test: pd.DataFrame
    n_users: int
    n_items: int
    n_groups: int
    implicit: bool
    rating_scale: tuple[float, float] | None = None
    user_negatives: np.ndarray | None = None
    group_negatives: np.ndarray | None = None
    user_val: pd.DataFrame | None = None
    user_val_foldin: pd.DataFrame | None = None
    user_test_foldin: pd.DataFrame | None = None
    group_val: pd.DataFrame | None = None
    group_items: int | None = None
    side: dict[str, pd.DataFrame] = field(default_factory=dict)


# ---------------------------------------------------------------------------- files

def fetch_files(root: Path, folder_name: str, sha256: dict[str, str], url_base: str, dataset: str,
                download_missing: bool) -> Path:
    """The dataset's folder; missing files are downloaded one by one from the pinned commit
    (each written atomically and refused on a sha256 mismatch, so no partial file remains)."""
    folder = root / folder_name

    def from_upstream() -> None:
        for name, digest in sha256.items():
            if not (folder / name).is_file():
                download(f"{url_base}/{name}", folder / name, sha256=digest)

    return ensure_files(folder, sha256, dataset, download_missing, from_upstream)


def verify_all(folder: Path, folder_name: str, sha256: dict[str, str], verify: bool) -> dict[str, str]:
    return {f"{folder_name}/{name}": verify_file(folder / name, digest, verify=verify)
            for name, digest in sha256.items()}


# ---------------------------------------------------------------------------- row checks

def check_ids(path: Path, frame: pd.DataFrame, column: str, n: int, what: str, first_line: int = 1) -> None:
    """Refuse the first non-integral id or id outside 0..n-1 (the dataset's declared range)."""
    values = frame[column]
    check_values(path, frame, column, values % 1 == 0, f"an integer {what} id", first_line)
    check_values(path, frame, column, values.between(0, n - 1), f"a {what} id in 0..{n - 1} (the dataset's "
                 f"declared range)", first_line)
    frame[column] = values.astype("int64")


def check_groups_known(path: Path, frame: pd.DataFrame, members: pd.DataFrame, members_file: str,
                       first_line: int = 1) -> None:
    """Every group of an interaction file must have members in the membership file."""
    ok = frame.group.isin(members.group.unique())
    bad = np.flatnonzero(~ok.to_numpy())
    if len(bad):
        row = int(bad[0])
        raise DataError(f"data file {path}, line {row + first_line}: group {int(frame.group.iloc[row])} has no "
                        f"members in {members_file}; {RESTORE}")


def read_interactions(path: Path, id_column: str, *, n_ids: int, n_items: int,
                      scale: tuple[float, float] | None = None) -> pd.DataFrame:
    """``id item rating`` (explicit, ``scale`` given) or ``id item`` lines, space-separated."""
    names = [id_column, "item", "rating"] if scale is not None else [id_column, "item"]
    frame = parse_table(path, sep=" ", names=names, numeric=names)
    check_ids(path, frame, id_column, n_ids, id_column)
    check_ids(path, frame, "item", n_items, "item")
    if scale is not None:
        check_values(path, frame, "rating", frame.rating.between(*scale), f"a rating in {scale[0]:g}..{scale[1]:g}")
        frame["rating"] = frame.rating.astype("float64")
    return frame


def read_csv_pairs(path: Path, id_column: str, *, n_ids: int, n_items: int) -> pd.DataFrame:
    """A headed CSV ``user|group,item`` (Weeplaces)."""
    frame = parse_table(path, sep=",", header=True, names=[id_column, "item"], numeric=[id_column, "item"])
    check_ids(path, frame, id_column, n_ids, id_column, first_line=2)
    check_ids(path, frame, "item", n_items, "item", first_line=2)
    return frame


def read_members(path: Path, *, n_groups: int, n_users: int) -> pd.DataFrame:
    """``group u1,u2,...`` lines -> ``group, user`` rows; a group without members, a repeated
    group line or a non-numeric member is refused with its line."""
    frame = parse_table(path, sep=" ", names=["group", "members"], numeric=["group"])
    check_ids(path, frame, "group", n_groups, "group")
    text = frame.members.fillna("").astype(str).str.strip()
    empty = np.flatnonzero((text == "").to_numpy())
    if len(empty):
        row = int(empty[0])
        raise DataError(f"data file {path}, line {row + 1}: group {int(frame.group.iloc[row])} has no members; "
                        f"{RESTORE}")
    repeated = np.flatnonzero(frame.group.duplicated().to_numpy())
    if len(repeated):
        row = int(repeated[0])
        raise DataError(f"data file {path}, line {row + 1}: group {int(frame.group.iloc[row])} is listed a second "
                        f"time; {RESTORE}")
    exploded = frame.assign(user=text.str.split(",")).explode("user").reset_index(names="row")
    users = pd.to_numeric(exploded.user.str.strip(), errors="coerce")
    bad = np.flatnonzero((users.isna() | (users % 1 != 0)).to_numpy())
    if len(bad):
        at = exploded.iloc[int(bad[0])]
        raise DataError(f"data file {path}, line {int(at.row) + 1}: member {at.user!r} of group {int(at.group)} "
                        f"is not an integer user id; {RESTORE}")
    members = pd.DataFrame({"group": exploded.group.to_numpy(), "user": users.to_numpy()})
    outside = np.flatnonzero((~members.user.between(0, n_users - 1)).to_numpy())
    if len(outside):
        at = exploded.iloc[int(outside[0])]
        raise DataError(f"data file {path}, line {int(at.row) + 1}: member {at.user.strip()} of group {int(at.group)} "
                        f"is outside the declared user ids 0..{n_users - 1}; {RESTORE}")
    return members.astype("int64").drop_duplicates(ignore_index=True)


def read_negatives(path: Path, test: pd.DataFrame, id_column: str, test_file: str, *, n_items: int,
                   count: int = N_NEGATIVES) -> np.ndarray:
    """``(id,item) n1 ... n100`` lines (LF or CRLF), line k for test row k -> int64 (len(test), count).

    Structure is refused (field count, the pair not matching the test row, a non-integer or an id
    outside the catalogue); content defects are left for ``negative_defects`` to count."""
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as exc:
        raise DataError(f"data file {path}: not ASCII text ({exc.reason} at byte {exc.start}); {RESTORE}") from None
    lines = text.splitlines()
    fields = np.fromiter((len(line.split()) for line in lines), dtype=np.int64, count=len(lines))
    wrong = np.flatnonzero(fields != count + 1)
    if len(wrong):
        row = int(wrong[0])
        raise DataError(f"data file {path}, line {row + 1}: {fields[row]} fields, expected {count + 1} (the "
                        f"(id,item) pair and {count} negatives); {RESTORE}")
    if len(lines) != len(test):
        raise DataError(f"data file {path}: {len(lines)} lines, but {test_file} has {len(test)} rows (one "
                        f"negative list per test row); {RESTORE}")
    tokens = np.array(text.split(), dtype=object).reshape(len(lines), count + 1)
    pair = pd.Series(tokens[:, 0]).str.extract(r"^\((\d+),(\d+)\)$")
    expected = test[id_column].astype(str).to_numpy(), test.item.astype(str).to_numpy()
    ok = (pair[0].to_numpy() == expected[0]) & (pair[1].to_numpy() == expected[1])
    bad = np.flatnonzero(~ok)
    if len(bad):
        row = int(bad[0])
        raise DataError(f"data file {path}, line {row + 1}: starts {tokens[row, 0]!r}, expected "
                        f"'({expected[0][row]},{expected[1][row]})' (line {row + 1} of {test_file}); {RESTORE}")
    flat = pd.Series(tokens[:, 1:].ravel())
    numeric = flat.str.fullmatch(r"\d+").to_numpy()
    values = np.where(numeric, pd.to_numeric(flat.where(numeric, "0")), -1).astype(np.int64)
    bad = np.flatnonzero(~numeric | (values >= n_items))
    if len(bad):
        at = int(bad[0])
        problem = "not an integer" if not numeric[at] else f"outside the declared item ids 0..{n_items - 1}"
        raise DataError(f"data file {path}, line {at // count + 1}: negative {at % count + 1} is {flat[at]!r}, "
                        f"{problem}; {RESTORE}")
    return values.reshape(len(lines), count)


def read_consrec_files(folder: Path, *, n_users: int, n_items: int, n_groups: int,
                       scale: tuple[float, float] | None) -> tuple[GroupItemData, dict[str, dict[str, int]]]:
    """The AGREE/ConsRec layout (CAMRa2011, Mafengwo, MafengwoS): groupMember.txt, user/group
    RatingTrain/Test/Negative.txt. Training parts are deduplicated (``dedupe_pairs``); returns the
    data and the duplicate counts per training file."""
    members = read_members(folder / "groupMember.txt", n_groups=n_groups, n_users=n_users)
    parts, stats = {}, {}
    for side, id_column, n_ids in (("user", "user", n_users), ("group", "group", n_groups)):
        for part in ("Train", "Test"):
            path = folder / f"{side}Rating{part}.txt"
            frame = read_interactions(path, id_column, n_ids=n_ids, n_items=n_items, scale=scale)
            if side == "group":
                check_groups_known(path, frame, members, "groupMember.txt")
            if part == "Train":
                frame, stats[path.name] = dedupe_pairs(frame, id_column)
            parts[f"{side}_{part.lower()}"] = frame
        parts[f"{side}_negatives"] = read_negatives(folder / f"{side}RatingNegative.txt", parts[f"{side}_test"],
                                                    id_column, f"{side}RatingTest.txt", n_items=n_items)
    data = GroupItemData(members=members, n_users=n_users, n_items=n_items, n_groups=n_groups,
                         implicit=scale is None, rating_scale=scale, **parts)
    return data, stats


def sizes_note(data: GroupItemData) -> str:
    sizes = data.members.groupby("group").size()
    return (f"{data.n_groups} groups (size {sizes.min()}-{sizes.max()}), {data.n_users} user ids "
            f"({data.members.user.nunique()} members, {data.user_train.user.nunique()} with training "
            f"interactions), {data.n_items} item ids; user train/test {len(data.user_train)}/{len(data.user_test)}, "
            f"group train/test {len(data.group_train)}/{len(data.group_test)} rows")


# ---------------------------------------------------------------------------- quirks, measured

def dedupe_pairs(frame: pd.DataFrame, id_column: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per (id, item): explicit ratings are averaged (see the loaders' docstrings for why),
    implicit repeats dropped. Returns the frame (sorted by id, item) and the measured counts."""
    keys = [id_column, "item"]
    stats = {"rows": len(frame)}
    if "rating" in frame:
        spread = frame.groupby(keys, sort=True)["rating"].agg(["mean", "min", "max", "size"])
        stats.update(pairs=len(spread), repeated_pairs=int((spread["size"] > 1).sum()),
                     disagreeing_pairs=int((spread["max"] > spread["min"]).sum()),
                     exact_repeated_rows=int(frame.duplicated().sum()))
        out = spread["mean"].rename("rating").reset_index()
    else:
        out = frame.drop_duplicates(keys).sort_values(keys, ignore_index=True)
        stats.update(pairs=len(out), repeated_pairs=int(frame[frame.duplicated(keys, keep=False)]
                                                        .drop_duplicates(keys).shape[0]),
                     disagreeing_pairs=0, exact_repeated_rows=len(frame) - len(out))
    return out.astype({id_column: "int64", "item": "int64"}), stats


def negative_defects(test: pd.DataFrame, negatives: np.ndarray, train: pd.DataFrame, id_column: str,
                     group_items: int | None = None) -> dict[str, int]:
    """Count the shipped negative lists' content defects (never refused).

    A training positive is a (id, item) pair of ``train`` with rating > 0 (explicit data: the rule
    the AGREE/ConsRec loaders apply, where rating 0 is no interaction) or any pair (implicit).
    ``outside_group_catalogue`` counts negatives with ids >= ``group_items`` (Mafengwo's group files
    use ids 0-538 only). ``test_in_train`` counts test rows whose own pair is a training positive.
    """
    ids = test[id_column].to_numpy(np.int64)
    items = test.item.to_numpy(np.int64)
    neg = np.asarray(negatives, dtype=np.int64).reshape(len(test), -1)
    positives = train[train.rating > 0] if "rating" in train else train
    base = int(max(neg.max(initial=0), items.max(initial=0), positives.item.max() if len(positives) else 0)) + 1
    codes = np.unique(positives[id_column].to_numpy(np.int64) * base + positives.item.to_numpy(np.int64))
    is_positive = np.isin(ids[:, None] * base + neg, codes)
    repeats = np.diff(np.sort(neg, axis=1), axis=1) == 0
    is_test = neg == items[:, None]
    counts = {
        "lists": len(neg),
        "negatives": int(neg.size),
        "lists_with_test_item": int(is_test.any(axis=1).sum()),
        "negatives_equal_to_test_item": int(is_test.sum()),
        "lists_with_repeats": int(repeats.any(axis=1).sum()),
        "repeated_negatives": int(repeats.sum()),
        "lists_with_train_positive": int(is_positive.any(axis=1).sum()),
        "train_positive_negatives": int(is_positive.sum()),
        "test_in_train": int(np.isin(ids * base + items, codes).sum()),
    }
    if group_items is not None:
        counts["outside_group_catalogue"] = int((neg >= group_items).sum())
    return counts


def defects_note(counts: dict[str, int]) -> str:
    lists = counts["lists"]
    text = (f"{counts['lists_with_test_item']} of {lists} lists contain the test item, "
            f"{counts['lists_with_repeats']} repeat a negative ({counts['repeated_negatives']} repeats), "
            f"{counts['lists_with_train_positive']} ({100 * counts['lists_with_train_positive'] / max(lists, 1):.1f} %) "
            f"contain a training positive of the same id; {counts['test_in_train']} test pairs are training positives")
    if "outside_group_catalogue" in counts:
        text += (f"; {counts['outside_group_catalogue']} of {counts['negatives']} negatives "
                 f"({100 * counts['outside_group_catalogue'] / max(counts['negatives'], 1):.1f} %) lie outside the "
                 f"group-item ids")
    return text + " (counted, not refused: legacy protocol)"


def found_in_members(group_test: pd.DataFrame, members: pd.DataFrame, interactions: list[pd.DataFrame]) -> int:
    """How many group test rows have an item that some member of the group interacted with."""
    candidates = group_test[["group", "item"]].reset_index(drop=True).reset_index(names="row").merge(members, on="group")
    own = pd.concat([frame[["user", "item"]] for frame in interactions], ignore_index=True)
    base = int(max(own.item.to_numpy().max(initial=0), group_test.item.to_numpy().max(initial=0))) + 1
    hit = np.isin(candidates.user.to_numpy(np.int64) * base + candidates.item.to_numpy(np.int64),
                  own.user.to_numpy(np.int64) * base + own.item.to_numpy(np.int64))
    return int(candidates.row[hit].nunique())


def to_dataset(name: str, data: GroupItemData, files_sha256: dict[str, str], notes: dict[str, str],
               item_titles: pd.Series | None = None) -> Dataset:
    """The ``Dataset`` view: ratings = user-train (implicit: rating 1.0), groups = memberships,
    no side features (empty frames indexed by every declared id)."""
    ratings = data.user_train[["user", "item"]].copy()
    ratings["rating"] = data.user_train.rating.to_numpy(np.float64) if not data.implicit else 1.0
    ratings = ratings.astype({"user": "int64", "item": "int64", "rating": "float64"})
    return Dataset(name=name, ratings=ratings.sort_values(["user", "item"], ignore_index=True),
                   user_features=pd.DataFrame(index=pd.RangeIndex(data.n_users, name="user")),
                   item_features=pd.DataFrame(index=pd.RangeIndex(data.n_items, name="item")),
                   rating_scale=data.rating_scale or (0.0, 1.0), files_sha256=files_sha256,
                   groups=data.members, notes=notes, item_titles=item_titles, group_item=data)
