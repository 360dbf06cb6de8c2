"""Models: one interface (models.base.Recommender), one file per model."""

from models.base import FitContext, Recommender

__all__ = ["FitContext", "Recommender"]
