"""The _criu runner against real CRIU, including the incident as a regression
test: a caller whose fds 0, 1 and 2 are closed still gets criu's output, a
-v4 log and the real cause of a failure."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _criu

pytestmark = pytest.mark.criu

COLLECTIONS = os.path.join(os.path.dirname(__file__), "..", "..", ".build", "collections")

# Runs in a child whose fds 0-2 are closed before anything else happens, the
# way the incident's launcher (boost.process limit_handles) started criu.
CLOSED_STDIO_CALLER = textwrap.dedent("""
    import json, os, sys
    for fd in (0, 1, 2):
        os.close(fd)
    sys.path.insert(0, {collections!r})
    from ansible_collections.ckpt.criu.plugins.module_utils import _criu
    out = {{}}
    r = _criu.run_criu({criu!r}, "check", [], {check_log!r})
    out["check"] = {{"rc": r.rc, "stdout": r.stdout, "ok": r.ok}}
    r = _criu.run_criu({criu!r}, "restore", ["-d", "-D", {images!r}], {restore_log!r})
    out["restore"] = {{"rc": r.rc, "ok": r.ok, "cause": r.cause(), "errors": r.log_errors,
                       "log_exists": os.path.exists({restore_log!r})}}
    fd = os.open({result!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, json.dumps(out).encode())
    os.close(fd)
""")


def test_incident_closed_stdio_caller_still_gets_log_and_cause(tmp_path, criu_bin):
    images = tmp_path / "empty-images"
    images.mkdir()
    result = tmp_path / "result.json"
    script = CLOSED_STDIO_CALLER.format(
        collections=os.path.abspath(COLLECTIONS), criu=criu_bin,
        check_log=str(tmp_path / "check.log"), restore_log=str(tmp_path / "restore.log"),
        images=str(images), result=str(result))
    p = subprocess.run([sys.executable, "-c", script], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
    assert p.returncode == 0
    out = json.loads(result.read_text())
    # criu's stdout reached the runner: it did not inherit the closed fds.
    assert out["check"]["rc"] == 0
    assert "Looks good" in out["check"]["stdout"]
    # The failing restore wrote a -v4 log and the runner names the real cause.
    r = out["restore"]
    assert r["log_exists"] and r["rc"] != 0 and not r["ok"]
    assert r["errors"], "the real error lines must be reported"
    assert "missing or corrupt" in r["cause"]
    log = (tmp_path / "restore.log").read_text()
    assert "rlimit" in log or "Restoring FAILED" in log or "Error" in log


def test_check_log_is_verbose(tmp_path, criu_bin):
    log = tmp_path / "dump.log"
    images = tmp_path / "img"
    images.mkdir()
    r = _criu.run_criu(criu_bin, "dump", ["-t", str(2 ** 22 - 7), "-D", str(images)], str(log))
    assert not r.ok
    text = log.read_text()
    # -v4 writes debug lines ("(00.000123) ..." without a level) besides errors.
    assert sum(1 for line in text.splitlines() if line.startswith("(") and "Error" not in line) > 3
    assert r.cause().startswith("criu reported:") or "missing" in r.cause() or r.log_errors


def test_images_are_private(tmp_path, criu_bin, workload):
    w = workload("devnull")
    images = tmp_path / "img"
    images.mkdir(mode=0o700)
    r = _criu.run_criu(criu_bin, "dump", ["-t", str(w.pid), "-D", str(images), "--leave-running"],
                       str(images / "dump.log"))
    assert r.ok, r.cause()
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in images.iterdir()}
    assert modes and all(m & 0o077 == 0 for m in modes.values()), modes
    assert w.alive()
    stats = _criu.read_stats(str(images), "dump")
    assert stats["frozen_time_us"] > 0 and stats["pages_written"] > 0


def test_timeout_kills_criu_and_says_so(tmp_path, criu_bin):
    images = tmp_path / "ps"
    images.mkdir()
    t0 = time.monotonic()
    # A page server waits for a client forever: the timeout must end it.
    r = _criu.run_criu(criu_bin, "page-server", ["-D", str(images), "--address", "127.0.0.1",
                                                 "--port", "27411"], str(tmp_path / "ps.log"), timeout=1.5)
    assert time.monotonic() - t0 < 20
    assert r.timed_out and not r.ok
    assert "timeout" in r.cause()


def test_version_check_and_features(criu_bin):
    v = _criu.criu_version(criu_bin)
    assert v["supported"] and v["major"] >= 4
    assert _criu.criu_check(criu_bin)["ok"]
    # No soft-dirty tracking on these machines; pidfd_store is there.
    assert _criu.criu_feature(criu_bin, "mem_dirty_track")["supported"] is False
    assert _criu.criu_feature(criu_bin, "pidfd_store")["supported"] is True


def _fake_criu(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 'Version: 3.17.1'\n")
    path.chmod(0o755)
    return str(path)


def test_find_criu_prefers_the_private_prefix_over_path(monkeypatch, tmp_path):
    # The installer fills the prefix only where the host's criu failed its
    # probes: an old distro criu on PATH must not win over it.
    on_path = _fake_criu(tmp_path / "usr" / "sbin" / "criu")
    prefix = _fake_criu(tmp_path / "opt" / "ckpt-criu" / "bin" / "criu")
    monkeypatch.setenv("PATH", os.path.dirname(on_path))
    monkeypatch.setattr(_criu, "PRIVATE_PREFIX_CRIU", prefix)
    assert _criu.find_criu() == prefix
    assert _criu.find_criu(on_path) == on_path      # criu_path still decides
    os.unlink(prefix)
    assert _criu.find_criu() == on_path


def test_pass_fds_reach_criu(tmp_path, criu_bin):
    # criu must see an fd it is told to inherit; it lists its own fds at -v4
    # when it starts ("Inherit fd" needs a real restore, so check /proc from
    # the on_start hook instead).
    r, w = os.pipe()
    seen = {}

    def on_start(proc):
        seen["fds"] = os.listdir("/proc/%d/fd" % proc.pid)

    try:
        _criu.run_criu(criu_bin, "check", [], str(tmp_path / "c.log"), pass_fds=(r,),
                       on_start=on_start)
    finally:
        os.close(r)
        os.close(w)
    assert str(r) in seen["fds"]
