"""_stdio classification and plan on recorded /proc trees and synthetic fd entries."""
from __future__ import annotations

import json

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _procfs, _stdio
from ansible_collections.ckpt.criu.tests.unit.plugins.module_utils import procfs_tree

FIX = procfs_tree.FIX
OLD_KERNEL = "6.1.0-28-amd64"


pipe_tree = procfs_tree.pipe_tree
unix_tree = procfs_tree.unix_tree


def _by(result, pid, fd):
    return next(i for i in result["items"] if i["pid"] == pid and i["fd"] == fd)


def test_pipe_tree_recorded(pipe_tree):
    r = _stdio.classify(8183, proc_root=pipe_tree, kernel_release=OLD_KERNEL)
    assert r["ctx"]["pids"] == [8183, 8202]
    out = _by(r, 8183, 1)
    assert out["classification"] == "pipe_external" and out["verdict"] == "refuse"
    assert "process 8181 (python3)" in out["reason"] and "SIGPIPE" in out["reason"]
    assert out["criu_option"] == "--inherit-fd=fd[1]:pipe:[164503]"
    # the pipe between parent and child is inside the tree
    assert _by(r, 8183, 4)["classification"] == "pipe_internal"
    assert _by(r, 8202, 0)["classification"] == "pipe_internal"
    assert _by(r, 8183, 5)["classification"] == "deleted_file"
    assert _by(r, 8183, 6)["classification"] == "anon_inode" and _by(r, 8183, 6)["verdict"] == "ok"
    assert _by(r, 8183, 7)["classification"] == "memfd"
    assert [i["fd"] for i in r["stdio"]] == [0, 1, 2]
    assert "of PID 8202" in _by(r, 8202, 1)["reason"]


def test_pipe_tree_without_tree_makes_the_child_outside(pipe_tree):
    r = _stdio.classify(8183, tree=False, proc_root=pipe_tree, kernel_release=OLD_KERNEL)
    assert _by(r, 8183, 4)["classification"] == "pipe_external"
    assert "8202" in _by(r, 8183, 4)["reason"]
    # fd 4 is the write end towards the child: "to ... which reads it"
    assert "which reads it" in _by(r, 8183, 4)["reason"]


def test_plan_for_pipe_tree(pipe_tree):
    r = _stdio.classify(8183, proc_root=pipe_tree, kernel_release=OLD_KERNEL)
    p = _stdio.plan(r["items"], {})
    assert p["restorable"] is False and len(p["blockers"]) == 4  # fds 1, 2 of both processes
    lifted = _stdio.plan(r["items"], {"inherit_fd": True})
    assert lifted["restorable"] is True
    assert lifted["restore_options"] == ["--inherit-fd=fd[N]:pipe:[164503]"]
    assert lifted["external"]["inherit_fds"] == [{"pid": 8183, "fd": 1, "key": "pipe:[164503]", "writes": True}]
    assert lifted["dump_options"] == []


def _unix_ctx(unix_tree, diag=True):
    ctx = _stdio.gather(8587, proc_root=unix_tree, kernel_release=OLD_KERNEL)
    if diag:
        raw = json.loads((FIX / "unix_tree" / "diag.json").read_text())
        ctx["diag"] = dict((int(k), v) for k, v in raw.items())
    return ctx


def test_unix_external_recorded_with_diag(unix_tree):
    r = _stdio.classify(8587, ctx=_unix_ctx(unix_tree))
    item = _by(r, 8587, 1)
    assert item["classification"] == "unix_external" and item["verdict"] == "refuse"
    assert "process 8585 (python3) at /tmp/fdi/u/w.pid.sock" in item["reason"]
    assert item["criu_option"] == "--ext-unix-sk=166978"
    p = _stdio.plan(r["items"], {"ext_unix_sk": True})
    assert p["criu_options"] == ["--ext-unix-sk=166978"] and p["restorable"]
    assert any("must be listening" in w for w in p["warnings"])


def test_unix_without_diag_is_conservative(unix_tree):
    r = _stdio.classify(8587, ctx=_unix_ctx(unix_tree, diag=False))
    item = _by(r, 8587, 1)
    assert item["verdict"] == "refuse" and "cannot see" in item["reason"]


def test_unix_peer_inside_tree_is_ok(unix_tree):
    ctx = _stdio.gather(8585, tree=False, proc_root=unix_tree, kernel_release=OLD_KERNEL)
    raw = json.loads((FIX / "unix_tree" / "diag.json").read_text())
    ctx["diag"] = dict((int(k), v) for k, v in raw.items())
    ctx["pids"] = [8585, 8587]  # pretend both are dumped together
    ctx["stat"][8587] = _procfs.read_stat(8587, unix_tree)
    r = _stdio.classify(8585, ctx=ctx)
    assert _by(r, 8585, 5)["classification"] == "unix_internal"
    assert _by(r, 8585, 4)["classification"] == "unix_listen"


# ------------------------------------------------------------ synthetic

def _ctx(fds, **kw):
    ctx = {"root": 100, "pids": [100], "fds": {100: fds},
           "stat": {100: {"comm": "app", "session": 100, "pgrp": 100}},
           "sockets": {100: kw.get("sockets", {})}, "mnt_ids": {100: kw.get("mnt_ids", {20, 27})},
           "diag": kw.get("diag"), "holders": kw.get("holders", {}), "proc_root": "/nonexistent",
           "comms": {200: "logger"}, "kernel_release": kw.get("kernel", OLD_KERNEL),
           "criu_version": kw.get("criu", "4.1.1")}
    return ctx


def _fd(fd, target, flags=0o100001, size=None, ftype=None, mnt_id=27, extra=None):
    kind, ino = _procfs.target_kind(target)
    return {"fd": fd, "target": target, "flags": flags, "flags_decoded": _procfs.decode_flags(flags),
            "access": _procfs.ACCESS_NAMES[flags & 3], "append": bool(flags & _procfs.O_APPEND), "pos": 0,
            "mnt_id": mnt_id, "ino": ino, "kind": kind, "size": size, "file_type": ftype, "extra": extra or {}}


def classify(fds, **kw):
    return _stdio.classify(100, ctx=_ctx(fds, **kw))


def test_closed_stdio_is_ok_with_warning():
    r = classify([_fd(0, "/dev/null", 0o100000, ftype="char")])
    closed = [i for i in r["stdio"] if i["classification"] == "closed"]
    assert [i["fd"] for i in closed] == [1, 2] and all(i["verdict"] == "ok" for i in closed)
    p = _stdio.plan(r["items"])
    assert p["restorable"] and len(p["warnings"]) == 2 and "stdout" in p["warnings"][0]


@pytest.mark.parametrize("flags,ftype,cls,verdict", [
    (0o102001, "regular", "file_append", "ok"),
    (0o100001, "regular", "file", "needs_file_on_destination"),
    (0o100000, "regular", "file_readonly", "needs_file_on_destination"),
    (0o100000, "directory", "directory", "ok"),
    (0o100002, "char", "device", "needs_file_on_destination"),
])
def test_paths(flags, ftype, cls, verdict):
    target = "/dev/fuse" if ftype == "char" else "/var/log/app.log"
    item = _by(classify([_fd(3, target, flags, size=10, ftype=ftype)]), 100, 3)
    assert (item["classification"], item["verdict"]) == (cls, verdict)


def test_file_on_destination_listed_with_size():
    r = classify([_fd(1, "/var/log/app.log", 0o100001, size=4096, ftype="regular")])
    p = _stdio.plan(r["items"])
    assert p["files_on_destination"] == [{"path": "/var/log/app.log", "size": 4096, "same_size": True,
                                          "pid": 100, "fd": 1}]
    assert p["restorable"]


def test_deleted_file_over_ghost_limit():
    big = 2 * 1024 * 1024
    r = classify([_fd(3, "/tmp/x (deleted)", 0o100002, size=big, ftype="regular")])
    item = _by(r, 100, 3)
    assert item["verdict"] == "needs_option" and item["lifted_by"] == "ghost_limit"
    assert not _stdio.plan(r["items"])["restorable"]
    assert not _stdio.plan(r["items"], {"ghost_limit": big - 1})["restorable"]
    ok = _stdio.plan(r["items"], {"ghost_limit": big})
    assert ok["restorable"] and ok["dump_options"] == ["--ghost-limit=%d" % big] and ok["restore_options"] == []


def test_deleted_file_under_limit_ok():
    item = _by(classify([_fd(3, "/tmp/x (deleted)", 0o100002, size=1024 * 1024, ftype="regular")]), 100, 3)
    assert item["verdict"] == "ok"


def test_foreign_mount_refused_with_criu_message():
    item = _by(classify([_fd(5, "/srv/leak.log", 0o100001, size=1, ftype="regular", mnt_id=99)]), 100, 5)
    assert item["classification"] == "foreign_mount" and item["verdict"] == "refuse"
    assert "Can't lookup mount=99 for fd=5" in item["reason"]
    assert item["lifted_by"] is None


def test_tty_refused_and_shell_job_lifts():
    r = classify([_fd(fd, "/dev/pts/3", 0o100002, ftype="char") for fd in (0, 1, 2)])
    assert all(i["classification"] == "tty" and i["verdict"] == "refuse" for i in r["stdio"])
    assert len(_stdio.plan(r["items"])["blockers"]) == 3
    p = _stdio.plan(r["items"], {"shell_job": True})
    assert p["restorable"] and p["dump_options"] == ["--shell-job"] and p["restore_options"] == ["--shell-job"]


def test_pty_with_master_in_tree_ok():
    r = classify([_fd(0, "/dev/pts/3", 0o100002, ftype="char"),
                  _fd(4, "/dev/ptmx", 0o100002, ftype="char", extra={"tty-index": "3"})])
    assert _by(r, 100, 0)["classification"] == "pty_internal"
    assert _by(r, 100, 4)["classification"] == "pty_master"


def test_pipe_from_outside_reader_side():
    r = classify([_fd(0, "pipe:[55]", 0o0)], holders={("pipe", 55): [(100, 0), (200, 7)]})
    item = _by(r, 100, 0)
    assert item["verdict"] == "refuse" and "a pipe from process 200 (logger)" in item["reason"]


def _inet(state, proto="tcp"):
    return {"inode": 9, "family": "inet", "proto": proto, "state": state,
            "local": "127.0.0.1:80", "remote": "127.0.0.1:5000"}


@pytest.mark.parametrize("state,cls,verdict", [
    ("LISTEN", "tcp_listen", "ok"),
    ("ESTABLISHED", "tcp_established", "needs_option"),
    ("CLOSE_WAIT", "tcp_established", "needs_option"),
    ("CLOSE", "tcp_unconnected", "ok"),
])
def test_tcp_on_old_kernel(state, cls, verdict):
    r = classify([_fd(3, "socket:[9]", 0o2)], sockets={9: _inet(state)})
    item = _by(r, 100, 3)
    assert (item["classification"], item["verdict"]) == (cls, verdict)
    if verdict == "needs_option":
        assert not _stdio.plan(r["items"])["restorable"]
        p = _stdio.plan(r["items"], {"tcp_established": True})
        assert p["restorable"] and p["criu_options"] == ["--tcp-established"]


def test_inet_on_new_kernel_with_criu_411_refused():
    r = classify([_fd(3, "socket:[9]", 0o2)], sockets={9: _inet("LISTEN")}, kernel="6.18.44-fc")
    item = _by(r, 100, 3)
    assert item["verdict"] == "refuse" and "criu#2705" in item["reason"]
    assert not _stdio.plan(r["items"], {"tcp_established": True})["restorable"]


def test_inet_on_new_kernel_with_unknown_criu_warns():
    r = classify([_fd(3, "socket:[9]", 0o2)], sockets={9: _inet("", "udp")}, kernel="6.18.44", criu=None)
    item = _by(r, 100, 3)
    assert item["classification"] == "udp" and item["verdict"] == "ok" and "criu#2705" in item["warning"]


def test_inet_dump_broken_table():
    assert _stdio.inet_dump_broken("6.18.1", "4.1.1") is True
    assert _stdio.inet_dump_broken("6.16.0", "4.1") is True
    assert _stdio.inet_dump_broken("6.15.9", "4.1.1") is False
    assert _stdio.inet_dump_broken("6.18.1", "4.2") is False
    assert _stdio.inet_dump_broken("6.18.1", None) is None


def test_unix_dgram_to_outside_needs_option():
    sock = {"inode": 9, "family": "unix", "type": "dgram", "state": "connected", "listening": False, "path": None}
    diag = {9: {"type": "dgram", "state": 1, "peer": 10, "name": None},
            10: {"type": "dgram", "state": 7, "peer": None, "name": "/run/systemd/journal/socket"}}
    r = classify([_fd(2, "socket:[9]", 0o2)], sockets={9: sock}, diag=diag, holders={("socket", 10): [(200, 3)]})
    item = _by(r, 100, 2)
    assert item["verdict"] == "needs_option" and "/run/systemd/journal/socket" in item["reason"]
    assert _stdio.plan(r["items"], {"ext_unix_sk": True})["criu_options"] == ["--ext-unix-sk=9"]


def test_unix_unconnected_and_ext_inodes_merged():
    s = {"family": "unix", "type": "stream", "state": "connected", "listening": False, "path": None}
    socks = {9: dict(s, inode=9), 11: dict(s, inode=11), 12: dict(s, inode=12, state="unconnected")}
    diag = {9: {"type": "stream", "state": 1, "peer": 10, "name": None},
            11: {"type": "stream", "state": 1, "peer": 13, "name": None},
            12: {"type": "stream", "state": 7, "peer": None, "name": None}}
    r = classify([_fd(1, "socket:[9]", 0o2), _fd(2, "socket:[11]", 0o2), _fd(3, "socket:[12]", 0o2)],
                 sockets=socks, diag=diag)
    assert _by(r, 100, 3)["classification"] == "unix_unconnected"
    assert "not accepted" in _by(r, 100, 1)["reason"]
    assert _stdio.plan(r["items"], {"ext_unix_sk": True})["criu_options"] == ["--ext-unix-sk=9,11"]


@pytest.mark.parametrize("name,verdict", [("eventfd", "ok"), ("eventpoll", "ok"), ("signalfd", "ok"),
                                          ("timerfd", "ok"), ("inotify", "ok"), ("io_uring", "refuse"),
                                          ("userfaultfd", "refuse"), ("something-new", "ok")])
def test_anon_inodes(name, verdict):
    target = "anon_inode:%s" % name if name == "inotify" else "anon_inode:[%s]" % name
    item = _by(classify([_fd(3, target, 0o2)]), 100, 3)
    assert item["verdict"] == verdict
    if name == "something-new":
        assert item["warning"]


def test_session_leader_outside_tree():
    ctx = _ctx([_fd(0, "/dev/null", 0o2, ftype="char")])
    ctx["stat"][100] = {"comm": "app", "session": 50, "pgrp": 100}
    ctx["comms"][50] = "bash"
    r = _stdio.classify(100, ctx=ctx)
    proc = [i for i in r["items"] if i["fd"] is None]
    assert proc and proc[0]["classification"] == "session_outside" and "50 (bash)" in proc[0]["reason"]
    assert _stdio.plan(r["items"], {"shell_job": True})["restorable"]


@pytest.mark.parametrize("session,own_sid", [(0, 0), (4711, 0)])
def test_session_leader_outside_the_pid_namespace_is_refused_even_with_shell_job(session, own_sid):
    ctx = _ctx([_fd(0, "/dev/null", 0o2, ftype="char")])
    ctx["stat"][100] = {"comm": "app", "session": session, "pgrp": 100}
    ctx["own_sid"] = {100: own_sid}
    r = _stdio.classify(100, ctx=ctx)
    proc = [i for i in r["items"] if i["fd"] is None]
    assert [i["classification"] for i in proc] == ["session_outside_pidns"]
    assert proc[0]["verdict"] == "refuse" and proc[0]["lifted_by"] is None
    assert "setsid" in proc[0]["reason"] and "not even with --shell-job" in proc[0]["reason"]
    plan = _stdio.plan(r["items"], {"shell_job": True})
    assert not plan["restorable"] and any("outside its PID namespace" in b for b in plan["blockers"])


def test_every_reason_is_one_line(pipe_tree):
    r = _stdio.classify(8183, proc_root=pipe_tree, kernel_release="6.18.0", criu_version="4.1.1")
    for item in r["items"]:
        assert item["verdict"] in _stdio.VERDICTS
        assert item["reason"] and "\n" not in item["reason"]


def test_inet_refusal_once_per_process_naming_criu_42():
    socks = {9: _inet("LISTEN"), 10: _inet("", "udp"), 11: _inet("LISTEN")}
    r = classify([_fd(3, "socket:[9]", 0o2), _fd(4, "socket:[10]", 0o2), _fd(5, "socket:[11]", 0o2)],
                 sockets=socks, kernel="6.18.44")
    assert all(_by(r, 100, fd)["verdict"] == "refuse" for fd in (3, 4, 5))
    plan = _stdio.plan(r["items"])
    inet = [b for b in plan["blockers"] if "criu#2705" in b]
    assert len(inet) == 1, plan["blockers"]
    assert "CRIU 4.2 or newer" in inet[0] and "3 TCP/UDP sockets (fd 3, 4, 5)" in inet[0]
    assert "Process 100 (app)" in inet[0]
    assert all("blocker" not in _stdio.public_item(i) for i in r["items"])


def test_tcp_established_reason_when_it_is_set():
    r = classify([_fd(3, "socket:[9]", 0o2)], sockets={9: _inet("ESTABLISHED")})
    plan = _stdio.plan(r["items"], {"tcp_established": True})
    assert plan["restorable"]
    reason = _by(r, 100, 3)["reason"]
    assert "Set tcp_established" not in reason and "tcp_established is set" in reason
    r = classify([_fd(3, "socket:[9]", 0o2)], sockets={9: _inet("ESTABLISHED")})
    plan = _stdio.plan(r["items"], {})
    assert "Set tcp_established" in plan["blockers"][0]


def test_exited_session_leader_is_named_as_exited():
    ctx = _ctx([_fd(0, "/dev/null", 0o2, ftype="char")])
    ctx["stat"][100] = {"comm": "app", "session": 4242, "pgrp": 100}
    r = _stdio.classify(100, ctx=ctx)
    proc = [i for i in r["items"] if i["fd"] is None]
    assert proc[0]["classification"] == "session_outside"
    assert "(?)" not in proc[0]["reason"]
    assert "session of process 4242, which has exited" in proc[0]["reason"]


def test_accepted_unix_connection_from_an_unnamed_client_is_refused_even_with_ext_unix_sk():
    sock = {"inode": 9, "family": "unix", "type": "stream", "state": "connected", "listening": False,
            "path": "/run/redis/redis.sock"}
    diag = {9: {"type": "stream", "state": 1, "peer": 10, "name": "/run/redis/redis.sock"},
            10: {"type": "stream", "state": 1, "peer": 9, "name": None}}
    r = classify([_fd(9, "socket:[9]", 0o2)], sockets={9: sock}, diag=diag, holders={("socket", 10): [(200, 3)]})
    item = _by(r, 100, 9)
    assert (item["classification"], item["verdict"], item["lifted_by"]) == ("unix_accepted_external", "refuse", None)
    assert "server's end of /run/redis/redis.sock" in item["reason"] and "200 (logger)" in item["reason"]
    assert "restart" not in item["reason"].lower()
    plan = _stdio.plan(r["items"], {"ext_unix_sk": True})
    assert not plan["restorable"] and plan["criu_options"] == []


def _creds(uid, gid=None):
    gid = uid if gid is None else gid
    return {"uid": (uid, uid, uid), "gid": (gid, gid, gid)}


def test_tree_member_of_another_user_without_cap_sys_resource_is_refused():
    ctx = _ctx([_fd(0, "/dev/null", 0o2, ftype="char")])
    ctx.update(pids=[100, 101, 102], caller_ids=(0, 0), cap_sys_resource=False,
               creds={100: _creds(0), 101: _creds(33), 102: _creds(33)})
    ctx["fds"].update({101: [], 102: []})
    ctx["stat"].update({101: {"comm": "nginx", "session": 100, "pgrp": 100},
                        102: {"comm": "nginx", "session": 100, "pgrp": 100}})
    r = _stdio.classify(100, ctx=ctx)
    plan = _stdio.plan(r["items"], {"shell_job": True, "tcp_established": True, "ext_unix_sk": True})
    caps = [b for b in plan["blockers"] if "CAP_SYS_RESOURCE" in b]
    assert len(caps) == 1 and not plan["restorable"]
    assert "Processes 101 (nginx), 102 (nginx)" in caps[0] and "uid 33" in caps[0]
    assert "Can't get rlimit 0" in caps[0] and "user root;" in caps[0]
    # With the capability, or all members as the caller, nothing is refused.
    ctx["cap_sys_resource"] = True
    assert _stdio.plan(_stdio.classify(100, ctx=ctx)["items"])["restorable"]
    ctx.update(cap_sys_resource=False, creds={100: _creds(0), 101: _creds(0), 102: _creds(0, 4)})
    plan = _stdio.plan(_stdio.classify(100, ctx=ctx)["items"])
    assert any("102 (nginx)" in b for b in plan["blockers"])
