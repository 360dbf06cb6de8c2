"""Every Surprise algorithm behind the one Recommender interface.

The algorithm (a dotted class path such as ``surprise.SVD``) and its hyperparameters come
from ``conf/model/<name>.yaml``; this wrapper adds the seed where the algorithm takes one,
builds Surprise's trainset from the training frame, and predicts test pairs, vectorised from
the fitted model's state where baselines/surprise_predict.py knows the algorithm (checked
against Surprise's own per-pair ``predict`` in tests), else pair by pair.
"""

from __future__ import annotations

import copy
import inspect
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import get_class
from surprise import Dataset as SurpriseDataset
from surprise import Reader, Trainset

from baselines import surprise_predict
from baselines.surprise_predict import TrainsetRows
from benchmark.core.errors import ConfigError
from models.base import FitContext, Recommender


class SurpriseRecommender(Recommender):
    def __init__(self, name: str, algorithm: str, params: dict[str, Any] | None = None, seed: int = 0):
        self.name = name
        self.seed = int(seed)
        algo_class = get_class(algorithm)
        params = dict(params or {})
        if "random_state" in inspect.signature(algo_class.__init__).parameters:
            params["random_state"] = self.seed
        try:
            self.algorithm = algo_class(**params)
        except TypeError as exc:
            raise ConfigError(f"model.params for {algorithm}: {exc}; see conf/model/{name}.yaml") from None
        self.trainset = None
        self.rows: TrainsetRows | None = None

    def fit(self, train: pd.DataFrame, context: FitContext) -> "SurpriseRecommender":
        reader = Reader(rating_scale=context.rating_scale)
        self.trainset = SurpriseDataset.load_from_df(train[["user", "item", "rating"]], reader).build_full_trainset()
        # the ratings as arrays: the vectorised predictions read them, and a saved model pickles them
        self.rows = TrainsetRows.of(self.trainset, train["user"].to_numpy(), train["item"].to_numpy(),
                                    train["rating"].to_numpy())
        self.rows.remember(self.trainset)
        # NormalPredictor and a few others draw from numpy's global generator: seed it
        np.random.seed(self.seed)
        self.algorithm.fit(self.trainset)
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        np.random.seed(self.seed + 1)  # NormalPredictor draws one value per pair
        return surprise_predict.predict(self.algorithm, pairs["user"].to_numpy(), pairs["item"].to_numpy())


    # A saved model (model.pkl) carries Surprise's trainset as its rows' arrays (``TrainsetRows``):
    # pickling the trainset's per-rating tuples took 0.5 s at 1M ratings, more than the rest of the
    # job's logging together. Loading rebuilds ``ur`` and ``ir`` in the same order: same predictions.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.trainset is not None:
            state["trainset"] = {name: value for name, value in vars(self.trainset).items() if name not in ("ur", "ir")}
            state["algorithm"] = copy.copy(self.algorithm)  # the same fitted arrays, without the trainset
            state["algorithm"].trainset = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if isinstance(self.trainset, dict):
            trainset = Trainset.__new__(Trainset)
            vars(trainset).update(self.trainset)
            trainset.ur = defaultdict(list, self.rows.lists("ur", trainset.n_users))
            trainset.ir = defaultdict(list, self.rows.lists("ir", trainset.n_items))
            self.trainset = self.algorithm.trainset = trainset
            self.rows.remember(trainset)
