"""Group splits of group-item datasets (CAMRa2011, Mafengwo, MafengwoS, Weeplaces): docs/protocol.md,
"Group recommendation: sampled and full ranking".

Both return one :class:`~benchmark.protocol.split.Split` whose user part is the files' user
train/test rows and whose ``group`` is a :class:`GroupFold`: the group train part, the test cases
(one held-out group item each, with its 100 sampled negatives) and a validation part carved from
the group train part.

* ``shipped`` (``split=shipped``, **legacy**): the files' own split as it is: shipped test cases,
  shipped negatives (with their defects: the test item among them, repeats, training positives),
  training rows that leak the test item kept.
* ``corrected`` (``split=corrected``, the default of these datasets): the shipped test cases; the
  training rows whose (group, item) pair is a test pair dropped (the leak); negatives re-drawn
  with the run's seed, uniformly without replacement from the group-item catalogue minus every known
  positive of the group (train or test).

* ``ephemeral`` (``split=ephemeral``, Weeplaces' default): GroupIM's shipped partition of the groups
  into train / val / test groups (disjoint: a test group never occurs in training). Each test group
  holds several held-out items (``GroupFold.heldout``) and there are no negatives: only the
  full-ranking protocol applies. The members' fold-in interactions (``val_ui_tr``, ``test_ui_tr``:
  visible at test time) are ``GroupFold.foldin``; validation is the shipped val groups.

* ``group_loo`` (``split=group_loo``): a seeded leave-one-out re-split for the datasets with negatives:
  each group's known positives (group train + shipped test rows, rating > 0 where rated) pooled, one
  positive per group with >= 2 held out with the run's seed, the rest training; negatives drawn as in
  ``corrected``. A different seed holds out different items.

Validation (shipped, corrected, group_loo): one training positive per group with at least 2, drawn with the seed, held out
with its own sampled negatives (the same sampler, excluding every known positive). Model selection
reads ``GroupFold.val``; the test part is read once, by the evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.core.errors import require
from benchmark.data.base import Dataset
from benchmark.data.group_item import N_NEGATIVES, GroupItemData
from benchmark.protocol.split import Split

TEST_STREAM, VAL_STREAM, CARVE_STREAM, LOO_STREAM = 0x7E57, 0x7A1, 0xCA7E, 0x1005
TUNE_CARVE_STREAM, TUNE_VAL_STREAM = 0x7C47, 0x7CA1  # the tuning fold's second carve (tuning_fold)


@dataclass(frozen=True, eq=False)
class GroupFold:
    """The group stream of a fold.

    train:          ``group, item[, rating]`` the group train part (validation rows included: what a
                    model without model selection fits on); ``fit`` = train minus the validation rows.
    test:           ``group, item[, rating]``, one row per case (the held-out positive; ``rating``: its group
                    rating where the dataset has them, CAMRa2011); ``negatives`` row k =
                    case k's sampled negatives, int64 (n_cases, 100).
    val, val_negatives: one held-out training positive per group with >= 2, and its negatives.
    n_items:        the group-item catalogue (items 0..n_items-1) candidates come from.
    label:          ``corrected``, ``shipped (legacy)`` or ``ephemeral (shipped groups)``; ``stats``: counts
                    logged with the run.
    heldout:        True where each test group has several held-out items and no negatives (``ephemeral``:
                    ``negatives`` and ``val_negatives`` are None; ``val`` are the shipped validation groups).
    foldin:         ``user, item`` interactions of users outside the user-train part that are visible at test
                    time (Weeplaces' fold-in parts), else None.
    """

    train: pd.DataFrame
    fit: pd.DataFrame
    test: pd.DataFrame
    negatives: np.ndarray | None
    val: pd.DataFrame
    val_negatives: np.ndarray | None
    n_items: int
    label: str
    legacy: bool
    stats: dict[str, float] = field(default_factory=dict)
    heldout: bool = False
    foldin: pd.DataFrame | None = None


def positives(frame: pd.DataFrame) -> pd.DataFrame:
    """The positive ``group, item`` rows: rating > 0 where there is a rating (CAMRa2011's 0 is no
    interaction, the rule of the AGREE/ConsRec loaders), every row of implicit data."""
    return frame[frame["rating"] > 0] if "rating" in frame else frame


def pair_codes(ids, items, n_items: int) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64) * int(n_items) + np.asarray(items, dtype=np.int64)


def visible_user_items(user_train: pd.DataFrame, fold: GroupFold) -> pd.DataFrame:
    """The ``user, item`` interactions visible when a group is tested: the positives of the user-train
    part and, on Weeplaces, the fold-in parts (``GroupFold.foldin``); distinct pairs."""
    parts = [positives(user_train)[["user", "item"]]]
    if fold.foldin is not None:
        parts.append(fold.foldin[["user", "item"]])
    return pd.concat(parts, ignore_index=True).drop_duplicates(ignore_index=True).astype("int64")


def member_item_codes(members: pd.DataFrame, user_items: pd.DataFrame, base: int) -> np.ndarray:
    """Sorted distinct pair codes ``group * base + item`` of the items some member of a group of
    ``members`` (``group, user``) has in ``user_items`` (``user, item``): one merge, no loop."""
    joined = members[["group", "user"]].merge(user_items[["user", "item"]], on="user")
    return np.unique(pair_codes(joined["group"], joined["item"], base))


def sample_negatives(ids: np.ndarray, known: np.ndarray, n_items: int, rng: np.random.Generator,
                     count: int = N_NEGATIVES) -> np.ndarray:
    """``count`` distinct items per row of ``ids``, uniform over 0..n_items-1 minus the row's known
    positives (``known``: sorted pair codes ``id * n_items + item``), in draw order.

    Rejection sampling over arrays: every pending row draws a block, rejected draws (a known positive,
    an item already drawn for the row) are dropped, and rows still short draw again (rounds, never a
    loop over rows)."""
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    out = np.full((n, count), -1, dtype=np.int64)
    filled = np.zeros(n, dtype=np.int64)
    pending = np.arange(n)
    width = 2 * count
    while len(pending):
        draws = rng.integers(0, n_items, size=(len(pending), width))
        rows = np.repeat(pending, width)
        flat = draws.ravel()
        ok = ~np.isin(pair_codes(ids[rows], flat, n_items), known)
        # already drawn for that row in an earlier round
        taken = out[pending]
        ok &= ~(flat[:, None] == np.repeat(taken, width, axis=0)).any(axis=1) if filled[pending].any() else ok
        # repeats within this round: keep each (row, item)'s first draw
        code = rows * n_items + flat
        first = np.zeros(len(flat), dtype=bool)
        first[np.unique(code, return_index=True)[1]] = True
        ok &= first
        ok = ok.reshape(len(pending), width)
        slot = filled[pending][:, None] + np.cumsum(ok, axis=1) - 1
        keep = ok & (slot < count)
        r, c = np.nonzero(keep)
        out[pending[r], slot[r, c]] = draws[r, c]
        filled[pending] = np.minimum(count, filled[pending] + ok.sum(axis=1))
        pending = pending[filled[pending] < count]
    return out


def carve_validation(train: pd.DataFrame, seed: int, stream: int = CARVE_STREAM) -> np.ndarray:
    """Boolean mask of ``train``'s validation rows: one positive per group with >= 2 positives,
    drawn with ``seed`` (and ``stream``: the tuning fold's second carve draws its own)."""
    pos = positives(train)
    rng = np.random.default_rng([int(seed), int(stream)])
    key = rng.random(len(pos))
    frame = pd.DataFrame({"group": pos["group"].to_numpy(), "key": key, "row": pos.index.to_numpy()})
    sizes = frame.groupby("group")["row"].transform("size").to_numpy()
    frame = frame[sizes >= 2]
    chosen = frame.sort_values(["group", "key"], kind="stable").drop_duplicates("group")["row"].to_numpy()
    mask = np.zeros(len(train), dtype=bool)
    mask[train.index.get_indexer(chosen)] = True
    return mask


def _user_part(data: GroupItemData, dataset: Dataset, fold_group: GroupFold) -> list[Split]:
    test = data.user_test[["user", "item"]].copy()
    test["rating"] = data.user_test["rating"].to_numpy(float) if "rating" in data.user_test else 1.0
    return [Split(0, dataset.ratings, test, group=fold_group)]


def _group_data(dataset: Dataset | None) -> GroupItemData:
    data = getattr(dataset, "group_item", None)
    require(data is not None and data.group_negatives is not None,
            f"split=shipped, split=corrected and split=group_loo need a group-item dataset with test negatives "
            f"(dataset=camra2011, mafengwo, mafengwos), not {getattr(dataset, 'name', None)}; use split=holdout "
            f"(user-level data) or split=ephemeral (dataset=weeplaces)")
    return data


def _fold(data: GroupItemData, train: pd.DataFrame, test: pd.DataFrame, negatives: np.ndarray, seed: int,
          label: str, legacy: bool, stats: dict[str, float]) -> GroupFold:
    n_items = int(data.group_items or data.n_items)
    train = train.reset_index(drop=True)
    mask = carve_validation(train, seed)
    val = train[mask].reset_index(drop=True)
    known = np.unique(np.concatenate([pair_codes(*positives(f)[["group", "item"]].to_numpy().T, n_items)
                                      for f in (train, test[["group", "item"]])]))  # every test case is a positive
    val_negatives = sample_negatives(val["group"].to_numpy(), known, n_items,
                                     np.random.default_rng([int(seed), VAL_STREAM]))
    stats = {**stats, "n_test_cases": float(len(test)), "n_test_groups": float(test["group"].nunique()),
             "n_val_cases": float(len(val)), "n_items": float(n_items)}
    return GroupFold(train=train, fit=train[~mask].reset_index(drop=True), test=test.reset_index(drop=True),
                     negatives=np.asarray(negatives, dtype=np.int64), val=val, val_negatives=val_negatives,
                     n_items=n_items, label=label, legacy=legacy, stats=stats)


def leaked_rows(train: pd.DataFrame, test: pd.DataFrame, n_items: int) -> np.ndarray:
    """Boolean mask of the training rows whose (group, item) pair is a test pair."""
    return np.isin(pair_codes(train["group"], train["item"], n_items), pair_codes(test["group"], test["item"], n_items))


def shipped(ratings: pd.DataFrame, seed: int = 0, dataset: Dataset | None = None) -> list[Split]:
    """The files' own split, labelled legacy: shipped cases and negatives, nothing corrected."""
    data = _group_data(dataset)
    test = data.group_test[["group", "item"]]
    n_items = int(max(data.n_items, data.group_items or 0))
    stats = {"n_leaked_train_rows": float(leaked_rows(data.group_train, test, n_items).sum())}
    fold = _fold(data, data.group_train, _with_rating(test, data.group_test), data.group_negatives, seed,
                 "shipped (legacy)", True, stats)
    return _user_part(data, dataset, fold)


def corrected(ratings: pd.DataFrame, seed: int = 0, dataset: Dataset | None = None) -> list[Split]:
    """Shipped test pairs; leaking training rows dropped; negatives re-drawn with ``seed``."""
    data = _group_data(dataset)
    test = data.group_test[["group", "item"]]
    n_items = int(data.group_items or data.n_items)
    outside = (test["item"] >= n_items).sum() + (data.group_train["item"] >= n_items).sum()
    require(outside == 0, f"dataset {dataset.name}: {outside} group rows outside the group-item catalogue 0..{n_items - 1}")
    leak = leaked_rows(data.group_train, test, n_items)
    train = data.group_train[~leak]
    known = np.unique(np.concatenate([pair_codes(*positives(f)[["group", "item"]].to_numpy().T, n_items)
                                      for f in (train, test)]))
    _check_negatives_fit(known, n_items, dataset)
    negatives = sample_negatives(test["group"].to_numpy(), known, n_items,
                                 np.random.default_rng([int(seed), TEST_STREAM]))
    fold = _fold(data, train, _with_rating(test, data.group_test), negatives, seed, "corrected", False,
                 {"n_leaked_train_rows": float(leak.sum())})
    return _user_part(data, dataset, fold)


def _with_rating(test: pd.DataFrame, source: pd.DataFrame) -> pd.DataFrame:
    """``test`` (rows of ``source``) with each case's own group rating where ``source`` has one (the
    group-level rating prediction reads it: benchmark/evaluation/group_item.py, ``group_rating``)."""
    return test.assign(rating=source.loc[test.index, "rating"].to_numpy(float)) if "rating" in source else test


def _check_negatives_fit(known: np.ndarray, n_items: int, dataset: Dataset) -> None:
    most = np.bincount(known // n_items).max(initial=0)
    require(n_items - most >= N_NEGATIVES, f"dataset {dataset.name}: a group has only {n_items - most} items "
                                           f"without a known positive, fewer than {N_NEGATIVES} negatives")


def leave_one_out(pool: pd.DataFrame, seed: int) -> np.ndarray:
    """Boolean mask of ``pool``'s held-out rows: one positive per group with >= 2 positives, drawn
    with ``seed`` (a random key per row, the smallest key of each group: no loop over groups)."""
    pos = positives(pool)
    key = np.random.default_rng([int(seed), LOO_STREAM]).random(len(pos))
    groups = pos["group"].to_numpy()
    eligible = np.bincount(groups)[groups] >= 2
    rows, groups, key = pos.index.to_numpy()[eligible], groups[eligible], key[eligible]
    order = np.lexsort((key, groups))
    first = np.ones(len(order), dtype=bool)
    first[1:] = groups[order][1:] != groups[order][:-1]
    mask = np.zeros(len(pool), dtype=bool)
    mask[pool.index.get_indexer(rows[order][first])] = True
    return mask


def group_loo(ratings: pd.DataFrame, seed: int = 0, dataset: Dataset | None = None) -> list[Split]:
    """A seeded leave-one-out re-split: the group train rows and the shipped test positives pooled (one
    row per pair), one positive per group with >= 2 held out with ``seed``, the rest training; negatives
    drawn with ``seed`` from the items without a known positive of the group."""
    data = _group_data(dataset)
    n_items = int(data.group_items or data.n_items)
    columns = ["group", "item"] + (["rating"] if "rating" in data.group_train else [])
    test_rows = positives(data.group_test)
    if "rating" in columns and "rating" not in test_rows:
        test_rows = test_rows.assign(rating=1.0)
    pool = pd.concat([data.group_train[columns], test_rows[columns]], ignore_index=True)
    outside = int((pool["item"] >= n_items).sum())
    require(outside == 0, f"dataset {dataset.name}: {outside} group rows outside the group-item catalogue 0..{n_items - 1}")
    if "rating" in pool:  # a pair in both parts (or repeated in the test file): its positive, highest-rated row
        pool = pool.sort_values("rating", ascending=False, kind="stable")
    pool = pool.drop_duplicates(["group", "item"]).sort_values(["group", "item"], kind="stable").reset_index(drop=True)
    held = leave_one_out(pool, seed)
    test, train = pool.loc[held, columns].reset_index(drop=True), pool[~held]  # rating: the pair's kept row's
    known = np.unique(pair_codes(*positives(pool)[["group", "item"]].to_numpy().T, n_items))
    _check_negatives_fit(known, n_items, dataset)
    negatives = sample_negatives(test["group"].to_numpy(), known, n_items,
                                 np.random.default_rng([int(seed), TEST_STREAM]))
    fold = _fold(data, train, test, negatives, seed, "group_loo", False,
                 {"loo": 1.0, "n_pooled_positives": float(len(positives(pool)))})
    return _user_part(data, dataset, fold)


def ephemeral(ratings: pd.DataFrame, seed: int = 0, dataset: Dataset | None = None) -> list[Split]:
    """GroupIM's shipped partition of ephemeral groups (Weeplaces): train / val / test groups, disjoint;
    every item of a test group is held out (full ranking only: no negatives). ``seed`` is unused (the
    partition is shipped)."""
    data = getattr(dataset, "group_item", None)
    require(data is not None and data.group_val is not None and data.group_negatives is None,
            f"split=ephemeral needs a group-item dataset with shipped train/val/test groups and no negatives "
            f"(dataset=weeplaces), not {getattr(dataset, 'name', None)}; use split=corrected")
    train, val, test = (frame[["group", "item"]].reset_index(drop=True)
                        for frame in (data.group_train, data.group_val, data.group_test))
    shared = np.intersect1d(test["group"].unique(), np.union1d(train["group"].unique(), val["group"].unique()))
    require(len(shared) == 0, f"dataset {dataset.name}: {len(shared)} test groups also occur in training or validation")
    foldin = pd.concat([f[["user", "item"]] for f in (data.user_val_foldin, data.user_test_foldin) if f is not None],
                       ignore_index=True)
    stats = {"n_test_cases": float(len(test)), "n_test_groups": float(test["group"].nunique()),
             "n_val_cases": float(len(val)), "n_val_groups": float(val["group"].nunique()),
             "n_items": float(data.n_items)}
    fold = GroupFold(train=train, fit=train, test=test, negatives=None, val=val, val_negatives=None,
                     n_items=int(data.n_items), label="ephemeral (shipped groups)", legacy=False, stats=stats,
                     heldout=True, foldin=foldin)
    return _user_part(data, dataset, fold)


def tuning_fold(fold: GroupFold, seed: int) -> GroupFold:
    """The group fold a tuning trial fits and is scored on (benchmark/sweeps/tune.py): the outer fold's
    validation cases become its test cases, and its own validation part, what the trial's model
    early-stops on, is carved again from the outer fitting rows. The outer test part is never read:
    neither its cases nor its negatives nor its items enter the carve or the negatives' exclusions.

    * sampled (``fold.val_negatives``): train = the outer ``fit`` rows; one positive per group with >= 2
      held out with ``seed`` (a stream of its own), with 100 negatives drawn from the catalogue minus
      the group's positives in that training part and in the outer validation cases;
    * ephemeral groups (``fold.heldout``): the outer validation groups are the test groups; as many
      training groups as there are validation groups per training group (the outer ratio), drawn with
      ``seed``, become the validation groups (disjoint from the rest, as the shipped ones are)."""
    if fold.heldout:
        groups = np.unique(fold.train["group"].to_numpy(np.int64))
        share = fold.val["group"].nunique() / max(1, fold.val["group"].nunique() + len(groups))
        n_val = min(len(groups) - 1, max(1, int(round(share * len(groups)))))
        require(n_val >= 1, "tuning on ephemeral groups needs at least two training groups")
        chosen = np.random.default_rng([int(seed), TUNE_CARVE_STREAM]).choice(groups, n_val, replace=False)
        held = fold.train["group"].isin(chosen).to_numpy()
        train = fold.train[~held].reset_index(drop=True)
        return GroupFold(train=train, fit=train, test=fold.val.reset_index(drop=True), negatives=None,
                         val=fold.train[held].reset_index(drop=True), val_negatives=None, n_items=fold.n_items,
                         label=f"{fold.label}, tuning fold", legacy=fold.legacy, heldout=True, foldin=fold.foldin,
                         stats={"n_test_cases": float(len(fold.val)), "n_val_cases": float(held.sum()),
                                "n_val_groups": float(n_val), "n_items": float(fold.n_items)})
    require(fold.val_negatives is not None and len(fold.val), "the group fold has no validation cases to tune on")
    train = fold.fit.reset_index(drop=True)
    mask = carve_validation(train, seed, TUNE_CARVE_STREAM)
    val = train[mask].reset_index(drop=True)
    known = np.unique(np.concatenate([pair_codes(*positives(f)[["group", "item"]].to_numpy().T, fold.n_items)
                                      for f in (train, fold.val)]))
    val_negatives = sample_negatives(val["group"].to_numpy(), known, fold.n_items,
                                     np.random.default_rng([int(seed), TUNE_VAL_STREAM]))
    return GroupFold(train=train, fit=train[~mask].reset_index(drop=True), test=fold.val.reset_index(drop=True),
                     negatives=fold.val_negatives, val=val, val_negatives=val_negatives, n_items=fold.n_items,
                     label=f"{fold.label}, tuning fold", legacy=fold.legacy, foldin=fold.foldin,
                     stats={"n_test_cases": float(len(fold.val)), "n_val_cases": float(len(val)),
                            "n_items": float(fold.n_items)})
