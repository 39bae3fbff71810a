# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Classify the open files of a process tree and say whether CRIU can move it.

Each fd gets a ``classification`` (what it is) and a ``verdict``:

``ok``
    CRIU dumps and restores it as it is (a warning may still apply).
``needs_option``
    The dump fails unless a CRIU option is passed (``criu_option``); the
    module option that passes it is ``lifted_by``.
``needs_file_on_destination``
    The restore reopens the file by path and checks its size: the same file,
    at the same size, must exist where the process is restored.
``refuse``
    Dumping it fails, or it "works" and the restored process breaks.  Some
    refusals can be lifted by an explicit option (``lifted_by``), e.g. a tty
    with ``shell_job``; the rest cannot.

:func:`plan` turns the items and the options the caller means to pass into
the CRIU options dump/restore need and the blockers left.

The verdicts follow what CRIU 4.1.1 does on kernel 6.18 (measured; see the
design notes): an external pipe dumps and restores with exit 0 and the process
dies of SIGPIPE right after; an external unix stream socket fails the dump
("External socket is used"), and a bare ``--ext-unix-sk`` does not help
("Can't dump half of stream unix connection") but ``--ext-unix-sk=INODE`` does;
a pty slave whose master is outside fails without ``--shell-job``; a deleted
file over the 1 MiB ghost limit fails without ``--ghost-limit``; and CRIU up to
4.1.1 fails on every TCP/UDP socket on kernel 6.16+ (getsockopt SO_PASSCRED
returns EOPNOTSUPP there, checkpoint-restore/criu#2705).
"""

from __future__ import annotations

import os
import re

from ansible_collections.ckpt.criu.plugins.module_utils import _criu_info
from ansible_collections.ckpt.criu.plugins.module_utils import _procfs
from ansible_collections.ckpt.criu.plugins.module_utils._procfs import PROC, ProcfsError

VERDICTS = ("ok", "needs_option", "needs_file_on_destination", "refuse")
STDIO_NAMES = {0: "stdin", 1: "stdout", 2: "stderr"}
DEFAULT_GHOST_LIMIT = 1024 * 1024  # CRIU's default --ghost-limit

HARMLESS_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
TTY_RE = re.compile(r"^/dev/(pts/\d+|tty\w*|console|ptmx)$")
ANON_OK = ("eventfd", "eventpoll", "signalfd", "timerfd", "inotify", "fanotify", "pidfd")
ANON_UNSUPPORTED = ("io_uring", "userfaultfd", "perf_event", "bpf-prog", "bpf_link", "kvm-vm", "kvm-vcpu",
                    "dmabuf", "sync_file", "vfio-device")


# ------------------------------------------------------------------ context

def kernel_version(release):
    """(major, minor) of a kernel release string like '6.18.44-fc', or None."""
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def criu_version_tuple(version):
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def inet_dump_broken(kernel_release, criu_version):
    """True/False when CRIU cannot dump TCP/UDP sockets on this kernel; None when the CRIU version is unknown.

    Linux 6.16 restricted getsockopt(SO_PASSCRED/SO_PASSSEC) to unix and
    netlink sockets; CRIU up to 4.1.1 asks for them on every socket and the
    dump fails ("Can't get 1:16 opt: Operation not supported").
    """
    kv = kernel_version(kernel_release)
    if kv is None or kv < (6, 16):
        return False
    cv = criu_version_tuple(criu_version)
    if cv is None:
        return None
    return cv <= (4, 1, 1)


def _ids(status, key):
    """The real, effective and saved ids of a /proc/PID/status line ('Uid'/'Gid'), or None."""
    try:
        return tuple(int(x) for x in status.get(key, "").split()[:3]) or None
    except ValueError:
        return None


def gather(pid, tree=True, proc_root=PROC, kernel_release=None, criu_version=None, cap_sys_resource=None):
    """Read everything classification needs about ``pid`` (and its descendants when ``tree``).

    ``cap_sys_resource``: whether criu (which inherits this process's capabilities) has
    CAP_SYS_RESOURCE; read from /proc/self/status when None.
    Returns a context dict; reading errors of the root process raise ProcfsError.
    """
    pid = int(pid)
    pids = _procfs.process_tree(pid, proc_root) if tree else [pid]
    if cap_sys_resource is None:
        cap_sys_resource = _criu_info.has_capability("CAP_SYS_RESOURCE")
    ctx = {"root": pid, "pids": pids, "fds": {}, "stat": {}, "own_sid": {}, "sockets": {}, "mnt_ids": {},
           "diag": None, "holders": None, "proc_root": proc_root, "comms": {}, "creds": {},
           "kernel_release": kernel_release if kernel_release is not None else os.uname().release,
           "criu_version": criu_version, "cap_sys_resource": cap_sys_resource,
           "caller_ids": (os.getuid(), os.getgid())}
    netns_cache = {}
    for p in pids:
        try:
            ctx["fds"][p] = _procfs.read_fds(p, proc_root)
            ctx["stat"][p] = _procfs.read_stat(p, proc_root)
            ctx["own_sid"][p] = _procfs.own_ns_session(p, proc_root)
        except ProcfsError as exc:
            if p == pid or exc.kind == "permission":
                raise
            continue  # a child that exited meanwhile
        try:
            status = _procfs.read_status(p, proc_root)
            ctx["creds"][p] = {"uid": _ids(status, "Uid"), "gid": _ids(status, "Gid")}
        except ProcfsError:
            ctx["creds"][p] = None
        try:
            ctx["mnt_ids"][p] = set(m["mnt_id"] for m in _procfs.read_mountinfo(p, proc_root))
        except ProcfsError:
            ctx["mnt_ids"][p] = None
        ns = _procfs._readlink(os.path.join(proc_root, str(p), "ns", "net"))
        if ns not in netns_cache or ns is None:
            netns_cache[ns] = _procfs.read_sockets(p, proc_root)
        ctx["sockets"][p] = netns_cache[ns]
    ctx["pids"] = [p for p in pids if p in ctx["fds"]]
    ctx["holders"] = _procfs.inode_holders(proc_root)
    if proc_root == PROC and _procfs.same_netns(pid, proc_root):
        try:
            ctx["diag"] = _procfs.unix_socket_diag()
        except OSError:
            ctx["diag"] = None
    return ctx


def _comm(ctx, pid):
    if pid not in ctx["comms"]:
        st = ctx["stat"].get(pid)
        ctx["comms"][pid] = st["comm"] if st else _procfs.comm_of(pid, ctx["proc_root"])
    return ctx["comms"][pid]


def _who(ctx, pids):
    """'process 1234 (logger)' / 'processes 1, 2 (a, b)' / 'no process'; a PID whose process has
    exited since shows as '1234 (exited)'."""
    pids = sorted(set(pids))
    if not pids:
        return "no process"
    named = ["%d (%s)" % (p, _comm(ctx, p) or "exited") for p in pids[:3]]
    more = " and %d more" % (len(pids) - 3) if len(pids) > 3 else ""
    return ("process " if len(pids) == 1 else "processes ") + ", ".join(named) + more


def _fd_name(pid, fd, root):
    name = "fd %d" % fd
    if fd in STDIO_NAMES:
        name += " (%s)" % STDIO_NAMES[fd]
    if pid != root:
        name += " of PID %d" % pid
    return name


def _item(pid, entry, classification, verdict, reason, root, **extra):
    fd = entry["fd"] if entry else extra.pop("fd", None)
    item = {"pid": pid, "fd": fd, "stdio": STDIO_NAMES.get(fd) if fd is not None else None,
            "target": entry["target"] if entry else None,
            "flags": entry["flags_decoded"] if entry else [],
            "classification": classification, "verdict": verdict, "reason": reason,
            "lifted_by": None, "criu_option": None, "phase": None, "warning": None, "file": None,
            "peers": None}
    item.update(extra)
    if item["file"] is not None and entry and entry.get("mode") is not None:
        # criu reopens a file by path only if its st_mode is the same as at the dump.
        item["file"] = dict(item["file"], mode=entry["mode"])
    if item["reason"] is None:
        item["reason"] = "%s is %s." % (_fd_name(pid, fd, root), classification.replace("_", " "))
    return item


# -------------------------------------------------------------- classifiers

def _classify_path(ctx, pid, e, root):
    name = _fd_name(pid, e["fd"], root)
    target = e["target"]
    deleted = target.endswith(" (deleted)")
    path = target[:-len(" (deleted)")] if deleted else target
    if path.startswith("/memfd:"):
        return _item(pid, e, "memfd", "ok", "%s is a memfd (%s); CRIU saves its content in the images."
                     % (name, path[len("/memfd:"):]), root)
    mnt_ids = ctx["mnt_ids"].get(pid)
    if e["mnt_id"] is not None and mnt_ids is not None and e["mnt_id"] not in mnt_ids:
        return _item(pid, e, "foreign_mount", "refuse",
                     "%s is %s on mount %d, which the process's mount namespace cannot see: CRIU fails "
                     "with \"Can't lookup mount=%d for fd=%d\". Close it in the workload (it usually leaked "
                     "from the program that started it) or start the workload so it does not inherit it."
                     % (name, path, e["mnt_id"], e["mnt_id"], e["fd"]), root)
    ftype = e.get("file_type")
    size = e.get("size")
    if deleted and ftype not in ("char", "block"):
        limit = DEFAULT_GHOST_LIMIT
        if size is not None and size > limit:
            return _item(pid, e, "deleted_file", "needs_option",
                         "%s is the deleted file %s of %d bytes, over CRIU's ghost file limit of 1 MiB: the "
                         "dump fails (\"Can't dump ghost file ... increase limit\"). Set ghost_limit to at "
                         "least %d (criu --ghost-limit), or close the file in the workload before the "
                         "checkpoint." % (name, path, size, size),
                         root, lifted_by="ghost_limit", criu_option="--ghost-limit=%d" % size, phase="dump",
                         file={"path": path, "size": size, "deleted": True})
        return _item(pid, e, "deleted_file", "ok",
                     "%s is the deleted file %s (%s bytes, under the 1 MiB ghost limit); CRIU copies its "
                     "content into the images." % (name, path, size), root,
                     file={"path": path, "size": size, "deleted": True})
    if path in HARMLESS_DEVICES:
        cls = "devnull" if path == "/dev/null" else "device_harmless"
        return _item(pid, e, cls, "ok", "%s is %s." % (name, path), root)
    if TTY_RE.match(path):
        return _classify_tty(ctx, pid, e, root, path)
    if ftype == "regular":
        writable = e["access"] in ("O_WRONLY", "O_RDWR")
        if e["append"]:
            return _item(pid, e, "file_append", "ok",
                         "%s is the file %s opened with O_APPEND; a restore reopens it by path and keeps "
                         "appending, whatever its size then." % (name, path), root,
                         file={"path": path, "size": size, "same_size": False})
        what = "written" if writable else "read"
        return _item(pid, e, "file" if writable else "file_readonly", "needs_file_on_destination",
                     "%s is the file %s %s at offset %s without O_APPEND: the restore reopens it by path "
                     "and fails unless the same file with the same size (%s bytes) is there; keep it in "
                     "place (or copy it along) and do not let it change in between, or restart the "
                     "workload with the file opened O_APPEND." % (name, path, what, e["pos"], size), root,
                     file={"path": path, "size": size, "same_size": True})
    if ftype == "directory":
        return _item(pid, e, "directory", "ok", "%s is the directory %s; it must exist where the process is "
                     "restored." % (name, path), root, file={"path": path, "size": None, "same_size": False})
    if ftype == "fifo":
        return _item(pid, e, "fifo", "needs_file_on_destination",
                     "%s is the named pipe %s; the restore reopens it by path, so it must exist there."
                     % (name, path), root, file={"path": path, "size": None, "same_size": False})
    if ftype in ("char", "block"):
        return _item(pid, e, "device", "needs_file_on_destination",
                     "%s is the device %s; the restore reopens it by path, so the same device node must "
                     "exist there (and CRIU cannot save any device state)." % (name, path), root,
                     file={"path": path, "size": None, "same_size": False})
    return _item(pid, e, "other", "ok", "%s is %s." % (name, target), root,
                 warning="%s is %s, which fd_inspect does not know; check CRIU supports it." % (name, target))


def _tty_index(e):
    value = e["extra"].get("tty-index")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _classify_tty(ctx, pid, e, root, path):
    name = _fd_name(pid, e["fd"], root)
    if path == "/dev/ptmx":
        return _item(pid, e, "pty_master", "ok", "%s is the master side of a pty (index %s); CRIU restores it "
                     "together with its slaves in the tree." % (name, _tty_index(e)), root)
    m = re.match(r"^/dev/pts/(\d+)$", path)
    if m:
        index = int(m.group(1))
        for p in ctx["pids"]:
            for other in ctx["fds"].get(p, []):
                if other["target"] == "/dev/ptmx" and _tty_index(other) == index:
                    return _item(pid, e, "pty_internal", "ok",
                                 "%s is the pty %s whose master is held inside the dumped tree (PID %d)."
                                 % (name, path, p), root)
    return _item(pid, e, "tty", "refuse",
                 "%s is the terminal %s, whose other side is outside the dumped tree: CRIU refuses the dump "
                 "without --shell-job (\"Found slave peer index ... without correspond master peer\"), and a "
                 "headless restore (Ansible has no terminal) fails. Restart the workload detached from the "
                 "terminal (stdio on /dev/null or a log file opened O_APPEND, e.g. under systemd or "
                 "setsid/nohup), or set shell_job if you will restore it on a terminal yourself."
                 % (name, path), root, lifted_by="shell_job", criu_option="--shell-job", phase="both",
                 lift_warning="%s is the terminal %s: the dump uses --shell-job, and the restore needs a "
                              "terminal (criu restore --shell-job from a shell) or --inherit-fd for it."
                              % (name, path))


def _classify_pipe(ctx, pid, e, root):
    name = _fd_name(pid, e["fd"], root)
    holders = (ctx["holders"] or {}).get(("pipe", e["ino"]), [])
    tree = set(ctx["pids"])
    outside = sorted(set(h[0] for h in holders if h[0] not in tree))
    if not outside:
        return _item(pid, e, "pipe_internal", "ok", "%s is a pipe whose ends are all held inside the dumped "
                     "tree; CRIU restores both ends." % name, root)
    who = _who(ctx, outside)
    writes = e["access"] in ("O_WRONLY", "O_RDWR")
    if writes:
        consequence = ("after a restore the pipe has no reader and the process dies of SIGPIPE at its next "
                       "write (CRIU dump and restore both exit 0 and the process is gone about 1.5 s later)")
        fix = ("Restart the workload with %s on a file opened with O_APPEND or /dev/null, or include the "
               "reader in the checkpoint, or set inherit_fd and hand the restore a new reader with "
               "--inherit-fd." % (STDIO_NAMES.get(e["fd"], "this fd")))
        rel = "a pipe to %s, which reads it and is outside the dumped tree" % who
    else:
        consequence = ("after a restore nobody writes to the pipe any more: the process reads end-of-file "
                       "and usually exits")
        fix = ("Restart the workload with %s on /dev/null or a file, or include the writer in the "
               "checkpoint, or set inherit_fd and hand the restore a new writer with --inherit-fd."
               % (STDIO_NAMES.get(e["fd"], "this fd")))
        rel = "a pipe from %s, which writes it and is outside the dumped tree" % who
    return _item(pid, e, "pipe_external", "refuse", "%s is %s: %s. %s" % (name, rel, consequence, fix), root,
                 lifted_by="inherit_fd", criu_option="--inherit-fd=fd[%d]:pipe:[%d]" % (e["fd"], e["ino"]),
                 phase="restore", peers=[{"pid": p, "comm": _comm(ctx, p)} for p in outside],
                 inherit={"pid": pid, "fd": e["fd"], "key": "pipe:[%d]" % e["ino"], "writes": writes},
                 lift_warning="%s is an external pipe (pipe:[%d]): the restore must pass the new other end "
                              "with --inherit-fd=fd[N]:pipe:[%d], N being the fd criu gets it on."
                              % (name, e["ino"], e["ino"]))


def _classify_socket(ctx, pid, e, root):
    name = _fd_name(pid, e["fd"], root)
    ino = e["ino"]
    info = (ctx["sockets"].get(pid) or {}).get(ino)
    proto = info["family"] if info else None
    if proto is None:
        proto_name = _procfs.socket_protocol(pid, e["fd"], ctx["proc_root"]) or ""
        if proto_name.startswith("UNIX"):
            proto = "unix"
        elif proto_name.startswith(("TCP", "UDP")):
            return _inet_compat(ctx, _item(pid, e, "inet_other", "ok", "%s is a %s socket." % (name, proto_name),
                                           root))
        else:
            what = proto_name or "non-IP, non-unix"
            return _item(pid, e, "socket_other", "ok", "%s is a %s socket." % (name, what), root)
    if proto == "unix":
        return _classify_unix(ctx, pid, e, root, info)
    if info["proto"] == "tcp":
        state = info["state"]
        if state == "LISTEN":
            item = _item(pid, e, "tcp_listen", "ok", "%s is a TCP socket listening on %s; CRIU restores it "
                         "(the port must be free where the process is restored)." % (name, info["local"]), root,
                         socket=info)
        elif state == "CLOSE":
            item = _item(pid, e, "tcp_unconnected", "ok", "%s is an unconnected TCP socket." % name, root,
                         socket=info)
        else:
            item = _item(pid, e, "tcp_established", "needs_option",
                         "%s is a TCP connection %s -> %s (%s): CRIU refuses to dump it without "
                         "--tcp-established. Set tcp_established (the peer must still be reachable from the "
                         "restored process, at the same address), or close the connection before the "
                         "checkpoint." % (name, info["local"], info["remote"], state), root,
                         lifted_by="tcp_established", criu_option="--tcp-established", phase="both",
                         socket=info,
                         lifted_reason="%s is a TCP connection %s -> %s (%s); tcp_established is set, so CRIU "
                                       "dumps and restores it with --tcp-established (the peer must still be "
                                       "reachable from the restored process, at the same address)."
                                       % (name, info["local"], info["remote"], state))
        return _inet_compat(ctx, item)
    return _inet_compat(ctx, _item(pid, e, "udp", "ok", "%s is a UDP socket on %s." % (name, info["local"]), root,
                                   socket=info))


def _inet_compat(ctx, item):
    broken = inet_dump_broken(ctx["kernel_release"], ctx["criu_version"])
    if broken:
        # One blocker per process (inet_blockers), not one per socket.
        item.update(verdict="refuse", lifted_by=None, criu_option=None, phase=None, inet_broken=True,
                    reason="%s; but CRIU %s cannot dump any TCP or UDP socket on kernel %s "
                           "(checkpoint-restore/criu#2705, fixed in CRIU 4.2)."
                           % (item["reason"].rstrip("."), ctx["criu_version"], ctx["kernel_release"]))
    elif broken is None:
        item["warning"] = ("%s is a TCP/UDP socket and CRIU up to 4.1.1 cannot dump those on kernel %s "
                           "(checkpoint-restore/criu#2705, fixed in CRIU 4.2); the CRIU version here is unknown."
                           % (_fd_name(item["pid"], item["fd"], ctx["root"]), ctx["kernel_release"]))
    return item


def _classify_unix(ctx, pid, e, root, info):
    name = _fd_name(pid, e["fd"], root)
    ino = e["ino"]
    stype = info["type"] if info else "unknown"
    if info and info["listening"]:
        return _item(pid, e, "unix_listen", "ok", "%s is a unix %s socket listening on %s; CRIU binds it "
                     "again on restore." % (name, stype, info["path"] or "an unnamed address"), root, socket=info)
    diag = ctx["diag"]
    peer = None
    if diag is not None:
        d = diag.get(ino)
        peer = d["peer"] if d else None
        if d and stype == "unknown":
            stype = d["type"]
        if not peer:
            return _item(pid, e, "unix_unconnected", "ok", "%s is an unconnected unix %s socket." % (name, stype),
                         root, socket=info)
    elif info and info["state"] != "connected":
        return _item(pid, e, "unix_unconnected", "ok", "%s is an unconnected unix %s socket." % (name, stype),
                     root, socket=info)
    tree = set(ctx["pids"])
    holders = (ctx["holders"] or {}).get(("socket", peer), []) if peer else []
    outside = sorted(set(h[0] for h in holders if h[0] not in tree))
    inside = [h for h in holders if h[0] in tree]
    if peer and inside and not outside:
        return _item(pid, e, "unix_internal", "ok", "%s is a unix %s socket connected to a socket held inside "
                     "the dumped tree." % (name, stype), root, socket=info)
    peer_name = (diag.get(peer) or {}).get("name") if (diag and peer) else None
    if peer is None:
        where = "a peer fd_inspect cannot see (another network namespace)"
    elif outside:
        where = "%s%s, outside the dumped tree" % (_who(ctx, outside), " at %s" % peer_name if peer_name else "")
    else:
        where = "%s, which no process holds yet (not accepted), outside the dumped tree" % (
            peer_name or "socket:[%d]" % peer)
    peers = [{"pid": p, "comm": _comm(ctx, p)} for p in outside]
    option = "--ext-unix-sk=%d" % ino
    own_name = (diag.get(ino) or {}).get("name") if diag else (info or {}).get("path")
    if peer and stype == "stream" and not peer_name and outside:
        # The server's end of an accepted connection: its peer (the client) has no address, so
        # a restore has nothing to reconnect to. CRIU 4.2.1 accepts --ext-unix-sk for it and
        # then crashes (SIGSEGV) in the restore, after the process was frozen and dumped.
        return _item(pid, e, "unix_accepted_external", "refuse",
                     "%s is an accepted unix stream connection (the server's end%s) from %s, a client outside "
                     "the dumped tree whose socket has no address: nothing can reconnect it after a restore, "
                     "and CRIU crashes restoring it even with ext_unix_sk. Checkpoint when no client is "
                     "connected (stop or disconnect the clients first; they reconnect afterwards), or include "
                     "the clients in the checkpoint."
                     % (name, " of %s" % own_name if own_name else "", _who(ctx, outside)), root,
                     peers=peers, socket=info, peer_inode=peer)
    if stype == "dgram":
        return _item(pid, e, "unix_external", "needs_option",
                     "%s is a unix dgram socket connected to %s: CRIU refuses the dump (\"External socket is "
                     "used\") unless ext_unix_sk is set (criu --ext-unix-sk); the restore then connects to "
                     "the same address again." % (name, where), root, lifted_by="ext_unix_sk",
                     criu_option=option, phase="both", peers=peers, socket=info, peer_inode=peer)
    return _item(pid, e, "unix_external", "refuse",
                 "%s is a unix %s socket connected to %s (journald style): CRIU refuses the dump (\"External "
                 "socket is used\"). Restart the workload with %s on a file opened with O_APPEND or /dev/null, "
                 "or include the peer in the checkpoint, or set ext_unix_sk to dump it as external "
                 "(--ext-unix-sk=%d) if the peer will listen at the same address where it is restored."
                 % (name, stype, where, STDIO_NAMES.get(e["fd"], "this fd"), ino), root,
                 lifted_by="ext_unix_sk", criu_option=option, phase="both", peers=peers, socket=info,
                 peer_inode=peer,
                 lift_warning="%s is an external unix %s socket: the restore reconnects it by address, so "
                              "%s must be listening there; data in flight is lost."
                              % (name, stype, peer_name or "its peer"))


def _classify_anon(ctx, pid, e, root):
    name = _fd_name(pid, e["fd"], root)
    kind = e["target"][len("anon_inode:"):].strip("[]")
    if kind in ANON_OK:
        return _item(pid, e, "anon_inode", "ok", "%s is a %s; CRIU restores it." % (name, kind), root,
                     anon_type=kind)
    if kind.startswith(ANON_UNSUPPORTED) or kind in ANON_UNSUPPORTED:
        return _item(pid, e, "anon_inode", "refuse", "%s is a %s, which CRIU cannot checkpoint; stop using it in "
                     "the workload (or close it) before the checkpoint." % (name, kind), root, anon_type=kind)
    return _item(pid, e, "anon_inode", "ok", "%s is a %s." % (name, kind), root, anon_type=kind,
                 warning="%s is a %s, which fd_inspect does not know; check CRIU supports it." % (name, kind))


def classify_fd(ctx, pid, entry):
    """The classification item of one fd entry (from _procfs.read_fds) of ``pid``."""
    root = ctx["root"]
    kind = entry["kind"]
    if kind == "pipe":
        return _classify_pipe(ctx, pid, entry, root)
    if kind == "socket":
        return _classify_socket(ctx, pid, entry, root)
    if kind == "anon_inode":
        return _classify_anon(ctx, pid, entry, root)
    if kind == "path":
        return _classify_path(ctx, pid, entry, root)
    name = _fd_name(pid, entry["fd"], root)
    return _item(pid, entry, "other", "ok", "%s is %s." % (name, entry["target"]), root,
                 warning="%s is %s, which fd_inspect does not know; check CRIU supports it."
                 % (name, entry["target"]))


def closed_item(pid, fd, root):
    name = _fd_name(pid, fd, root)
    return _item(pid, None, "closed", "ok", "%s is closed; CRIU dumps and restores that as it is." % name, root,
                 fd=fd,
                 warning="%s is closed: CRIU restores that, but the next file the process opens lands on fd %d "
                         "and receives whatever it writes to %s (the incident: criu's own log went nowhere "
                         "that way). Start the workload with %s on /dev/null or a log file."
                         % (name, fd, STDIO_NAMES[fd], STDIO_NAMES[fd]))


def classify_process(ctx, pid):
    """Items for every fd of ``pid`` plus one ``closed`` item per missing fd 0/1/2, sorted by fd."""
    root = ctx["root"]
    entries = ctx["fds"].get(pid, [])
    present = set(e["fd"] for e in entries)
    items = [closed_item(pid, fd, root) for fd in (0, 1, 2) if fd not in present]
    items.extend(classify_fd(ctx, pid, e) for e in entries)
    return sorted(items, key=lambda i: i["fd"])


def process_checks(ctx):
    """Items (fd None) for processes whose session or process group leader is outside the tree."""
    out = []
    tree = set(ctx["pids"])
    for p in ctx["pids"]:
        st = ctx["stat"].get(p)
        if not st:
            continue
        if ctx.get("own_sid", {}).get(p) == 0 or st["session"] == 0:
            out.append(_item(p, None, "session_outside_pidns", "refuse",
                             "PID %d is in a session whose leader is outside its PID namespace (its launcher, "
                             "e.g. a container's init, never called setsid): CRIU cannot dump it, not even with "
                             "--shell-job. Start the workload as its own session leader (setsid, or a service "
                             "manager)." % p, root=ctx["root"], fd=None))
            continue
        for key, what in (("session", "session"), ("pgrp", "process group")):
            leader = st[key]
            if leader and leader not in tree:
                if _comm(ctx, leader) is None:
                    whose = "of process %d, which has exited (its %s lives on without it)" % (leader, what)
                else:
                    whose = "of %s, outside the dumped tree" % _who(ctx, [leader])
                out.append(_item(p, None, "%s_outside" % key.replace("pgrp", "pgroup"), "refuse",
                                 "PID %d is in the %s %s: CRIU refuses the dump unless it is told the tree "
                                 "is a shell job (--shell-job). Start the workload as its own session leader "
                                 "(setsid, or a service manager), or set shell_job."
                                 % (p, what, whose), root=ctx["root"], fd=None,
                                 lifted_by="shell_job", criu_option="--shell-job", phase="both"))
                break
    out.extend(other_user_checks(ctx))
    return out


def other_user_checks(ctx):
    """One refusal when members of the tree run as another user and criu lacks CAP_SYS_RESOURCE.

    CRIU reads the resource limits of every process it dumps (prlimit); for a process whose
    real, effective and saved uids and gids are not all the caller's, the kernel demands
    CAP_SYS_RESOURCE ("Can't get rlimit 0: Operation not permitted").
    """
    if ctx.get("cap_sys_resource") is not False:
        return []
    uid, gid = ctx.get("caller_ids") or (0, 0)
    others = []
    for p in ctx["pids"]:
        creds = ctx.get("creds", {}).get(p)
        if not creds or creds["uid"] is None:
            continue
        if any(u != uid for u in creds["uid"]) or any(g != gid for g in creds["gid"] or ()):
            others.append(p)
    if not others:
        return []
    uids = sorted(set(u for p in others for u in ctx["creds"][p]["uid"] if u != uid))
    return [_item(others[0], None, "other_user_without_cap_sys_resource", "refuse",
                  "%s of the dumped tree run%s as another user (uid %s) and this host lacks CAP_SYS_RESOURCE: CRIU "
                  "reads the resource limits of every process it dumps, which for another user's process needs "
                  "that capability, so the dump fails (\"Can't get rlimit 0: Operation not permitted\"). Run "
                  "those processes as the same user as the rest (nginx: \"user root;\"), or run the checkpoint "
                  "where CAP_SYS_RESOURCE is granted (a host or container that keeps it)."
                  % (_who(ctx, others).capitalize(), "s" if len(others) == 1 else "",
                     ", ".join(str(u) for u in uids) or "?"),
                  root=ctx["root"], fd=None, peers=[{"pid": p, "comm": _comm(ctx, p)} for p in others])]


def inet_blockers(ctx, items):
    """Give the sockets CRIU cannot dump here one blocker sentence per process, naming CRIU 4.2."""
    by_pid = {}
    for item in items:
        if item.get("inet_broken"):
            by_pid.setdefault(item["pid"], []).append(item)
    for pid, group in by_pid.items():
        fds = ", ".join(str(i["fd"]) for i in group)
        sentence = ("%s holds %d TCP/UDP socket%s (fd %s) and CRIU %s cannot dump any TCP or UDP socket on kernel "
                    "%s (\"Can't get 1:16 opt: Operation not supported\", checkpoint-restore/criu#2705): install "
                    "CRIU 4.2 or newer (scripts/install-criu.sh provides it), or close the sockets before the "
                    "checkpoint." % (_who(ctx, [pid]).capitalize(), len(group), "" if len(group) == 1 else "s", fds,
                                     ctx["criu_version"], ctx["kernel_release"]))
        for item in group:
            item["blocker"] = sentence
    return items


def classify(pid, tree=True, proc_root=PROC, kernel_release=None, criu_version=None, ctx=None,
             cap_sys_resource=None):
    """Classify ``pid`` (and its tree): {'ctx', 'items' (all pids), 'by_pid', 'stdio' (root's fds 0-2)}."""
    if ctx is None:
        ctx = gather(pid, tree=tree, proc_root=proc_root, kernel_release=kernel_release, criu_version=criu_version,
                     cap_sys_resource=cap_sys_resource)
    by_pid = {}
    items = []
    for p in ctx["pids"]:
        by_pid[p] = classify_process(ctx, p)
        items.extend(by_pid[p])
    items.extend(process_checks(ctx))
    inet_blockers(ctx, items)
    root_items = by_pid.get(ctx["root"], [])
    stdio = [i for i in root_items if i["fd"] in (0, 1, 2)]
    return {"ctx": ctx, "items": items, "by_pid": by_pid, "stdio": stdio}


# ---------------------------------------------------------------------- plan

def _lifted(item, options):
    param = item.get("lifted_by")
    if not param:
        return False
    value = options.get(param)
    if param == "ghost_limit":
        size = (item.get("file") or {}).get("size") or 0
        return value is not None and int(value) >= size
    return bool(value)


def plan(items, options=None):
    """What dump/restore need, given the items and the options the caller intends to pass.

    ``options``: {shell_job, tcp_established, ext_unix_sk, ghost_limit (bytes), inherit_fd}.
    Returns {criu_options, dump_options, restore_options, blockers, warnings, files_on_destination,
    restorable}.  Options are single argv elements ('--ghost-limit=N').
    """
    options = options or {}
    blockers, warnings, files = [], [], []
    dump_opts, restore_opts = [], []
    ext_inodes, inherit = [], []
    ghost = options.get("ghost_limit")

    def add(lst, opt):
        if opt not in lst:
            lst.append(opt)

    for item in items:
        verdict = item["verdict"]
        if item.get("warning"):
            warnings.append(item["warning"])
        if item.get("file") and verdict in ("ok", "needs_file_on_destination") and not item["file"].get("deleted"):
            rec = dict(item["file"])
            rec.update(pid=item["pid"], fd=item["fd"])
            files.append(rec)
        if verdict in ("ok", "needs_file_on_destination"):
            continue
        if not _lifted(item, options):
            add(blockers, item.get("blocker") or item["reason"])
            continue
        if item.get("lifted_reason"):
            item["reason"] = item["lifted_reason"]
        if item.get("lift_warning"):
            warnings.append(item["lift_warning"])
        param = item["lifted_by"]
        if param == "ext_unix_sk":
            ext_inodes.append(int(item["criu_option"].split("=", 1)[1]))
            continue
        if param == "ghost_limit":
            continue
        if param == "inherit_fd" and item.get("inherit"):
            # The restore passes a replacement on an fd of its own (fd[N] is criu's fd, not the process's).
            if item["inherit"]["key"] not in [r["key"] for r in inherit]:
                inherit.append(item["inherit"])
            continue
        phase = item.get("phase") or "both"
        if phase in ("dump", "both"):
            add(dump_opts, item["criu_option"])
        if phase in ("restore", "both"):
            add(restore_opts, item["criu_option"])
    if ext_inodes:
        opt = "--ext-unix-sk=%s" % ",".join(str(i) for i in sorted(set(ext_inodes)))
        add(dump_opts, opt)
        add(restore_opts, opt)
    if ghost is not None and any(i.get("lifted_by") == "ghost_limit" and i["verdict"] != "ok" for i in items):
        add(dump_opts, "--ghost-limit=%d" % int(ghost))
    combined = list(dump_opts)
    for opt in restore_opts:
        add(combined, opt)
    for rec in inherit:
        # N: the fd criu gets the replacement on (ckpt.criu.restore's inherit_fd_file).
        add(restore_opts, "--inherit-fd=fd[N]:%s" % rec["key"])
        add(combined, "--inherit-fd=fd[N]:%s" % rec["key"])
    return {"criu_options": combined, "dump_options": dump_opts, "restore_options": restore_opts,
            "blockers": blockers, "warnings": warnings, "files_on_destination": files,
            "restorable": not blockers,
            "external": {"ext_unix_sk_inodes": sorted(set(ext_inodes)), "inherit_fds": inherit}}


def public_item(item):
    """An item without internal keys, for module results."""
    return dict((k, v) for k, v in item.items()
                if k not in ("lift_warning", "lifted_reason", "blocker", "inet_broken", "inherit"))
