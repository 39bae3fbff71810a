"""Pure logic of _dump: argv from options, images_dir rules, sizes, the
pre-dump gate and the idempotency decisions. Real dumps are in
tests/system/test_dump.py."""
from __future__ import annotations

import os

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _criu
from ansible_collections.ckpt.criu.plugins.module_utils import _dump
from ansible_collections.ckpt.criu.plugins.module_utils import _lock
from ansible_collections.ckpt.criu.plugins.module_utils import _page_server
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError


def test_argv_minimal():
    args = _dump.build_dump_args(42, "/imgs", "/imgs/.ckpt-work-x", {})
    assert args == ["-t", "42", "-D", "/imgs", "-W", "/imgs/.ckpt-work-x"]


def test_argv_every_option():
    opts = {"leave_stopped": True, "shell_job": True, "tcp_established": True, "ext_unix_sk": True,
            "file_locks": True, "external": ["mnt[/data]:data", "unix[5]"], "ghost_limit": 2097152,
            "network_lock": "nftables",
            "page_server": {"address": "192.0.2.1", "port": 27027, "tls_cacert": "/ca", "tls_cert": "/c",
                            "tls_key": "/k"},
            "extra_args": ["--shell-job", "--ext-unix-sk=77", "--external", "unix[9]"]}
    args = _dump.build_dump_args(7, "/i", "/w", opts, pre_dump_dir="pre-1")
    assert args[:6] == ["-t", "7", "-D", "/i", "-W", "/w"]
    for seq in (["--leave-stopped"], ["--shell-job"], ["--tcp-established"], ["--ext-unix-sk"], ["--file-locks"],
                ["--external", "mnt[/data]:data"], ["--external", "unix[5]"], ["--ghost-limit", "2097152"],
                ["--network-lock", "nftables"],
                ["--page-server", "--address", "192.0.2.1", "--port", "27027", "--tls", "--tls-cacert", "/ca",
                 "--tls-cert", "/c", "--tls-key", "/k"],
                ["--prev-images-dir", "pre-1", "--track-mem"], ["--ext-unix-sk=77"], ["--external", "unix[9]"]):
        n = len(seq)
        assert any(args[i:i + n] == seq for i in range(len(args))), seq
    assert args.count("--shell-job") == 1
    assert "--leave-running" not in args


def test_argv_values_are_single_elements_never_shell():
    args = _dump.build_dump_args(1, "/a b", "/w", {"external": ["x; rm -rf /"]})
    assert "x; rm -rf /" in args and "/a b" in args


def test_argv_exact_order():
    opts = {"leave_running": True, "shell_job": True, "tcp_established": True, "ext_unix_sk": True,
            "file_locks": True, "external": ["mnt[/data]:data"], "inherit_fds": {"9": "pipe:[5]", "10": "pipe:[6]"},
            "ghost_limit": 4096, "network_lock": "nftables",
            "page_server": {"address": "192.0.2.1", "port": 27027, "tls": True},
            "extra_args": ["--shell-job", "--external", "unix[9]"]}
    assert _dump.build_dump_args(7, "/i", "/w", opts, "pre-1") == [
        "-t", "7", "-D", "/i", "-W", "/w", "--leave-running", "--shell-job", "--tcp-established", "--ext-unix-sk",
        "--file-locks", "--external", "mnt[/data]:data", "--inherit-fd", "fd[10]:pipe:[6]", "--inherit-fd",
        "fd[9]:pipe:[5]", "--ghost-limit", "4096", "--network-lock", "nftables", "--page-server", "--address",
        "192.0.2.1", "--port", "27027", "--tls", "--prev-images-dir", "pre-1", "--track-mem", "--external", "unix[9]"]


@pytest.mark.parametrize("path,needle", [
    ("", "non-empty"), ("imgs", "absolute"), ("/a/../b", "'..'"), ("/", "system directory"),
    ("/tmp", "system directory"), ("/proc/1", "inside /proc"), ("/sys/x", "inside /sys"),
    ("/dev/shm/x", "inside /dev"), ("/a\nb", "newline"),
])
def test_images_dir_rules(path, needle):
    with pytest.raises(_dump.DumpError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        _dump.validate_images_dir(path)


def test_images_dir_symlink_and_file(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(str(tmp_path / "real"), str(tmp_path / "link"))
    with pytest.raises(_dump.DumpError, match="symlink"):
        _dump.validate_images_dir(str(tmp_path / "link"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(_dump.DumpError, match="not a directory"):
        _dump.validate_images_dir(str(tmp_path / "f"))
    assert _dump.validate_images_dir(str(tmp_path / "real") + "/") == str(tmp_path / "real")


@pytest.mark.parametrize("value,expected", [(None, None), (1024, 1024), ("1M", 1048576), ("512K", 524288),
                                            ("2MiB", 2097152), ("4096", 4096)])
def test_parse_size(value, expected):
    assert _criu.parse_size(value, "ghost_limit") == expected


def test_parse_size_garbage():
    with pytest.raises(CkptError, match="ghost_limit"):
        _criu.parse_size("lots", "ghost_limit")


def test_pre_dump_gate():
    no = {"supported": False, "output": "Warn: Dirty tracking is OFF."}
    yes = {"supported": True, "output": ""}
    assert _dump.plan_pre_dump("never", no) == {"used": False, "reason": "pre_dump is never"}
    auto = _dump.plan_pre_dump("auto", no)
    assert auto["used"] is False and "soft-dirty" in auto["reason"]
    assert _dump.plan_pre_dump("auto", yes)["used"] is True
    with pytest.raises(_dump.DumpError, match="Nothing was frozen"):
        _dump.plan_pre_dump("always", no)
    assert _dump.plan_pre_dump("auto", yes, page_server=True)["used"] is False
    with pytest.raises(_dump.DumpError, match="page_server"):
        _dump.plan_pre_dump("always", yes, page_server=True)


def _complete(pid=10, start=100, boot="b"):
    return {"state": "complete", "manifest": {"process": {"pid": pid, "start_time": start, "boot_id": boot,
                                                          "comm": "w"}}}


LIVE = {"pid": 10, "start_time": 100, "boot_id": "b"}


@pytest.mark.parametrize("info,pid,live,force,problems,expected", [
    ({"state": "absent"}, 10, LIVE, False, None, "dump"),
    ({"state": "empty"}, 10, LIVE, False, None, "dump"),
    ({"state": "failed", "failed": {"cause": "x"}}, 10, LIVE, False, None, "clear_failed"),
    (_complete(), 10, LIVE, False, [], "unchanged"),
    (_complete(), 10, None, False, [], "unchanged"),
    (_complete(), 10, dict(LIVE, start_time=999), True, [], "replace"),
    (_complete(pid=11), 10, LIVE, True, [], "replace"),
    (_complete(), 10, LIVE, True, ["image x is missing"], "replace"),
    ({"state": "foreign", "entries": ["a"]}, 10, LIVE, True, None, "replace"),
    ({"state": "invalid", "problem": "bad"}, 10, LIVE, True, None, "replace"),
    (_complete(), 10, LIVE, True, [], "unchanged"),
])
def test_decide(info, pid, live, force, problems, expected):
    assert _dump.decide(info, pid, live, force, problems)[0] == expected


@pytest.mark.parametrize("info,live,problems,needle", [
    (_complete(), dict(LIVE, start_time=999), [], "now a different process"),
    (_complete(pid=11), LIVE, [], "another process"),
    (_complete(), LIVE, ["image core.img does not match its recorded sha256"], "do not verify"),
    ({"state": "foreign", "entries": ["a", "b"]}, LIVE, None, "not empty"),
    ({"state": "invalid", "problem": "bad json"}, LIVE, None, "not valid"),
])
def test_decide_refusals_name_force(info, live, problems, needle):
    with pytest.raises(_dump.DumpError) as exc:
        _dump.decide(info, 10, live, False, problems)
    assert needle in str(exc.value) and "force: true" in str(exc.value)


def test_lock_second_holder_gets_a_clear_error(tmp_path):
    a = _lock.DirLock(str(tmp_path)).acquire()
    try:
        with pytest.raises(_lock.LockError, match=r"another dump into .* is running \(PID %d\)" % os.getpid()):
            _lock.DirLock(str(tmp_path)).acquire()
        with pytest.raises(_lock.LockError, match="another dump"):
            _lock.DirLock(str(tmp_path)).probe()
    finally:
        a.release()
    _lock.DirLock(str(tmp_path)).probe()
    _lock.DirLock(str(tmp_path)).acquire().release()


def test_tls_args():
    assert _criu.tls_args({}) == []
    assert _criu.tls_args({"tls": True}) == ["--tls"]
    assert _page_server.build_page_server_args("/d", "0.0.0.0", 5, "/d/p", {"tls_cert": "/c"}) == [
        "-D", "/d", "--address", "0.0.0.0", "--port", "5", "-d", "--pidfile", "/d/p", "--tls", "--tls-cert", "/c"]


def test_stdio_files_are_only_those_without_o_append(tmp_path):
    """A tick file opened O_APPEND must not be recorded as needing its dump-time size."""
    import subprocess
    import sys
    import time
    if _dump._stdio is None:
        pytest.skip("_stdio not available")
    app = tmp_path / "append.log"
    plain = tmp_path / "plain.log"
    code = ("import os,time\n"
            "a=os.open(%r, os.O_WRONLY|os.O_CREAT|os.O_APPEND, 0o600)\n"
            "b=os.open(%r, os.O_WRONLY|os.O_CREAT, 0o600)\n"
            "os.write(b, b'x')\n"
            "time.sleep(30)\n" % (str(app), str(plain)))
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 5
        while time.time() < deadline and not (plain.exists() and plain.stat().st_size):
            time.sleep(0.02)
        report, plan = _dump.stdio_preflight(p.pid, [p.pid], {})
        paths = [f["path"] for f in report["stdio_files"]]
        assert str(plain) in paths and str(app) not in paths
        assert report["stdio"] == {"0": "ok", "1": "ok", "2": "ok"}
    finally:
        p.kill()
        p.wait()


def _fake_task(tmp_path, pid, session, nssid):
    d = tmp_path / str(pid)
    d.mkdir(parents=True)
    fields = ["S", "1", str(pid), str(session), "0", "-1", "0"] + ["0"] * 12 + ["500"] + ["0"] * 30
    (d / "stat").write_text("%d (app) %s\n" % (pid, " ".join(fields)))
    (d / "status").write_text("Name:\tapp\nNSsid:\t%s\n" % nssid)
    return str(tmp_path)


@pytest.mark.parametrize("session,nssid,shell_job,needle", [
    (300, "300", False, None),                                  # its own session leader
    (50, "50", True, None),                                     # not a leader, shell_job lifts it
    (50, "50", False, "not a session leader"),
    (0, "0", True, "outside its PID namespace"),                # child of a container's init
    (4711, "4711\t0", True, "outside its PID namespace"),       # nested PID namespace
])
def test_check_session_leader(tmp_path, session, nssid, shell_job, needle):
    root = _fake_task(tmp_path, 300, session, nssid)
    if needle is None:
        assert _dump.check_session_leader(300, shell_job, root) == session
        return
    with pytest.raises(_dump.DumpError) as exc:
        _dump.check_session_leader(300, shell_job, root)
    assert needle in str(exc.value) and "Nothing was frozen" in str(exc.value)


def test_page_server_cause():
    ps = {"address": "192.0.2.1", "port": 27027}
    # criu says it only on an info line; the page server was not listening.
    log = "(00.05) Connecting to server 192.0.2.1:27027\n(00.05) Can't connect to server 192.0.2.1:27027\n"
    cause = _dump.page_server_cause(log, ps)
    assert "could not connect to the page server at 192.0.2.1:27027, before freezing anything" in cause
    assert "serves one connection" in cause
    log = ("(00.12) tls: TLS handshake completed\n"
           "(00.12) Error (criu/tls.c:226): tls: Invalid certificate\n")
    cause = _dump.page_server_cause(log, ps)
    assert "TLS session with the page server at 192.0.2.1:27027 failed" in cause
    assert "Invalid certificate" in cause
    assert _dump.page_server_cause(log, None) is None
    assert _dump.page_server_cause("(00.1) Error (criu/cr-dump.c:1): Dumping FAILED.\n", ps) is None
