"""RUNNING runs whose process is gone (SIGKILL, a lost machine) are marked KILLED, with a note.

Every run records the process that owns it in one tag, ``groupbench.owner`` =
``HOST:PID:START`` (START: the process's start time, so a reused pid is not taken for the
owner; runs logged before it have the tags ``groupbench.host``, ``groupbench.pid`` and
``groupbench.pid_start``, read too). Before a sweep or a single run starts, the experiment's
RUNNING runs owned by a process of this host that no longer exists are terminated as KILLED with
a ``note`` tag; the sweep then reruns their configurations as it would any unfinished one. Runs
owned by another host are left alone (their liveness cannot be seen from here).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from functools import lru_cache

from benchmark.tracking.queries import retry_locked

log = logging.getLogger(__name__)

OWNER = "groupbench.owner"
HOST, PID, PID_START = "groupbench.host", "groupbench.pid", "groupbench.pid_start"  # runs logged before OWNER


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), '' if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


@lru_cache(maxsize=1)
def _host() -> str:
    return socket.gethostname()


def owner_tags() -> dict[str, str]:
    """The tags naming this process as a run's owner."""
    pid = os.getpid()
    return {OWNER: f"{_host()}:{pid}:{_start_time(pid)}"}


def owner(tags: dict[str, str]) -> tuple[str | None, str, str]:
    """(host, pid, start) of a run's owner tag(s); (None, "", "") when it has none."""
    if OWNER in tags:
        host, pid, started = (tags[OWNER].rsplit(":", 2) + ["", ""])[:3]
        return host, pid, started
    return tags.get(HOST), tags.get(PID, ""), tags.get(PID_START, "")


def owner_alive(tags: dict[str, str]) -> bool:
    """False only when the owner is known to be gone: same host, and its pid is not running (or runs
    another process). Runs without owner tags, or owned by another host, count as alive."""
    host, pid_text, started = owner(tags)
    if host != _host() or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not started or _start_time(pid) in ("", started)


def reap(tracker) -> list[str]:
    """Mark the experiment's orphaned RUNNING runs KILLED (with a ``note``); return their ids."""

    host = _host().replace("'", "")
    running = [run for query in (f"tags.`{OWNER}` LIKE '{host}:%'", f"tags.`{HOST}` = '{host}'")
               for run in retry_locked(tracker.client.search_runs, [tracker.experiment_id],
                                       filter_string=f"attributes.status = 'RUNNING' and {query}", max_results=5000)]
    reaped = []
    for run in running:
        if owner_alive(run.data.tags):
            continue
        found_host, pid, _ = owner(run.data.tags)
        note = (f"orphan: its process {found_host}:{pid} was gone; marked KILLED "
                f"by pid {os.getpid()} at {time.strftime('%Y-%m-%d %H:%M:%S')}")
        retry_locked(tracker.client.set_tag, run.info.run_id, "note", note)
        retry_locked(tracker.client.set_terminated, run.info.run_id, "KILLED")
        log.warning("run %s (%s) was left RUNNING by a process that is gone: marked KILLED", run.info.run_id,
                    run.info.run_name)
        reaped.append(run.info.run_id)
    return reaped
