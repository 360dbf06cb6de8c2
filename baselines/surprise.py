"""Every Surprise algorithm behind the one Recommender interface.

The algorithm (a dotted class path such as ``surprise.SVD``) and its hyperparameters come
from ``conf/model/<name>.yaml``; this wrapper adds the seed where the algorithm takes one,
builds Surprise's trainset from the training frame, and predicts test pairs, vectorised from
the fitted model's state where baselines/surprise_predict.py knows the algorithm (checked
against Surprise's own per-pair ``predict`` in tests), else pair by pair. The hyperparameters are
checked on construction (:class:`SurpriseParams`), before the runner reads any data.
"""

from __future__ import annotations

import copy
import inspect
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from hydra.utils import get_class
from surprise import Dataset as SurpriseDataset
from surprise import Reader, Trainset

from baselines import surprise_predict
from baselines.surprise_predict import TrainsetRows
from benchmark.core.errors import ConfigError
from benchmark.core.schema import BOOL, INT_POS, NONNEG, UNSET, Rule, Settings, setting
from models.base import FitContext, Recommender


@dataclass(frozen=True)
class SurpriseParams(Settings):
    """``model.params`` of a Surprise algorithm (conf/model/<name>.yaml), typed and checked on construction.

    Surprise itself accepts ``n_factors=-5`` and fails deep inside numpy, or trains nothing, so every
    hyperparameter the shipped algorithms take is declared here with its type and range. A field the
    config leaves out stays UNSET (Surprise's default applies). ``sim_options``, ``bsl_options`` and
    any other key go to the algorithm as they are (``passed``): Surprise refuses an unknown one (a
    TypeError, made one line by the wrapper).
    """

    PREFIX: ClassVar[str] = "model.params"

    n_factors: int = setting(INT_POS, UNSET)
    n_epochs: int = setting(INT_POS, UNSET)
    k: int = setting(INT_POS, UNSET)
    min_k: int = setting(INT_POS, UNSET)
    n_cltr_u: int = setting(INT_POS, UNSET)
    n_cltr_i: int = setting(INT_POS, UNSET)
    biased: bool = setting(BOOL, UNSET)
    verbose: bool = setting(BOOL, UNSET)
    cache_ratings: bool = setting(BOOL, UNSET)
    init_mean: float = setting(Rule(float), UNSET)
    init_std_dev: float = setting(NONNEG, UNSET)
    lr_all: float = setting(NONNEG, UNSET)
    reg_all: float = setting(NONNEG, UNSET)
    reg_pu: float = setting(NONNEG, UNSET)
    reg_qi: float = setting(NONNEG, UNSET)
    reg_bu: float = setting(NONNEG, UNSET)
    reg_bi: float = setting(NONNEG, UNSET)
    lr_bu: float = setting(NONNEG, UNSET)
    lr_bi: float = setting(NONNEG, UNSET)
    lr_pu: float = setting(NONNEG, UNSET)
    lr_qi: float = setting(NONNEG, UNSET)
    passed: dict[str, Any] = field(default_factory=dict)  # sim_options, bsl_options, ...: unchecked here

    @classmethod
    def of(cls, params: Mapping[str, Any] | None) -> SurpriseParams:
        declared = {each.name for each in fields(cls)} - {"passed"}
        params = dict(params or {})
        return cls(**{key: value for key, value in params.items() if key in declared},
                   passed={key: value for key, value in params.items() if key not in declared})

    def kwargs(self) -> dict[str, Any]:
        """The algorithm's keyword arguments: the declared values the config set, and the passed ones."""
        given = self.given()
        return {**{key: value for key, value in given.items() if key != "passed"}, **self.passed}


class SurpriseRecommender(Recommender):
    def __init__(self, name: str, algorithm: str, params: dict[str, Any] | None = None, seed: int = 0):
        self.name = name
        self.seed = int(seed)
        params = SurpriseParams.of(params).kwargs()  # a bad value is refused before the class is even looked up
        algo_class = get_class(algorithm)
        if "random_state" in inspect.signature(algo_class.__init__).parameters:
            params["random_state"] = self.seed
        try:
            self.algorithm = algo_class(**params)
        except TypeError as exc:
            raise ConfigError(f"model.params for {algorithm}: {exc}; see conf/model/{name}.yaml") from None
        self.trainset = None
        self.rows: TrainsetRows | None = None

    def fit(self, train: pd.DataFrame, context: FitContext) -> SurpriseRecommender:
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
        return self.clip_rating(self.raw_scores(pairs))

    def raw_scores(self, pairs: pd.DataFrame) -> np.ndarray:
        """Surprise's estimates before its clip to the rating scale (``predict(..., clip=False)``;
        models.base.RawScores: ranking reads them)."""
        np.random.seed(self.seed + 1)  # NormalPredictor draws one value per pair
        return surprise_predict.predict(self.algorithm, pairs["user"].to_numpy(), pairs["item"].to_numpy(), clip=False)

    def clip_rating(self, scores: np.ndarray) -> np.ndarray:
        """Surprise's own clip (``PredictionImpossible`` estimates were already the global mean)."""
        return np.clip(scores, *self.trainset.rating_scale)


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
