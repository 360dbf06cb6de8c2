"""Folds (benchmark/protocol/folds.py): the validation part is carved once, by the fold, with the rule
the trainer and tuning used before, and both read that one object; a predefined split wraps shipped parts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmark.protocol.folds as folds
import benchmark.sweeps.tune as tune
from benchmark.core.config import instantiate
from benchmark.core.errors import ConfigError
from benchmark.data.synthetic import load
from benchmark.protocol.folds import Fold
from benchmark.protocol.grouping import kmeans
from benchmark.protocol.split import holdout, holdout_mask
from models.base import FitContext
from models.dmtl import DMTL
from models.neural_mf import NeuralMF

REPO = Path(__file__).resolve().parent.parent
TRAINER = {"lr": 0.003, "weight_decay": 0.0, "batch_size": 256, "max_epochs": 2, "patience": 3, "val_size": 0.1,
           "device": "cpu", "progress": False, "sparse_embeddings": False}
SIZES = {"user_dim": 8, "item_dim": 8, "shared_dim": 8}


@pytest.fixture(scope="module")
def data():
    dataset = load(n_users=120, n_items=60, n_ratings=2400, n_groups=4)
    (split,) = holdout(dataset.ratings, test_size=0.2, seed=3)
    return dataset, split, kmeans(dataset, split.train, k=4, seed=3)


@pytest.fixture
def carves(monkeypatch):
    """Every call of the hold-out rule through the fold module (the only caller outside the split)."""
    calls = []
    monkeypatch.setattr(folds, "holdout_mask", lambda *args: calls.append(args[1:]) or holdout_mask(*args))
    return calls


def test_validation_is_the_old_carve_and_carved_once_per_fraction(data, carves):
    _, split, _ = data
    fold = Fold.from_split(split, seed=3)
    part = fold.validation(0.1)
    mask = holdout_mask(split.train, 0.1, 3)  # what the trainer and tuning each carved before
    np.testing.assert_array_equal(part.mask, mask)
    pd.testing.assert_frame_equal(part.fit, split.train[~mask].reset_index(drop=True))
    pd.testing.assert_frame_equal(part.val, split.train[mask].reset_index(drop=True))
    assert fold.validation(0.1) is part and fold.validation(0.2) is not part and fold.validation(0.2) is fold.validation(0.2)
    assert carves == [(0.1, 3), (0.2, 3)]
    inner = fold.inner(0.1)
    assert inner.train is part.fit and inner.test is part.val and inner.seed == 3


def test_trainer_reads_the_folds_part_and_never_carves_its_own(data, carves):
    dataset, split, groups = data
    fold = Fold.from_split(split, seed=3)
    context = FitContext(dataset, groups, seed=3, fold=fold)
    for model in (NeuralMF(factors=4, trainer=TRAINER, seed=3), DMTL(sizes=SIZES, trainer=TRAINER, seed=3)):
        model.fit(split.train, context)
    assert carves == [(0.1, 3)]  # one carve, read by both models
    part = fold.validation(0.1)
    assert model.fit_pairs.equals(part.fit[["user", "item"]]) and len(model.val_data) == len(part.val)
    with pytest.raises(ConfigError, match="FitContext.fold is not the fold of the frame"):
        NeuralMF(factors=4, trainer=TRAINER, seed=3).fit(split.train.copy(), context)


def test_a_predefined_fold_wraps_shipped_parts(data, carves):
    dataset, split, groups = data
    shipped_val = split.train.groupby("user").head(1)
    shipped_train = split.train.drop(shipped_val.index)
    fold = Fold.predefined(shipped_train, shipped_val, split.test)
    part = fold.validation(0.1)
    assert fold.validation(0.5) is part and carves == []  # the shipped part, whatever the fraction
    assert len(fold.train) == len(split.train) and part.mask.sum() == len(shipped_val)
    pd.testing.assert_frame_equal(fold.train[part.mask].reset_index(drop=True), part.val)
    model = NeuralMF(factors=4, trainer=TRAINER, seed=3).fit(fold.train, FitContext(dataset, groups, seed=3, fold=fold))
    expected = float(((shipped_val["rating"] - shipped_train["rating"].mean()) ** 2).mean())
    assert model.validation_scores()[1] == pytest.approx(expected, rel=1e-12)  # early-stopped on the shipped part


def test_no_model_tuning_or_runner_code_carves_a_validation_part():
    """Only the protocol layer applies the hold-out rule: models, tuning and the runner read folds."""
    offenders = [str(path.relative_to(REPO)) for folder in ("models", "baselines", "benchmark/sweeps", "benchmark/run",
                                                             "benchmark/evaluation")
                 for path in sorted((REPO / folder).rglob("*.py")) if re.search(r"holdout_mask", path.read_text())]
    assert offenders == []


def test_tuning_scores_trials_on_the_folds_part_and_carves_once_for_all_trials(make_cfg, carves):
    cfg = make_cfg("dataset=synthetic", "model=neural_mf", "trainer.max_epochs=1", "trainer.progress=false",
                   "trainer.device=cpu", "tune.val_size=0.2")
    data = tune.tuning_data(cfg)
    train = instantiate(cfg.split)(instantiate(cfg.dataset.loader, root=None).ratings, seed=0)[0].train
    mask = holdout_mask(train, 0.2, 0)
    pd.testing.assert_frame_equal(data.fit_rows, train[~mask].reset_index(drop=True))
    pd.testing.assert_frame_equal(data.val_rows, train[mask].reset_index(drop=True))
    for _ in range(2):
        tune.score_trial(cfg, data)
    # tuning's carve (0.2), then the trial fold's early-stopping carve (trainer.val_size 0.1), shared by both trials
    assert carves == [(0.2, 0), (0.1, 0)]
    assert data.fold.validation(0.1).fit is data.fold.validation(0.1).fit
