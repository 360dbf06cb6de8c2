"""Divergence is a failure: a fit far worse than predicting the training mean is refused, in one line.

A learning rate far too high (``trainer.lr=1e6``) does not always give NaN: the weights settle
somewhere useless (ML-100K: validation MSE 2.7x the mean's), and the run used to FINISH with garbage
metrics. A model that reports its validation error (:class:`models.base.ValidationScored`) is
compared with the trivial predictor on the same validation part (carved from the training data; the
test part is not read): non-finite, or worse than DIVERGED_FACTOR x the mean's MSE, is "diverged".
A fit only slightly worse than the mean is a weak result, not a broken one (DMTL at λ = 0 on ITM-Rec,
where every model is within a few percent of the mean, lands there on some seeds): it is kept, with a
warning and the run tag ``worse_than_mean=true`` (``undertrained`` when the fit was still improving
at its last epoch: raise ``trainer.max_epochs``).
"""

from __future__ import annotations

import logging
import math

from benchmark.core.errors import TrainingError
from models.base import ValidationScored

log = logging.getLogger(__name__)


# worse than this multiple of the mean's validation MSE is diverged; between 1x and this, a weak fit (kept, tagged)
DIVERGED_FACTOR = 1.25


def check_not_diverged(model_name: str, validation_mse: float, trivial_mse: float,
                       still_improving: bool = False) -> dict[str, str]:
    """Raise TrainingError when the validation MSE is not finite or worse than DIVERGED_FACTOR x the
    trivial one; for a fit worse than the trivial one but within that factor, warn and return the run
    tags that say so (``worse_than_mean``, and ``undertrained`` when it was still improving)."""
    if not math.isfinite(validation_mse) or validation_mse > DIVERGED_FACTOR * trivial_mse:
        raise TrainingError(f"{model_name} diverged: validation rating MSE {validation_mse:.4g} is worse than "
                            f"{DIVERGED_FACTOR}x the training mean's {trivial_mse:.4g}; lower trainer.lr or check the data")
    if validation_mse <= trivial_mse:
        return {}
    hint = "still falling at the last epoch: raise trainer.max_epochs" if still_improving else "a weak fit"
    log.warning("%s: validation rating MSE %.4g is worse than the training mean's %.4g (%s)",
                model_name, validation_mse, trivial_mse, hint)
    return {"worse_than_mean": "true", **({"undertrained": "true"} if still_improving else {})}


def still_improving(model) -> bool:
    """True when the kept (best) epoch is the last one trained and beats the first: max_epochs cut a
    fit that was still improving (models with a ``history`` of per-epoch dicts and a ``best_epoch``)."""
    history = getattr(model, "history", None) or []
    if len(history) < 2 or getattr(model, "best_epoch", None) != history[-1].get("epoch"):
        return False
    key = "val_rating_loss" if "val_rating_loss" in history[-1] else "val_loss"
    return history[-1].get(key, math.inf) < history[0].get(key, -math.inf)


def check_model(model) -> dict[str, str]:
    """The runner's hook: checks a model that reports validation scores (others pass); returns the
    run tags of a weak fit (see check_not_diverged)."""

    if isinstance(model, ValidationScored) and getattr(model, "history", None) != []:  # [] : trainer.fixed_epochs
        return check_not_diverged(getattr(model, "name", type(model).__name__), *model.validation_scores(),
                                  still_improving=still_improving(model))
    return {}
