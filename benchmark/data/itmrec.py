"""ITM-Rec (Yong Zheng, LAK 2023): project-topic ratings by students, with real groups.

Upstream: ``ITM-Rec/ITM-Rec.zip`` in the public GitHub repository irecsys/RecData.
Quirks handled here (each also in docs/protocol.md and in the run's ``dataset_notes``):
  * headers with leading spaces (`` Gender``, `` Age``) are stripped;
  * 432 rows repeat a (user, item) pair under a different (Class, Semester, Lockdown)
    context: the harness averages the overall ``Rating`` per pair (ratings may be x.5);
  * two blank ``Data`` criterion values: criteria are not used, so they are ignored;
  * 37 exact duplicate rows in group.csv are dropped;
  * only 454 of the 476 users have ratings: the others exist with side features only;
  * the age band `` 31-100`` (leading space) overlaps ``>30``: both map to one band, ``>30``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.data.base import (Dataset, check_values, download, ensure_files, parse_table,
                                     resolve_root, safe_extract, verify_file)
from benchmark.core.errors import DataError

URL = "https://raw.githubusercontent.com/irecsys/RecData/58cc6e96799634a72fbad87f57016e20ba7274b6/ITM-Rec/ITM-Rec.zip"
ZIP_SHA256 = "15f7996d4d58a4861dfac412f6d3690c49d9e7ea34514d40fe828cfbd0b1b406"
FOLDER = "itm-rec"
SHA256 = {
    "users.csv": "124b473a4c4fff92b48735cf45a8e2374eea8854bb928603f0eb98b599ee07e8",
    "items.csv": "df196b670299171c848f62f3d35fc0651b4f405cbbb4aecc958ae87315cdbf61",
    "ratings.csv": "bb2276cc7a6cd702c419bb02b026700fe7b8fdd2f3610889116bc52ad4fbbd12",
    "group.csv": "e72082eb1fc18da4b46b195125d901fcba2b741189b4be24b4818245a05b231c",
    "group_ratings.csv": "30ebde9d782604986041e04e8e13f2ea8d8745f0a23f9a5e77109a6c171900ec",
}
AGE_BANDS = {"<20": "lt20", "20-25": "20_25", "26-30": "26_30", ">30": "gt30", "31-100": "gt30"}
CLASSES = ["DA", "DB", "DM"]
CONTEXT = ["Class", "Semester", "Lockdown"]


def fetch(root: Path, download_missing: bool) -> Path:
    """Return the itm-rec folder, downloading the ITM-Rec zip if allowed and needed."""
    folder = root / FOLDER

    def from_upstream() -> None:
        archive = download(URL, root / "ITM-Rec.zip", sha256=ZIP_SHA256)
        safe_extract(archive, folder, members=_archive_members(archive), sha256=SHA256)

    return ensure_files(folder, SHA256, "itmrec", download_missing, from_upstream)


def _archive_members(archive: Path) -> dict[str, str]:
    """Map the zip's entries (whatever folder they sit in) to the expected file names."""
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        names = {Path(n).name: n for n in zf.namelist() if not n.endswith("/") and "__MACOSX" not in n}
    missing = [n for n in SHA256 if n not in names]
    if missing:
        raise DataError(f"archive {archive} lacks {missing}; the upstream archive changed, fetch the CSVs by hand")
    return {names[n]: n for n in SHA256}


def load(root: str | None = None, download: bool = True, verify: bool = True) -> Dataset:
    folder = fetch(resolve_root(root), download)
    hashes = {f"{FOLDER}/{name}": verify_file(folder / name, sha, verify=verify) for name, sha in SHA256.items()}

    users = parse_table(folder / "users.csv", sep=",", header=True, strip_names=True,
                        names=["UserID", "Gender", "Age", "Married"], numeric=["UserID", "Gender", "Married"])
    items = parse_table(folder / "items.csv", sep=",", header=True, names=["Item", "Title"], numeric=["Item"])
    raw = parse_table(folder / "ratings.csv", sep=",", header=True, strip_names=True,
                      names=["UserID", "Item", "Rating", *CONTEXT], numeric=["UserID", "Item", "Rating"])
    groups = parse_table(folder / "group.csv", sep=",", header=True, strip_names=True,
                         names=["GroupID", "UserID"], numeric=["GroupID", "UserID"])
    group_raw = parse_table(folder / "group_ratings.csv", sep=",", header=True, strip_names=True,
                            names=["GroupID", "Item", "Rating"], numeric=["GroupID", "Item", "Rating"])

    users["Age"] = users["Age"].str.strip()
    check_values(folder / "users.csv", users, "Age", users.Age.isin(list(AGE_BANDS)),
                 f"an age band in {sorted(AGE_BANDS)}", first_line=2)
    check_values(folder / "ratings.csv", raw, "Rating", raw.Rating.between(1, 5), "a rating in 1..5", first_line=2)
    check_values(folder / "ratings.csv", raw, "UserID", raw.UserID.isin(users.UserID), "a user of users.csv",
                 first_line=2)
    check_values(folder / "ratings.csv", raw, "Item", raw.Item.isin(items.Item), "an item of items.csv",
                 first_line=2)
    check_values(folder / "ratings.csv", raw, "Class", raw.Class.str.strip().isin(CLASSES),
                 f"a class in {CLASSES}", first_line=2)
    check_values(folder / "group.csv", groups, "UserID", groups.UserID.isin(users.UserID), "a user of users.csv",
                 first_line=2)
    check_values(folder / "group_ratings.csv", group_raw, "Rating", group_raw.Rating.between(1, 5),
                 "a rating in 1..5", first_line=2)

    n_rows = len(raw)
    ratings = (raw.rename(columns={"UserID": "user", "Item": "item", "Rating": "rating"})
               .groupby(["user", "item"], as_index=False, sort=True)["rating"].mean())
    n_repeated = n_rows - len(ratings)
    ratings = ratings.astype({"user": "int64", "item": "int64", "rating": "float64"})

    user_index = pd.Index(users.UserID.astype("int64"), name="user")
    bands = pd.get_dummies(pd.Categorical(users.Age.map(AGE_BANDS), categories=sorted(set(AGE_BANDS.values()))),
                           prefix="age", dtype=float)
    bands.index = user_index
    user_features = pd.concat([pd.DataFrame({"gender": users.Gender.astype(float).to_numpy(),
                                             "married": users.Married.astype(float).to_numpy()},
                                            index=user_index), bands], axis=1)

    # Item side feature: the classes (DA, DB, DM) a topic was offered in. It is catalogue
    # metadata read off which class each row came from, never off a rating value.
    offered = (raw.assign(Class=raw.Class.str.strip()).drop_duplicates(["Item", "Class"])
               .pivot_table(index="Item", columns="Class", aggfunc="size", fill_value=0)
               .reindex(columns=CLASSES, fill_value=0).clip(upper=1))
    item_index = pd.Index(items.Item.astype("int64"), name="item")
    item_features = offered.reindex(item_index.to_numpy(), fill_value=0).astype(float)
    item_features.index = item_index
    item_features.columns = [f"class_{c}" for c in CLASSES]

    n_group_rows = len(groups)
    membership = (groups.drop_duplicates().rename(columns={"GroupID": "group", "UserID": "user"})
                  .astype("int64").sort_values(["group", "user"], ignore_index=True))
    group_ratings = (group_raw.rename(columns={"GroupID": "group", "Item": "item", "Rating": "rating"})
                     .groupby(["group", "item"], as_index=False, sort=True)["rating"].mean()
                     .astype({"group": "int64", "item": "int64", "rating": "float64"}))
    notes = {
        "repeated_pairs": f"{n_repeated} ratings.csv rows repeat a (user, item) pair under another context; "
                          f"the overall Rating is averaged per pair ({n_rows} rows -> {len(ratings)} pairs)",
        "blank_criteria": "blank criterion values (Data column) are ignored: criteria are not used",
        "group_duplicates": f"{n_group_rows - len(membership)} duplicate group.csv rows dropped",
        "users_without_ratings": f"{len(users) - ratings.user.nunique()} of {len(users)} users have no rating",
        "age_bands": "age band ' 31-100' is merged with '>30'",
    }
    return Dataset(name="itmrec", ratings=ratings, user_features=user_features, item_features=item_features,
                   rating_scale=(1.0, 5.0), files_sha256=hashes, groups=membership,
                   group_ratings=group_ratings, notes=notes,
                   item_titles=pd.Series(items.Title.str.strip().to_numpy(), index=item_index, name="title"))
