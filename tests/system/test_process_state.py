"""ckpt.criu.process_state against real processes and real CRIU checkpoints:
the commit/rollback primitive of a two-phase migration."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from ckpt_testlib import (WORKLOADS, continuity, identity, make_checkpoint, read_ticks, state, wait_gone,
                          write_manifest)

pytestmark = pytest.mark.criu


def _ps(run_module, check=False, **args):
    return run_module("process_state", args, check=check)


def test_rollback_resumes_frozen_source(run_module, workload, tmp_path, criu_bin):
    """leave_stopped dump -> state running (rollback) -> it ticks on, continuously."""
    w = workload("devnull")
    w.wait_ticks(3)
    images = tmp_path / "img"
    make_checkpoint(criu_bin, w.pid, images, run_module, leave_stopped=True)
    assert state(w.pid) == "T"
    n = len(w.read_ticks())
    r1 = _ps(run_module, check=True, images_dir=str(images), state="running")
    time.sleep(0.2)
    assert state(w.pid) == "T" and len(w.read_ticks()) == n, "check mode must not signal"
    r2 = _ps(run_module, images_dir=str(images), state="running")
    r3 = _ps(run_module, check=True, images_dir=str(images), state="running")
    r4 = _ps(run_module, images_dir=str(images), state="running")
    for r in (r1, r2, r3, r4):
        assert r.status == "ok", r
    assert [r1["changed"], r2["changed"], r3["changed"], r4["changed"]] == [True, True, False, False]
    assert (r1["before"], r1["after"], r1["signal"]) == ("stopped", "running", "SIGCONT")
    assert (r2["before"], r2["after"]) == ("stopped", "running")
    assert r4["before"] == "running" and r4["signal"] is None
    w.wait_ticks(5)
    ok, gap = w.continuity()
    assert ok
    print("rollback: max gap %.3f s" % gap)


def test_stop_and_kill_check_apply_check_apply(run_module, workload, tmp_path, criu_bin):
    w = workload("devnull")
    images = tmp_path / "img"
    make_checkpoint(criu_bin, w.pid, images, run_module, leave_running=True)
    got = [_ps(run_module, check=c, manifest=str(images / "ckpt-manifest.json"), state="stopped")
           for c in (True, False, True, False)]
    assert all(r.status == "ok" for r in got), got
    assert [r["changed"] for r in got] == [True, True, False, False]
    assert state(w.pid) == "T"
    got = [_ps(run_module, check=c, images_dir=str(images), state="killed") for c in (True, False, True, False)]
    assert all(r.status == "ok" for r in got), got
    assert [r["changed"] for r in got] == [True, True, False, False]
    assert got[0]["after"] == "absent" and got[1]["before"] == "stopped" and got[1]["after"] == "absent"
    assert got[2]["before"] == "absent"
    assert not os.path.exists("/proc/%d" % w.pid), "killed waits until the PID is gone from /proc"
    # Gone: running is a clear error, not a silent success.
    r = _ps(run_module, images_dir=str(images), state="running")
    assert r.failed and "process %d from the process checkpointed in" % w.pid in r["msg"], r
    assert "not running" in r["msg"]


def test_pid_reused_by_another_process_is_refused(run_module, workload, tmp_path, criu_bin):
    """The identity names a PID that now belongs to another process: error
    naming both, nothing signalled."""
    w = workload("devnull")
    ident = identity(w.pid)
    ident["start_time"] -= 1  # the process that held this PID before
    for want in ("killed", "stopped", "running"):
        r = _ps(run_module, identity=ident, state=want)
        assert r.failed and "different process" in r["msg"] and "start_time" in r["msg"], r
        assert "nothing was signalled" in r["msg"] and str(ident["start_time"]) in r["msg"]
        assert str(ident["start_time"] + 1) in r["msg"], "both identities are named"
    assert w.alive() and state(w.pid) != "T"
    w.wait_ticks(3)
    assert w.continuity()[0]
    # Same for a manifest whose boot id is another boot.
    images = tmp_path / "img"
    make_checkpoint(criu_bin, w.pid, images, run_module, leave_running=True)
    data = json.loads((images / "ckpt-manifest.json").read_text())
    data["process"]["boot_id"] = "00000000-0000-0000-0000-000000000000"
    write_manifest(images, data)
    r = _ps(run_module, images_dir=str(images), state="killed")
    assert r.failed and "boot_id" in r["msg"], r
    assert w.alive()


def test_exe_differs_is_refused(run_module, workload):
    w = workload("devnull")
    ident = identity(w.pid)
    ident["exe"] = "/usr/bin/some-other-program"
    r = _ps(run_module, identity=ident, state="killed")
    assert r.failed and "exe" in r["differences"], r
    assert w.alive()


def test_identity_needs_start_time(run_module, workload):
    w = workload("devnull")
    r = _ps(run_module, identity={"pid": w.pid}, state="killed")
    assert r.failed and "start_time" in r["msg"], r
    assert w.alive()


def test_killed_is_satisfied_by_a_gone_pid(run_module, tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    ident = {"pid": p.pid, "start_time": 1, "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip()}
    assert wait_gone(p.pid)
    r = _ps(run_module, identity=ident, state="killed")
    assert r.status == "ok" and r["changed"] is False and r["before"] == "absent", r
    r = _ps(run_module, identity=ident, state="running")
    assert r.failed and "is not running" in r["msg"], r


def test_restored_instance_is_not_the_source(run_module, workload, tmp_path, criu_bin):
    """After a restore on the same host the PID is back with a new start
    time: instance=source refuses it, instance=restored addresses it."""
    w = workload("devnull")
    w.wait_ticks(2)
    images = tmp_path / "img"
    make_checkpoint(criu_bin, w.pid, images, run_module)
    assert wait_gone(w.pid)
    r = _ps(run_module, images_dir=str(images), instance="restored", state="running")
    assert r.failed and "no restore record" in r["msg"], r
    res = run_module("restore", {"images_dir": str(images), "settle": 0.5})
    assert res.status == "ok", res
    r = _ps(run_module, images_dir=str(images), state="stopped")
    assert r.failed and "different process" in r["msg"], r
    assert state(w.pid) != "T"
    got = [_ps(run_module, check=c, images_dir=str(images), instance="restored", state="stopped")
           for c in (True, False, True, False)]
    assert [r["changed"] for r in got] == [True, True, False, False], got
    assert state(w.pid) == "T"
    r = _ps(run_module, images_dir=str(images), instance="restored", state="running")
    assert r.status == "ok" and r["changed"], r
    w.wait_ticks(3)
    assert w.continuity()[0]


def _pipe_tree(tmp_path):
    """(root, child, ticks file) of the workload pipe_tree.py, started as a daemon, ticking."""
    ticks = tmp_path / "pipe.ticks"
    p = subprocess.Popen([sys.executable, str(WORKLOADS / "pipe_tree.py"), str(ticks)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    threading.Thread(target=p.wait, daemon=True).start()    # reaped at once, as by a daemon's init
    deadline = time.monotonic() + 10
    while not (_kids(p.pid) and len(read_ticks(ticks)) >= 3):
        assert time.monotonic() < deadline, "the pipe tree did not start ticking"
        time.sleep(0.05)
    return p, _kids(p.pid)[0], ticks


def _kids(pid):
    try:
        return [int(k) for k in open("/proc/%d/task/%d/children" % (pid, pid)).read().split()]
    except OSError:
        return []


def test_a_tree_is_resumed_and_killed_whole(run_module, tmp_path, criu_bin):
    """A frozen tree (root + child, a pipe between them): state=running by identity (as a
    rollback does) resumes the child too, and data flows again; state=killed by the
    checkpoint kills the child too (check mode names it first, signals nothing); a child
    left orphaned by a root killed alone is still found through the manifest's tree."""
    p, child, ticks = _pipe_tree(tmp_path)
    try:
        root = p.pid
        make_checkpoint(criu_bin, root, tmp_path / "img", run_module, leave_stopped=True)
        assert state(root) == "T" and state(child) == "T"
        r = _ps(run_module, identity=identity(root), state="running")
        assert r.status == "ok" and r["changed"] and r["tree_pids"] == [child], r
        assert "and 1 other process of its tree (%d)" % child in r["msg"]
        assert state(child) != "T"
        n = len(read_ticks(ticks))
        deadline = time.monotonic() + 10
        while len(read_ticks(ticks)) < n + 5:
            assert time.monotonic() < deadline, "no data through the pipe after the resume"
            time.sleep(0.05)
        assert continuity(read_ticks(ticks))[0]

        images = tmp_path / "img2"
        make_checkpoint(criu_bin, root, images, run_module, leave_stopped=True)
        r = _ps(run_module, check=True, images_dir=str(images), state="killed")
        assert r.status == "ok" and r["changed"] and r["tree_pids"] == [child], r
        assert state(root) == "T" and state(child) == "T", "check mode must not signal"
        r = _ps(run_module, images_dir=str(images), state="killed")
        assert r.status == "ok" and r["changed"] and r["tree_pids"] == [child] and r["after"] == "absent", r
        p.wait(timeout=10)
        assert wait_gone(child), "the child of the killed tree is still there"
        again = _ps(run_module, images_dir=str(images), state="killed")
        assert again.status == "ok" and not again["changed"] and again["tree_pids"] == [], again
    finally:
        for pid in (p.pid, child):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        p.wait(timeout=10)


def test_a_member_orphaned_by_its_killed_root_is_still_killed(run_module, tmp_path, criu_bin):
    p, child, dummy = _pipe_tree(tmp_path)
    try:
        images = tmp_path / "img"
        make_checkpoint(criu_bin, p.pid, images, run_module, leave_stopped=True)
        os.kill(p.pid, 9)               # the root alone, as a kill by PID would
        p.wait(timeout=10)
        assert state(child) == "T"
        r = _ps(run_module, images_dir=str(images), state="killed")
        assert r.status == "ok" and r["changed"] and r["before"] == "absent" and r["tree_pids"] == [child], r
        assert "only 1 other process of its tree (%d)" % child in r["msg"]
        assert wait_gone(child)
    finally:
        try:
            os.kill(child, 9)
        except OSError:
            pass
