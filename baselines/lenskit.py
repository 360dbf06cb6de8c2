"""LensKit (lkpy 2025.x) rating predictors behind the one Recommender interface.

The scorer (a dotted class path such as ``lenskit.knn.ItemKNNScorer``) and its configuration
come from ``conf/model/lenskit_<name>.yaml``. Predictions come from LensKit's own
``predict_pipeline``: the query is the user's training history, and with ``fallback: true`` the
pairs the scorer leaves unscored (k-NN: too few neighbours; unknown users or items) get
LensKit's ``BiasScorer`` prediction, so every model is scored on every test pair. One LensKit
call per user. Predictions are clipped to the rating scale, like Surprise's.

Implicit feedback (``lenskit.als.ImplicitMFScorer``, ``ItemKNNScorer`` with ``feedback: implicit``):
their scores are preferences, not ratings, so LensKit's bias fallback (a rating: 1.0 on all-ones
data, above most scores) would rank unknown items first. Their configs set ``fallback: false`` and
``unscored: 0.0``: a pair the scorer leaves unscored (a user without training interactions, an
unknown item, an item without neighbours) gets 0, the score of "no evidence" (ALS's target for a
missing pair, k-NN's empty sum of similarities).

Configuration: each LensKit component declares its own (a pydantic model, the scorer's
``config_class()``), which validates ``model.config`` on construction; its first complaint becomes
the one-line ``model.config.<key>=<value>: <what pydantic says>; <fix>``. The wrapper's own keys
are :class:`LenskitSettings`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import get_class

from benchmark.core.errors import ConfigError
from benchmark.core.schema import BOOL, Rule, Settings, setting, shown
from models.base import FitContext, Recommender


@dataclass(frozen=True)
class LenskitSettings(Settings):
    """The wrapper's keys of conf/model/lenskit_*.yaml (the scorer's own are its pydantic config)."""

    scorer: str = setting(Rule(str, fix="use a dotted LensKit scorer class such as lenskit.knn.ItemKNNScorer"))
    fallback: bool = setting(BOOL)
    unscored: float | None = setting(Rule(float, nullable=True, fix="use a number (the score of an unscored pair) or null"), None)


def config_error(error: Exception, scorer: str, name: str) -> ConfigError:
    """A LensKit config's first validation error as one line naming ``model.config.<key>``."""
    fix = f"fix it on the command line or in conf/model/{name}.yaml"
    problems = error.errors() if callable(getattr(error, "errors", None)) else []  # pydantic's ValidationError
    if not problems:
        first = " ".join(str(error).strip().splitlines()[:3])
        return ConfigError(f"model.config for {scorer}: {first}; {fix}")
    problem = problems[0]
    key = "model.config." + ".".join(str(part) for part in problem.get("loc", ())) if problem.get("loc") \
        else "model.config"
    return ConfigError(f"{key}={shown(problem.get('input'))}: {problem.get('msg', 'invalid')} "
                       f"(LensKit's {scorer.rsplit('.', 1)[-1]}); {fix}")


def _quiet_lenskit_logging() -> None:
    """LensKit logs through structlog, whose default printer writes to stdout: send warnings and
    worse to stderr, where the harness's logs go, and keep stdout clean."""
    import structlog

    if not structlog.is_configured():
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


class LenskitRecommender(Recommender):
    def __init__(self, name: str, scorer: str, config: dict[str, Any] | None = None, fallback: bool = True,
                 seed: int = 0, unscored: float | None = None):
        from lenskit.pipeline import predict_pipeline

        LenskitSettings(scorer=scorer, fallback=fallback, unscored=unscored)
        self.unscored = None if unscored is None else float(unscored)  # the score of a pair left unscored
        _quiet_lenskit_logging()
        self.name = name
        self.seed = int(seed)
        try:
            component = get_class(scorer)(**dict(config or {}))
        except Exception as exc:  # pydantic's ValidationError: unknown or out-of-range option
            raise config_error(exc, scorer, name) from None
        # LensKit's own rating-prediction pipeline: the user's training history as the query, the
        # scorer, and (fallback) LensKit's BiasScorer for the pairs the scorer leaves unscored
        self.pipeline = predict_pipeline(component, fallback=bool(fallback))
        self.scale = (-np.inf, np.inf)

    def fit(self, train: pd.DataFrame, context: FitContext) -> LenskitRecommender:
        from lenskit.data import from_interactions_df
        from lenskit.training import TrainingOptions

        data = from_interactions_df(train[["user", "item", "rating"]].copy(), user_col="user", item_col="item",
                                    rating_col="rating")
        self.pipeline.train(data, TrainingOptions(rng=self.seed))
        self.scale = context.rating_scale
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return self.clip_rating(self.raw_scores(pairs))

    def clip_rating(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(scores, *self.scale)

    def raw_scores(self, pairs: pd.DataFrame) -> np.ndarray:
        """LensKit's scores before the clip to the rating scale (models.base.RawScores: ranking reads them)."""
        from lenskit.data import ItemList
        from lenskit.operations import predict

        out = np.full(len(pairs), np.nan)
        users = pairs["user"].to_numpy()
        items = pairs["item"].to_numpy()
        order = np.argsort(users, kind="stable")  # one LensKit call per user
        bounds = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1], True])
        for start, stop in zip(bounds[:-1], bounds[1:]):
            rows = order[start:stop]
            scored = predict(self.pipeline, users[rows[0]], ItemList(item_ids=items[rows]))
            out[rows] = np.asarray(scored.scores(), dtype=float)
        if self.unscored is not None:  # implicit feedback: no evidence scores 0 (module docstring)
            out[np.isnan(out)] = self.unscored
        return out
