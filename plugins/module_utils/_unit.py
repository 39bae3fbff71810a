# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""systemd units: checkpoint a unit's process without systemd fighting back,
and hand the restored process back to its unit.

What this is built on (measured with systemd 252 and CRIU 4.2.1):

- When criu dump kills a unit's main process, a unit with ``Restart=always``
  is started again at once (a fresh copy beside the checkpoint).  Before the
  dump a runtime drop-in (``/run/systemd/system/UNIT.d/50-ckpt-criu-hold.conf``)
  sets ``Restart=no`` and ``SuccessExitStatus=SIGKILL``: the unit then ends
  ``inactive`` with ``Result=success`` (not ``failed``, not restarted), and its
  ``X-CkptCriu-Checkpoint=`` line says where the checkpoint went.
- A unit's stdout and stderr are stream sockets to journald, outside the dumped
  tree: the dump needs ``--ext-unix-sk=INODE``.  The restore runs criu as the
  unit's own ExecStart, so criu's fds 1 and 2 are the unit's fresh journal
  stream, and ``--inherit-fd fd[1]:socket:[INODE]`` gives it to the restored
  process: it logs to the journal under its unit again.
- The restore is a second runtime drop-in (``60-ckpt-criu-restore.conf``):
  ``Type=forking``, ``PIDFile=``, ``ExecStart=+criu restore -d ... --pidfile``.
  ``systemctl start`` runs criu in the unit's cgroup and adopts the restored
  PID as ``MainPID`` (a ``Type=notify`` process does not send READY again, so
  the start must not wait for it).  Both drop-ins are then removed and systemd
  reloaded: the unit keeps running with its own settings again, so ``stop``
  and ``restart`` behave as for a unit started normally.
- A unit sandboxed into namespaces of its own (``PrivateUsers=``,
  ``PrivateTmp=``, ``ProtectSystem=``, ``ProtectHostname=`` ...) cannot be
  dumped by criu on its own ("One or more namespaces doesn't belong to the
  target user namespace", "FS mnt ... unsupported"): such a unit is refused
  with the settings to turn off.
- A persistent drop-in (``/etc/systemd/system/UNIT.d/50-ckpt-criu-boot-hold.conf``)
  with ``ConditionPathExists=!<images_dir>/ckpt-manifest.json`` keeps an
  enabled unit from starting a fresh copy at boot while its checkpoint waits
  to be restored; the restore removes it.  Deleting the checkpoint releases
  the unit at the next boot.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time

from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

HOLD = "50-ckpt-criu-hold"
BOOT_HOLD = "50-ckpt-criu-boot-hold"
RESTORE = "60-ckpt-criu-restore"
RUNTIME_DIR = "/run/systemd/system"
PERSISTENT_DIR = "/etc/systemd/system"
PIDFILE_DIR = "/run/ckpt-criu"
OUR_DROP_INS = tuple("%s.conf" % n for n in (HOLD, BOOT_HOLD, RESTORE))

_UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@-]{1,250}$")
NAMESPACES = ("user", "mnt", "uts", "ipc", "net", "pid", "cgroup")
# What usually puts a unit's process into a namespace of its own.
NS_SETTINGS = {
    "user": "PrivateUsers=",
    "mnt": "PrivateTmp=, PrivateDevices=, ProtectSystem=, ProtectHome=, ReadWritePaths=, "
           "ProtectKernelTunables=/Modules=/Logs=, ProtectControlGroups=, ProtectProc=, NoExecPaths= "
           "and the other file-system sandboxing settings",
    "uts": "ProtectHostname=",
    "ipc": "PrivateIPC=",
    "net": "PrivateNetwork= or NetworkNamespacePath=",
    "pid": "PrivatePIDs=",
    "cgroup": "a cgroup namespace",
}
PROPS = ("Id", "LoadState", "ActiveState", "SubState", "Result", "MainPID", "Type", "ControlGroup",
         "FragmentPath", "DropInPaths", "UnitFileState", "NRestarts", "Restart", "WatchdogUSec",
         "NotifyAccess", "TriggeredBy", "ExecMainStartTimestampMonotonic")


class UnitError(CkptError):
    """A unit problem, with what a person needs to act on it."""

    def __init__(self, msg, unit=None, **details):
        super(UnitError, self).__init__(msg, unit=unit or None, **details)
        self.unit = unit


# ------------------------------------------------------------------ names and text

def unit_name(name):
    """A validated service unit name (``redis`` -> ``redis.service``)."""
    name = (name or "").strip()
    if not _UNIT_RE.fullmatch(name) or name.startswith("-"):
        raise UnitError("%r is not a systemd unit name" % name)
    if "." not in name.rsplit("@", 1)[-1]:
        name += ".service"
    if not name.endswith(".service"):
        raise UnitError("%s is not a service: only service units have a process to checkpoint" % name,
                        unit=name)
    return name


def systemd_quote(arg):
    """Quote one argument for an Exec*= line: it stays one word, and
    systemd expands no specifier (%) or variable ($) in it."""
    arg = str(arg)
    if "\n" in arg or "\0" in arg:
        raise UnitError("an argument of the restore command has a newline or NUL: %r" % arg)
    return '"%s"' % arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")


def exec_line(argv, privileged=True):
    """``+"argv0" "argv1" ...``: ``+`` runs it with full privileges, outside
    the unit's User=, capability and file-system sandboxing."""
    return ("+" if privileged else "") + " ".join(systemd_quote(a) for a in argv)


def hold_text(images_dir, when):
    return ("# Written by ckpt.criu: the process of this unit was checkpointed; systemd must\n"
            "# not start a fresh copy nor count the checkpoint's end as a failure.\n"
            "[Unit]\nX-CkptCriu-Checkpoint=%s at %s\n"
            "[Service]\nRestart=no\nSuccessExitStatus=SIGKILL\n" % (images_dir, when))


def boot_hold_text(images_dir):
    return ("# Written by ckpt.criu: while the checkpoint below waits to be restored, do not\n"
            "# start a fresh copy of this unit at boot. Removed by the restore; delete the\n"
            "# checkpoint (or this file) to start the unit normally again.\n"
            "[Unit]\nConditionPathExists=!%s\nX-CkptCriu-Checkpoint=%s\n"
            % (os.path.join(images_dir, "ckpt-manifest.json"), images_dir))


def restore_text(criu_argv, pidfile, timeout):
    return ("# Written by ckpt.criu for one start: the unit's process comes back from a\n"
            "# checkpoint instead of being started. Removed as soon as it runs.\n"
            "[Service]\nType=forking\nPIDFile=%s\nGuessMainPID=no\nRestart=no\n"
            "ExecCondition=\nExecStartPre=\nExecStartPost=\nExecStart=\nExecStart=%s\n"
            "TimeoutStartSec=%d\n" % (pidfile, exec_line(criu_argv), max(1, int(timeout))))


def pidfile_for(unit):
    return os.path.join(PIDFILE_DIR, "%s.pid" % unit)


# ------------------------------------------------------------------ systemctl

def _run(argv, timeout=60):
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, check=False)
    except OSError as exc:
        raise UnitError("cannot run %s: %s; is systemd installed here?" % (argv[0], exc))
    except subprocess.TimeoutExpired:
        raise UnitError("%s did not finish within %d s" % (" ".join(argv), timeout))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def systemd_running():
    """True when systemd is this host's init (sd_booted())."""
    return os.path.isdir("/run/systemd/system")


def parse_show(text):
    props = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            props[k] = v
    return props


def show(unit, props=PROPS):
    rc, out, err = _run(["systemctl", "show", unit, "-p", ",".join(props)])
    if rc != 0:
        raise UnitError("systemctl show %s failed (rc=%d): %s" % (unit, rc, (err or out).strip()), unit=unit)
    return parse_show(out)


def info(unit):
    """What the collection needs to know of a unit; raises UnitError unless it is loaded."""
    if not systemd_running():
        raise UnitError("systemd is not this host's init (no /run/systemd/system): unit %s cannot be "
                        "selected here; select the process by pid or pidfile" % unit, unit=unit)
    p = show(unit)
    if p.get("LoadState") != "loaded":
        raise UnitError("unit %s is not loaded here (LoadState=%s): no such unit on this host" % (
            unit, p.get("LoadState") or "?"), unit=unit)
    return {
        "name": p.get("Id") or unit,
        "active_state": p.get("ActiveState"),
        "sub_state": p.get("SubState"),
        "result": p.get("Result"),
        "main_pid": int(p.get("MainPID") or 0),
        "type": p.get("Type"),
        "control_group": p.get("ControlGroup") or "",
        "fragment_path": p.get("FragmentPath") or "",
        "drop_in_paths": [d for d in (p.get("DropInPaths") or "").split() if d],
        "unit_file_state": p.get("UnitFileState") or "",
        "n_restarts": int(p.get("NRestarts") or 0),
        "restart": p.get("Restart"),
        "watchdog_usec": _usec(p.get("WatchdogUSec")),
        "notify_access": p.get("NotifyAccess"),
        "triggered_by": [t for t in (p.get("TriggeredBy") or "").split() if t],
    }


def _usec(value):
    """A systemd time in microseconds; 0 for unset or "infinity"."""
    value = (value or "").strip()
    return int(value) if value.isdigit() else 0


def daemon_reload():
    rc, out, err = _run(["systemctl", "daemon-reload"], timeout=120)
    if rc != 0:
        raise UnitError("systemctl daemon-reload failed (rc=%d): %s" % (rc, (err or out).strip()))


# ------------------------------------------------------------------ what a unit runs

def cgroup_dir(control_group, fs_root="/sys/fs/cgroup"):
    """The directory of a unit's cgroup, in the hierarchy systemd manages."""
    if not control_group.startswith("/"):
        return None
    for base in ("unified", "systemd", ""):
        d = os.path.join(fs_root, base, control_group.lstrip("/")) if base else \
            os.path.join(fs_root, control_group.lstrip("/"))
        if os.path.isfile(os.path.join(d, "cgroup.procs")):
            return d
    return None


def cgroup_pids(control_group, fs_root="/sys/fs/cgroup"):
    """Every PID in a unit's cgroup and its sub-cgroups."""
    d = cgroup_dir(control_group, fs_root)
    pids = set()
    if d is None:
        return pids
    for dirpath, _dirs, files in os.walk(d):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as fh:
                    pids.update(int(x) for x in fh.read().split())
            except (OSError, ValueError):
                continue
    return pids


def foreign_namespaces(pid, proc_root="/proc"):
    """Namespaces of PID that are not the ones of this host's init."""
    out = []
    for ns in NAMESPACES:
        try:
            mine = os.readlink(os.path.join(proc_root, "1", "ns", ns))
            theirs = os.readlink(os.path.join(proc_root, str(pid), "ns", ns))
        except OSError:
            continue
        if mine != theirs:
            out.append(ns)
    return out


def refusals(unit_info, tree_pids, foreign_ns, comm_of=None):
    """Why this unit cannot be checkpointed, as sentences (empty: it can)."""
    u = unit_info["name"]
    if unit_info["active_state"] != "active" or unit_info["main_pid"] <= 0:
        return ["unit %s is not running (ActiveState=%s, SubState=%s, MainPID=%d): there is no process to "
                "checkpoint; start it first, or select another unit" % (
                    u, unit_info["active_state"], unit_info["sub_state"], unit_info["main_pid"])]
    out = []
    sockets = [t for t in unit_info["triggered_by"] if t.endswith(".socket")]
    if sockets:
        out.append("unit %s is socket-activated (%s): its listening socket belongs to systemd, outside the "
                   "process, and would not come back with it; checkpoint units that open their own sockets"
                   % (u, ", ".join(sockets)))
    strays = sorted(set(unit_info.get("cgroup_pids", ())) - set(tree_pids))
    if strays:
        named = ", ".join("%d (%s)" % (p, comm_of(p) if comm_of else "?") for p in strays[:8])
        out.append("unit %s has processes outside the tree of its main process %d: %s; systemd would kill "
                   "them when the main process ends, and they are not in the checkpoint. Units with several "
                   "independent processes are refused" % (u, unit_info["main_pid"], named))
    if foreign_ns:
        out.append("unit %s runs in namespaces of its own (%s), which CRIU cannot checkpoint with a single "
                   "process; turn off %s for this unit (a drop-in), then restart it" % (
                       u, ", ".join(foreign_ns), "; ".join(NS_SETTINGS[n] for n in foreign_ns)))
    return out


def file_digest(paths):
    """sha256 over the unit file and its drop-ins (ours excluded), in order."""
    h = hashlib.sha256()
    used = []
    for p in paths:
        if not p or os.path.basename(p) in OUR_DROP_INS:
            continue
        try:
            with open(p, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise UnitError("cannot read unit file %s: %s" % (p, exc))
        h.update(p.encode() + b"\0" + data + b"\0")
        used.append(p)
    return h.hexdigest(), used


def unit_record(unit_info):
    """What the checkpoint manifest keeps of the unit."""
    digest, files = file_digest([unit_info["fragment_path"]] + list(unit_info["drop_in_paths"]))
    return {"name": unit_info["name"], "type": unit_info["type"], "files": files, "files_sha256": digest,
            "unit_file_state": unit_info["unit_file_state"], "n_restarts": unit_info["n_restarts"],
            "control_group": unit_info["control_group"], "watchdog_usec": unit_info["watchdog_usec"]}


# ------------------------------------------------------------------ drop-ins

def drop_in_path(unit, name, runtime=True):
    return os.path.join(RUNTIME_DIR if runtime else PERSISTENT_DIR, "%s.d" % unit_name(unit),
                        "%s.conf" % name)


def write_drop_in(unit, name, text, runtime=True):
    """Write a drop-in atomically (root-owned 0644, like unit files)."""
    path = drop_in_path(unit, name, runtime)
    d = os.path.dirname(path)
    os.makedirs(d, 0o755, exist_ok=True)
    st = os.lstat(d)
    if st.st_uid != 0 or st.st_mode & 0o022 or os.path.islink(d):
        raise UnitError("%s is not a root-owned directory only root can write: refusing to put a drop-in "
                        "there" % d, unit=unit)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fchmod(fd, 0o644)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def remove_drop_in(unit, name, runtime=True):
    """Remove one of our drop-ins; True when one was there."""
    path = drop_in_path(unit, name, runtime)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass
    return True


def our_drop_ins(unit):
    """Which of our drop-ins exist for unit: [(name, runtime)]."""
    out = []
    for name, runtime in ((HOLD, True), (RESTORE, True), (BOOT_HOLD, False)):
        if os.path.exists(drop_in_path(unit, name, runtime)):
            out.append((name, runtime))
    return out


# ------------------------------------------------------------------ the steps

def hold(unit, images_dir, when, boot=False):
    """Before the dump: systemd must not restart the unit nor call its end a failure."""
    write_drop_in(unit, HOLD, hold_text(images_dir, when))
    if boot:
        write_drop_in(unit, BOOT_HOLD, boot_hold_text(images_dir), runtime=False)
    daemon_reload()


def release(unit, reload=True):
    """Remove every drop-in of ours (after a restore, or when the dump failed)."""
    removed = [n for n, runtime in our_drop_ins(unit) if remove_drop_in(unit, n, runtime)]
    if removed and reload:
        daemon_reload()
    return removed


def start_restored(unit, criu_argv, timeout):
    """Run ``criu restore`` as the unit's start; return the restored main PID.

    ``criu_argv`` must restore detached (-d) and write ``pidfile_for(unit)``
    (--pidfile).  On failure the restore drop-in is removed again and the
    unit is left stopped (reset-failed), so that nothing restarts it."""
    pidfile = pidfile_for(unit)
    os.makedirs(PIDFILE_DIR, 0o700, exist_ok=True)
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    # The boot hold's condition stays true while the checkpoint exists: it goes first.
    remove_drop_in(unit, BOOT_HOLD, runtime=False)
    write_drop_in(unit, RESTORE, restore_text(criu_argv, pidfile, timeout))
    daemon_reload()
    t0 = time.monotonic()
    rc, out, err = _run(["systemctl", "start", unit], timeout=int(timeout) + 30)
    duration = time.monotonic() - t0
    state = show(unit, ("ActiveState", "SubState", "MainPID", "Result", "ControlGroup"))
    if rc != 0 or state.get("ActiveState") != "active" or int(state.get("MainPID") or 0) <= 0:
        remove_drop_in(unit, RESTORE)
        _run(["systemctl", "reset-failed", unit])
        daemon_reload()
        raise UnitError("systemctl start %s did not bring the checkpoint back (rc=%d, ActiveState=%s, "
                        "Result=%s): %s" % (unit, rc, state.get("ActiveState"), state.get("Result"),
                                            (err or out).strip() or "see the criu log"), unit=unit)
    return {"main_pid": int(state["MainPID"]), "control_group": state.get("ControlGroup"),
            "start_seconds": round(duration, 3)}


def finish_restored(unit, main_pid):
    """Drop the restore settings; the unit keeps running as itself."""
    release(unit)
    state = show(unit, ("ActiveState", "SubState", "MainPID", "NRestarts", "Type"))
    if state.get("ActiveState") != "active" or int(state.get("MainPID") or 0) != int(main_pid):
        raise UnitError("after the restore, unit %s is %s with MainPID %s, not active with the restored "
                        "process %d" % (unit, state.get("ActiveState"), state.get("MainPID"), main_pid),
                        unit=unit)
    return {"active_state": state["ActiveState"], "main_pid": int(state["MainPID"]),
            "n_restarts": int(state.get("NRestarts") or 0), "type": state.get("Type")}


def process_cgroup(pid, proc_root="/proc"):
    """The systemd cgroup path of PID (name=systemd or cgroup2 line)."""
    try:
        with open(os.path.join(proc_root, str(pid), "cgroup")) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    by_ctrl = dict((ln.split(":", 2)[1], ln.split(":", 2)[2]) for ln in lines if ln.count(":") >= 2)
    return by_ctrl.get("name=systemd") or by_ctrl.get("")


def stdio_sockets(pid, proc_root="/proc"):
    """{fd: socket inode} for the fds 0-2 of PID that are sockets (a unit's journal stream)."""
    out = {}
    for fd in (0, 1, 2):
        try:
            target = os.readlink(os.path.join(proc_root, str(pid), "fd", str(fd)))
        except OSError:
            continue
        m = re.match(r"^socket:\[(\d+)\]$", target)
        if m:
            out[fd] = int(m.group(1))
    return out


def inherit_args(stdio_socks):
    """``--inherit-fd`` for a restore started by systemd: criu's own fd N (the
    unit's new journal stream) replaces the socket the process had on fd N.
    ``stdio_socks`` as recorded: {fd: inode}, keys may be strings (JSON)."""
    socks = dict((int(k), int(v)) for k, v in (stdio_socks or {}).items())
    args, seen = [], set()
    for fd in (1, 2):
        if fd in socks and socks[fd] not in seen:   # stdout and stderr are often one socket
            seen.add(socks[fd])
            args.extend(["--inherit-fd", "fd[%d]:socket:[%d]" % (fd, socks[fd])])
    return args


def restore_in_unit(unit, criu, args, log_path, timeout):
    """``criu restore ARGS -o LOG -v4`` as the start of ``unit``; a CriuResult.

    ``args`` must restore detached and write ``pidfile_for(unit)``."""
    from ansible_collections.ckpt.criu.plugins.module_utils import _criu  # pylint: disable=import-outside-toplevel
    argv = _criu.build_argv(criu, "restore", args, log_path)
    t0 = time.monotonic()
    try:
        started = start_restored(unit, argv, timeout)
        rc = 0
    except UnitError as exc:
        started, rc = {"error": exc.msg}, 1
    res = _criu.CriuResult(argv, rc, "", started.get("error", ""), log_path, time.monotonic() - t0, "restore")
    res.unit_start = started
    return res


def checkpoint_refusals(u, tree_pids, proc_root="/proc"):
    """refusals() for a live unit: its cgroup and namespaces read now."""
    from ansible_collections.ckpt.criu.plugins.module_utils import _procfs  # pylint: disable=import-outside-toplevel

    def comm_of(pid):
        try:
            return _procfs.read_stat(pid, proc_root)["comm"]
        except _procfs.ProcfsError:
            return "exited"

    running = u["active_state"] == "active" and u["main_pid"] > 0
    u["cgroup_pids"] = sorted(cgroup_pids(u["control_group"])) if running else []
    return refusals(u, tree_pids, foreign_namespaces(u["main_pid"], proc_root) if running else [],
                    comm_of=comm_of)


def describe(name, proc_root="/proc"):
    """Everything a preflight wants to know of a unit, read-only: whether it
    exists and runs, its files' sha256, and why a checkpoint would be refused."""
    from ansible_collections.ckpt.criu.plugins.module_utils import _procfs  # pylint: disable=import-outside-toplevel
    name = unit_name(name)
    out = {"name": name, "exists": False, "running": False, "main_pid": 0, "files": [], "files_sha256": None,
           "refusals": [], "unit": None}
    try:
        u = info(name)
    except UnitError as exc:
        out["msg"] = exc.msg
        out["refusals"] = [exc.msg]
        return out
    rec = unit_record(u)
    out.update({"exists": True, "unit": u, "files": rec["files"], "files_sha256": rec["files_sha256"],
                "main_pid": u["main_pid"], "running": u["active_state"] == "active" and u["main_pid"] > 0})
    tree = []
    if out["running"]:
        try:
            tree = _procfs.process_tree(u["main_pid"], proc_root)
        except _procfs.ProcfsError:
            tree = [u["main_pid"]]
    out["refusals"] = checkpoint_refusals(u, tree, proc_root)
    out["msg"] = "unit %s: %s" % (name, out["refusals"][0] if out["refusals"] else "can be checkpointed")
    return out
