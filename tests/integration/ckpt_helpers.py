"""Helpers for the dump and page_server tests: look at processes, find a
running criu, mount a tiny tmpfs, start a child that is not a session leader."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = REPO / "tests" / "workloads"


def state(pid):
    """The state letter of PID, or None when it is gone."""
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_state(pid, letters, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = state(pid)
        if s in letters:
            return s
        time.sleep(0.02)
    return state(pid)


def mode(path):
    return os.stat(path).st_mode & 0o777


def read_manifest(images_dir):
    return json.loads((Path(images_dir) / "ckpt-manifest.json").read_text())


def find_criu(action, target=None):
    """PIDs of running criu processes for ACTION (and -t TARGET)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path("/proc/%s/cmdline" % name).read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode("utf-8", "replace") for a in argv if a]
        if not any(a.endswith("/criu") or a == "criu" for a in args) or action not in args:
            continue
        if target is not None and str(target) not in args:
            continue
        out.append(int(name))
    return out


def ticks_after(workload, seconds):
    """Ticks written in the next `seconds` (0 means the process is not running)."""
    before = len(workload.read_ticks())
    time.sleep(seconds)
    return len(workload.read_ticks()) - before


class Tmpfs(object):
    """A tiny tmpfs at path (for disk-full tests); unmount() in teardown."""

    def __init__(self, path, size="2m"):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", self.path],
                       check=True)

    def unmount(self):
        subprocess.run(["umount", "-l", self.path], check=False)


def start_plain_child(tmp_path, name="child"):
    """A counter started as a plain child of pytest: not a session leader, not detached.

    Returns (Popen, ticks_path)."""
    ticks = tmp_path / ("%s.ticks" % name)
    p = subprocess.Popen([sys.executable, str(WORKLOADS / "counter.py"), "--out", str(ticks),
                          "--interval", "0.02"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, close_fds=True, cwd=str(tmp_path))
    deadline = time.time() + 10
    while time.time() < deadline and not (ticks.exists() and ticks.read_text()):
        time.sleep(0.02)
    return p, ticks
