"""The tracking store's lock (benchmark/tracking/store.py): ``filelock``'s Unix lock, an ``flock``.
The store's kill, race and foreign-file tests are in tests/test_reliability.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.core.errors import TrackingError
from benchmark.tracking.store import store_lock
from tests.conftest import REPO


def test_store_lock_waits_then_refuses_in_one_line_and_a_killed_holder_releases_it(tmp_path: Path):
    """The store's lock (filelock's flock, benchmark/tracking/store.py): a live holder past the wait is
    one TrackingError line; SIGKILL on the holder frees it at once (the kernel drops the lock)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom benchmark.tracking.store import store_lock\n"
                               f"with store_lock({uri!r}):\n    print('held', flush=True)\n    time.sleep(120)"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(TrackingError) as refused:
            with store_lock(uri, wait=1.0):
                pytest.fail("acquired a lock another process holds")
        assert 1.0 <= time.monotonic() - started < 10
        assert "mlflow.db.lock has been locked for 1 s by another process; wait for it or stop it" in str(refused.value)
        assert "\n" not in str(refused.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    started = time.monotonic()
    with store_lock(uri, wait=5.0):
        assert time.monotonic() - started < 1.0
    assert (tmp_path / "mlflow.db.lock").exists()  # left in place: waiters share one inode
