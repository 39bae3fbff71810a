"""Helpers shared by the integration tests (real processes, real CRIU).

Tests import these directly (``from ckpt_testlib import wait_gone``); the
fixtures that use them live in conftest.py.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = REPO / "tests" / "integration" / "targets" / "setup_workloads" / "files"
VENV_BIN = REPO / ".venv" / "bin"


def criu_binary():
    for c in (os.environ.get("CKPT_CRIU"), "/opt/ckpt-criu/bin/criu", "/usr/sbin/criu"):
        if c and os.access(c, os.X_OK):
            return c
    return None


def sha256(path):
    """sha256 of a file, computed here independently of the collection's code."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_ticks(path):
    """[(seq, time_ns)] from a counter's ticks file; [] if it is missing."""
    out = []
    try:
        text = Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((int(parts[0]), int(parts[1])))
    return out


def thread_ticks(directory, n):
    """[[(seq, time_ns, tid)] per thread] of tests/integration/targets/setup_workloads/files/threads.py's files in directory."""
    out = []
    for i in range(n):
        ticks = []
        for line in (Path(directory) / ("thread-%d.ticks" % i)).read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                ticks.append((int(parts[0]), int(parts[1]), int(parts[2])))
        out.append(ticks)
    return out


def continuity(ticks):
    """(ok, max_gap_seconds): ok when the sequence never repeats or skips."""
    seqs = [tick[0] for tick in ticks]
    gaps = [(later[1] - earlier[1]) / 1e9 for earlier, later in zip(ticks, ticks[1:])]
    return seqs == list(range(1, len(seqs) + 1)), (max(gaps) if gaps else 0.0)


class Workload:
    def __init__(self, pid, pidfile, ticks, aux):
        self.pid = pid
        self.pidfile = pidfile
        self.ticks = ticks
        self.aux = aux

    def alive(self, pid=None):
        pid = pid or self.pid
        try:
            with open("/proc/%d/stat" % pid) as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
            return state not in ("Z", "X")
        except OSError:
            return False

    def read_ticks(self):
        return read_ticks(self.ticks)

    def wait_ticks(self, n=3, timeout=10.0):
        """Wait until at least n more ticks have been written; return the ticks."""
        start = len(self.read_ticks())
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = self.read_ticks()
            if len(t) >= start + n:
                return t
            time.sleep(0.02)
        raise AssertionError("workload %d wrote no new ticks in %.1fs" % (self.pid, timeout))

    def continuity(self):
        """(ok, max_gap_seconds): ok when the sequence never repeats or skips."""
        return continuity(self.read_ticks())

    def kill(self):
        for p in [self.pid] + self.aux:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def free_port():
    """A TCP port on 127.0.0.1 that is free now (bind port 0): no fixed ports in tests."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_gone(pid, timeout=10.0):
    """Wait until /proc/PID no longer exists (PID 1 reaps orphans slowly)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not os.path.exists("/proc/%d" % pid):
            return True
        time.sleep(0.05)
    return False
