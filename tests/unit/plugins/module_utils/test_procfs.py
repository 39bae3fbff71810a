"""_procfs on /proc content recorded from real processes (fixtures/procfs, see
record.py there) and on synthetic edge cases."""
from __future__ import annotations

import os
import struct

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _procfs
from ansible_collections.ckpt.criu.plugins.module_utils._procfs import ProcfsError
from ansible_collections.ckpt.criu.tests.unit.plugins.module_utils import procfs_tree

FIX = procfs_tree.FIX


pipe_tree = procfs_tree.pipe_tree
unix_tree = procfs_tree.unix_tree


# ---------------------------------------------------------------- stat

def test_stat_with_parens_and_spaces_in_comm(pipe_tree):
    st = _procfs.read_stat(8183, pipe_tree)
    assert st["comm"] == "my (app) ) x"
    assert st["pid"] == 8183 and st["ppid"] == 1 and st["state"] == "S"
    assert st["session"] == 8183 and st["pgrp"] == 8183


@pytest.mark.parametrize("comm", ["a) (b", ")", "((", "x y z", ") 1 2 3 ("])
def test_parse_stat_synthetic_comm(comm):
    fields = ["S", "7", "8", "9", "0", "-1", "4194304"] + ["0"] * 12 + ["123456"] + ["0"] * 30
    st = _procfs.parse_stat("42 (%s) %s" % (comm, " ".join(fields)))
    assert st["comm"] == comm and st["pid"] == 42 and st["ppid"] == 7 and st["start_time"] == 123456
    assert st["flags"] == 4194304


def test_parse_stat_truncated_is_one_sentence():
    with pytest.raises(ProcfsError) as exc:
        _procfs.parse_stat("42 (x) S 1")
    assert "cannot parse" in str(exc.value)


def test_identity_from_recording(pipe_tree):
    ident = _procfs.process_identity(8183, pipe_tree)
    assert ident["boot_id"] == (FIX / "pipe_tree/sys/kernel/random/boot_id").read_text().strip()
    assert ident["start_time"] == int((FIX / "pipe_tree/8183/stat").read_text().rsplit(")", 1)[1].split()[19])
    assert ident["uid"] == 0 and ident["cmdline"][-1].endswith("tree.py")
    assert set(ident) == {"boot_id", "pid", "start_time", "ppid", "sid", "uid", "comm", "state", "cmdline", "exe",
                          "cwd"}
    assert ident["sid"] == 8183


def test_status_and_cmdline(pipe_tree):
    assert _procfs.read_status(8183, pipe_tree)["Name"] == "my (app) ) x"
    assert _procfs.parse_cmdline(b"a\0b c\0") == ["a", "b c"]
    assert _procfs.parse_cmdline(b"") == []


def test_missing_pid_is_absent(pipe_tree):
    with pytest.raises(ProcfsError) as exc:
        _procfs.read_stat(99999, pipe_tree)
    assert exc.value.kind == "absent" and "no process with PID 99999" in str(exc.value)


# ----------------------------------------------------------------- tree

def test_process_tree_from_children_files(pipe_tree):
    assert _procfs.process_tree(8183, pipe_tree) == [8183, 8202]
    assert _procfs.children(8202, pipe_tree) == []


def test_kernel_thread(pipe_tree):
    assert _procfs.is_kernel_thread(2, pipe_tree) is True
    assert _procfs.is_kernel_thread(8183, pipe_tree) is False


# ------------------------------------------------------------ validation

def _fake_proc(tmp_path, pid, state="S", ppid=1, flags=0, comm="app"):
    d = tmp_path / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    fields = [state, str(ppid), str(pid), str(pid), "0", "-1", str(flags)] + ["0"] * 12 + ["500"] + ["0"] * 30
    (d / "stat").write_text("%d (%s) %s\n" % (pid, comm, " ".join(fields)))
    (d / "cmdline").write_bytes(b"app\0" if not flags else b"")
    (d / "status").write_text("Name:\t%s\nUid:\t0\t0\t0\t0\n" % comm)
    return d


@pytest.mark.parametrize("pid,kind,words", [
    ("x", "invalid", "not a number"),
    (0, "invalid", "not valid"),
    (-3, "invalid", "not valid"),
    (1, "init", "init process"),
    (77, "absent", "no process with PID 77"),
    (10, "kthread", "kernel thread"),
    (11, "zombie", "zombie"),
    (12, "self", "module process itself"),
    (13, "ancestor", "ancestor of this Ansible task"),
])
def test_validate_target_pid_refusals(tmp_path, pid, kind, words):
    _fake_proc(tmp_path, 10, flags=_procfs.PF_KTHREAD, ppid=2, comm="kworker/0:1")
    _fake_proc(tmp_path, 11, state="Z")
    _fake_proc(tmp_path, 13, ppid=1)
    _fake_proc(tmp_path, 14, ppid=13)
    _fake_proc(tmp_path, 12, ppid=14)
    with pytest.raises(ProcfsError) as exc:
        _procfs.validate_target_pid(pid, str(tmp_path), self_pid=12)
    assert exc.value.kind == kind
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_validate_target_pid_ok(tmp_path):
    _fake_proc(tmp_path, 20)
    _fake_proc(tmp_path, 21)
    ident = _procfs.validate_target_pid("20", str(tmp_path), self_pid=21)
    assert ident["pid"] == 20 and ident["start_time"] == 500


def test_kthread_without_flag_but_child_of_kthreadd(tmp_path):
    d = _fake_proc(tmp_path, 30, ppid=2)
    (d / "cmdline").write_bytes(b"")
    assert _procfs.is_kernel_thread(30, str(tmp_path)) is True


@pytest.mark.parametrize("content,words", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"  \n", "is empty"),
    (b"garbage", "does not hold a PID"),
    (b"hello\n", "does not hold a PID"),
    (b"12abc", "does not hold a PID"),
    (b"0\n", "does not hold a PID"),
    (b"-42\n", "negative"),
    (b"-3\n", "does not hold a PID"),
    (b"\xff\xfe", "does not hold a PID"),
    (b"\xff\xfe\x00", "does not hold a PID"),
])
def test_read_pidfile_errors(tmp_path, content, words):
    path = tmp_path / "app.pid"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ProcfsError) as exc:
        _procfs.read_pidfile(str(path))
    assert words in str(exc.value) and str(path) in str(exc.value)


def test_read_pidfile_directory_and_ok(tmp_path):
    with pytest.raises(ProcfsError) as exc:
        _procfs.read_pidfile(str(tmp_path))
    assert "is a directory" in str(exc.value)
    (tmp_path / "ok.pid").write_text("4242\nextra\n")
    assert _procfs.read_pidfile(str(tmp_path / "ok.pid")) == 4242


# ------------------------------------------------------------------ fds

def test_read_fds_recorded(pipe_tree):
    fds = {e["fd"]: e for e in _procfs.read_fds(8183, pipe_tree)}
    assert sorted(fds) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert fds[1]["kind"] == "pipe" and fds[1]["ino"] == 164503
    assert fds[1]["access"] == "O_WRONLY" and fds[1]["mnt_id"] == 16
    assert fds[3]["flags"] == 0o2100001 and not fds[3]["append"]
    assert fds[3]["flags_decoded"] == ["O_WRONLY", "O_LARGEFILE", "O_CLOEXEC"]
    assert fds[5]["target"].endswith(" (deleted)") and fds[5]["pos"] == 100 and fds[5]["access"] == "O_RDWR"
    assert fds[6]["kind"] == "anon_inode" and fds[6]["extra"]["eventfd-count"] == "0"
    assert fds[7]["target"] == "/memfd:cache (deleted)"


def test_parse_fdinfo_octal_and_missing_fields():
    info = _procfs.parse_fdinfo("pos:\t12\nflags:\t02102001\n")
    assert info["flags"] == 0o2102001 and info["pos"] == 12 and info["mnt_id"] is None and info["ino"] is None
    names = _procfs.decode_flags(info["flags"])
    assert names[0] == "O_WRONLY" and "O_APPEND" in names and "O_CLOEXEC" in names and "O_LARGEFILE" in names
    assert _procfs.decode_flags(0) == ["O_RDONLY"]
    assert _procfs.decode_flags(2) == ["O_RDWR"]
    rep = _procfs.parse_fdinfo("inotify wd:1 ino:2\ninotify wd:2 ino:3\nflags: zz\n")
    assert rep["flags"] is None and len(rep["extra"]["inotify wd"]) == 2


def test_target_kind():
    assert _procfs.target_kind("pipe:[12]") == ("pipe", 12)
    assert _procfs.target_kind("socket:[7]") == ("socket", 7)
    assert _procfs.target_kind("anon_inode:[eventfd]") == ("anon_inode", None)
    assert _procfs.target_kind("/x (deleted)") == ("path", None)
    assert _procfs.target_kind("net:[4026531840]") == ("other", None)


def test_maps_recorded_file_backed(pipe_tree):
    maps = _procfs.read_maps(8183, pipe_tree)
    assert maps and all(m["path"].startswith("/") and m["inode"] for m in maps)
    assert any(m["path"].endswith("python3.11") and m["perms"] == "r-xp" for m in maps)
    everything = _procfs.read_maps(8183, pipe_tree, file_backed_only=False)
    assert any(m["path"] == "[stack]" for m in everything)


def test_parse_maps_deleted_and_spaces():
    text = ("7f00-7f10 r-xp 00001000 fe:00 99 /opt/my app/lib.so (deleted)\n"
            "7f10-7f20 rw-p 00000000 00:00 0 \n"
            "broken line\n")
    maps = _procfs.parse_maps(text)
    assert maps == [{"start": 0x7f00, "end": 0x7f10, "perms": "r-xp", "offset": 0x1000, "dev": "fe:00",
                     "inode": 99, "path": "/opt/my app/lib.so", "deleted": True}]


def test_mountinfo_recorded_and_escapes(pipe_tree):
    ids = set(m["mnt_id"] for m in _procfs.read_mountinfo(8183, pipe_tree))
    assert 27 in ids and 16 not in ids  # 16 is pipefs, never in mountinfo
    mi = _procfs.parse_mountinfo("40 27 0:50 / /mnt/a\\040b rw shared:1 - tmpfs none rw\n")
    assert mi[0]["mount_point"] == "/mnt/a b" and mi[0]["fstype"] == "tmpfs"


# -------------------------------------------------------------- sockets

def test_net_unix_recorded(unix_tree):
    socks = _procfs.read_sockets(8587, unix_tree)
    assert socks[166414]["listening"] is True and socks[166414]["path"] == "/tmp/fdi/u/w.pid.sock"
    assert socks[166978]["state"] == "connected" and socks[166978]["type"] == "stream"


def test_net_inet_parsing():
    tcp = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
           "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1\n"
           "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 556 1\n"
           "   2: 0100007F:1F90 0100007F:C351 06 00000000:00000000 00:00000000 00000000     0        0 0 1\n")
    out = _procfs.parse_net_inet(tcp, "tcp")
    assert out[555]["state"] == "LISTEN" and out[555]["local"] == "127.0.0.1:8080"
    assert out[556]["state"] == "ESTABLISHED" and out[556]["remote"] == "127.0.0.1:50000"
    assert 0 not in out
    v6 = ("  sl  local_address                         remote_address                        st\n"
          "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 777 1\n")
    assert _procfs.parse_net_inet(v6, "tcp", v6=True)[777]["local"] == "[::1]:80"


def _nl(mtype, body):
    msg = struct.pack("=IHHII", 16 + len(body), mtype, 2, 1, 0) + body
    return msg + b"\0" * ((-len(msg)) % 4)


def _attr(atype, payload):
    a = struct.pack("=HH", 4 + len(payload), atype) + payload
    return a + b"\0" * ((-len(a)) % 4)


def test_parse_unix_diag_synthetic():
    body = struct.pack("=BBBBI8x", 1, 1, 1, 0, 1000) + _attr(2, struct.pack("=I", 1001)) + _attr(0, b"/run/x.sock")
    body2 = struct.pack("=BBBBI8x", 1, 2, 7, 0, 1002) + _attr(0, b"\0abstract")
    data = _nl(20, body) + _nl(20, body2) + _nl(3, b"\0\0\0\0")
    out, done = _procfs.parse_unix_diag(data)
    assert done
    assert out[1000] == {"type": "stream", "state": 1, "peer": 1001, "name": "/run/x.sock"}
    assert out[1002]["peer"] is None and out[1002]["name"] == "@abstract" and out[1002]["type"] == "dgram"


def test_parse_unix_diag_error():
    with pytest.raises(OSError):
        _procfs.parse_unix_diag(_nl(2, struct.pack("=i", -13) + b"\0" * 16))


def test_unix_socket_diag_live():
    import socket
    a, b = socket.socketpair()
    try:
        diag = _procfs.unix_socket_diag()
        ia, ib = os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino
        assert diag[ia]["peer"] == ib and diag[ib]["peer"] == ia
    finally:
        a.close()
        b.close()


def test_inode_holders_recorded(pipe_tree):
    holders = _procfs.inode_holders(pipe_tree)
    assert sorted(holders[("pipe", 164503)]) == [(8181, 4), (8183, 1), (8183, 2), (8202, 1), (8202, 2)]
    assert sorted(holders[("pipe", 165879)]) == [(8183, 4), (8202, 0)]


# ------------------------------------------------------------ own-namespace session

@pytest.mark.parametrize("line,expected", [
    ("NSsid:\t8183\n", 8183),
    ("NSsid:\t4711\t0\n", 0),          # nested PID namespace, its session leader is outside it
    ("NSsid:\t0\n", 0),                # a child of a container's init that never called setsid
    ("", None),                        # a kernel without the NS* lines
])
def test_own_ns_session(tmp_path, line, expected):
    d = _fake_proc(tmp_path, 4712)
    (d / "status").write_text("Name:\tapp\n%sUid:\t0\t0\t0\t0\n" % line)
    assert _procfs.own_ns_session(4712, str(tmp_path)) == expected


def test_own_ns_session_of_a_recorded_tree(pipe_tree):
    assert _procfs.own_ns_session(8183, pipe_tree) == 8183
    assert _procfs.own_ns_session(99999, pipe_tree) is None
