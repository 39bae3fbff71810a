"""ckpt.criu.process_state against real processes and real CRIU checkpoints:
the commit/rollback primitive of a two-phase migration."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from restore_helpers import identity, make_checkpoint, state, wait_gone, write_manifest

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
