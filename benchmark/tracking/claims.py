"""A result is keyed by its config hash AND its data's sha256; a sweep job claims its key first.

* Resume and dedupe: a sweep skips a job only when a FINISHED job run has the same
  ``config_hash`` and ``dataset_sha256`` tags (a result on other, e.g. corrupt, data is not
  this result); :func:`finished_keys` and :func:`dataset_sha256` give the sweeper both sides.
* Concurrency: a sweep job, once its data is loaded (its sha256 is known), claims the key under
  the store's lock (:func:`benchmark.tracking.store.store_lock`): if another job run holds it (FINISHED,
  or RUNNING with a live owner) the job stops as a duplicate, its run KILLED with a
  ``duplicate_of`` tag, and the sweep counts it as skipped. Two sweeps on one store so never
  FINISH a configuration twice. With a tracking server there is no shared lock: the check is
  then best-effort (check, tag, re-check).
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig, OmegaConf

from benchmark.core.config import instantiate
from benchmark.core.errors import GroupbenchError
from benchmark.tracking.orphans import owner_alive
from benchmark.tracking.queries import retry_locked
from benchmark.tracking.store import store_lock

log = logging.getLogger(__name__)


class AlreadyClaimed(Exception):
    """Another run holds this job's (config hash, data hash): the job is a duplicate, not a failure."""

    def __init__(self, holder: str, status: str):
        super().__init__(f"duplicate: run {holder} ({status}) holds this configuration on this data")
        self.holder = holder
        self.status = status


def _job_runs(tracker, config_hash: str, data_sha256: str) -> list:

    runs = retry_locked(tracker.client.search_runs, [tracker.experiment_id],
                         filter_string=f"tags.config_hash = '{config_hash}' and "
                                       f"tags.dataset_sha256 = '{data_sha256}'", max_results=1000)
    return [r for r in runs if r.data.tags.get("groupbench.role", "job") == "job"]


def _holder(tracker, run_id: str, config_hash: str, data_sha256: str, include_finished: bool):

    for run in _job_runs(tracker, config_hash, data_sha256):
        if run.info.run_id == run_id:
            continue
        if (run.info.status == "FINISHED" and include_finished) or \
                (run.info.status == "RUNNING" and owner_alive(run.data.tags)):
            return run
    return None


def claim(tracker, logger, config_hash: str, data_sha256: str, include_finished: bool = True) -> None:
    """Tag this run with its data hash (the claim) unless another run holds the key: then raise
    :class:`AlreadyClaimed`. ``include_finished=False`` (``resume=false``) only yields to live runs."""

    with store_lock(tracker.uri):
        holder = _holder(tracker, logger.run_id, config_hash, data_sha256, include_finished)
        if holder is None:
            logger.set_tags({"dataset_sha256": data_sha256})
            if not tracker.uri.startswith("sqlite:///"):  # no shared lock: re-check after tagging
                holder = _holder(tracker, logger.run_id, config_hash, data_sha256, include_finished)
    if holder is not None:
        logger.set_tags({"duplicate_of": holder.info.run_id})
        raise AlreadyClaimed(holder.info.run_id, holder.info.status)


def finished_keys(tracker) -> set[tuple[str, str]]:
    """(config_hash, dataset_sha256) of the experiment's FINISHED job runs, in one paged query."""

    found, token = set(), None
    while True:
        page = retry_locked(tracker.client.search_runs, [tracker.experiment_id],
                             filter_string="attributes.status = 'FINISHED' and tags.config_hash != ''",
                             max_results=1000, page_token=token)
        jobs = [run for run in page if run.data.tags.get("groupbench.role", "job") == "job"]
        found |= {(run.data.tags["config_hash"], run.data.tags.get("dataset_sha256", "")) for run in jobs}
        # a tuned job's final run carries the chosen config's hash; the sweep planned its grid hash
        found |= {(run.data.tags["groupbench.grid_hash"], run.data.tags.get("dataset_sha256", ""))
                  for run in jobs if "groupbench.grid_hash" in run.data.tags}
        token = page.token
        if not token:
            return found


_sha_cache: dict[str, str | None] = {}


def dataset_sha256(cfg: DictConfig) -> str | None:
    """The sha256 a job's data would be tagged with (its loader run once per distinct data config),
    or None when the data cannot be loaded: the job then runs, and fails with its own error."""

    node = {"loader": OmegaConf.to_container(cfg.dataset.loader, resolve=True),
            "root": cfg.data.root, "download": cfg.data.download, "verify": cfg.data.verify}
    key = json.dumps(node, sort_keys=True, default=str)
    if key not in _sha_cache:
        try:
            _sha_cache[key] = instantiate(cfg.dataset.loader, root=cfg.data.root, download=cfg.data.download,
                                          verify=cfg.data.verify).sha256
        except GroupbenchError as exc:
            log.info("data of %s cannot be loaded (%s): its jobs run and report it", cfg.dataset.name, exc)
            _sha_cache[key] = None
        except Exception:
            _sha_cache[key] = None
    return _sha_cache[key]
