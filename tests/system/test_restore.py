"""ckpt.criu.restore against real CRIU and real processes.

Every restore of the counter workload checks continuity: the tick sequence
never repeats or skips across the checkpoint, and the largest gap between two
ticks is reported. Every refusal asserts a clear message, that nothing was
touched (images dir unchanged, no restore record, no process), and, where
possible, that the same checkpoint restores once the cause is removed."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time

import pytest

from ckpt_testlib import (continuity, dir_snapshot, flip_byte, identity, kill_and_wait,
                          make_checkpoint, start_workload, state, wait_gone, write_manifest)

pytestmark = pytest.mark.criu

GAPS = {}


def _restore(run_module, images, check=False, **kw):
    args = {"images_dir": str(images)}
    args.update(kw)
    return run_module("restore", args, check=check)


def _assert_restored(res, w, images, before_ticks):
    assert res.status == "ok", res.get("msg")
    assert res["changed"] is True
    assert res["pid"] == w.pid
    assert res["verified"]["alive"] and res["verified"]["exe_matches"] and res["verified"]["cmdline_matches"]
    record = images / "ckpt-restore.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    rec = json.loads(record.read_text())
    assert rec["process"]["pid"] == w.pid
    assert rec["process"]["start_time"] == res["process"]["start_time"]
    assert rec == res["restore_record"]
    # Ticking continues after the restore, with no repeated or skipped tick.
    w.wait_ticks(5)
    assert len(w.read_ticks()) > before_ticks
    ok, gap = w.continuity()
    assert ok, "tick sequence repeated or skipped across the restore"
    return gap


def _checkpointed(run_module, workload, tmp_path, criu_bin, **dump_args):
    """(workload, images_dir) of a counter checkpointed with ckpt.criu.dump into tmp_path/img."""
    w = workload("devnull")
    images = tmp_path / "img"
    make_checkpoint(criu_bin, w.pid, images, run_module, **dump_args)
    return w, images


def test_happy_path_restores_and_ticks_on(run_module, workload, tmp_path, criu_bin):
    w = workload("devnull")
    w.wait_ticks(3)
    images = tmp_path / "img"
    make_checkpoint(criu_bin, w.pid, images, run_module)
    assert wait_gone(w.pid), "the dumped process must be gone after a plain dump"
    n = len(w.read_ticks())
    res = _restore(run_module, images)
    gap = _assert_restored(res, w, images, n)
    GAPS["happy"] = gap
    assert res["timings"]["criu_duration"] > 0
    assert "restore_time_us" in res["timings"]["stats"] or "forking_time_us" in res["timings"]["stats"]
    assert res["log_path"] == str(images / "restore.log") and os.path.exists(res["log_path"])
    assert res["criu_cmd"][1] == "restore" and "-d" in res["criu_cmd"]
    assert "-W" in res["criu_cmd"] and "-v4" in res["criu_cmd"]
    print("happy path: max gap %.3f s, criu %.3f s, timings %s"
          % (gap, res["timings"]["criu_duration"], res["timings"]))


def test_check_apply_check_apply(run_module, workload, tmp_path, criu_bin):
    w = workload("devnull")
    w.wait_ticks(3)
    images = tmp_path / "img"
    make_checkpoint(criu_bin, w.pid, images, run_module)
    assert wait_gone(w.pid)
    snap = dir_snapshot(images)
    r1 = _restore(run_module, images, check=True)
    assert r1.status == "ok" and r1["changed"] is True, r1
    assert not w.alive() and dir_snapshot(images) == snap, "check mode touched something"
    n = len(w.read_ticks())
    r2 = _restore(run_module, images)
    _assert_restored(r2, w, images, n)
    r3 = _restore(run_module, images, check=True)
    assert r3.status == "ok" and r3["changed"] is False, r3
    r4 = _restore(run_module, images)
    assert r4.status == "ok" and r4["changed"] is False, r4
    assert r4["process"]["start_time"] == r2["process"]["start_time"]
    assert [r1["changed"], r2["changed"], r3["changed"], r4["changed"]] == [True, True, False, False]
    ok, gap = w.continuity()
    assert ok
    # A different process on the PID (restored again by someone else) is not "already restored".
    w.kill()
    assert wait_gone(w.pid)
    r5 = _restore(run_module, images, check=True)
    assert r5.status == "ok" and r5["changed"] is True


def test_restore_does_not_hold_ansible_pipes(run_module, workload, tmp_path, criu_bin):
    """The restored process lives on; if it held the module's stdout/stderr,
    `ansible` would never see EOF and this call would hit its timeout."""
    w, images = _checkpointed(run_module, workload, tmp_path, criu_bin)
    assert wait_gone(w.pid)
    t0 = time.monotonic()
    res = run_module("restore", {"images_dir": str(images), "settle": 0.5}, timeout=60)
    took = time.monotonic() - t0
    assert res.status == "ok" and res["changed"], res
    assert w.alive(), "the restored process must outlive the ansible run"
    # None of its fds is a pipe it could share with Ansible or criu.
    targets = [os.readlink("/proc/%d/fd/%s" % (w.pid, fd)) for fd in os.listdir("/proc/%d/fd" % w.pid)]
    assert not [t for t in targets if t.startswith("pipe:")], targets
    assert took < 60
    w.wait_ticks(3)
    assert w.continuity()[0]


def test_leave_stopped_restore_then_resume(run_module, workload, tmp_path, criu_bin):
    """Two-phase commit on one host: freeze the source, kill it (commit),
    restore stopped, verify, resume."""
    w = workload("devnull")
    w.wait_ticks(3)
    images = tmp_path / "img"
    make_checkpoint(criu_bin, w.pid, images, run_module, leave_stopped=True)
    assert state(w.pid) == "T"
    # Restoring while the frozen source holds the PID is refused, naming it.
    res = _restore(run_module, images, pid_wait=0.5)
    assert res.failed and "checkpointed process itself" in res["msg"], res
    assert state(w.pid) == "T", "a refused restore must leave the source frozen"
    k = run_module("process_state", {"images_dir": str(images), "state": "killed"})
    assert k.status == "ok" and k["changed"] and k["after"] == "absent", k
    n = len(w.read_ticks())
    res = _restore(run_module, images, leave_stopped=True, settle=0.5)
    assert res.status == "ok" and res["changed"], res
    assert res["verified"]["state"] == "stopped"
    time.sleep(0.3)
    assert state(w.pid) == "T" and len(w.read_ticks()) == n, "restored with leave_stopped must not tick"
    r = run_module("process_state", {"images_dir": str(images), "instance": "restored", "state": "running"})
    assert r.status == "ok" and r["changed"] and r["before"] == "stopped" and r["after"] == "running", r
    w.wait_ticks(5)
    ok, gap = w.continuity()
    assert ok
    GAPS["two_phase"] = gap
    # The source instance no longer exists: killing it again is satisfied, and
    # the restored process (same PID, other start time) is not touched.
    k2 = run_module("process_state", {"images_dir": str(images), "state": "killed"})
    assert k2.failed and "different process" in k2["msg"], k2
    assert w.alive()


def test_corrupted_image_refused_then_restores_when_fixed(run_module, workload, tmp_path, criu_bin):
    w = workload("devnull", mem=8)
    images = tmp_path / "img"
    make_checkpoint(criu_bin, w.pid, images, run_module)
    assert wait_gone(w.pid)
    for pattern in ("pages-*.img", "core-*.img"):
        img = sorted(images.glob(pattern))[0]
        off = flip_byte(img)
        snap = dir_snapshot(images)
        res = _restore(run_module, images)
        assert res.failed and img.name in res["msg"] and "sha256" in res["msg"], res
        assert "criu_cmd" not in res or res["criu_cmd"] is None
        assert dir_snapshot(images) == snap and not w.alive()
        flip_byte(img, off)
    # Nothing was touched: the same checkpoint restores once the byte is back.
    n = len(w.read_ticks())
    _assert_restored(_restore(run_module, images), w, images, n)


def test_missing_image_refused(run_module, workload, tmp_path, criu_bin):
    w, images = _checkpointed(run_module, workload, tmp_path, criu_bin)
    assert wait_gone(w.pid)
    core = sorted(images.glob("core-*.img"))[0]
    aside = tmp_path / core.name
    shutil.move(str(core), str(aside))
    res = _restore(run_module, images)
    assert res.failed and core.name in res["msg"] and "missing" in res["msg"], res
    assert not w.alive() and not (images / "restore.log").exists()
    shutil.move(str(aside), str(core))
    n = len(w.read_ticks())
    _assert_restored(_restore(run_module, images), w, images, n)


def test_missing_or_incomplete_manifest_refused(run_module, workload, tmp_path, criu_bin):
    w, images = _checkpointed(run_module, workload, tmp_path, criu_bin, leave_running=True)
    manifest = images / "ckpt-manifest.json"
    data = json.loads(manifest.read_text())
    manifest.rename(images / "aside.json")
    res = _restore(run_module, images)
    assert res.failed and res["msg"].startswith("no complete checkpoint in %s" % images), res
    data["complete"] = False
    manifest.write_text(json.dumps(data))
    res = _restore(run_module, images)
    assert res.failed and res["msg"].startswith("no complete checkpoint in") and "complete" in res["msg"], res
    res = _restore(run_module, tmp_path / "nope")
    assert res.failed and "does not exist" in res["msg"], res
    assert w.alive(), "the running workload must survive every refusal"


def test_binary_same_size_other_content_refused(run_module, tmp_path, criu_bin):
    """The exe is a private copy of python; after the dump one byte in its
    middle changes (same size, same build-id region untouched)."""
    pybin = tmp_path / "bin" / "python3"
    pybin.parent.mkdir()
    shutil.copy2(os.path.realpath("/usr/bin/python3"), str(pybin))
    pid, ticks = start_workload(tmp_path, pybin)
    try:
        images = tmp_path / "img"
        make_checkpoint(criu_bin, pid, images, raw=True)
        assert wait_gone(pid)
        size = pybin.stat().st_size
        off = flip_byte(pybin)
        assert pybin.stat().st_size == size
        res = _restore(run_module, images)
        assert res.failed and str(pybin) in res["msg"] and "sha256" in res["msg"], res
        assert "same size" in res["msg"], res
        assert not os.path.exists("/proc/%d" % pid) and not (images / "restore.log").exists()
        # Put the byte back: the untouched checkpoint restores and ticks on.
        flip_byte(pybin, off)
        n = len(open(ticks).read().splitlines())
        res = _restore(run_module, images)
        assert res.status == "ok" and res["changed"], res
        time.sleep(0.3)
        assert len(open(ticks).read().splitlines()) > n
        ok, gap = continuity(ticks)
        assert ok
    finally:
        kill_and_wait(pid)


def test_pid_taken_by_live_process_refused(run_module, workload, tmp_path, criu_bin):
    w, images = _checkpointed(run_module, workload, tmp_path, criu_bin, leave_running=True)
    snap = dir_snapshot(images)
    n = len(w.read_ticks())
    res = _restore(run_module, images, pid_wait=0.5)
    assert res.failed, res
    assert "PID %d" % w.pid in res["msg"] or "pid %d" % w.pid in res["msg"], res
    # The holder is named by its program and start time, never its arguments (they may hold secrets).
    assert "python" in res["msg"] and "start time" in res["msg"] and "counter.py" not in res["msg"], res["msg"]
    assert res["holder"]["pid"] == w.pid
    assert dir_snapshot(images) == snap
    w.wait_ticks(3)
    assert w.alive() and len(w.read_ticks()) > n, "the running process survives"
    assert w.continuity()[0]
    # Also in check mode: the read-only verification fails the same way.
    res = _restore(run_module, images, check=True, pid_wait=0.2)
    assert res.failed and "still runs here" in res["msg"], res


def test_pid_held_by_someone_else(run_module, workload, tmp_path, criu_bin):
    """The checkpoint's PID is reused by an unrelated process: refused, naming it."""
    w = workload("devnull")
    images = tmp_path / "img"
    manifest = make_checkpoint(criu_bin, w.pid, images, run_module)
    assert wait_gone(w.pid)
    # Pretend the checkpoint was of a process that held PID 1's... no: make
    # the manifest name a PID that an unrelated live process holds (ours).
    other = os.getpid()
    data = json.loads((images / "ckpt-manifest.json").read_text())
    assert data["process"]["pid"] == manifest["process"]["pid"]
    # We cannot move the images to another PID, but the refusal happens before criu:
    data["process"]["pid"] = other
    write_manifest(images, data)
    res = _restore(run_module, images, pid_wait=0.2)
    assert res.failed and "held by another live process" in res["msg"] and str(other) in res["msg"], res


def _kill_frozen_and_restore(run_module, w, images, **kw):
    """SIGKILL the frozen source and restore at once (no wait in between)."""
    os.kill(w.pid, 9)
    time.sleep(0.02)
    zombie = state(w.pid) == "Z"
    t0 = time.monotonic()
    res = _restore(run_module, images, **kw)
    return res, zombie, time.monotonic() - t0


def test_zombie_pid_is_waited_for(run_module, workload, tmp_path, criu_bin):
    """Kill the source and restore at once: the PID stays a zombie for up to
    ~1 s (PID 1 reaps orphans slowly). pid_wait covers it."""
    w = workload("devnull")
    w.wait_ticks(2)
    images = tmp_path / "img"
    # Frozen at the dump, so no tick is written between the dump and the kill.
    make_checkpoint(criu_bin, w.pid, images, run_module, leave_stopped=True)
    n = len(w.read_ticks())
    res, zombie, took = _kill_frozen_and_restore(run_module, w, images)
    assert res.status == "ok" and res["changed"], res
    w.wait_ticks(3)
    assert len(w.read_ticks()) > n and w.continuity()[0]
    print("zombie right after the kill: %s; restore with pid_wait=5 took %.2f s" % (zombie, took))


def test_zombie_outliving_pid_wait_is_a_clear_error(run_module, workload, tmp_path, criu_bin):
    """With pid_wait=0 a zombie still on the PID is refused before criu runs
    (or, if PID 1 reaped it already, the restore simply succeeds)."""
    w = workload("devnull")
    w.wait_ticks(2)
    images = tmp_path / "img"
    make_checkpoint(criu_bin, w.pid, images, run_module, leave_stopped=True)
    res, zombie, took = _kill_frozen_and_restore(run_module, w, images, pid_wait=0)
    print("zombie right after the kill: %s; failed: %s; msg: %s" % (zombie, res.failed, res.get("msg")))
    if res.failed:
        assert "zombie" in res["msg"] and "pid_wait" in res["msg"], res
        assert not (images / "ckpt-restore.json").exists()
        assert wait_gone(w.pid)
        res = _restore(run_module, images)
    assert res.status == "ok" and res["changed"], res
    w.wait_ticks(3)
    assert w.continuity()[0]


def test_stdout_pipe_to_outside_reader_dies_and_is_reported(run_module, workload, tmp_path, criu_bin):
    w = workload("pipe", stdout=True)
    w.wait_ticks(3)
    images = tmp_path / "img"
    # The dump module refuses this on purpose; raw criu dumps it fine.
    make_checkpoint(criu_bin, w.pid, images, raw=True)
    assert wait_gone(w.pid)
    res = _restore(run_module, images)
    assert res.failed, res
    assert "exited 0" in res["msg"] and "died within" in res["msg"], res
    assert "stdout was a pipe" in res["msg"], res
    assert res["verified"]["alive"] is False
    assert not (images / "ckpt-restore.json").exists()
    print("pipe case: %s" % res["msg"])


def test_stdout_file_without_append_truncated_refused(run_module, workload, tmp_path, criu_bin):
    w = workload("file", stdout=True)
    w.wait_ticks(3)
    images = tmp_path / "img"
    # Raw dump: ckpt.criu.dump (as of 7324956) records the file size during its
    # preflight, before the freeze, while the workload still writes; criu
    # checks the size the file had at the freeze. Reported for consolidation.
    manifest = make_checkpoint(criu_bin, w.pid, images, raw=True)
    assert wait_gone(w.pid)
    entries = manifest["stdio_files"]
    assert entries, "the manifest must list stdout as a non-append file"
    path = entries[0]["path"]
    size = os.path.getsize(path)
    saved = open(path, "rb").read()
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    res = _restore(run_module, images)
    assert res.failed and path in res["msg"] and "O_APPEND" in res["msg"], res
    assert not (images / "restore.log").exists() and not w.alive()
    with open(path, "wb") as fh:
        fh.write(saved)
    n = len(w.read_ticks())
    _assert_restored(_restore(run_module, images), w, images, n)


def test_non_root_refused(run_module, workload, tmp_path, criu_bin):
    w, images = _checkpointed(run_module, workload, tmp_path, criu_bin, leave_running=True)
    # nobody cannot run the venv's python (under /root): use the system one.
    inventory = tmp_path / "nobody.ini"
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n")
    env = {"ANSIBLE_INVENTORY": str(inventory), "ANSIBLE_BECOME": "true", "ANSIBLE_BECOME_USER": "nobody",
           "ANSIBLE_BECOME_METHOD": "su", "ANSIBLE_SU_FLAGS": "-s /bin/sh"}
    probe = run_module("ansible.builtin.command", {"argv": ["id", "-u"]}, env=env)
    if probe.failed or probe.get("stdout", "").strip() != "65534":
        pytest.skip("cannot become nobody here: %s" % probe.get("msg"))
    snap = dir_snapshot(images)
    res = run_module("restore", {"images_dir": str(images)}, env=env)
    assert res.failed and "needs root" in res["msg"] and "65534" in res["msg"], res
    assert dir_snapshot(images) == snap
    res = run_module("process_state", {"images_dir": str(images), "state": "killed"}, env=env)
    assert res.failed, res
    assert w.alive() and w.continuity()[0]


def test_identity_helper_matches_module(run_module, workload):
    w = workload("devnull")
    ident = identity(w.pid)
    res = run_module("process_state", {"identity": ident, "state": "running"}, check=True)
    assert res.status == "ok" and res["changed"] is False and res["before"] == "running", res


def test_remove_images_after_the_verified_restore_only(run_module, workload, tmp_path, criu_bin):
    """remove_images: check mode and a refused restore keep the images; a verified restore removes
    them in the same run; a removal that fails (the directory is a mount point) leaves the process
    running and the task ok, saying why."""
    w, images = _checkpointed(run_module, workload, tmp_path, criu_bin)
    assert wait_gone(w.pid)
    snap = dir_snapshot(images)
    check = _restore(run_module, images, check=True, remove_images=True)
    assert check.status == "ok" and check["changed"] and "images_removed" not in check, check
    assert dir_snapshot(images) == snap, "check mode touched the images"
    refused = _restore(run_module, images, remove_images=True, criu_path=str(tmp_path / "no-such-criu"))
    assert refused.status == "failed" and "images_removed" not in refused, refused
    assert dir_snapshot(images) == snap, "a failed restore removed or changed the images"
    n = len(w.read_ticks())
    res = _restore(run_module, images, remove_images=True)
    assert res.status == "ok" and res["changed"] and res["images_removed"] is True, res
    assert "its images were removed" in res["msg"] and not os.path.lexists(images)
    w.wait_ticks(5)
    assert len(w.read_ticks()) > n and w.continuity()[0]
    again = _restore(run_module, images, remove_images=True)
    assert again.status == "failed" and "no complete checkpoint" in again["msg"], again
    w.kill()
    assert wait_gone(w.pid)

    # The removal fails: the process runs on, the task is ok and says why.
    w2, images2 = _checkpointed(run_module, workload, tmp_path / "second", criu_bin)
    assert wait_gone(w2.pid)
    subprocess.run(["mount", "--bind", str(images2), str(images2)], check=True)
    try:
        res = _restore(run_module, images2, remove_images=True)
        assert res.status == "ok" and res["images_removed"] is False, res
        assert "could not be removed" in res["msg"] and "busy" in res["images_remove_error"].lower(), res
        assert w2.alive() and w2.wait_ticks(3)
    finally:
        subprocess.run(["umount", str(images2)], check=True)
        w2.kill()
