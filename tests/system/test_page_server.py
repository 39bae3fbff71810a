"""ckpt.criu.page_server against real CRIU: daemonized, never holds Ansible's
pipes, receives a dump's pages; the images then restore from one directory."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ckpt_testlib import state, wait_gone, wait_state

pytestmark = pytest.mark.criu


def _stop(pid):
    if pid and state(pid) not in (None, "Z"):
        os.kill(pid, signal.SIGKILL)


def test_page_server_dump_and_restore_from_one_dir(run_module, workload, tmp_path, criu_bin):
    dest = tmp_path / "dest"
    src = tmp_path / "src"
    r = run_module("page_server", {"images_dir": str(dest), "address": "127.0.0.1"}, check=True)
    assert r.status == "ok" and r["changed"] is True, r
    assert not dest.exists()
    t0 = time.time()
    ps = run_module("page_server", {"images_dir": str(dest), "address": "127.0.0.1"}, timeout=60)
    assert time.time() - t0 < 30, "the module waited on the daemon"
    ps_pid = ps.get("pid")
    restored = None
    try:
        assert ps.status == "ok" and ps["changed"] is True, ps
        assert ps["port"] > 0 and state(ps_pid) in ("S", "R")
        fds = {os.readlink("/proc/%d/fd/%s" % (ps_pid, fd)) for fd in os.listdir("/proc/%d/fd" % ps_pid)}
        assert not [f for f in fds if f.startswith("pipe:")], fds
        again = run_module("page_server", {"images_dir": str(dest), "address": "127.0.0.1"})
        assert again.status == "ok" and again["changed"] is False and again["pid"] == ps_pid, again

        w = workload(mem=8)
        r = run_module("dump", {"pid": w.pid, "images_dir": str(src),
                                "page_server": {"address": "127.0.0.1", "port": ps["port"]}})
        assert r.status == "ok", r
        assert "--page-server" in r["criu_cmd"]
        remote = [i["name"] for i in r["manifest"]["images"] if i.get("remote")]
        assert remote == ["pagemap-%d.img" % w.pid]
        assert not list(src.glob("pages-*.img"))
        got = sorted(os.listdir(dest))
        assert "pagemap-%d.img" % w.pid in got and [n for n in got if n.startswith("pages-")], got
        # The checkpoint's size counts the pages the page server received.
        sent = sum(os.stat(dest / n).st_size for n in got if n.startswith("pages-"))
        assert r["manifest"]["remote_pages"]["bytes"] == sent >= 8 * 1024 * 1024, (r["manifest"]["remote_pages"], sent)
        assert r["image_bytes"] == r["manifest"]["images_total_bytes"] + sent, r["image_bytes"]
        for n in got:
            if n.endswith(".img"):
                assert (os.stat(dest / n).st_mode & 0o777) == 0o600
        assert wait_state(ps_pid, (None, "Z"), 5) in (None, "Z"), "page server did not exit after the session"
        assert wait_gone(w.pid, 5)
        # Bring the rest of the images over and restore from the one directory.
        for n in os.listdir(src):
            if not n.startswith(".ckpt") and os.path.isfile(src / n):
                shutil.copy2(src / n, dest / n)
        n_before = len(w.read_ticks())
        p = subprocess.run([criu_bin, "restore", "-d", "-D", str(dest), "-o", str(dest / "restore.log"), "-v4"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=60, check=False)
        assert p.returncode == 0, (p.stderr, (dest / "restore.log").read_text()[-3000:])
        restored = w.pid
        w.wait_ticks(5)
        ok, gap = w.continuity()
        assert ok and len(w.read_ticks()) > n_before
    finally:
        _stop(ps_pid)
        _stop(restored)


def test_page_server_stopped_kills_the_one_left_behind(run_module, tmp_path):
    dest = tmp_path / "dest"
    ps = run_module("page_server", {"images_dir": str(dest), "address": "127.0.0.1"})
    assert ps.status == "ok", ps
    try:
        r = run_module("page_server", {"images_dir": str(dest), "state": "stopped"}, check=True)
        assert r["changed"] is True and state(ps["pid"]) in ("S", "R")
        r = run_module("page_server", {"images_dir": str(dest), "state": "stopped"})
        assert r.status == "ok" and r["changed"] is True, r
        assert wait_state(ps["pid"], (None, "Z"), 5) in (None, "Z")
        r = run_module("page_server", {"images_dir": str(dest), "state": "stopped"})
        assert r.status == "ok" and r["changed"] is False, r
    finally:
        _stop(ps["pid"])


def test_page_server_stop_leaves_a_reused_pid_alone(run_module, tmp_path):
    """The record names a PID that is now another process: stopped must not kill it."""
    dest = tmp_path / "dest"
    ps = run_module("page_server", {"images_dir": str(dest), "address": "127.0.0.1"})
    assert ps.status == "ok", ps
    _stop(ps["pid"])
    wait_gone(ps["pid"], 5)
    other = subprocess.Popen(["sleep", "30"])
    try:
        rec = Path(dest / ".ckpt-page-server.json")
        text = rec.read_text().replace('"pid": %d' % ps["pid"], '"pid": %d' % other.pid)
        rec.write_text(text)
        r = run_module("page_server", {"images_dir": str(dest), "state": "stopped"})
        assert r.status == "ok" and r["changed"] is False, r
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
