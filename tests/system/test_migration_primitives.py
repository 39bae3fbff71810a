"""The pieces that keep a migration's frozen path inside one task, against
real CRIU: a restore that waits for its checkpoint to arrive
(wait_for_manifest), and the wall-clock stamps that measure downtime."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest

pytestmark = pytest.mark.criu


def _send(src, dst, before_manifest=None):
    """Copy a checkpoint the way rsync delivers it: each image under a dot name
    renamed into place when whole, the manifest last. ``before_manifest()``
    runs between the two."""
    for name in sorted(os.listdir(src)):
        if name == "ckpt-manifest.json" or name.startswith(".ckpt-"):
            continue
        shutil.copy2(os.path.join(src, name), os.path.join(dst, "." + name + ".part"))
        os.rename(os.path.join(dst, "." + name + ".part"), os.path.join(dst, name))
    if before_manifest is not None:
        before_manifest()
    shutil.copy2(os.path.join(src, "ckpt-manifest.json"), os.path.join(dst, ".manifest.tmp"))
    os.rename(os.path.join(dst, ".manifest.tmp"), os.path.join(dst, "ckpt-manifest.json"))


def _wait_until_ready(dst, thread, timeout=120.0):
    """The marker a waiting restore writes once it waits for its checkpoint (its prefault done),
    read as soon as it is there: how long the module takes to start varies with the machine's load,
    so no fixed sleep stands in for it."""
    ready = dst / ".ckpt-restore-ready"
    deadline = time.monotonic() + timeout
    while not ready.exists():
        assert thread.is_alive(), "the restore ended before it said it was ready"
        assert time.monotonic() < deadline, "the restore did not say it was ready within %s s" % timeout
        time.sleep(0.05)
    return json.loads(ready.read_text())


@pytest.mark.parametrize("prefault", [None, "64M"])
def test_restore_waits_for_the_checkpoint_then_restores(tmp_path, run_module, workload, prefault):
    w = workload("devnull")
    w.wait_ticks(3)
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir(mode=0o700)
    out = {}

    def restore():
        out["r"] = run_module("restore", {"images_dir": str(dst), "wait_for_manifest": 60,
                                          "settle": 0.5, "prefault": prefault})

    t = threading.Thread(target=restore)
    t.start()
    # It says it is ready (its prefault done) in a marker that rsync never sends.
    ready = dst / ".ckpt-restore-ready"
    marker = _wait_until_ready(dst, t)
    assert marker["prefault_bytes"] == (128 << 20 if prefault else 0), marker
    time.sleep(1.0)  # it waits at least this long (waited_for_manifest below)
    d = run_module("dump", {"pid": w.pid, "images_dir": str(src)})
    assert d.status == "ok" and d["changed"], d
    assert d["timings"]["frozen_at"] <= time.time()
    _send(str(src), str(dst))
    t.join(120)
    r = out["r"]
    assert r.status == "ok" and r["changed"], r
    assert r["pid"] == w.pid and w.alive()
    assert r["timings"]["waited_for_manifest"] > 1.0
    assert not ready.exists() and not (dst / ".ckpt-restore-ready.tmp").exists()
    if prefault is None:
        assert r["timings"]["prefault"] is None
    else:
        # Touched in full (twice the request: page cache for the images, then the process) while
        # the restore waited; half freed as the images arrived, the rest before criu ran.
        pf = r["timings"]["prefault"]
        assert pf["requested_bytes"] == 64 << 20 and pf["touched_bytes"] == pf["limit_bytes"] == 128 << 20, pf
        assert pf["freed_at_arrival_bytes"] == 64 << 20, pf
    # Downtime from the two wall-clock stamps: positive and bounded by the test.
    downtime = r["timings"]["resumed_at"] - d["timings"]["frozen_at"]
    assert 0 < downtime < 60
    ok, gap = w.continuity()
    assert ok, "ticks repeated or skipped"
    before = len(w.read_ticks())
    w.wait_ticks(3)
    assert len(w.read_ticks()) > before


def _dump_and_wait(tmp_path, run_module, workload):
    """A waiting restore in dst (a thread; its result in out["r"]) and a checkpoint in src."""
    w = workload("devnull")
    w.wait_ticks(3)
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir(mode=0o700)
    out = {}
    restore_args = {"images_dir": str(dst), "wait_for_manifest": 60}
    t = threading.Thread(target=lambda: out.update(r=run_module("restore", restore_args)))
    t.start()
    d = run_module("dump", {"pid": w.pid, "images_dir": str(src)})
    assert d.status == "ok" and d["changed"], d
    return w, src, dst, t, out, d


def test_waiting_restore_hashes_the_images_as_they_arrive(tmp_path, run_module, workload):
    w, src, dst, t, out, d = _dump_and_wait(tmp_path, run_module, workload)
    local = [i for i in d["manifest"]["images"] if not i.get("remote")]
    _send(str(src), str(dst), before_manifest=lambda: time.sleep(1.0))
    t.join(120)
    r = out["r"]
    assert r.status == "ok" and r["changed"] and w.alive(), r
    # Every image was hashed in the second before the manifest came, not after it.
    assert r["timings"]["hashed_while_waiting"] == len(local) > 3, (r["timings"], len(local))


def _send_manifest_first(src, dst, between=None, skip=()):
    """Deliver a checkpoint as one rsync of images and manifest does: in name
    order, so the manifest (ckpt-manifest.json) lands before the core, pages and
    pstree images. ``between()`` runs after the manifest; ``skip``: images never sent."""
    names = sorted(n for n in os.listdir(src) if not n.startswith(".ckpt-"))
    assert names.index("ckpt-manifest.json") < len(names) - 1, names
    for name in names:
        if name in skip:
            continue
        shutil.copy2(os.path.join(src, name), os.path.join(dst, "." + name + ".part"))
        os.rename(os.path.join(dst, "." + name + ".part"), os.path.join(dst, name))
        if name == "ckpt-manifest.json" and between is not None:
            between()


def test_waiting_restore_waits_for_the_images_a_manifest_sent_first_lists(tmp_path, run_module, workload):
    w, src, dst, t, out, d = _dump_and_wait(tmp_path, run_module, workload)
    seen = {}

    def look():
        time.sleep(1.0)
        seen["restored_early"] = "r" in out
    _send_manifest_first(str(src), str(dst), between=look)
    t.join(120)
    r = out["r"]
    assert not seen["restored_early"], "the restore did not wait for the images after the manifest"
    assert r.status == "ok" and r["changed"] and w.alive(), r
    ok, _gap = w.continuity()
    assert ok, "ticks repeated or skipped"


def test_an_image_that_never_comes_after_its_manifest_is_named(tmp_path, run_module, workload):
    w = workload("devnull")
    w.wait_ticks(3)
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir(mode=0o700)
    d = run_module("dump", {"pid": w.pid, "images_dir": str(src)})
    assert d.status == "ok", d
    core = "core-%d.img" % w.pid
    _send_manifest_first(str(src), str(dst), skip=(core,))
    t0 = time.monotonic()
    r = run_module("restore", {"images_dir": str(dst), "wait_for_manifest": 3})
    assert r.failed and "image %s is missing" % core in r["msg"], r
    assert time.monotonic() - t0 >= 3.0, "gave up on the missing image before wait_for_manifest ran out"
    assert not w.alive(), "a refused restore started the process"


def test_an_image_changed_after_it_was_hashed_is_still_refused(tmp_path, run_module, workload):
    w, src, dst, t, out, d = _dump_and_wait(tmp_path, run_module, workload)
    core = "core-%d.img" % w.pid

    def corrupt():
        time.sleep(1.0)   # hashed by now, as it arrived
        path = dst / core
        st = os.stat(path)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        with open(path, "r+b") as fh:   # same inode, same size, same mtime: only the ctime moves
            fh.write(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    _send(str(src), str(dst), before_manifest=corrupt)
    t.join(120)
    r = out["r"]
    assert r.status == "failed", r
    assert "image %s does not match its recorded sha256" % core in r["msg"], r["msg"]
    assert not w.alive(), "a refused restore started the process"


def test_waiting_restore_ends_when_the_migration_is_rolled_back(tmp_path, run_module):
    dst = tmp_path / "dst"
    dst.mkdir(mode=0o700)
    out = {}

    def restore():
        t0 = time.monotonic()
        out["r"] = run_module("restore", {"images_dir": str(dst), "wait_for_manifest": 120})
        out["t"] = time.monotonic() - t0

    t = threading.Thread(target=restore)
    t.start()
    _wait_until_ready(dst, t)
    shutil.rmtree(dst)
    t.join(60)
    r = out["r"]
    assert r.failed and "rolled back" in r["msg"] and r["aborted"] is True, r
    assert out["t"] < 30
    assert "Traceback" not in r.output


def test_restore_marked_aborted_before_criu_restores_nothing(tmp_path, run_module, workload):
    """The rollback's marker is looked at once more just before criu restore: here the whole
    checkpoint is already there, so only that last look can see it."""
    w = workload("devnull")
    w.wait_ticks(3)
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir(mode=0o700)
    d = run_module("dump", {"pid": w.pid, "images_dir": str(src)})
    assert d.status == "ok" and d["changed"], d
    _send(str(src), str(dst))
    (dst / ".ckpt-abort").touch(mode=0o600)
    r = run_module("restore", {"images_dir": str(dst), "wait_for_manifest": 30})
    assert r.failed and r["aborted"] is True, r
    assert "rolled back before this restore began" in r["msg"] and "nothing was restored" in r["msg"], r["msg"]
    assert not w.alive() and not (dst / "restore.log").exists()
    os.unlink(dst / ".ckpt-abort")      # without the marker the same checkpoint restores
    r = run_module("restore", {"images_dir": str(dst), "wait_for_manifest": 30, "settle": 0.3})
    assert r.status == "ok" and r["changed"] and w.alive(), r


def test_waiting_restore_times_out_clearly(tmp_path, run_module):
    dst = tmp_path / "dst"
    dst.mkdir(mode=0o700)
    r = run_module("restore", {"images_dir": str(dst), "wait_for_manifest": 1})
    assert r.failed and "within 1 s" in r["msg"], r
    assert os.listdir(dst) == []


def test_check_mode_does_not_wait(tmp_path, run_module):
    dst = tmp_path / "dst"
    dst.mkdir(mode=0o700)
    t0 = time.monotonic()
    r = run_module("restore", {"images_dir": str(dst), "wait_for_manifest": 60}, check=True)
    assert time.monotonic() - t0 < 30
    assert r.failed and "no complete checkpoint" in r["msg"]


def test_dump_refuses_a_bad_transfer_spec_before_freezing(tmp_path, run_module, workload):
    w = workload("devnull")
    r = run_module("dump", {"pid": w.pid, "images_dir": str(tmp_path / "img"),
                            "transfer": {"destination": "node2", "path": "/var/lib/ckpt/x",
                                         "rsh": ["ssh", "-o", "ProxyCommand=sh -c id"]}})
    assert r.failed and "single word" in r["msg"], r
    assert not (tmp_path / "img").exists()
    w.wait_ticks(3)


def _local_rsh(tmp_path):
    """A remote shell for rsync that runs the 'remote' side here: real rsync, no ssh."""
    shim = tmp_path / "local-rsh"
    shim.write_text("#!/bin/sh\nshift\nexec \"$@\"\n")
    shim.chmod(0o755)
    return [str(shim)]


def test_push_sends_the_manifest_only_after_every_image(tmp_path):
    from ansible_collections.ckpt.criu.plugins.module_utils import _transfer
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "pages-1.img").write_bytes(os.urandom(8 << 20))
    (src / "core-1.img").write_bytes(b"core")
    (src / ".ckpt-lock").write_text("")
    push = _transfer.Push(str(src), {"destination": "here", "path": str(dst), "rsh": _local_rsh(tmp_path)})
    # Written while the images travel, as the dump does.
    (src / "ckpt-manifest.json").write_text("{}")
    push.proc.wait()
    assert sorted(os.listdir(dst)) == ["core-1.img", "pages-1.img"]
    timings = push.finish()
    assert sorted(os.listdir(dst)) == ["ckpt-manifest.json", "core-1.img", "pages-1.img"]
    assert (dst / "pages-1.img").read_bytes() == (src / "pages-1.img").read_bytes()
    assert timings["total"] >= timings["images"] > 0


def test_push_with_the_manifest_sends_everything_in_one_rsync(tmp_path):
    from ansible_collections.ckpt.criu.plugins.module_utils import _transfer
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "core-1.img").write_bytes(b"core")
    (src / "pstree.img").write_bytes(b"tree")
    (src / "ckpt-manifest.json").write_text("{}")
    (src / ".ckpt-lock").write_text("")
    push = _transfer.Push(str(src), {"destination": "here", "path": str(dst), "rsh": _local_rsh(tmp_path)},
                          with_manifest=True)
    push.proc.wait()
    assert sorted(os.listdir(dst)) == ["ckpt-manifest.json", "core-1.img", "pstree.img"]
    timings = push.finish()
    assert timings["passes"] == 1 and timings["manifest"] < 0.05, timings


def test_push_failure_and_abort(tmp_path):
    from ansible_collections.ckpt.criu.plugins.module_utils import _transfer
    src = tmp_path / "src"
    src.mkdir()
    (src / "core-1.img").write_bytes(b"core")
    (src / "ckpt-manifest.json").write_text("{}")
    push = _transfer.Push(str(src), {"destination": "here", "path": str(tmp_path / "no" / "such" / "dir"),
                                     "rsh": _local_rsh(tmp_path)})
    with pytest.raises(_transfer.TransferError) as exc:
        push.finish()
    assert "rsync to here:" in exc.value.msg and "failed (rc=" in exc.value.msg, exc.value.msg
    push = _transfer.Push(str(src), {"destination": "here", "path": str(tmp_path / "dst2"),
                                     "rsh": ["sleep", "30"]})
    t0 = time.monotonic()
    push.abort()
    assert time.monotonic() - t0 < 5 and push.proc.returncode is not None


def _dump_with_transfer(tmp_path, run_module, w):
    """Dump w (left running) into tmp_path/src with a transfer to tmp_path/dst; (result, dst)."""
    w.wait_ticks(3)
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir(mode=0o700)
    r = run_module("dump", {"pid": w.pid, "images_dir": str(src), "leave_running": True,
                            "transfer": {"destination": "here", "path": str(dst), "rsh": _local_rsh(tmp_path)}})
    assert r.status == "ok", r
    return r, dst


def test_dump_sends_its_checkpoint_while_hashing(tmp_path, run_module, workload):
    """dump.transfer: the images arrive with the manifest last, and they verify on arrival."""
    from ansible_collections.ckpt.criu.plugins.module_utils import _manifest
    r, dst = _dump_with_transfer(tmp_path, run_module, workload("devnull"))
    t = r["timings"]["transfer"]
    assert t["total"] >= t["images"] > 0 and t["destination"] == "here:%s/" % dst
    assert t["passes"] == 1, t      # a few MiB of images: hashed first, sent with the manifest
    manifest = _manifest.read_manifest(str(dst))
    assert manifest["images"] == r["manifest"]["images"]
    assert _manifest.verify_images(manifest, str(dst)) == []


def test_dump_sends_large_images_while_hashing_and_the_manifest_after(tmp_path, run_module, workload):
    """Images above 64 MiB leave before they are hashed; the manifest follows alone."""
    from ansible_collections.ckpt.criu.plugins.module_utils import _manifest
    r, dst = _dump_with_transfer(tmp_path, run_module, workload("devnull", mem=80))
    assert r["manifest"]["images_total_bytes"] > 64 << 20
    assert r["timings"]["transfer"]["passes"] == 2, r["timings"]["transfer"]
    assert _manifest.verify_images(_manifest.read_manifest(str(dst)), str(dst)) == []


def test_restore_refuses_a_bad_prefault_size(tmp_path, run_module):
    r = run_module("restore", {"images_dir": str(tmp_path / "none"), "wait_for_manifest": 5, "prefault": "lots"})
    assert r.failed and "prefault must be a size" in r["msg"], r
    assert not (tmp_path / "none").exists()
