"""Baselines: the Surprise library's algorithms behind models.base.Recommender."""
