"""Folds: the train, validation and test parts of one split, each carved once and read by everyone.

A split (``split.py``) deals ratings to training and test parts. Two readers then need a
validation part of the training part: the trainer (early stopping, ``trainer.val_size``) and
tuning (scoring trials, ``tune.val_size``). Each used to carve its own with
:func:`benchmark.protocol.split.holdout_mask`; now a :class:`Fold` carves it, once per fraction,
and both read the same object. The carve is the one they made (the per-user hold-out rule, the
run's seed, rows in the training part's order), so every fit sees the rows and RNG draws it saw
before; two equal fractions are one carve, two different ones two deterministic carves.

A fold is made in one of three ways:
  * ``Fold.from_split(split, seed)``: a split's fold; validation carved from its training part;
  * ``Fold.carved(train, seed)``: a bare training frame (a model fitted directly, outside a job);
  * ``Fold.predefined(train, val, test)``: parts read from shipped files (a dataset's own split, the
    authors' split: Cornac's ``PredefinedSplit``): validation is the shipped part, whatever the fraction.

``fold.inner(size)`` is the fold a tuning trial works on: its training part is the fitting rows of
``validation(size)``, its test part the validation rows (the outer test part is never read).

A group-item dataset adds a group stream: ``fold.group`` (benchmark/protocol/group_split.py,
``GroupFold``) holds the group train part, its validation part (one held-out positive per group,
with sampled negatives, carved once by the split) and the test cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.protocol.split import Split, holdout_mask


@dataclass(frozen=True, eq=False)
class Holdout:
    """A training part dealt to fitting and validation rows. ``mask`` marks the validation rows of
    the fold's training frame (in its row order), so a model that encodes the whole training part
    once can take both parts from it."""

    fit: pd.DataFrame
    val: pd.DataFrame
    mask: np.ndarray

    @property
    def empty(self) -> bool:
        """True when either part has no rows (every user with one rating, or a tiny fraction)."""
        return len(self.fit) == 0 or len(self.val) == 0


class Fold:
    """One fold of a split: ``train`` and ``test`` frames, and validation parts of ``train`` carved
    on demand, once per fraction (``validation``). Compare folds by identity: a fold is the
    object its readers share."""

    def __init__(self, train: pd.DataFrame, test: pd.DataFrame | None = None, seed: int = 0, number: int = 0,
                 predefined: Holdout | None = None, group=None):
        self.train = train
        self.group = group  # a group-item dataset's group stream (group_split.GroupFold: train, val, test), else None
        self.test = test
        self.seed = int(seed)
        self.number = int(number)
        self._predefined = predefined
        self._carved: dict[float, Holdout] = {}

    # ---- the ways to make a fold -------------------------------------------------------------
    @classmethod
    def from_split(cls, split: Split, seed: int) -> "Fold":
        return cls(split.train, split.test, seed=seed, number=split.fold, group=split.group)

    @classmethod
    def carved(cls, train: pd.DataFrame, seed: int) -> "Fold":
        """A fold of a bare training frame (no test part): validation carved with ``seed``."""
        return cls(train, None, seed=seed)

    @classmethod
    def predefined(cls, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame | None = None,
                   number: int = 0) -> "Fold":
        """Shipped parts: ``train`` + ``val`` make the training part (what a model without early stopping
        fits on), ``val`` is the validation part of every fraction."""
        whole = pd.concat([train, val], ignore_index=True)
        mask = np.r_[np.zeros(len(train), dtype=bool), np.ones(len(val), dtype=bool)]
        part = Holdout(train.reset_index(drop=True), val.reset_index(drop=True), mask)
        return cls(whole, test, number=number, predefined=part)

    # ---- the parts ---------------------------------------------------------------------------
    def validation(self, size: float) -> Holdout:
        """The training part dealt to fitting and validation rows: ``round(size * n)`` of each user's n
        training ratings (at most n - 1) drawn with the fold's seed (``holdout_mask``), carved on the
        first call for ``size`` and the same object afterwards. A predefined fold returns its shipped part."""
        if self._predefined is not None:
            return self._predefined
        key = float(size)
        if key not in self._carved:
            mask = holdout_mask(self.train, key, self.seed)
            self._carved[key] = Holdout(self.train[~mask].reset_index(drop=True),
                                        self.train[mask].reset_index(drop=True), mask)
        return self._carved[key]

    def inner(self, size: float) -> "Fold":
        """The fold a tuning trial fits and is scored on: train = the fitting rows of ``validation(size)``,
        test = its validation rows; the trial's own early-stopping part is carved from that training
        part with the same seed (as the trainer carved it from the rows it was given)."""
        part = self.validation(size)
        return Fold(part.fit, part.val, seed=self.seed, number=self.number)

    def __repr__(self) -> str:
        test = "none" if self.test is None else len(self.test)
        kind = "predefined" if self._predefined is not None else f"carved, seed {self.seed}"
        return f"Fold({self.number}: train {len(self.train)}, test {test}, validation {kind})"
