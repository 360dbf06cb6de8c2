"""The MovieLens-1M loader on a small archive written in GroupLens' real format.

No internet here: the real ml-1m.zip was never downloaded. The tests build an archive with the
same layout (``ml-1m/{ratings,users,movies}.dat``, ``::`` separators, latin-1 titles) and pin
its hashes in place of GroupLens' ones.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmark.data import ml1m
from benchmark.core.errors import DataError

USERS = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117", "4::M::45::7::02460"]
MOVIES = ["1::Toy Story (1995)::Animation|Children's|Comedy",
          "2::Jumanji (1995)::Adventure|Children's|Fantasy",
          "3::Caf\xe9 au lait (1993)::Comedy",            # a latin-1 byte, as in the real movies.dat
          "4::Unrated Film (2000)::Drama"]                # listed but never rated
RATINGS = ["1::1::5::978300760", "1::2::3::978302109", "2::1::4::978301968", "2::3::2::978300275",
           "3::3::1::978824291", "4::2::5::978302268", "4::1::4::978301777"]


def write_archive(root: Path, ratings=RATINGS, users=USERS, movies=MOVIES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, lines in (("ratings.dat", ratings), ("users.dat", users), ("movies.dat", movies)):
            zf.writestr(f"ml-1m/{name}", ("\n".join(lines) + "\n").encode("latin-1"))
    return archive


@pytest.fixture
def pinned(monkeypatch):
    """Pin a generated archive's hashes and row count as the loader pins GroupLens' ones."""
    def _pin(archive: Path, n_ratings: int = len(RATINGS)) -> Path:
        data = archive.read_bytes()
        monkeypatch.setattr(ml1m, "ZIP_MD5", hashlib.md5(data).hexdigest())
        monkeypatch.setattr(ml1m, "ZIP_SHA256", hashlib.sha256(data).hexdigest())
        monkeypatch.setattr(ml1m, "EXPECTED_RATINGS", n_ratings)
        return archive
    return _pin


def test_parses_ratings_and_side_features(tmp_path, pinned):
    archive = pinned(write_archive(tmp_path))
    data = ml1m.load(tmp_path, download=False)
    assert data.name == "ml1m" and data.files_sha256 == {"ml-1m.zip": hashlib.sha256(archive.read_bytes()).hexdigest()}
    assert list(data.ratings.columns) == ["user", "item", "rating"] and len(data.ratings) == len(RATINGS)
    assert data.ratings.iloc[3].tolist() == [2, 3, 2.0]
    # users: age band code, gender (M = 1), occupation one-hot over the README's 21 codes
    users = data.user_features
    assert users.loc[2, "age"] == 56 and users.loc[1, "gender"] == 0 and users.loc[2, "gender"] == 1
    occupation = users.filter(like="occ_")
    assert occupation.shape[1] == 21 and (occupation.sum(axis=1) == 1).all()
    assert users.loc[1, "occ_K-12 student"] == 1 and users.loc[4, "occ_executive/managerial"] == 1
    # items: the 18 genre flags, every listed movie (rated or not)
    items = data.item_features
    assert items.shape == (4, 18) and data.n_items == 4
    assert items.loc[1].sum() == 3 and items.loc[1, "genre_Children's"] == 1 and items.loc[4, "genre_Drama"] == 1
    assert items.loc[3, "genre_Comedy"] == 1 and items.loc[3].sum() == 1
    np.testing.assert_array_equal(items.sum().to_numpy()[:5], [0, 1, 1, 2, 2])


def test_checksum_mismatch_is_refused(tmp_path, pinned):
    pinned(write_archive(tmp_path))
    write_archive(tmp_path, ratings=RATINGS[:-1] + ["4::1::3::978301777"])  # one rating edited
    with pytest.raises(DataError, match=r"ml-1m.zip: md5 mismatch .*delete it and rerun") as info:
        ml1m.load(tmp_path, download=False)
    assert "\n" not in str(info.value)
    edited = ml1m.load(tmp_path, download=False, verify=False).ratings  # data.verify=false: a warning only
    assert edited.set_index(["user", "item"]).rating[(4, 1)] == 3.0


def test_published_pins_are_grouplens_md5_and_a_sha256():
    assert ml1m.ZIP_MD5 == "c4d9eecfca2ab87c1945afe126590906"
    assert len(ml1m.ZIP_SHA256) == 64 and ml1m.EXPECTED_RATINGS == 1_000_209


def test_missing_archive_without_download(tmp_path):
    with pytest.raises(DataError, match=r"ml-1m.zip is missing.*data.download=true"):
        ml1m.load(tmp_path, download=False)


@pytest.mark.parametrize("file, lines, message", [
    ("ratings", RATINGS[:2] + ["2::1::7::978301968"] + RATINGS[3:], r"ratings.dat, line 3: field 'rating' is 7"),
    ("ratings", RATINGS[:2] + ["2::1::four::978301968"] + RATINGS[3:], r"ratings.dat, line 3: field 'rating' is 'four'"),
    ("ratings", RATINGS[:2] + ["2::9::4::978301968"] + RATINGS[3:], r"ratings.dat, line 3: field 'item' is 9"),
    ("ratings", RATINGS[:2] + ["2::1::4"] + RATINGS[3:], r"ratings.dat, line 3: field 'timestamp' is ''"),
    ("users", USERS[:1] + ["2::X::56::16::70072"] + USERS[2:], r"users.dat, line 2: field 'gender' is 'X'"),
    ("users", USERS[:1] + ["2::M::30::16::70072"] + USERS[2:], r"users.dat, line 2: field 'age' is 30"),
    ("users", USERS[:1] + ["2::M::56::21::70072"] + USERS[2:], r"users.dat, line 2: field 'occupation' is 21"),
    ("movies", MOVIES[:1] + ["2::Jumanji (1995)::Adventure|Cartoon"] + MOVIES[2:], r"movies.dat, line 2: field 'genres'"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, pinned, file, lines, message):
    kwargs = {file: lines}
    pinned(write_archive(tmp_path, **kwargs))
    with pytest.raises(DataError, match=message) as info:
        ml1m.load(tmp_path, download=False)
    assert "\n" not in str(info.value) and "ml-1m.zip:ml-1m/" in str(info.value)


@pytest.mark.slow
def test_runs_through_the_harness(tmp_path, pinned, make_cfg):
    """dataset=ml1m composes and runs a baseline end to end (20 users x 4 movies, k=2)."""
    from benchmark.run.job import run

    users = [f"{u}::{'MF'[u % 2]}::{ml1m.AGE_BANDS[u % 7]}::{u % 21}::00000" for u in range(1, 21)]
    ratings = [f"{u}::{i}::{(u + i) % 5 + 1}::978300000" for u in range(1, 21) for i in range(1, 5)]
    pinned(write_archive(tmp_path, ratings=ratings, users=users), n_ratings=len(ratings))
    result = run(make_cfg("dataset=ml1m", "model=baseline_only", f"data.root={tmp_path}", "dataset.n_groups=2"))
    assert len(result.predictions) == 20  # one test rating of each user's 4
    assert result.predictions.prediction.between(1, 5).all()
