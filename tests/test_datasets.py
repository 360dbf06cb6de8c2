"""Loaders on the real files: counts, checksums, quirks; every bad input gets a one-line error."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from benchmark.data import base, itmrec, ml100k, synthetic
from benchmark.core.errors import DataError

# sha256 values as published in shared/data/SOURCES.md (independent of the loader's table)
SOURCES_SHA256 = {
    "ml-100k/u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "ml-100k/u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
    "ml-100k/u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "itm-rec/ratings.csv": "bb2276cc7a6cd702c419bb02b026700fe7b8fdd2f3610889116bc52ad4fbbd12",
    "itm-rec/users.csv": "124b473a4c4fff92b48735cf45a8e2374eea8854bb928603f0eb98b599ee07e8",
    "itm-rec/group.csv": "e72082eb1fc18da4b46b195125d901fcba2b741189b4be24b4818245a05b231c",
}


def test_ml100k_counts_and_checksums(real_data):
    data = ml100k.load(real_data, download=False)
    assert len(data.ratings) == 100_000
    assert data.ratings.user.nunique() == 943 and data.ratings.item.nunique() == 1682
    assert data.n_users == 943 and data.n_items == 1682
    assert sorted(data.ratings.rating.unique()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert data.item_features.shape == (1682, 19) and set(np.unique(data.item_features)) == {0.0, 1.0}
    # age, gender, 21 occupations; every user has exactly one occupation
    assert data.user_features.shape == (943, 23)
    assert (data.user_features.filter(like="occ_").sum(axis=1) == 1).all()
    assert data.user_features.gender.sum() == 670  # M count in SOURCES.md
    for name, digest in data.files_sha256.items():
        assert digest == SOURCES_SHA256[name]
    # u.item is latin-1: a title with a non-ASCII byte must load (not crash, not be mangled to ?)
    assert len(data.sha256) == 64


def test_itmrec_counts_and_quirks(real_data):
    data = itmrec.load(real_data, download=False)
    # 5230 rows, 432 of which repeat a (user, item) pair -> 4798 distinct pairs, averaged
    assert len(data.ratings) == 5230 - 432
    assert not data.ratings.duplicated(["user", "item"]).any()
    assert data.ratings.user.nunique() == 454 and data.n_users == 476
    assert data.ratings.item.nunique() == 70 and data.n_items == 70
    # leading-space headers stripped; age bands one-hot with ' 31-100' merged into '>30'
    assert {"gender", "married"} <= set(data.user_features.columns)
    assert (data.user_features.filter(like="age_").sum(axis=1) == 1).all()
    assert data.user_features["age_gt30"].sum() == 23 + 18
    # 395 group.csv rows, 37 exact duplicates dropped; sizes agree with group_size.csv
    assert len(data.groups) == 358 and data.groups.group.nunique() == 143
    sizes = data.groups.groupby("group").size().value_counts().to_dict()
    assert sizes == {2: 88, 3: 42, 4: 9, 5: 4}
    assert len(data.group_ratings) == 1117
    for name in ("itm-rec/ratings.csv", "itm-rec/users.csv", "itm-rec/group.csv"):
        assert data.files_sha256[name] == SOURCES_SHA256[name]
    assert "432" in data.notes["repeated_pairs"]


def test_itmrec_repeated_pairs_are_averaged(real_data):
    import pandas as pd

    raw = pd.read_csv(real_data / "itm-rec" / "ratings.csv")
    expected = raw.groupby(["UserID", "Item"]).Rating.mean()
    data = itmrec.load(real_data, download=False)
    got = data.ratings.set_index(["user", "item"]).rating
    pd.testing.assert_series_equal(got.sort_index(), expected.rename("rating").rename_axis(["user", "item"])
                                   .astype(float).sort_index())


def test_synthetic_is_seeded_and_planted():
    a, b = synthetic.load(seed=3), synthetic.load(seed=3)
    assert a.ratings.equals(b.ratings)
    assert not a.ratings.equals(synthetic.load(seed=4).ratings)
    assert len(a.ratings) == 6000 and not a.ratings.duplicated(["user", "item"]).any()
    assert a.ratings.user.nunique() == 300  # every user has a rating
    assert a.groups.group.nunique() == 5


# ----------------------------------------------------------------------------- bad inputs

def test_missing_dataset_without_download(tmp_path):
    with pytest.raises(DataError, match=r"ml-100k/u.data is missing.*data.download=true") as info:
        ml100k.load(tmp_path, download=False)
    assert "\n" not in str(info.value)


def test_unreachable_download(tmp_path, monkeypatch):
    monkeypatch.setattr(ml100k, "URL", "http://127.0.0.1:9/ml-100k.zip")
    with pytest.raises(DataError, match=r"cannot download http://127.0.0.1:9/ml-100k.zip.*data.download=false"):
        ml100k.load(tmp_path, download=True)


def test_checksum_mismatch_names_file_and_hashes(data_copy):
    path = data_copy / "ml-100k" / "u.user"
    path.write_bytes(path.read_bytes().replace(b"|technician|", b"|programmer|", 1))
    with pytest.raises(DataError) as info:
        ml100k.load(data_copy, download=False)
    message = str(info.value)
    assert "u.user" in message and "sha256 mismatch" in message
    assert ml100k.SHA256["u.user"] in message and base.sha256_of(path) in message
    assert "\n" not in message


def test_truncated_file(data_copy):
    path = data_copy / "ml-100k" / "u.data"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="sha256 mismatch"):
        ml100k.load(data_copy, download=False)
    # with verification off the row count still catches it (a cut line may be caught first)
    with pytest.raises(DataError, match=r"u.data.*(expected 100000 rows, found|line \d+)"):
        ml100k.load(data_copy, download=False, verify=False)


def test_malformed_row_names_file_and_line(data_copy):
    path = data_copy / "ml-100k" / "u.data"
    lines = path.read_bytes().split(b"\n")
    lines[41] = b"196\t242\tthree\t881250949"  # line 42
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"u.data, line 42: field 'rating' is 'three', expected a number"):
        ml100k.load(data_copy, download=False, verify=False)


def test_out_of_range_rating(data_copy):
    path = data_copy / "itm-rec" / "ratings.csv"
    lines = path.read_bytes().split(b"\r\n")
    fields = lines[9].split(b",")
    fields[2] = b"7"
    lines[9] = b",".join(fields)  # line 10 (after the header)
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(DataError, match=r"ratings.csv, line 10: field 'Rating' is 7.*1..5"):
        itmrec.load(data_copy, download=False, verify=False)


def test_extraction_refuses_paths_outside_target(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t0\n")
        zf.writestr("../../escaped.txt", "gotcha")
    target = tmp_path / "out"
    with pytest.raises(DataError, match="outside"):
        base.safe_extract(archive, target)
    assert not (tmp_path / "escaped.txt").exists()
