"""CAMRa2011 (CAMRa 2011 challenge, households rating movies) as processed by AGREE and ConsRec.

Upstream: ``data/CAMRa2011/`` of the public GitHub repository FDUDSDE/WWW2023ConsRec at commit
d57dd9857c44856a63078adaf388ff89ff3e3fbe (byte-identical to LianHaiMiao/Attentive-Group-Recommendation).
290 groups (households; 272 of size 2, at most 4), 602 users each in exactly one group, item ids
0-7709; explicit ratings 0-100 in steps of 5. Quirks (each also in docs/protocol.md, "Group–item
datasets", and in the run's ``dataset_notes``):
  * groupRatingTrain.txt has 143,618 rows but 113,914 distinct (group, item) pairs: 28,723 pairs
    occur 2-4 times (29,704 extra rows) and 25,033 of them (87 %) disagree on the rating (median
    spread 15 points, up to 100); only 3,980 extra rows are exact copies. Rule: **one row per pair,
    the mean rating** (as for ITM-Rec's repeated pairs). The file has no timestamps, so "first" or
    "last" in file order would pick by an order that means nothing; the mean keeps the pair a
    positive exactly when any of its rows is (rating > 0, the AGREE/ConsRec reading), so the
    implicit view of the data is unchanged; 14,005 pair means fall between the 5-point steps.
  * groupRatingTest.txt repeats 6 (group, item) pairs with different ratings: test rows are kept
    as shipped, each aligned with its line of groupRatingNegative.txt.
  * the shipped split leaks: 576 of the 1,450 group test pairs occur in the group training file,
    571 of them with a rating > 0 (a training positive); 1,380 of the 1,450 group negative lists
    (95.2 %) hold a training positive of the same group and 24 hold the test item itself; every
    group test item is a user-test item of a member. Counted by ``negative_defects``, not refused.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.data.base import Dataset, resolve_root
from benchmark.data.group_item import (
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
URL = f"https://raw.githubusercontent.com/FDUDSDE/WWW2023ConsRec/{COMMIT}/data/CAMRa2011"
FOLDER = "group-rec/CAMRa2011"
SHA256 = {
    "groupMember.txt": "63e0d9958a78e6d5c56964faf242f80ec4e70e68cc838a57469d35caa6f99ba1",
    "groupRatingTrain.txt": "12e532cb1fb693473da41f04099d90956644fc979be919f7acae23935529994a",
    "groupRatingTest.txt": "c546e70efbf212bfcee11effe5fb8f2346a3cf4b9386304f6feb4747ec1e4a1f",
    "groupRatingNegative.txt": "41b3c47ee7dfab1a85414f064e5b667e261c58632e3e1d7384a19359fc62f006",
    "userRatingTrain.txt": "5f1fcbf8fc5e172704d587031cfff851f8b0ddeac949a79af3ebdb07a36442df",
    "userRatingTest.txt": "910ae9bd76387525ca1dea91a339697ae4aa2ec2ea31384125c915846b480d00",
    "userRatingNegative.txt": "1f43a434d8336dd0d16100788af02bfe1f04c8d41941aef60f95f9f25ecf0b06",
}
N_USERS, N_ITEMS, N_GROUPS = 602, 7710, 290
RATING_SCALE = (0.0, 100.0)


def fetch(root: Path, download_missing: bool) -> Path:
    """Return the CAMRa2011 folder, downloading missing files from the pinned commit if allowed."""
    return fetch_files(root, FOLDER, SHA256, URL, "camra2011", download_missing)


def load(root: str | None = None, download: bool = True, verify: bool = True) -> Dataset:
    folder = fetch(resolve_root(root), download)
    hashes = verify_all(folder, FOLDER, SHA256, verify)
    data, stats = read_consrec_files(folder, n_users=N_USERS, n_items=N_ITEMS, n_groups=N_GROUPS,
                                     scale=RATING_SCALE)
    dup = stats["groupRatingTrain.txt"]
    test_repeats = int(data.group_test.duplicated(["group", "item"]).sum())
    group = negative_defects(data.group_test, data.group_negatives, data.group_train, "group")
    user = negative_defects(data.user_test, data.user_negatives, data.user_train, "user")
    in_file = len(data.group_test.merge(data.group_train[["group", "item"]], on=["group", "item"]))
    covered = found_in_members(data.group_test, data.members, [data.user_test])
    notes = {
        "sizes": sizes_note(data),
        "group_train_duplicates": (
            f"groupRatingTrain.txt: {dup['rows']} rows, {dup['pairs']} distinct (group, item) pairs; "
            f"{dup['repeated_pairs']} pairs repeat, {dup['disagreeing_pairs']} of them with different "
            f"ratings ({dup['exact_repeated_rows']} exact duplicate rows): one row per pair, the mean rating"),
        "user_train_duplicates": f"userRatingTrain.txt: {stats['userRatingTrain.txt']['repeated_pairs']} "
                                 f"repeated (user, item) pairs",
        "group_test_repeats": f"groupRatingTest.txt repeats {test_repeats} (group, item) pairs; test rows are "
                              f"kept as shipped, aligned with the negative lists",
        "group_test_in_train": f"{in_file} of {len(data.group_test)} group test pairs occur in groupRatingTrain.txt, "
                               f"{group['test_in_train']} of them with a rating > 0",
        "group_negatives": "groupRatingNegative.txt: " + defects_note(group),
        "user_negatives": "userRatingNegative.txt: " + defects_note(user),
        "group_test_in_member_tests": f"{covered} of {len(data.group_test)} group test items are user-test "
                                      f"items of a member",
        "positives": "a training positive is a pair with rating > 0 (the AGREE/ConsRec reading of the files)",
    }
    return to_dataset("camra2011", data, hashes, notes)
