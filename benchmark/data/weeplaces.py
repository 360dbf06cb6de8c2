"""Weeplaces (check-ins of friends visiting places together) as processed by GroupIM (SIGIR 2020).

Upstream: ``data/weeplaces/`` of the public GitHub repository CrowdDynamicsLab/GroupIM at commit
899890e3c2486ffe40b202718e99cd37b8a85502: headed CSVs, implicit feedback (rating 1.0).
  * ``group_users.csv`` (group, user): 22,733 groups of 2-34 members, 8,550 distinct members; the
    user column is written as floats (``516.0``): read as integers, a fractional id is refused.
  * ``train_ui.csv`` (users 0-6049) -> user_train; ``val_ui_tr``/``val_ui_te`` (users 6050-6913)
    -> user_val_foldin/user_val; ``test_ui_tr``/``test_ui_te`` (users 6914-8642) ->
    user_test_foldin/user_test: GroupIM's strong generalisation, the fold-in part of a held-out
    user is observed, the ``_te`` part is the truth. 8,643 user ids (93 have interactions but no group).
  * ``train_gi``/``val_gi``/``test_gi`` (group, item) -> group_train/group_val/group_test; the three
    group sets are disjoint (15,913 / 2,273 / 4,547 groups). 25,081 item ids, no sampled negatives.
  * leak of the shipped split: 98.2 % of group test rows (13,592 of 13,846) name an item that a
    member interacted with in the observed parts (train_ui, val_ui_tr, test_ui_tr), and every one
    (100 %) once the held-out ``_te`` parts are counted too. Measured here, stated in notes.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.data.base import Dataset, parse_table, resolve_root
from benchmark.data.group_item import (
    GroupItemData,
    check_groups_known,
    check_ids,
    dedupe_pairs,
    fetch_files,
    found_in_members,
    read_csv_pairs,
    sizes_note,
    to_dataset,
    verify_all,
)

COMMIT = "899890e3c2486ffe40b202718e99cd37b8a85502"
URL = f"https://raw.githubusercontent.com/CrowdDynamicsLab/GroupIM/{COMMIT}/data/weeplaces"
FOLDER = "group-rec/weeplaces"
SHA256 = {
    "group_users.csv": "4c09d4e97f68e4cb075c6c452645288e8bfd1066a6fffc6844de29241c343891",
    "train_ui.csv": "921cf8c094c95ae6e17b80f9574f5402d4cb1f7f37a25a1a4ed99888066c2293",
    "val_ui_tr.csv": "63de80c0b0bac829ed094400b3a429dba5f8f0b4233fb7d82355157a00ce863e",
    "val_ui_te.csv": "09f511255a2e43aecfa841274c36ca1e0c77a6d4f1b8f550300de70c4cd03c1f",
    "test_ui_tr.csv": "705bdc7071523cdfbf32de73c5d1ecacd5dde314ac4bbec53b682893cc1d390f",
    "test_ui_te.csv": "785df25b1b40b71f3e9bed3caa16a6a7f72bac4145f8de8034ee7a6b094d3cdc",
    "train_gi.csv": "25379860a3c64f5c70fed3c87036445ae10149e11daa5ca31eabc006de7ba120",
    "val_gi.csv": "34a5a4d261618d6781e998c8749e194aec5f88dbee6b0f5a76e44ac313e421dc",
    "test_gi.csv": "a36e907fc5728c2c16bc91a21cfff02d1ffcce9ae876934f3a6a01b5b5d30349",
}
N_USERS, N_ITEMS, N_GROUPS = 8643, 25081, 22733
USER_PARTS = {"train_ui.csv": "user_train", "val_ui_tr.csv": "user_val_foldin", "val_ui_te.csv": "user_val",
              "test_ui_tr.csv": "user_test_foldin", "test_ui_te.csv": "user_test"}
GROUP_PARTS = {"train_gi.csv": "group_train", "val_gi.csv": "group_val", "test_gi.csv": "group_test"}


def fetch(root: Path, download_missing: bool) -> Path:
    """Return the weeplaces folder, downloading missing files from the pinned commit if allowed."""
    return fetch_files(root, FOLDER, SHA256, URL, "weeplaces", download_missing)


def load(root: str | None = None, download: bool = True, verify: bool = True) -> Dataset:
    folder = fetch(resolve_root(root), download)
    hashes = verify_all(folder, FOLDER, SHA256, verify)
    path = folder / "group_users.csv"
    members = parse_table(path, sep=",", header=True, names=["group", "user"], numeric=["group", "user"])
    check_ids(path, members, "group", N_GROUPS, "group", first_line=2)
    check_ids(path, members, "user", N_USERS, "user", first_line=2)
    n_member_rows = len(members)
    members = members.drop_duplicates(ignore_index=True)
    parts, repeats = {}, 0
    for name, part in USER_PARTS.items():
        parts[part], stats = dedupe_pairs(read_csv_pairs(folder / name, "user", n_ids=N_USERS, n_items=N_ITEMS), "user")
        repeats += stats["repeated_pairs"]
    for name, part in GROUP_PARTS.items():
        frame = read_csv_pairs(folder / name, "group", n_ids=N_GROUPS, n_items=N_ITEMS)
        check_groups_known(folder / name, frame, members, "group_users.csv", first_line=2)
        parts[part], stats = dedupe_pairs(frame, "group")
        repeats += stats["repeated_pairs"]
    data = GroupItemData(members=members, n_users=N_USERS, n_items=N_ITEMS, n_groups=N_GROUPS, implicit=True,
                         **parts)

    group_sets = [set(parts[p].group) for p in GROUP_PARTS.values()]
    shared_groups = sum(len(a & b) for i, a in enumerate(group_sets) for b in group_sets[i + 1:])
    user_sets = [set(parts[p].user) for p in ("user_train", "user_val_foldin", "user_test_foldin")]
    shared_users = sum(len(a & b) for i, a in enumerate(user_sets) for b in user_sets[i + 1:])
    observed = [data.user_train, data.user_val_foldin, data.user_test_foldin]
    seen = found_in_members(data.group_test, members, observed)
    seen_all = found_in_members(data.group_test, members, [*observed, data.user_val, data.user_test])
    total = len(data.group_test)
    interacting = set().union(*(set(parts[p].user) for p in USER_PARTS.values()))
    notes = {
        "sizes": sizes_note(data) + f"; group val {len(data.group_val)} rows",
        "implicit": "implicit feedback: ratings read as 1.0; no sampled negatives are shipped",
        "float_user_ids": "group_users.csv writes user ids as floats (516.0): read as integers",
        "duplicates": f"{n_member_rows - len(members)} repeated membership rows, {repeats} repeated (id, item) "
                      f"pairs in the interaction files",
        "disjoint_parts": f"train/val/test groups share {shared_groups} groups; train/val/test users share "
                          f"{shared_users} users (fold-in users are held-out users)",
        "users_without_group": f"{len(interacting - set(members.user))} users with interactions are in no group",
        "group_test_in_members": f"{seen} of {total} group test rows ({100 * seen / total:.1f} %) name an item a "
                                 f"member interacted with in train_ui/val_ui_tr/test_ui_tr; {seen_all} "
                                 f"({100 * seen_all / total:.1f} %) counting the held-out _te parts too",
    }
    return to_dataset("weeplaces", data, hashes, notes)
