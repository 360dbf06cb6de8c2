"""Group-item datasets (#24, the data layer): CAMRa2011, Mafengwo, MafengwoS, Weeplaces.

(a) on the real shared files: sizes and the facts of shared/data/group-rec/SOURCES.md, computed
here from the raw text, not by the loaders' own counting; (b) on small generated files: every bad
input is a one-line DataError naming the file (and line); (c) the download path, with urlopen
serving local bytes: files arrive, a wrong sha256 is refused and leaves no file behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.core.errors import DataError
from benchmark.data import camra2011, mafengwo, weeplaces
from benchmark.data.base import Dataset
from benchmark.data.group_item import negative_defects


def _shared_root() -> Path | None:
    root = os.environ.get("GROUPBENCH_DATA")
    return Path(root) if root and (Path(root) / "group-rec").is_dir() else None


needs_data = pytest.mark.skipif(_shared_root() is None, reason="GROUPBENCH_DATA is unset or holds no group-rec/ "
                                "(the group-item research copies, shared/data/group-rec)")


def _lines(folder: str, name: str) -> list[list[str]]:
    return [line.split() for line in (_shared_root() / "group-rec" / folder / name).read_text().splitlines()]


def _sums() -> dict[str, str]:
    text = (_shared_root() / "group-rec" / "SHA256SUMS").read_text()
    return {f"group-rec/{name}": digest for digest, name in (line.split() for line in text.splitlines())}


# ---------------------------------------------------------------------------- (a) the real files

@needs_data
def test_camra2011_sizes_duplicates_and_leaks():
    data = camra2011.load(_shared_root(), download=False)
    g = data.group_item
    assert isinstance(data, Dataset) and data.files_sha256 == {k: v for k, v in _sums().items() if "CAMRa" in k}
    assert (g.n_groups, g.n_users, g.n_items, g.implicit, g.rating_scale) == (290, 602, 7710, False, (0.0, 100.0))
    sizes = Counter(Counter(int(row[0]) for row in _lines("CAMRa2011", "groupMember.txt")).values())
    assert g.members.groupby("group").size().value_counts().get(2) == 272 and g.members.user.is_unique
    assert len(g.members) == 602 and sizes == {1: 290}  # one line per group

    raw = _lines("CAMRa2011", "groupRatingTrain.txt")
    ratings: dict[tuple[int, int], list[int]] = {}
    for group, item, rating in raw:
        ratings.setdefault((int(group), int(item)), []).append(int(rating))
    assert len(raw) == 143_618 and len(ratings) == 113_914 == len(g.group_train)
    disagree = sum(len(set(v)) > 1 for v in ratings.values())
    assert disagree == 25_033 and "25033 of them with different ratings" in data.notes["group_train_duplicates"]
    merged = g.group_train.set_index(["group", "item"]).rating
    for pair in [p for p, v in ratings.items() if len(set(v)) > 1][:50]:  # the rule: the mean of the rows
        assert merged[pair] == pytest.approx(np.mean(ratings[pair]))

    positives = {p for p, v in ratings.items() if max(v) > 0}
    test = [(int(a), int(b)) for a, b, _ in _lines("CAMRa2011", "groupRatingTest.txt")]
    assert len(test) == 1450 and sum(p in ratings for p in test) == 576 and sum(p in positives for p in test) == 571
    negatives = _lines("CAMRa2011", "groupRatingNegative.txt")
    with_positive = sum(any((g_, int(n)) in positives for n in row[1:]) for (g_, _), row in zip(test, negatives))
    with_test = sum(str(item) in row[1:] for (_, item), row in zip(test, negatives))
    assert with_positive == 1380 and with_positive / 1450 >= 0.95 and with_test == 24
    counts = negative_defects(g.group_test, g.group_negatives, g.group_train, "group")
    assert (counts["lists_with_train_positive"], counts["lists_with_test_item"], counts["test_in_train"]) == (1380, 24, 571)
    assert "1380 (95.2 %)" in data.notes["group_negatives"]
    assert g.group_negatives.shape == (1450, 100) and g.user_negatives.shape == (3010, 100)
    # the Dataset view: ratings = user train, groups = memberships
    assert len(data.ratings) == 113_334 and data.ratings.rating.between(0, 100).all()
    assert data.groups is g.members and data.n_users == 602 and data.n_items == 7710


@needs_data
def test_mafengwo_sizes_and_negatives_outside_group_items():
    data = mafengwo.load(_shared_root(), download=False)
    g = data.group_item
    assert (g.n_groups, g.n_users, g.n_items, g.implicit, g.group_items) == (995, 5275, 1513, True, 539)
    assert g.user_train.user.nunique() == 2017 and set(data.ratings.rating) == {1.0}
    assert g.members.groupby("group").size().agg(["min", "max"]).tolist() == [2, 48]
    assert max(int(r[1]) for r in _lines("Mafengwo", "groupRatingTrain.txt") + _lines("Mafengwo", "groupRatingTest.txt")) == 538
    rows = _lines("Mafengwo", "groupRatingNegative.txt")
    values = np.array([[int(x) for x in row[1:]] for row in rows])
    assert round(100 * (values > 538).mean(), 1) == 57.6
    tests = [int(row[0].strip("()").split(",")[1]) for row in rows]
    repeats = sum(len(set(r)) < len(r) for r in values.tolist())
    with_test = sum(t in r for t, r in zip(tests, values.tolist()))
    counts = negative_defects(g.group_test, g.group_negatives, g.group_train, "group", g.group_items)
    assert (counts["outside_group_catalogue"], counts["lists_with_repeats"], counts["lists_with_test_item"]) == \
        (int((values > 538).sum()), repeats, with_test) == (57_340, 355, 33)
    assert "57.6 %" in data.notes["group_negatives"]
    assert len(g.side["user_follow"]) == 53_235 - 32 and g.side["user_follow"].user.max() == 5274


@needs_data
def test_mafengwos_sizes_and_item_names():
    data = mafengwo.load(_shared_root(), download=False, variant="mafengwos")
    g = data.group_item
    assert (g.n_groups, g.n_users, g.n_items, len(g.group_test)) == (1215, 11027, 1236, 582)
    assert data.item_titles.index.tolist() == list(range(1236)) and data.item_titles[0] == "五台山"
    assert negative_defects(g.group_test, g.group_negatives, g.group_train, "group")["lists_with_test_item"] == 0
    assert set(data.files_sha256) == {k for k in _sums() if "MafengwoS/" in k}


@needs_data
def test_weeplaces_sizes_disjoint_parts_and_member_coverage():
    data = weeplaces.load(_shared_root(), download=False)
    g = data.group_item
    folder = _shared_root() / "group-rec" / "weeplaces"
    assert (g.n_groups, g.n_users, g.n_items, g.members.user.nunique()) == (22_733, 8643, 25_081, 8550)
    groups = [set(pd.read_csv(folder / f"{p}_gi.csv").group) for p in ("train", "val", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert [len(s) for s in groups] == [g.group_train.group.nunique(), g.group_val.group.nunique(),
                                        g.group_test.group.nunique()] == [15_913, 2273, 4547]
    members = pd.read_csv(folder / "group_users.csv")
    by_group: dict[int, set[int]] = {}
    for group, user in zip(members.group, members.user):
        by_group.setdefault(int(group), set()).add(int(user))
    own: set[tuple[int, int]] = set()
    for name in ("train_ui", "val_ui_tr", "test_ui_tr"):
        frame = pd.read_csv(folder / f"{name}.csv")
        own.update(zip(frame.user.tolist(), frame.item.tolist()))
    test = pd.read_csv(folder / "test_gi.csv")
    found = sum(any((u, item) in own for u in by_group[group]) for group, item in zip(test.group, test.item))
    assert round(100 * found / len(test), 1) == 98.2 and f"{found} of {len(test)}" in data.notes["group_test_in_members"]
    assert len(data.ratings) == len(g.user_train) == 355_913 and g.user_negatives is None


# ---------------------------------------------------------------------------- (b) generated files

def _negs(key: tuple[int, int], values, crlf=False) -> str:
    return f"({key[0]},{key[1]}) " + " ".join(str(v) for v in values) + ("\r\n" if crlf else "\n")


CAMRA = {
    "groupMember.txt": "0 0,1\n1 2,3\n",
    "userRatingTrain.txt": "0 1 50\n1 2 60\n2 3 70\n3 4 80\n",
    "userRatingTest.txt": "0 5 50\n1 6 40\n",
    "userRatingNegative.txt": _negs((0, 5), range(100, 200)) + _negs((1, 6), range(200, 300)),
    "groupRatingTrain.txt": "0 1 50\n0 1 75\n1 3 80\n",
    "groupRatingTest.txt": "0 5 70\n1 6 40\n",
    "groupRatingNegative.txt": _negs((0, 5), [1, 5, 5, *range(300, 397)]) + _negs((1, 6), range(400, 500)),
}


def _write(root: Path, folder: str, files: dict[str, str]) -> Path:
    target = root / "group-rec" / folder
    target.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (target / name).write_bytes(text.encode())
    return root


def test_generated_camra_loads_with_rule_and_defect_counts(tmp_path):
    data = camra2011.load(_write(tmp_path, "CAMRa2011", CAMRA), download=False, verify=False)
    g = data.group_item
    assert g.group_train.set_index(["group", "item"]).rating[(0, 1)] == 62.5  # the mean of 50 and 75
    counts = negative_defects(g.group_test, g.group_negatives, g.group_train, "group")
    assert (counts["lists_with_test_item"], counts["lists_with_repeats"], counts["repeated_negatives"],
            counts["lists_with_train_positive"]) == (1, 1, 1, 1)
    assert "1 of 2 lists contain the test item" in data.notes["group_negatives"]


def _edit(files: dict[str, str], name: str, line: int, text: str | None) -> dict[str, str]:
    lines = files[name].splitlines(keepends=True)
    if text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text + "\n"
    return {**files, name: "".join(lines)}


BAD_CAMRA = [
    ("userRatingTrain.txt", 2, "1 two 60", r"userRatingTrain.txt, line 2: field 'item' is 'two', expected a number"),
    ("userRatingTrain.txt", 3, "2 3", r"userRatingTrain.txt, line 3: field 'rating'"),
    ("groupRatingTrain.txt", 3, "1 99999 80", r"groupRatingTrain.txt, line 3: field 'item' is 99999.*0..7709"),
    ("userRatingTest.txt", 1, "700 5 50", r"userRatingTest.txt, line 1: field 'user' is 700.*0..601"),
    ("groupRatingTrain.txt", 1, "0 1 150", r"groupRatingTrain.txt, line 1: field 'rating' is 150.*0..100"),
    ("groupRatingTrain.txt", 2, "7 1 75", r"groupRatingTrain.txt, line 2: group 7 has no members in groupMember.txt"),
    ("groupMember.txt", 2, "1 ", r"groupMember.txt, line 2: group 1 has no members"),
    ("groupMember.txt", 2, "1 2,x", r"groupMember.txt, line 2: member 'x' of group 1 is not an integer"),
    ("groupMember.txt", 2, "1 2,9999", r"groupMember.txt, line 2: member 9999 of group 1 is outside .*0..601"),
    ("groupRatingNegative.txt", 2, _negs((1, 6), range(400, 499)).strip(),
     r"groupRatingNegative.txt, line 2: 100 fields, expected 101"),
    ("groupRatingNegative.txt", 2, _negs((1, 6), [*range(400, 404), "4x", *range(405, 500)]).strip(),
     r"groupRatingNegative.txt, line 2: negative 5 is '4x', not an integer"),
    ("userRatingNegative.txt", 1, _negs((0, 5), [*range(100, 199), 9999]).strip(),
     r"userRatingNegative.txt, line 1: negative 100 is '9999', outside the declared item ids 0..7709"),
    ("userRatingNegative.txt", 2, _negs((1, 7), range(200, 300)).strip(),
     r"userRatingNegative.txt, line 2: starts '\(1,7\)', expected '\(1,6\)' \(line 2 of userRatingTest.txt\)"),
    ("groupRatingNegative.txt", 2, None, r"groupRatingNegative.txt: 1 lines, but groupRatingTest.txt has 2 rows"),
]


@pytest.mark.parametrize("name,line,text,message", BAD_CAMRA, ids=[f"{c[0]}:{c[1]}:{i}" for i, c in enumerate(BAD_CAMRA)])
def test_generated_camra_bad_input_is_one_line(tmp_path, name, line, text, message):
    root = _write(tmp_path, "CAMRa2011", _edit(CAMRA, name, line, text))
    with pytest.raises(DataError, match=message) as info:
        camra2011.load(root, download=False, verify=False)
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_missing_and_corrupt_files_are_refused(tmp_path):
    root = _write(tmp_path, "CAMRa2011", {k: v for k, v in CAMRA.items() if k != "groupMember.txt"})
    with pytest.raises(DataError, match=r"CAMRa2011/groupMember.txt is missing.*data.download=true"):
        camra2011.load(root, download=False)
    _write(tmp_path, "CAMRa2011", CAMRA)
    with pytest.raises(DataError, match=r"groupMember.txt: sha256 mismatch \(expected 63e0d9958a78") as info:
        camra2011.load(root, download=False)  # the generated files are not the pinned ones
    assert "\n" not in str(info.value)


MAFENGWO = {
    "groupMember.txt": "0 0,1\r\n1 2,3\r\n",  # CRLF is read as LF
    "userRatingTrain.txt": "0 1\n1 2\n2 3\n",
    "userRatingTest.txt": "0 5\n1 6\n",
    "userRatingNegative.txt": _negs((0, 5), range(100, 200), crlf=True) + _negs((1, 6), range(200, 300), crlf=True),
    "groupRatingTrain.txt": "0 1\n1 3\n",
    "groupRatingTest.txt": "0 5\n1 6\n",
    "groupRatingNegative.txt": _negs((0, 5), [6, 6, 5, *range(600, 697)], crlf=True)
                               + _negs((1, 6), [3, *range(400, 499)], crlf=True),
    "userFollow.txt": "0:1 2 9000\n1:0\n",
}


def test_generated_mafengwo_counts_crlf_defects(tmp_path):
    root = _write(tmp_path, "Mafengwo", MAFENGWO)
    data = mafengwo.load(root, download=False, verify=False)
    g = data.group_item
    counts = negative_defects(g.group_test, g.group_negatives, g.group_train, "group", g.group_items)
    assert counts == {"lists": 2, "negatives": 200, "lists_with_test_item": 1, "negatives_equal_to_test_item": 1,
                      "lists_with_repeats": 1, "repeated_negatives": 1, "lists_with_train_positive": 1,
                      "train_positive_negatives": 1, "test_in_train": 0, "outside_group_catalogue": 97}
    assert g.side["user_follow"].followee.tolist() == [1, 2, 9000, 0] and "1 to followees outside" in data.notes["user_follow"]
    assert set(data.ratings.rating) == {1.0} and len(data.ratings) == 3
    bad = _write(tmp_path / "bad", "Mafengwo", {**MAFENGWO, "userRatingTrain.txt": "0 1\n1 2 1\n"})
    with pytest.raises(DataError, match=r"userRatingTrain.txt.*(line 2|expected 2 fields)"):
        mafengwo.load(bad, download=False, verify=False)
    with pytest.raises(DataError, match=r"unknown Mafengwo variant 'mafengwoz'"):
        mafengwo.load(root, download=False, variant="mafengwoz")


WEEPLACES = {
    "group_users.csv": "group,user\n0,0.0\n0,1.0\n1,2.0\n1,3.0\n",
    "train_ui.csv": "user,item\n0,1\n1,2\n",
    "val_ui_tr.csv": "user,item\n2,3\n",
    "val_ui_te.csv": "user,item\n2,4\n",
    "test_ui_tr.csv": "user,item\n3,5\n",
    "test_ui_te.csv": "user,item\n3,6\n",
    "train_gi.csv": "group,item\n0,1\n",
    "val_gi.csv": "group,item\n1,3\n",
    "test_gi.csv": "group,item\n1,5\n1,7\n",
}


@pytest.mark.parametrize("name,text,message", [
    ("group_users.csv", "group,user\n0,0.0\n0,1.5\n", r"group_users.csv, line 3: field 'user' is 1.5, expected an integer"),
    ("test_gi.csv", "group,item\n1,5\n9,7\n", r"test_gi.csv, line 3: group 9 has no members in group_users.csv"),
    ("train_ui.csv", "user,item\n0,1\n1,25081\n", r"train_ui.csv, line 3: field 'item' is 25081.*0..25080"),
    ("val_gi.csv", "group,item\n1\n", r"val_gi.csv.*(line 2|expected a number)"),
])
def test_generated_weeplaces(tmp_path, name, text, message):
    data = weeplaces.load(_write(tmp_path, "weeplaces", WEEPLACES), download=False, verify=False)
    assert data.notes["group_test_in_members"].startswith("1 of 2 group test rows (50.0 %)")
    assert data.group_item.user_test_foldin.item.tolist() == [5] and data.groups.user.tolist() == [0, 1, 2, 3]
    bad = _write(tmp_path / "bad", "weeplaces", {**WEEPLACES, name: text})
    with pytest.raises(DataError, match=message) as info:
        weeplaces.load(bad, download=False, verify=False)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- (c) downloads

def _serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    requested: list[str] = []

    def urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return requested


def test_download_from_pinned_commit_and_wrong_hash_refused(tmp_path, monkeypatch):
    files = {name: text.encode() for name, text in CAMRA.items()}
    monkeypatch.setattr(camra2011, "SHA256", {n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    requested = _serve(monkeypatch, files)
    data = camra2011.load(tmp_path / "a", download=True)
    assert len(requested) == 7 and all(url.startswith("https://raw.githubusercontent.com/FDUDSDE/WWW2023ConsRec/"
                                                      "d57dd9857c44856a63078adaf388ff89ff3e3fbe/data/CAMRa2011/")
                                       for url in requested)
    assert sorted(p.name for p in (tmp_path / "a" / "group-rec" / "CAMRa2011").iterdir()) == sorted(files)
    assert len(data.group_item.group_train) == 2

    monkeypatch.setitem(camra2011.SHA256, "groupRatingTest.txt", "0" * 64)
    with pytest.raises(DataError, match=r"download https://raw.*/groupRatingTest.txt: sha256 mismatch") as info:
        camra2011.load(tmp_path / "b", download=True)
    assert "\n" not in str(info.value)
    left = {p.name for p in (tmp_path / "b" / "group-rec" / "CAMRa2011").iterdir()}
    assert not any(name.startswith("groupRatingTest") for name in left)  # no file, no .part
    assert all(name in files for name in left)


def test_weeplaces_downloads_from_groupim(tmp_path, monkeypatch):
    files = {name: text.encode() for name, text in WEEPLACES.items()}
    monkeypatch.setattr(weeplaces, "SHA256", {n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    requested = _serve(monkeypatch, files)
    weeplaces.load(tmp_path, download=True)
    assert requested and all("CrowdDynamicsLab/GroupIM/899890e3c2486ffe40b202718e99cd37b8a85502/data/weeplaces/"
                             in url for url in requested)
