"""MovieLens-1M (GroupLens): ratings.dat, users.dat, movies.dat, read from the checked archive.

Upstream: https://files.grouplens.org/datasets/movielens/ml-1m.zip. The files use ``::`` as
the separator and latin-1 text (some titles). The loader keeps the archive (``ml-1m.zip``
under data.root) and reads its members directly, so the one pinned hash covers every byte it
parses: the md5 GroupLens publishes for the archive, plus a sha256 of the same archive.

- md5 ``c4d9eecfca2ab87c1945afe126590906``: the value GroupLens publishes beside the download
  (https://files.grouplens.org/datasets/movielens/ml-1m.zip.md5, linked as "md5" on
  https://grouplens.org/datasets/movielens/1m/). It could not be fetched here (no internet);
  the same value is pinned by independent projects (e.g. PaddlePaddle's dataset cache).
- sha256 ``a6898adb…2c54e20``: not published by GroupLens; it is the value pinned by
  independent projects for the same archive (e.g. TensorFlow Models' MovieLens pipeline).

The real archive was never downloaded in this repository's tests (no internet): they run the
loader on a small archive generated in the real format. May not be redistributed; never committed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path

import pandas as pd

from benchmark.data.base import Dataset, check_values, download, parse_table, resolve_root
from benchmark.core.errors import DataError

log = logging.getLogger(__name__)

URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ARCHIVE = "ml-1m.zip"
ZIP_MD5 = "c4d9eecfca2ab87c1945afe126590906"
ZIP_SHA256 = "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"
FOLDER = "ml-1m"              # the archive's top folder
EXPECTED_RATINGS = 1_000_209  # README: 1,000,209 ratings by 6,040 users of 3,706 (of 3,883) movies
GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western"]
AGE_BANDS = [1, 18, 25, 35, 45, 50, 56]  # README: the lower bound of each band ("Under 18" is 1)
# README's occupation codes 0..20, named so the one-hot columns say what they are
OCCUPATIONS = ["other", "academic/educator", "artist", "clerical/admin", "college/grad student",
               "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
               "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
               "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer"]


class _Member(io.StringIO):
    """A member's text with ``::`` turned into tabs (pandas' C parser takes one-character
    separators only); prints as ``archive:member`` so parse errors name the real place."""

    def __init__(self, text: str, where: str):
        super().__init__(text.replace("::", "\t"))
        self.where = where

    def __str__(self) -> str:
        return self.where


def fetch(root: Path, download_missing: bool) -> Path:
    """Return the path of ml-1m.zip, downloading it (md5 and sha256 checked) if allowed and needed."""
    archive = root / ARCHIVE
    if archive.is_file():
        return archive
    if not download_missing:
        raise DataError(f"dataset ml1m not found: {archive} is missing; set data.root or GROUPBENCH_DATA to a "
                        f"folder holding {ARCHIVE} (GroupLens' archive, kept zipped), or rerun with "
                        f"data.download=true")
    return download(URL, archive, md5=ZIP_MD5, sha256=ZIP_SHA256)


def verify_archive(path: Path, *, verify: bool = True) -> str:
    """Check the archive's md5 (GroupLens') and sha256; return the sha256."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            md5.update(chunk)
            sha256.update(chunk)
    found = {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}
    expected = {"md5": ZIP_MD5, "sha256": ZIP_SHA256}
    wrong = [algo for algo in ("md5", "sha256") if found[algo] != expected[algo]]
    if wrong and verify:
        algo = wrong[0]
        raise DataError(f"data file {path}: {algo} mismatch (expected {expected[algo]}, found {found[algo]}, "
                        f"{path.stat().st_size} bytes): the archive is corrupt, truncated or not GroupLens' "
                        f"ml-1m.zip; delete it and rerun with data.download=true")
    if wrong:
        log.warning("data file %s differs from the pinned checksums (data.verify=false): results are not "
                    "comparable with published ones", path)
    return found["sha256"]


def _read_member(archive: Path, zf: zipfile.ZipFile, name: str) -> _Member:
    member = f"{FOLDER}/{name}"
    try:
        raw = zf.read(member)
    except KeyError:
        raise DataError(f"data file {archive}: member {member} is missing; the archive is not GroupLens' "
                        f"ml-1m.zip, delete it and rerun with data.download=true") from None
    return _Member(raw.decode("latin-1"), f"{archive}:{member}")  # latin-1 decodes any byte


def load(root: str | None = None, download: bool = True, verify: bool = True) -> Dataset:
    archive = fetch(resolve_root(root), download)
    digest = verify_archive(archive, verify=verify)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise DataError(f"data file {archive}: not a zip archive ({exc}); delete it and rerun with "
                        f"data.download=true") from None
    with zf:
        ratings_dat = _read_member(archive, zf, "ratings.dat")
        users_dat = _read_member(archive, zf, "users.dat")
        movies_dat = _read_member(archive, zf, "movies.dat")
    ratings = parse_table(ratings_dat, sep="\t", names=["user", "item", "rating", "timestamp"],
                          numeric=["user", "item", "rating", "timestamp"], expected_rows=EXPECTED_RATINGS)
    users = parse_table(users_dat, sep="\t", names=["user", "gender", "age", "occupation", "zip"],
                        numeric=["user", "age", "occupation"])
    movies = parse_table(movies_dat, sep="\t", names=["item", "title", "genres"], numeric=["item"])

    check_values(ratings_dat, ratings, "rating", ratings.rating.isin([1, 2, 3, 4, 5]), "a whole rating in 1..5")
    check_values(users_dat, users, "gender", users.gender.isin(["M", "F"]), "M or F")
    check_values(users_dat, users, "age", users.age.isin(AGE_BANDS), f"one of the age bands {AGE_BANDS}")
    check_values(users_dat, users, "occupation", users.occupation.isin(range(len(OCCUPATIONS))),
                 f"an occupation code 0..{len(OCCUPATIONS) - 1}")
    genre_flags = movies.genres.str.get_dummies(sep="|")
    unknown = [g for g in genre_flags.columns if g not in GENRES]
    check_values(movies_dat, movies, "genres", ~genre_flags[unknown].any(axis=1) if unknown else
                 pd.Series(True, index=movies.index), f"genres from {'|'.join(GENRES)}")
    check_values(ratings_dat, ratings, "user", ratings.user.isin(users.user), "a user id of users.dat")
    check_values(ratings_dat, ratings, "item", ratings.item.isin(movies.item), "a movie id of movies.dat")
    check_values(ratings_dat, ratings, "user", ~ratings.duplicated(["user", "item"]),
                 "one rating per (user, movie)")

    ratings = ratings[["user", "item", "rating"]].astype({"user": "int64", "item": "int64", "rating": "float64"})
    user_index = pd.Index(users.user.astype("int64"), name="user")
    user_features = pd.DataFrame({"age": users.age.astype(float).to_numpy(),
                                  "gender": (users.gender == "M").astype(float).to_numpy()}, index=user_index)
    occupation = pd.get_dummies(pd.Categorical(users.occupation.map(dict(enumerate(OCCUPATIONS))),
                                               categories=OCCUPATIONS), prefix="occ", dtype=float)
    occupation.index = user_index
    user_features = pd.concat([user_features, occupation], axis=1)
    item_features = genre_flags.reindex(columns=GENRES, fill_value=0).astype(float)
    item_features.index = pd.Index(movies.item.astype("int64"), name="item")
    item_features.columns = [f"genre_{g}" for g in GENRES]
    return Dataset(name="ml1m", ratings=ratings, user_features=user_features, item_features=item_features,
                   rating_scale=(1.0, 5.0), files_sha256={ARCHIVE: digest},
                   notes={"encoding": "::-separated, read as latin-1 from the checked archive"})
