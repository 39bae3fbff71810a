"""fd_inspect's refusals and messages against the real situations they describe: an accepted unix
connection from an unnamed client (CRIU 4.2.1 crashes restoring it, even with --ext-unix-sk), a
session whose leader exited, an established TCP connection with tcp_established set, and the
TCP/UDP refusal of a CRIU older than 4.2 on a new kernel (once per process)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from ckpt_testlib import WORKLOADS, wait, wait_gone

pytestmark = pytest.mark.criu

UNIX_SERVER = r"""
import os, socket, sys, time
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind(sys.argv[1])
l.listen(1)
c, dummy = l.accept()
while True:
    time.sleep(0.2)
"""

ORPHANED_SESSION = r"""
import os, sys, time
pid = os.fork()
if pid == 0:
    while True:
        time.sleep(0.2)
with open(sys.argv[1], "w") as fh:
    fh.write("%d\n" % pid)
"""

TCP_HOLDER = r"""
import socket, time
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(4)
c = socket.create_connection(l.getsockname())
s, dummy = l.accept()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
while True:
    time.sleep(0.2)
"""


@pytest.fixture
def detached(tmp_path):
    """detached(code, *args) -> pid: a python program started by spawn.py (own session, stdio on /dev/null)."""
    started = []

    def _start(code, *args, name="p"):
        script = tmp_path / ("%s.py" % name)
        script.write_text(code)
        pidfile = tmp_path / ("%s.pid" % name)
        out = subprocess.run([sys.executable, str(WORKLOADS / "spawn.py"), "--stdio", "devnull",
                              "--pidfile", str(pidfile), "--", sys.executable, str(script)] + list(args),
                             check=True, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                             cwd=str(tmp_path)).stdout
        started.append(int(out))
        return int(out)

    yield _start, started
    for pid in started:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    for pid in started:
        wait_gone(pid, 5)


def _sockets(pid):
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                out.append(int(fd))
        except OSError:
            pass
    return out


def test_accepted_unix_connection_from_an_unnamed_client_is_refused(detached, run_module, tmp_path):
    start, dummy = detached
    path = str(tmp_path / "srv.sock")
    pid = start(UNIX_SERVER, path)
    assert wait(lambda: os.path.exists(path), timeout=10.0, step=0.02)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # outside the tree, no address
    try:
        client.connect(path)
        assert wait(lambda: len(_sockets(pid)) == 2, timeout=10.0, step=0.02), "the server did not accept"
        for ext in (False, True):
            r = run_module("fd_inspect", {"pid": pid, "ext_unix_sk": ext})
            assert r.status == "ok", r
            items = [i for i in r["fds"] if i["classification"] == "unix_accepted_external"]
            assert len(items) == 1, r["fds"]
            assert items[0]["verdict"] == "refuse" and items[0]["lifted_by"] is None
            assert r["restorable"] is False and r["criu_options"] == []
            blocker = [b for b in r["blockers"] if "accepted unix stream connection" in b]
            assert len(blocker) == 1 and "server's end of %s" % path in blocker[0]
            assert "process %d (" % os.getpid() in blocker[0]
            assert "even with ext_unix_sk" in blocker[0]
        # The dump module refuses it the same way, before anything is frozen.
        d = run_module("dump", {"pid": pid, "images_dir": str(tmp_path / "img"), "ext_unix_sk": True,
                                "leave_running": True})
        assert d.failed and "accepted unix stream connection" in d["msg"] and "Nothing was frozen" in d["msg"]
        assert not (tmp_path / "img").exists()
        with open("/proc/%d/stat" % pid) as fh:
            assert fh.read().rsplit(")", 1)[1].split()[0] in ("S", "R")
    finally:
        client.close()


def test_a_session_whose_leader_exited_says_so(detached, run_module, tmp_path):
    start, started = detached
    pidfile = tmp_path / "orphan.pid"
    leader = start(ORPHANED_SESSION, str(pidfile))
    assert wait(lambda: pidfile.exists() and pidfile.read_text().endswith("\n"), timeout=10.0, step=0.02)
    child = int(pidfile.read_text())
    started.append(child)
    assert wait_gone(leader, 10), "the session leader did not exit"
    r = run_module("fd_inspect", {"pid": child})
    assert r.status == "ok", r
    blocker = [b for b in r["blockers"] if "session" in b]
    assert len(blocker) == 1, r["blockers"]
    assert "(?)" not in blocker[0]
    assert "session of process %d, which has exited" % leader in blocker[0]
    assert run_module("fd_inspect", {"pid": child, "shell_job": True})["restorable"] is True


def test_tcp_established_reason_when_tcp_established_is_set(detached, run_module):
    start, dummy = detached
    pid = start(TCP_HOLDER)
    assert wait(lambda: len(_sockets(pid)) == 4, timeout=10.0, step=0.02)
    r = run_module("fd_inspect", {"pid": pid, "tcp_established": True})
    assert r.status == "ok" and r["restorable"] is True, r
    est = [i for i in r["fds"] if i["classification"] == "tcp_established"]
    assert len(est) == 2
    for item in est:
        assert "Set tcp_established" not in item["reason"] and "tcp_established is set" in item["reason"]
    plain = run_module("fd_inspect", {"pid": pid})
    assert plain["restorable"] is False and any("Set tcp_established" in b for b in plain["blockers"])


def test_old_criu_on_a_new_kernel_refuses_tcp_once_per_process_naming_criu_42(detached, run_module, tmp_path):
    release = os.uname().release
    major, minor = (int(x) for x in release.split(".")[:2])
    assert (major, minor) >= (6, 16), "this test needs kernel >= 6.16, where CRIU 4.1.1 cannot dump inet sockets"
    start, dummy = detached
    pid = start(TCP_HOLDER)
    assert wait(lambda: len(_sockets(pid)) == 4, timeout=10.0, step=0.02)
    # A criu that says it is 4.1.1 (what Debian 12 and 13 shipped before 4.2).
    old = tmp_path / "criu-4.1.1"
    old.write_text("#!/bin/sh\necho 'Version: 4.1.1'\n")
    old.chmod(0o755)
    r = run_module("fd_inspect", {"pid": pid, "tcp_established": True, "criu_path": str(old)})
    assert r.status == "ok", r
    assert r["criu_version"] == "4.1.1" and r["restorable"] is False
    inet = [i for i in r["fds"] if i["classification"] in ("tcp_listen", "tcp_established", "udp")]
    assert len(inet) == 4 and all(i["verdict"] == "refuse" for i in inet)
    assert len(r["blockers"]) == 1, r["blockers"]
    assert "4 TCP/UDP sockets" in r["blockers"][0] and "CRIU 4.2 or newer" in r["blockers"][0]
    assert release in r["blockers"][0]
