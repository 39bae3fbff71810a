# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Read what CRIU will see of a process from ``/proc``.

Pure functions over a proc root (``/proc`` by default) so unit tests can point
them at a recorded fake tree.  Every failure is a :class:`ProcfsError` whose
message is one sentence saying what is wrong and what to do.

The only code that does not read files is :func:`unix_socket_diag`, which asks
the kernel (sock_diag netlink, the interface ``ss -x`` uses) for the peer of
every unix socket; it needs no proc root and is skipped when it fails.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

PROC = "/proc"

PF_KTHREAD = 0x00200000
DEAD_STATES = ("Z", "X", "x")

# open(2) flags as /proc/PID/fdinfo prints them (octal), x86-64/aarch64 values.
O_ACCMODE = 0o3
O_FLAG_NAMES = (
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (0o10000, "O_DSYNC"),
    (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"),
    (0o100000, "O_LARGEFILE"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o4000000, "O_SYNC"),
    (0o10000000, "O_PATH"),
    (0o20000000, "O_TMPFILE"),
)
O_APPEND = 0o2000
ACCESS_NAMES = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR", 3: "O_ACCMODE"}

# /proc/net/tcp state numbers (include/net/tcp_states.h).
TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}
UNIX_TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}
UNIX_STATES = {1: "unconnected", 2: "connecting", 3: "connected", 4: "disconnecting"}
SO_ACCEPTCON = 0x10000


class ProcfsError(CkptError):
    """A /proc read or check failed; str() is one sentence with what to do."""

    def __init__(self, msg, pid=None, kind=None):
        super(ProcfsError, self).__init__(msg, pid=pid)
        self.pid = pid
        self.kind = kind


# ----------------------------------------------------------------- raw reads

def _path(proc_root, pid, *parts):
    return os.path.join(proc_root, str(pid), *parts)


def _read_bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


def _read_text(path):
    return _read_bytes(path).decode("utf-8", "surrogateescape")


def _read_proc(pid, proc_root, name, binary=False):
    """Content of /proc/PID/NAME (text, or bytes with ``binary``); an OSError becomes a ProcfsError."""
    try:
        return (_read_bytes if binary else _read_text)(_path(proc_root, pid, name))
    except OSError as exc:
        raise _fail(exc, pid, "/proc/%s/%s" % (pid, name))


def _fail(exc, pid, what):
    """Turn an OSError while reading ``what`` of ``pid`` into a ProcfsError."""
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
        return ProcfsError("cannot read %s of PID %s (permission denied); run the task as root "
                           "(become: true) or as the user that owns the process" % (what, pid), pid, "permission")
    if isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) in (errno.ENOENT, errno.ESRCH):
        return ProcfsError("no process with PID %s exists (it may have just exited); check the PID or the "
                           "pidfile is current" % pid, pid, "absent")
    return ProcfsError("cannot read %s of PID %s: %s; check the process still runs and retry"
                       % (what, pid, getattr(exc, "strerror", None) or exc), pid, "io")


def read_boot_id(proc_root=PROC):
    """The boot id (a UUID string), or None when the kernel does not expose it."""
    try:
        return _read_text(os.path.join(proc_root, "sys/kernel/random/boot_id")).strip() or None
    except OSError:
        return None


def mem_available(proc_root=PROC):
    """MemAvailable of /proc/meminfo in bytes (0 when it cannot be read)."""
    try:
        for line in _read_text(os.path.join(proc_root, "meminfo")).splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


# ---------------------------------------------------------------------- stat

def parse_stat(text):
    """Parse /proc/PID/stat text.

    comm may hold spaces and ')' (it is whatever the process set, up to 15
    bytes), so comm is everything between the first '(' and the LAST ')'.
    Returns {pid, comm, state, ppid, pgrp, session, tty_nr, flags, start_time}.
    """
    try:
        left, right = text.rsplit(")", 1)
        pid_s, comm = left.split("(", 1)
        fields = right.split()
        # fields[0] is field 3 (state); field N is fields[N - 3].
        return {
            "pid": int(pid_s.strip()),
            "comm": comm,
            "state": fields[0],
            "ppid": int(fields[1]),
            "pgrp": int(fields[2]),
            "session": int(fields[3]),
            "tty_nr": int(fields[4]),
            "flags": int(fields[6]),
            "start_time": int(fields[19]),
        }
    except (ValueError, IndexError):
        raise ProcfsError("cannot parse a /proc stat line (%r); this kernel's format is not understood"
                          % text[:80], None, "parse")


def read_stat(pid, proc_root=PROC):
    return parse_stat(_read_proc(pid, proc_root, "stat"))


def read_status(pid, proc_root=PROC):
    """/proc/PID/status as {key: value string} (e.g. {'Uid': '0\\t0\\t0\\t0', 'State': 'S (sleeping)'})."""
    return parse_status(_read_proc(pid, proc_root, "status"))


def parse_status(text):
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def own_ns_session(pid, proc_root=PROC):
    """PID's session id as seen inside its own PID namespace (last field of NSsid), or None.

    0 means the session leader is outside the process's PID namespace (a child of a
    container's init that never called setsid): CRIU cannot dump such a task at all.
    None when the kernel or the fixture gives no NSsid line, or the process is gone.
    """
    try:
        fields = read_status(pid, proc_root).get("NSsid", "").split()
        return int(fields[-1]) if fields else None
    except (ProcfsError, ValueError):
        return None


def read_cmdline(pid, proc_root=PROC):
    """argv as a list of str ([] for a kernel thread or a zombie)."""
    return parse_cmdline(_read_proc(pid, proc_root, "cmdline", binary=True))


def parse_cmdline(raw):
    if not raw:
        return []
    return [a.decode("utf-8", "surrogateescape") for a in raw.rstrip(b"\0").split(b"\0")]


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


def read_exe(pid, proc_root=PROC):
    """Target of /proc/PID/exe (may end in ' (deleted)'), or None when unreadable (kernel thread, zombie)."""
    return _readlink(_path(proc_root, pid, "exe"))


def process_identity(pid, proc_root=PROC):
    """{boot_id, pid, start_time, ppid, sid, uid, comm, state, cmdline, exe, cwd}; fields the kernel hides are None.

    ``sid`` is the session id (stat field 6).
    """
    st = read_stat(pid, proc_root)
    ident = {"boot_id": read_boot_id(proc_root), "pid": st["pid"], "start_time": st["start_time"],
             "ppid": st["ppid"], "sid": st["session"], "uid": None, "comm": st["comm"], "state": st["state"],
             "cmdline": [], "exe": None, "cwd": None}
    try:
        uid = read_status(pid, proc_root).get("Uid", "")
        ident["uid"] = int(uid.split()[0]) if uid else None
    except (ProcfsError, ValueError):
        pass
    try:
        ident["cmdline"] = read_cmdline(pid, proc_root)
    except ProcfsError:
        pass
    ident["exe"] = read_exe(pid, proc_root)
    ident["cwd"] = _readlink(_path(proc_root, pid, "cwd"))
    return ident


def is_kernel_thread(pid, proc_root=PROC):
    """True for a kernel thread: PF_KTHREAD in stat flags, or a child of kthreadd with no cmdline and no exe."""
    st = read_stat(pid, proc_root)
    if st["flags"] & PF_KTHREAD:
        return True
    if st["pid"] == 2 or st["ppid"] == 2:
        try:
            cmdline = read_cmdline(pid, proc_root)
        except ProcfsError:
            cmdline = []
        return not cmdline and read_exe(pid, proc_root) is None
    return False


def ancestors(pid, proc_root=PROC):
    """PIDs of the parent chain of ``pid`` (parent first, up to PID 1)."""
    out = []
    seen = set()
    cur = int(pid)
    while cur > 1 and cur not in seen:
        seen.add(cur)
        try:
            cur = read_stat(cur, proc_root)["ppid"]
        except ProcfsError:
            break
        if cur > 0:
            out.append(cur)
    return out


def check_live_pid(pid, proc_root=PROC):
    """Refuse a PID that is not a live user process; return its parsed stat.

    Refused: not a positive number, absent, PID 1, a kernel thread, a zombie.
    What every reader of a target process needs (binary_checksum too);
    :func:`validate_target_pid` adds the checkpoint-only refusals.
    """
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        raise ProcfsError("the PID %r is not a number; give the numeric ID of a running process" % (pid,),
                          None, "invalid")
    if pid <= 0:
        raise ProcfsError("the PID %d is not valid; give the ID of a running process" % pid, pid, "invalid")
    if pid == 1:
        raise ProcfsError("PID 1 is the init process of this PID namespace and cannot be checkpointed; "
                          "give the PID of the workload instead", pid, "init")
    st = read_stat(pid, proc_root)
    if is_kernel_thread(pid, proc_root):
        raise ProcfsError("PID %d (%s) is a kernel thread, which has no user memory or files to "
                          "checkpoint; give the PID of a user process" % (pid, st["comm"]), pid, "kthread")
    if st["state"] in DEAD_STATES:
        raise ProcfsError("PID %d (%s) is a zombie: it has exited and waits for its parent to reap it, so "
                          "there is nothing to checkpoint; give the PID of a running process"
                          % (pid, st["comm"]), pid, "zombie")
    return st


def validate_target_pid(pid, proc_root=PROC, self_pid=None):
    """Refuse a PID that cannot or must not be checkpointed; return its identity.

    Refused: what :func:`check_live_pid` refuses, and the caller itself or one
    of its ancestors (dumping Ansible itself).  ``self_pid`` defaults to
    os.getpid().
    """
    st = check_live_pid(pid, proc_root)
    pid = int(pid)
    me = os.getpid() if self_pid is None else int(self_pid)
    if pid == me:
        raise ProcfsError("PID %d is the Ansible module process itself; give the PID of the workload" % pid,
                          pid, "self")
    if pid in ancestors(me, proc_root):
        raise ProcfsError("PID %d (%s) is an ancestor of this Ansible task (checkpointing it would freeze "
                          "Ansible itself); give the PID of the workload, not of the shell or the "
                          "ansible process that runs the task" % (pid, st["comm"]), pid, "ancestor")
    return process_identity(pid, proc_root)


def read_pidfile(path):
    """The PID written in ``path`` (its first token), with one-sentence errors."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(4096)
    except FileNotFoundError:
        raise ProcfsError("the pidfile %s does not exist; check the path, or that the workload is running"
                          % path, None, "pidfile")
    except IsADirectoryError:
        raise ProcfsError("the pidfile %s is a directory; give the path of the file holding the PID" % path,
                          None, "pidfile")
    except PermissionError:
        raise ProcfsError("the pidfile %s cannot be read (permission denied); run the task as root "
                          "(become: true)" % path, None, "pidfile")
    except OSError as exc:
        raise ProcfsError("the pidfile %s cannot be read (%s); check the path"
                          % (path, exc.strerror or exc), None, "pidfile")
    tokens = raw.split()
    if not tokens:
        raise ProcfsError("the pidfile %s is empty, so it does not hold a PID; the workload may still be "
                          "starting or has exited, so check it runs and wrote its PID" % path, None, "pidfile")
    token = tokens[0]
    shown = token[:40].decode("utf-8", "replace")
    if token.startswith(b"-") and token[1:].isdigit():
        raise ProcfsError("the pidfile %s does not hold a PID but a negative number (%s); point pidfile at a "
                          "file holding the process ID" % (path, shown), None, "pidfile")
    if not token.isdigit() or int(token) == 0:
        raise ProcfsError("the pidfile %s does not hold a PID (found %r); point pidfile at a file holding "
                          "only the process ID" % (path, shown), None, "pidfile")
    return int(token)


# --------------------------------------------------------------- tree, maps

def children(pid, proc_root=PROC):
    """Direct children of ``pid`` from /proc/PID/task/*/children (needs CONFIG_PROC_CHILDREN)."""
    out = []
    try:
        tids = os.listdir(_path(proc_root, pid, "task"))
    except OSError as exc:
        raise _fail(exc, pid, "/proc/%s/task" % pid)
    for tid in sorted(tids, key=lambda t: int(t) if t.isdigit() else 0):
        try:
            text = _read_text(_path(proc_root, pid, "task", tid, "children"))
        except OSError:
            continue
        for tok in text.split():
            if tok.isdigit() and int(tok) not in out:
                out.append(int(tok))
    return out


def children_or_none(pid, proc_root=PROC):
    """Direct children of ``pid``, or [] when it is gone (for cleanups, which must not fail)."""
    try:
        return children(pid, proc_root)
    except ProcfsError:
        return []


def descendants(pid, proc_root=PROC):
    """Every descendant of ``pid``, parents first, or [] when it is gone."""
    try:
        return process_tree(pid, proc_root)[1:]
    except ProcfsError:
        return []


def process_tree(pid, proc_root=PROC):
    """``pid`` and all its descendants, parents before children."""
    pid = int(pid)
    out = [pid]
    i = 0
    while i < len(out):
        try:
            kids = children(out[i], proc_root) if i else children(pid, proc_root)
        except ProcfsError:
            if i == 0:
                raise
            kids = []
        for k in kids:
            if k not in out:
                out.append(k)
        i += 1
    return out


def parse_maps(text, file_backed_only=True):
    """Parse /proc/PID/maps into dicts {start, end, perms, offset, dev, inode, path, deleted}.

    With ``file_backed_only`` (default) only mappings of files (path starting
    with '/', inode != 0) are kept; ``path`` has ' (deleted)' stripped and
    ``deleted`` says whether the kernel flagged it.
    """
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            start, end = parts[0].split("-", 1)
            entry = {"start": int(start, 16), "end": int(end, 16), "perms": parts[1],
                     "offset": int(parts[2], 16), "dev": parts[3], "inode": int(parts[4]),
                     "path": parts[5] if len(parts) == 6 else "", "deleted": False}
        except ValueError:
            continue
        if entry["path"].endswith(" (deleted)"):
            entry["path"] = entry["path"][:-len(" (deleted)")]
            entry["deleted"] = True
        if file_backed_only and (not entry["path"].startswith("/") or entry["inode"] == 0):
            continue
        out.append(entry)
    return out


def read_maps(pid, proc_root=PROC, file_backed_only=True):
    return parse_maps(_read_proc(pid, proc_root, "maps"), file_backed_only)


def _unescape_mount(s):
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) + 0 and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text):
    """Parse mountinfo: list of {mnt_id, parent_id, dev, root, mount_point, fstype, source}."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        parts = left.split()
        if not sep or len(parts) < 5:
            continue
        rparts = right.split()
        try:
            out.append({"mnt_id": int(parts[0]), "parent_id": int(parts[1]), "dev": parts[2],
                        "root": _unescape_mount(parts[3]), "mount_point": _unescape_mount(parts[4]),
                        "fstype": rparts[0] if rparts else "",
                        "source": _unescape_mount(rparts[1]) if len(rparts) > 1 else ""})
        except ValueError:
            continue
    return out


def read_mountinfo(pid, proc_root=PROC):
    """Mounts visible in the mount namespace of ``pid``."""
    return parse_mountinfo(_read_proc(pid, proc_root, "mountinfo"))


# ----------------------------------------------------------------------- fds

def decode_flags(flags):
    """['O_WRONLY', 'O_APPEND', ...] for an open(2) flags int."""
    names = [ACCESS_NAMES[flags & O_ACCMODE]]
    names.extend(name for bit, name in O_FLAG_NAMES if flags & bit)
    return names


def parse_fdinfo(text):
    """Parse one /proc/PID/fdinfo/N: {pos, flags, mnt_id, ino, extra: {key: value}}.

    ``flags`` is printed in octal by the kernel.  Missing fields are None.
    Type-specific lines (eventfd-count, tfd, inotify wd, ...) land in extra;
    repeated keys keep their values in a list.
    """
    out = {"pos": None, "flags": None, "mnt_id": None, "ino": None, "extra": {}}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        try:
            if key == "flags":
                out["flags"] = int(value, 8)
                continue
            if key in ("pos", "mnt_id", "ino"):
                out[key] = int(value)
                continue
        except ValueError:
            pass
        prev = out["extra"].get(key)
        if prev is None:
            out["extra"][key] = value
        elif isinstance(prev, list):
            prev.append(value)
        else:
            out["extra"][key] = [prev, value]
    return out


def target_kind(target):
    """('pipe'|'socket'|'anon_inode'|'path'|'other', inode or None) of a /proc/PID/fd link target."""
    if target is None:
        return "other", None
    for kind in ("pipe", "socket"):
        if target.startswith(kind + ":["):
            try:
                return kind, int(target[len(kind) + 2:-1])
            except ValueError:
                return kind, None
    if target.startswith("anon_inode:"):
        return "anon_inode", None
    if target.startswith("/"):
        return "path", None
    return "other", None


def read_fds(pid, proc_root=PROC):
    """Open fds of ``pid``: list of {fd, target, flags, flags_decoded, access, append, pos, mnt_id, ino,
    kind, size, extra}, sorted by fd.  ``size`` is the size of the open inode for regular files."""
    fd_dir = _path(proc_root, pid, "fd")
    try:
        names = os.listdir(fd_dir)
    except OSError as exc:
        raise _fail(exc, pid, "the open files (/proc/%s/fd)" % pid)
    out = []
    for name in sorted((n for n in names if n.isdigit()), key=int):
        target = _readlink(os.path.join(fd_dir, name))
        if target is None:
            continue  # closed meanwhile
        try:
            info = parse_fdinfo(_read_text(_path(proc_root, pid, "fdinfo", name)))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise _fail(exc, pid, "/proc/%s/fdinfo/%s" % (pid, name))
        kind, inode = target_kind(target)
        flags = info["flags"]
        entry = {"fd": int(name), "target": target, "flags": flags,
                 "flags_decoded": decode_flags(flags) if flags is not None else [],
                 "access": ACCESS_NAMES[flags & O_ACCMODE] if flags is not None else None,
                 "append": bool(flags & O_APPEND) if flags is not None else False,
                 "pos": info["pos"], "mnt_id": info["mnt_id"],
                 "ino": inode if inode is not None else info["ino"],
                 "kind": kind, "size": None, "file_type": None, "extra": info["extra"]}
        if kind == "path":
            try:
                st = os.stat(os.path.join(fd_dir, name))
                entry["size"] = st.st_size
                entry["file_type"] = _file_type(st.st_mode)
                entry["mode"] = st.st_mode
                entry["rdev"] = st.st_rdev
            except OSError:
                pass
        out.append(entry)
    return out


def _file_type(mode):
    import stat as _st
    for test, name in ((_st.S_ISREG, "regular"), (_st.S_ISDIR, "directory"), (_st.S_ISCHR, "char"),
                       (_st.S_ISBLK, "block"), (_st.S_ISFIFO, "fifo"), (_st.S_ISSOCK, "socket"),
                       (_st.S_ISLNK, "symlink")):
        if test(mode):
            return name
    return "other"


def socket_protocol(pid, fd, proc_root=PROC):
    """'UNIX', 'TCP', 'UDPv6', 'NETLINK', ... from the system.sockprotoname xattr, or None."""
    try:
        raw = os.getxattr(_path(proc_root, pid, "fd", str(fd)), "system.sockprotoname")
    except (OSError, AttributeError):
        return None
    return raw.rstrip(b"\0").decode("ascii", "replace") or None


# ------------------------------------------------------------------- sockets

def parse_net_unix(text):
    """/proc/PID/net/unix -> {inode: {inode, type, state, listening, path}}."""
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split(None, 7)
        if len(parts) < 7:
            continue
        try:
            flags = int(parts[3], 16)
            stype = int(parts[4], 16)
            state = int(parts[5], 16)
            inode = int(parts[6])
        except ValueError:
            continue
        out[inode] = {"inode": inode, "family": "unix", "type": UNIX_TYPES.get(stype, str(stype)),
                      "state": UNIX_STATES.get(state, str(state)), "listening": bool(flags & SO_ACCEPTCON),
                      "path": parts[7] if len(parts) > 7 else None}
    return out


def _inet_addr(hexaddr, v6):
    addr, port = hexaddr.split(":")
    raw = bytes.fromhex(addr)
    if v6:
        # four host-order 32-bit words
        raw = b"".join(struct.pack("<I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, 16, 4))
        return "[%s]:%d" % (socket.inet_ntop(socket.AF_INET6, raw), int(port, 16))
    return "%s:%d" % (socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16))


def parse_net_inet(text, proto, v6=False):
    """/proc/PID/net/{tcp,tcp6,udp,udp6} -> {inode: {inode, family, proto, state, local, remote}}."""
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            inode = int(parts[9])
            st = int(parts[3], 16)
            local, remote = _inet_addr(parts[1], v6), _inet_addr(parts[2], v6)
        except (ValueError, OSError):
            continue
        if inode == 0:
            continue  # TIME_WAIT and friends have no owner
        state = TCP_STATES.get(st, str(st))
        if proto == "udp":
            state = "CONNECTED" if st == 1 else "UNCONNECTED"
        out[inode] = {"inode": inode, "family": "inet6" if v6 else "inet", "proto": proto,
                      "state": state, "local": local, "remote": remote}
    return out


def read_sockets(pid, proc_root=PROC):
    """Sockets of the network namespace of ``pid``: {inode: details} from /proc/PID/net/*."""
    out = {}
    sources = (("unix", None, False), ("tcp", "tcp", False), ("tcp6", "tcp", True),
               ("udp", "udp", False), ("udp6", "udp", True))
    for name, proto, v6 in sources:
        try:
            text = _read_text(_path(proc_root, pid, "net", name))
        except OSError:
            continue
        out.update(parse_net_unix(text) if name == "unix" else parse_net_inet(text, proto, v6))
    return out


# sock_diag (linux/sock_diag.h, linux/unix_diag.h)
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
UDIAG_SHOW_NAME = 0x1
UDIAG_SHOW_PEER = 0x4
UNIX_DIAG_NAME = 0
UNIX_DIAG_PEER = 2


def parse_unix_diag(data):
    """Parse sock_diag netlink replies for AF_UNIX: ({inode: {type, state, peer, name}}, done)."""
    out, done, off = {}, False, 0
    while off + 16 <= len(data):
        length, mtype = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if mtype == NLMSG_DONE:
            done = True
        elif mtype == NLMSG_ERROR:
            code = struct.unpack_from("=i", data, off + 16)[0]
            raise OSError(-code, os.strerror(-code))
        elif mtype == SOCK_DIAG_BY_FAMILY:
            body = off + 16
            family, stype, state, dummy, ino = struct.unpack_from("=BBBBI", data, body)
            entry = {"type": UNIX_TYPES.get(stype, str(stype)), "state": state, "peer": None, "name": None}
            a = body + 16
            end = off + length
            while a + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                payload = data[a + 4:a + alen]
                if atype == UNIX_DIAG_PEER and len(payload) >= 4:
                    entry["peer"] = struct.unpack_from("=I", payload)[0]
                elif atype == UNIX_DIAG_NAME:
                    name = payload
                    entry["name"] = ("@" + name[1:].decode("utf-8", "replace") if name[:1] == b"\0"
                                     else name.rstrip(b"\0").decode("utf-8", "replace"))
                a += (alen + 3) & ~3
            out[ino] = entry
        off += (length + 3) & ~3
    return out, done


def unix_socket_diag():
    """{inode: {type, state, peer, name}} for every unix socket of this network namespace, via sock_diag.

    Raises OSError when netlink sock_diag is unavailable.
    """
    req = struct.pack("=BBHIII8x", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, UDIAG_SHOW_NAME | UDIAG_SHOW_PEER)
    hdr = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    out = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(5)
        nl.sendto(hdr + req, (0, 0))
        while True:
            data = nl.recv(1 << 16)
            if not data:
                break
            part, done = parse_unix_diag(data)
            out.update(part)
            if done:
                break
    return out


def same_netns(pid, proc_root=PROC):
    """True when ``pid`` is in the network namespace of this process (sock_diag answers for it)."""
    mine = _readlink("/proc/self/ns/net")
    theirs = _readlink(_path(proc_root, pid, "ns", "net"))
    return mine is not None and mine == theirs


def inode_holders(proc_root=PROC):
    """Who holds which pipe or socket: {('pipe'|'socket', inode): [(pid, fd), ...]} over all of /proc.

    Processes whose fds cannot be read (another user's, when not root) are skipped.
    """
    out = {}
    try:
        pids = [p for p in os.listdir(proc_root) if p.isdigit()]
    except OSError:
        return out
    for p in pids:
        fd_dir = os.path.join(proc_root, p, "fd")
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            target = _readlink(os.path.join(fd_dir, name))
            if not target:
                continue
            kind, inode = target_kind(target)
            if kind in ("pipe", "socket") and inode is not None:
                out.setdefault((kind, inode), []).append((int(p), int(name)))
    return out


def comm_of(pid, proc_root=PROC):
    try:
        return read_stat(pid, proc_root)["comm"]
    except ProcfsError:
        return None
