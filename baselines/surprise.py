"""Every Surprise algorithm behind the one Recommender interface.

The algorithm (a dotted class path such as ``surprise.SVD``) and its hyperparameters come
from ``conf/model/<name>.yaml``; this wrapper adds the seed where the algorithm takes one,
builds Surprise's trainset from the training frame, and predicts test pairs, vectorised from
the fitted model's state where baselines/surprise_predict.py knows the algorithm (checked
against Surprise's own per-pair ``predict`` in tests), else pair by pair.
"""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_class

import numpy as np
import pandas as pd
from surprise import Dataset as SurpriseDataset
from surprise import Reader

from baselines import surprise_predict
from benchmark.errors import ConfigError
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

    def fit(self, train: pd.DataFrame, context: FitContext) -> "SurpriseRecommender":
        reader = Reader(rating_scale=context.rating_scale)
        self.trainset = SurpriseDataset.load_from_df(train[["user", "item", "rating"]], reader).build_full_trainset()
        # NormalPredictor and a few others draw from numpy's global generator: seed it
        np.random.seed(self.seed)
        self.algorithm.fit(self.trainset)
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        np.random.seed(self.seed + 1)  # NormalPredictor draws one value per pair
        return surprise_predict.predict(self.algorithm, pairs["user"].to_numpy(), pairs["item"].to_numpy())
