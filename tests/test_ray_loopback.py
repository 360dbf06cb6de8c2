"""``hydra/launcher=ray`` with the default ``address: null`` starts a local Ray instance: every
socket its processes listen on must be on the loopback (#28, item 2).

The test runs the smoke sweep on such an instance and, while it runs, reads the listening TCP
sockets of the sweep process and all its descendants (GCS, raylet, workers, agents) from
``/proc``: socket inodes from ``/proc/<pid>/fd``, their addresses from ``/proc/net/tcp{,6}``.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_sweeps import sqlite_uri

pytest.importorskip("ray", reason="the Ray launcher test needs ray (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")

REPO = Path(__file__).resolve().parent.parent
LISTEN = "0A"


def _address(hex_address: str) -> str:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(host, 16)))
    else:  # four little-endian 32-bit words
        ip = socket.inet_ntop(socket.AF_INET6, b"".join(struct.pack("<I", int(host[i:i + 8], 16))
                                                        for i in range(0, 32, 8)))
    return f"{ip}:{int(port, 16)}"


def listening_sockets() -> dict[str, str]:
    """inode -> local address of every listening TCP socket of the machine."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                found[fields[9]] = _address(fields[1])
    return found


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
    except OSError:
        return "?"


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1") or host.startswith("::ffff:127.")


@pytest.mark.slow
def test_a_local_ray_instance_listens_on_the_loopback_only(tmp_path: Path) -> None:
    temp = Path(tempfile.mkdtemp(prefix="gbray"))  # Ray's socket paths must stay short
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(temp),
           "GROUPBENCH_CWD": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "benchmark", "+sweep=smoke", "hydra/launcher=ray",
               "+hydra.launcher.init.num_cpus=2", f"tracking.uri={sqlite_uri(tmp_path)}",
               f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    seen: dict[str, str] = {}
    names: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 600
        while process.poll() is None:
            assert time.monotonic() < deadline, "the Ray sweep did not finish in 600 s"
            listening = listening_sockets()
            for pid in descendants(process.pid):
                for inode in socket_inodes(pid) & listening.keys():
                    seen[f"{pid}:{inode}"] = listening[inode]
                    names.setdefault(listening[inode], command_of(pid))
            time.sleep(0.2)
        output = process.stdout.read()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
        subprocess.run(["pkill", "-9", "-f", str(temp)], check=False)
        shutil.rmtree(temp, ignore_errors=True)
    assert process.returncode == 0, output[-3000:]
    assert seen, "no listening socket of the Ray instance was seen: the test watched nothing"
    outside = sorted({address for address in seen.values() if not is_loopback(address)})
    assert not outside, ("the local Ray instance listens beyond the loopback: "
                         + "; ".join(f"{address} ({names.get(address, '?')})" for address in outside))
