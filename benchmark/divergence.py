"""Divergence is a failure: a fit worse than predicting the training mean is refused, in one line.

A learning rate far too high (``trainer.lr=1e6``) does not always give NaN: the weights settle
somewhere useless, and the run used to FINISH with garbage metrics. A model that reports its
validation error (:class:`models.base.ValidationScored`) is compared with the trivial predictor
on the same validation part (carved from the training data; the test part is not read).
"""

from __future__ import annotations

import math

from benchmark.errors import TrainingError


def check_not_diverged(model_name: str, validation_mse: float, trivial_mse: float) -> None:
    """Raise TrainingError when the validation MSE is not finite or worse than the trivial one."""
    if not math.isfinite(validation_mse) or validation_mse > trivial_mse:
        raise TrainingError(f"{model_name} diverged: validation rating MSE {validation_mse:.4g} is worse than the "
                            f"training mean's {trivial_mse:.4g}; lower trainer.lr or check the data")


def check_model(model) -> None:
    """The runner's hook: checks a model that reports validation scores, passes any other."""
    from models.base import ValidationScored

    if isinstance(model, ValidationScored):
        check_not_diverged(getattr(model, "name", type(model).__name__), *model.validation_scores())
