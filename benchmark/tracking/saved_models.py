"""Fitted models as run artifacts (``model.pkl``), for ``python -m benchmark.recommend``.

A fitted ``Recommender`` is pickled whole (Surprise's own ``dump`` pickles too; a torch model's
modules and tensors pickle with it), so loading it needs no model-specific code. The setting
``artifacts.save_model``:

* ``auto`` (default): save unless the pickle is larger than ``artifacts.max_model_mb``, which
  keeps the cheap models (the SVD family, the baselines, DMTL) and leaves out those that carry
  an n x n matrix (k-NN similarities, Slope One's item-item deviations) on large catalogues;
* ``true``: always save; ``false``: never.

k-fold runs save the first fold's model. A pickle runs code when loaded: load only models from
a tracking store you trust (your own runs). The pickle's sha256 is recorded on the run when it is
saved (tag ``model_sha256``) and checked before it is unpickled (:func:`deserialize`): a
``model.pkl`` replaced in the artifact store is refused in one line, never loaded.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from typing import Any

from benchmark.core.errors import ConfigError, require

log = logging.getLogger(__name__)

ARTIFACT = "model.pkl"
SHA256_TAG = "model_sha256"
CHOICES = ("auto", "true", "false")


def policy(settings: Any) -> tuple[str, float]:
    """(``auto`` | ``true`` | ``false``, the size limit in MB) from the ``artifacts`` config node."""
    settings = settings or {}
    mode = str(settings.get("save_model", "auto")).lower()
    limit = settings.get("max_model_mb", 25)
    require(mode in CHOICES, f"artifacts.save_model={settings.get('save_model')} must be one of {', '.join(CHOICES)}")
    require(isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0,
            f"artifacts.max_model_mb={limit} must be a positive number")
    return mode, float(limit)


def serialize(model, settings: Any) -> tuple[bytes | None, str]:
    """The model's pickle, or None, and why (for the run's ``model_artifact`` tag)."""
    mode, limit = policy(settings)
    if mode == "false":
        return None, "not saved (artifacts.save_model=false)"
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    size_mb = len(blob) / 2 ** 20
    if mode == "auto" and size_mb > limit:
        log.info("model not saved: its pickle is %.1f MB > artifacts.max_model_mb=%g (artifacts.save_model=true "
                 "saves it anyway)", size_mb, limit)
        return None, f"not saved ({size_mb:.1f} MB > artifacts.max_model_mb={limit:g}; artifacts.save_model=true saves it)"
    return blob, f"{ARTIFACT} ({size_mb:.2f} MB)"


def tags(blob: bytes | None, note: str) -> dict[str, str]:
    """The run's tags for a saved (or not saved) model: why, and the pickle's sha256."""
    return {"model_artifact": note, **({SHA256_TAG: hashlib.sha256(blob).hexdigest()} if blob is not None else {})}


def deserialize(blob: bytes, expected_sha256: str | None, where: str = ARTIFACT):
    """Unpickle ``blob`` only when its sha256 is the one recorded when it was saved."""
    if not expected_sha256:
        raise ConfigError(f"{where} has no recorded sha256 (tag {SHA256_TAG}: saved by an older groupbench, or the "
                          f"tag was removed); it is not unpickled: rerun its configuration to save a checked model")
    found = hashlib.sha256(blob).hexdigest()
    if found != expected_sha256:
        raise ConfigError(f"{where} has sha256 {found[:12]}... but {expected_sha256[:12]}... was recorded when it "
                          f"was saved: the file was replaced, and is not unpickled; rerun its configuration")
    return pickle.loads(blob)
