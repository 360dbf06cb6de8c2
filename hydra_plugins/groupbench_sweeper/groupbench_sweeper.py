"""Hydra finds sweepers only inside the ``hydra_plugins`` namespace: this registers groupbench's.

The logic (grids, dedupe by config hash, resume, the parent MLflow run, the summary) lives in
``benchmark.sweeps.sweep``; conf/hydra/sweeper/groupbench.yaml selects this class.
"""

from benchmark.sweeps.sweep import SweeperBase


class GroupbenchSweeper(SweeperBase):
    """Hydra's plugin registry keys sweepers by their defining module, so the class is defined here."""
