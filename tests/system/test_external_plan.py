"""The external plan on both sides: what the dump lets through (a unix socket to a peer outside the
tree with ext_unix_sk, a pipe to a process outside it with inherit_fd) is recorded in the manifest and
applied by the restore (--ext-unix-sk=INODE, --inherit-fd fd[N]:pipe:[INODE]), so such a checkpoint
really restores: the process runs on, its tick sequence unbroken. Real CRIU, real processes."""
from __future__ import annotations

import os
import stat
import time

import pytest

from ckpt_testlib import wait_gone

pytestmark = pytest.mark.criu


def _fd_target(pid, fd):
    return os.readlink("/proc/%d/fd/%d" % (pid, fd))


def _dump(run_module, w, images, **kw):
    args = {"pid": w.pid, "images_dir": str(images)}
    args.update(kw)
    return run_module("dump", args)


def test_unix_stdout_to_a_peer_outside_restores_with_ext_unix_sk_inode(run_module, workload, tmp_path):
    w = workload(stdio="unix", stdout=True)
    assert w.aux, "the unix listener (the peer outside the tree) did not start"
    listener = w.aux[0]
    inode = int(_fd_target(w.pid, 1)[len("socket:["):-1])
    w.wait_ticks(3)
    images = tmp_path / "img"
    d = _dump(run_module, w, images, ext_unix_sk=True)
    assert d.status == "ok", d.get("msg")
    assert d["manifest"]["options"]["ext_unix_sk_inodes"] == [inode]
    assert wait_gone(w.pid), "a plain dump ends the process"
    n = len(w.read_ticks())
    r = run_module("restore", {"images_dir": str(images)})
    assert r.status == "ok", r.get("msg")
    assert "--ext-unix-sk=%d" % inode in r["criu_cmd"]
    assert r["verified"]["alive"] and r["verified"]["stdio_matches"]
    assert _fd_target(w.pid, 1).startswith("socket:[")
    assert w.alive(listener), "the peer outside the tree must be kept alive"
    w.wait_ticks(10)
    ok, gap = w.continuity()
    assert ok and len(w.read_ticks()) > n + 5, "the tick sequence repeated or skipped across the restore"
    print("ext_unix_sk restore: largest gap %.3f s" % gap)


def test_pipe_stdout_to_a_reader_outside_restores_with_inherit_fd(run_module, workload, tmp_path):
    w = workload(stdio="pipe", stdout=True)
    pipe = _fd_target(w.pid, 1)
    assert pipe.startswith("pipe:[")
    w.wait_ticks(3)
    images = tmp_path / "img"
    refused = _dump(run_module, w, images)
    assert refused.failed and "set inherit_fd" in refused["msg"] and "Nothing was frozen" in refused["msg"]
    d = _dump(run_module, w, images, inherit_fd=True)
    assert d.status == "ok", d.get("msg")
    assert d["manifest"]["options"]["inherit_fds"] == [{"pid": w.pid, "fd": 1, "key": pipe, "writes": True}]
    assert wait_gone(w.pid)
    n = len(w.read_ticks())
    # Without a replacement the restore refuses before criu runs, and says what to set.
    bare = run_module("restore", {"images_dir": str(images)})
    assert bare.failed and "set inherit_fd_file" in bare["msg"] and "fd 1 of PID %d" % w.pid in bare["msg"]
    assert not w.alive() and not (images / "restore.log").exists()
    out = tmp_path / "stdout-after-restore.log"
    r = run_module("restore", {"images_dir": str(images), "inherit_fd_file": str(out)})
    assert r.status == "ok", r.get("msg")
    argv = r["criu_cmd"]
    i = argv.index("--inherit-fd")
    assert argv[i + 1].startswith("fd[") and argv[i + 1].endswith("]:%s" % pipe)
    assert _fd_target(w.pid, 1) == str(out) and _fd_target(w.pid, 2) == str(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    w.wait_ticks(10)
    ok, dummy = w.continuity()
    assert ok and len(w.read_ticks()) > n + 5
    # What it prints now lands in the file, continuing the sequence.
    deadline = time.time() + 10
    while time.time() < deadline and len(out.read_text().splitlines()) < 3:
        time.sleep(0.05)
    printed = [int(line.split()[0]) for line in out.read_text().splitlines()]
    assert len(printed) >= 3 and printed[0] > n - 1 and printed == list(range(printed[0], printed[0] + len(printed)))
