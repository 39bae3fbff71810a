"""Helpers for the dump and page_server tests: look at processes, find a
running criu, mount a tiny tmpfs, start a child that is not a session leader."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ansible_collections.ckpt.criu.plugins.module_utils import _procfs

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = REPO / "tests" / "integration" / "targets" / "setup_workloads" / "files"


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


def still_ticking(ticks, seconds=0.3):
    """True when the counter writing TICKS (a path) adds lines within SECONDS."""
    before = len(ticks.read_text().splitlines())
    time.sleep(seconds)
    return len(ticks.read_text().splitlines()) > before


class Tmpfs(object):
    """A tiny tmpfs at path (for disk-full tests); unmount() in teardown."""

    def __init__(self, path, size="2m"):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", self.path],
                       check=True)

    def unmount(self):
        subprocess.run(["umount", "-l", self.path], check=False)


class _Launched(object):
    """A counter started under a launcher that stays outside the dumped tree.

    ``pid`` is the counter's PID; kill() and wait() end both the counter and its launcher."""

    def __init__(self, launcher, pid):
        self.launcher = launcher
        self.pid = pid

    def kill(self):
        for pid in (self.pid, self.launcher.pid):
            try:
                os.kill(pid, 9)
            except OSError:
                pass

    def wait(self):
        self.launcher.wait()


def _counter_argv(ticks):
    return [sys.executable, str(WORKLOADS / "counter.py"), "--out", str(ticks), "--interval", "0.02"]


def _launch(argv, tmp_path, ticks, new_session):
    launcher = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, close_fds=True, cwd=str(tmp_path),
                                start_new_session=new_session)
    deadline = time.time() + 10
    pid = None
    while time.time() < deadline and not (pid and ticks.exists() and ticks.read_text()):
        try:
            kids = _procfs.children(launcher.pid)
            pid = kids[0] if kids else None
        except _procfs.ProcfsError:
            pid = None
        time.sleep(0.02)
    assert pid, "the counter did not start under %s" % argv[0]
    return _Launched(launcher, pid)


def start_plain_child(tmp_path, name="child"):
    """A counter that is not a session leader: the child of a shell that is (so its session leader is
    outside the dumped tree but inside its PID namespace, whatever session pytest runs in).

    Returns (handle with .pid/.kill()/.wait(), ticks_path)."""
    ticks = tmp_path / ("%s.ticks" % name)
    argv = ["sh", "-c", "\"$@\" & wait", "sh"] + _counter_argv(ticks)
    return _launch(argv, tmp_path, ticks, new_session=True), ticks


def start_child_in_new_pidns(tmp_path, name="pidns"):
    """A counter that is PID 1 of a new PID namespace, in a session whose leader is outside it
    (NSsid ends in 0), as a child of a container's init that never called setsid would be.

    Returns (handle with .pid/.kill()/.wait(), ticks_path)."""
    ticks = tmp_path / ("%s.ticks" % name)
    argv = ["unshare", "--pid", "--fork", "--kill-child"] + _counter_argv(ticks)
    return _launch(argv, tmp_path, ticks, new_session=False), ticks
