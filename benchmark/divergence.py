"""Divergence is a failure: a fit worse than predicting the training mean is refused, in one line.

A learning rate far too high (``trainer.lr=1e6``) does not always give NaN: the weights settle
somewhere useless, and the run used to FINISH with garbage metrics. A model that reports its
validation error (:class:`models.base.ValidationScored`) is compared with the trivial predictor
on the same validation part (carved from the training data; the test part is not read). A short
run still improving at its last epoch and only slightly worse than the mean is undertrained, not
diverged: kept, with a warning and the run tag ``undertrained=true``.
"""

from __future__ import annotations

import logging
import math

from benchmark.errors import TrainingError

log = logging.getLogger(__name__)


# A fit still improving when trainer.max_epochs cut it, and within this factor of the mean's MSE, is
# undertrained (a short debugging run), not diverged: it is kept, with a warning and a tag.
UNDERTRAINED_FACTOR = 1.25


def check_not_diverged(model_name: str, validation_mse: float, trivial_mse: float, still_improving: bool = False) -> bool:
    """Raise TrainingError when the validation MSE is not finite or worse than the trivial one; return
    True (undertrained, warned) when it is worse but the fit was still improving at its last epoch and
    within UNDERTRAINED_FACTOR of the trivial MSE."""
    if math.isfinite(validation_mse) and validation_mse <= trivial_mse:
        return False
    if still_improving and math.isfinite(validation_mse) and validation_mse <= UNDERTRAINED_FACTOR * trivial_mse:
        log.warning("%s is undertrained: validation rating MSE %.4g is worse than the training mean's %.4g but was "
                    "still falling at the last epoch; raise trainer.max_epochs", model_name, validation_mse, trivial_mse)
        return True
    raise TrainingError(f"{model_name} diverged: validation rating MSE {validation_mse:.4g} is worse than the "
                        f"training mean's {trivial_mse:.4g}; lower trainer.lr or check the data")


def still_improving(model) -> bool:
    """True when the kept (best) epoch is the last one trained and beats the first: max_epochs cut a
    fit that was still improving (models with a ``history`` of per-epoch dicts and a ``best_epoch``)."""
    history = getattr(model, "history", None) or []
    if len(history) < 2 or getattr(model, "best_epoch", None) != history[-1].get("epoch"):
        return False
    key = "val_rating_loss" if "val_rating_loss" in history[-1] else "val_loss"
    return history[-1].get(key, math.inf) < history[0].get(key, -math.inf)


def check_model(model) -> bool:
    """The runner's hook: checks a model that reports validation scores, passes any other; True when
    the model is kept as undertrained (see check_not_diverged)."""
    from models.base import ValidationScored

    if isinstance(model, ValidationScored):
        return check_not_diverged(getattr(model, "name", type(model).__name__), *model.validation_scores(),
                                  still_improving=still_improving(model))
    return False
