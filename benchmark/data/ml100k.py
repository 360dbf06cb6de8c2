"""MovieLens-100K (GroupLens): u.data, u.user, u.item.

Upstream: https://files.grouplens.org/datasets/movielens/ml-100k.zip. GroupLens publishes its
md5 (checked); its sha256 is not published and could not be computed from a trusted copy here
(no network), so every file taken from it is pinned by sha256 instead (SHA256 below, the values
of shared/data/SOURCES.md), checked before anything is written. The data may not be
redistributed, so it is downloaded into the cache, never committed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from benchmark.data.base import (Dataset, check_values, download, ensure_files, parse_table, resolve_root,
                                     safe_extract, verify_file)

log = logging.getLogger(__name__)

URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ZIP_MD5 = "0e33842e24a9c977be4e0107933c0723"
FOLDER = "ml-100k"
# sha256 of the GroupLens files (also pinned by independent projects; see docs/protocol.md)
SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
}
GENRES = ["unknown", "Action", "Adventure", "Animation", "Childrens", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]
# u.occupation's 21 values, fixed so one-hot columns never depend on which users appear
OCCUPATIONS = ["administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
               "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other",
               "programmer", "retired", "salesman", "scientist", "student", "technician", "writer"]


def fetch(root: Path, download_missing: bool) -> Path:
    """Return the ml-100k folder, downloading the GroupLens archive if allowed and needed."""
    def from_upstream() -> None:
        archive = download(URL, root / "ml-100k.zip", md5=ZIP_MD5)
        safe_extract(archive, root, members={f"{FOLDER}/{name}": f"{FOLDER}/{name}" for name in SHA256},
                     sha256={f"{FOLDER}/{name}": digest for name, digest in SHA256.items()})

    return ensure_files(root / FOLDER, SHA256, "ml100k", download_missing, from_upstream)


def load(root: str | None = None, download: bool = True, verify: bool = True) -> Dataset:
    folder = fetch(resolve_root(root), download)
    hashes = {f"{FOLDER}/{name}": verify_file(folder / name, sha, verify=verify) for name, sha in SHA256.items()}

    ratings = parse_table(folder / "u.data", sep="\t", names=["user", "item", "rating", "timestamp"],
                          numeric=["user", "item", "rating", "timestamp"], expected_rows=100_000)
    users = parse_table(folder / "u.user", sep="|", names=["user", "age", "gender", "occupation", "zip"],
                        numeric=["user", "age"])
    items = parse_table(folder / "u.item", sep="|", encoding="latin-1",
                        names=["item", "title", "release", "video_release", "url", *GENRES],
                        numeric=["item", *GENRES])

    check_values(folder / "u.data", ratings, "rating", ratings.rating.between(1, 5), "a rating in 1..5")
    check_values(folder / "u.user", users, "gender", users.gender.isin(["M", "F"]), "M or F")
    check_values(folder / "u.user", users, "occupation", users.occupation.isin(OCCUPATIONS),
                  f"one of u.occupation's {len(OCCUPATIONS)} values")
    check_values(folder / "u.data", ratings, "user", ratings.user.isin(users.user), "a user id of u.user")
    check_values(folder / "u.data", ratings, "item", ratings.item.isin(items.item), "an item id of u.item")
    # one rating per (user, item), whatever data.verify says: an edited file could rate a pair twice
    check_values(folder / "u.data", ratings, "item", ~ratings.duplicated(["user", "item"]),
                 "one rating per (user, item) (this pair is rated on an earlier line too)")

    ratings = ratings[["user", "item", "rating"]].astype({"user": "int64", "item": "int64", "rating": "float64"})
    user_features = pd.DataFrame({"age": users.age.astype(float).to_numpy(),
                                  "gender": (users.gender == "M").astype(float).to_numpy()},
                                 index=pd.Index(users.user.astype("int64"), name="user"))
    occupation = pd.get_dummies(pd.Categorical(users.occupation, categories=OCCUPATIONS), prefix="occ",
                                dtype=float)
    occupation.index = user_features.index
    user_features = pd.concat([user_features, occupation], axis=1)
    item_features = items.set_index(items.item.astype("int64").rename("item"))[GENRES].astype(float)
    item_features.columns = [f"genre_{g}" for g in GENRES]
    return Dataset(name="ml100k", ratings=ratings, user_features=user_features, item_features=item_features,
                   rating_scale=(1.0, 5.0), files_sha256=hashes,
                   notes={"encoding": "u.item read as latin-1 (9 titles have non-ASCII bytes)"},
                   item_titles=pd.Series(items.title.to_numpy(), index=item_features.index, name="title"))

