"""Mafengwo and MafengwoS (travel groups crawled from mafengwo.cn) as processed by ConsRec.

Upstream: ``data/Mafengwo/`` and ``data/MafengwoS/`` of the public GitHub repository
FDUDSDE/WWW2023ConsRec at commit d57dd9857c44856a63078adaf388ff89ff3e3fbe. Both use the AGREE
layout (groupMember.txt, user/group RatingTrain/Test/Negative.txt) with **implicit** feedback:
the interaction files have two fields (``id item``, no third column), read as rating 1.0.
One module serves both (``load(..., variant="mafengwos")``); each has one side file:
  * Mafengwo ``userFollow.txt`` (``user:followee followee ...``): ``side["user_follow"]`` (user,
    followee). 9,228 of 53,235 edges name followees outside the user ids 0-5274 (accounts that
    are not dataset users): kept, not refused; 32 repeated edges are dropped, 9 self-follows kept.
  * MafengwoS ``itemSemantic.txt`` (``name, item``, UTF-8 place names): ``side["item_semantic"]``
    and ``Dataset.item_titles``.
Quirks (also in docs/protocol.md, "Group–item datasets", and in the run's ``dataset_notes``):
  * Mafengwo: 995 groups (size 2-48), 5,275 users of whom only 2,017 have interactions; group
    files use item ids 0-538 only, user files 3-1512, and 57.6 % of the group negatives have ids
    above 538 (an item prior scores them for free); 33 group lists contain the test item, 355
    repeat a negative (1,100 repeats), 102 hold a training positive of the group. Counted, not
    refused. The negative files have CRLF line endings.
  * MafengwoS: 1,215 groups (size 3-208), 11,027 users, 2,719 with interactions, item ids 0-1235;
    only 582 groups have a test item; its negative lists have none of the defects above.
  * No file repeats an interaction.
The module names no single ``FOLDER``/``SHA256``/``fetch`` pair, so the protocol cache runs it
every time rather than keying one variant's load by the other's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.core.errors import DataError
from benchmark.data.base import Dataset, check_values, parse_table, resolve_root
from benchmark.data.group_item import (
    RESTORE,
    check_ids,
    defects_note,
    fetch_files,
    found_in_members,
    negative_defects,
    read_consrec_files,
    sizes_note,
    to_dataset,
    verify_all,
)

COMMIT = "d57dd9857c44856a63078adaf388ff89ff3e3fbe"
URL = f"https://raw.githubusercontent.com/FDUDSDE/WWW2023ConsRec/{COMMIT}/data"


@dataclass(frozen=True)
class Variant:
    folder: str
    sha256: dict[str, str]
    n_users: int
    n_items: int
    n_groups: int
    group_items: int | None  # the group files' id range, where it is narrower than the catalogue


VARIANTS = {
    "mafengwo": Variant("group-rec/Mafengwo", {
        "groupMember.txt": "472dcfa7ca63a1bcbbcf7663e63b289c174ca6a9b0939e00cb2156f0cd8a65f0",
        "groupRatingTrain.txt": "ecd6308dff2b59ad6cb4cee496d693a8cec1212044b0773c343b891c6b12872a",
        "groupRatingTest.txt": "c9b3a4308a9057e07b7ba1693c1be567dafa3504038b78da65e30ccadfc606d3",
        "groupRatingNegative.txt": "2c3f21dc5a0c72c6f46c1679d4e5c945fb69dbb0dbe0537c1f684c2b611b18f3",
        "userRatingTrain.txt": "98ddb79ab9f1bdabd8a7086a90b56b5f99a28e609bc26f593c1774dc0e912cf3",
        "userRatingTest.txt": "97a52f1939f229913076261670f887d8a68f59990f8dc6e4c66799c6070fe9c1",
        "userRatingNegative.txt": "e9b72b7006601226d9dc40b52d73689535d46572d22218b036f89bed09488896",
        "userFollow.txt": "4dfe6a71ffcb5875f23baf8ad8322120c1667143ba5281a48e6be42694be3911",
    }, n_users=5275, n_items=1513, n_groups=995, group_items=539),
    "mafengwos": Variant("group-rec/MafengwoS", {
        "groupMember.txt": "ec7c773996876156db5a9fe1f225b9de247bd65f9b5e71f70f4a42b8951134c8",
        "groupRatingTrain.txt": "13ec51d5c114ec0b1c1b25b407bbc1c76b655dd962578ca7f5e1a416d3f29e6b",
        "groupRatingTest.txt": "4aaef7aac6b0bda1fac7cc9869c304a4eb44fe0724cb344b5f19e5f8b8366f1f",
        "groupRatingNegative.txt": "e1230ef4ef54276bcb42e6ca7f0f553208025c778d0fd6e1d67b840c0ba592fc",
        "userRatingTrain.txt": "5a62db724926d676d1988182e0f0b1394274b92d1b3d8f0381860f642d364b3b",
        "userRatingTest.txt": "0b481f1e7889d576868713e0f7d03d2ec65c2fb1f8779012e0d71992890cb366",
        "userRatingNegative.txt": "8684166ddf70d09cd37b49cec8086b18c58ebb0a60c4ea5dfe20a5bb34188965",
        "itemSemantic.txt": "8727e8c8957aba495b7cf007d07cd6dec6e1c24c513f377bc58cf905c5a44fa4",
    }, n_users=11027, n_items=1236, n_groups=1215, group_items=None),
}


def variant_of(name: str) -> Variant:
    if name not in VARIANTS:
        raise DataError(f"unknown Mafengwo variant {name!r}; use one of {sorted(VARIANTS)}")
    return VARIANTS[name]


def fetch(root: Path, download_missing: bool, variant: str = "mafengwo") -> Path:
    """Return the variant's folder, downloading missing files from the pinned commit if allowed."""
    spec = variant_of(variant)
    return fetch_files(root, spec.folder, spec.sha256, f"{URL}/{spec.folder.split('/')[-1]}", variant,
                       download_missing)


def read_follow(path: Path, n_users: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """``user:followee followee ...`` -> (user, followee) rows; the user must be a dataset user."""
    frame = parse_table(path, sep=":", names=["user", "follows"], numeric=["user"])
    check_ids(path, frame, "user", n_users, "user")
    edges = frame.assign(followee=frame.follows.str.split()).explode("followee").reset_index(names="row")
    ok = edges.followee.fillna("").str.fullmatch(r"\d+")
    if not ok.all():
        at = edges[~ok].iloc[0]
        raise DataError(f"data file {path}, line {int(at.row) + 1}: followee {at.followee!r} of user {int(at.user)} "
                        f"is not an integer id; {RESTORE}")
    edges = edges[["user", "followee"]].astype("int64")
    stats = {"edges": len(edges), "outside_users": int((edges.followee >= n_users).sum()),
             "self": int((edges.user == edges.followee).sum()), "repeated": int(edges.duplicated().sum())}
    return edges.drop_duplicates(ignore_index=True), stats


def read_semantic(path: Path, n_items: int) -> pd.Series:
    """``name, item`` lines -> the item's name, indexed by item id (every id once)."""
    frame = parse_table(path, sep=",", names=["name", "item"], numeric=["item"])
    check_ids(path, frame, "item", n_items, "item")
    check_values(path, frame, "item", ~frame.item.duplicated(), "an item named once")
    return pd.Series(frame.name.str.strip().to_numpy(), index=pd.Index(frame.item, name="item"),
                     name="title").sort_index()


def load(root: str | None = None, download: bool = True, verify: bool = True, variant: str = "mafengwo") -> Dataset:
    spec = variant_of(variant)
    folder = fetch(resolve_root(root), download, variant)
    hashes = verify_all(folder, spec.folder, spec.sha256, verify)
    data, stats = read_consrec_files(folder, n_users=spec.n_users, n_items=spec.n_items, n_groups=spec.n_groups,
                                     scale=None)
    data.group_items = spec.group_items
    group = negative_defects(data.group_test, data.group_negatives, data.group_train, "group", spec.group_items)
    user = negative_defects(data.user_test, data.user_negatives, data.user_train, "user")
    covered = found_in_members(data.group_test, data.members, [data.user_train, data.user_test])
    repeats = sum(s["repeated_pairs"] for s in stats.values())
    notes = {
        "sizes": sizes_note(data),
        "implicit": "implicit feedback: interaction files have no rating column; ratings read as 1.0",
        "duplicates": f"{repeats} repeated (id, item) pairs in the training files",
        "group_negatives": "groupRatingNegative.txt: " + defects_note(group),
        "user_negatives": "userRatingNegative.txt: " + defects_note(user),
        "group_test_in_members": f"{covered} of {len(data.group_test)} group test items are among a member's "
                                 f"own (train or test) interactions",
    }
    titles = None
    if variant == "mafengwo":
        data.side["user_follow"], follow = read_follow(folder / "userFollow.txt", spec.n_users)
        notes["user_follow"] = (f"userFollow.txt: {follow['edges']} edges, {follow['outside_users']} to followees "
                                f"outside the user ids 0..{spec.n_users - 1} (kept), {follow['self']} self-follows "
                                f"(kept), {follow['repeated']} repeated edges dropped")
        notes["group_items"] = f"group files use item ids 0..{spec.group_items - 1} of 0..{spec.n_items - 1}"
    else:
        titles = read_semantic(folder / "itemSemantic.txt", spec.n_items)
        data.side["item_semantic"] = titles.rename("name").reset_index()
        notes["item_semantic"] = f"itemSemantic.txt: names of {len(titles)} items (Dataset.item_titles)"
    return to_dataset(variant, data, hashes, notes, item_titles=titles)
