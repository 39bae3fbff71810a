# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The logic of ``ckpt.criu.dump``: "a complete checkpoint of process P exists in DIR".

Order of a run (nothing is written before step 5, nothing frozen before 8):

1. validate input: root, ``images_dir`` rules, the target PID (or pidfile);
2. look at ``images_dir``: a complete manifest of the same process whose
   images verify -> nothing to do (``changed: false``), even when the process
   is gone since (a default dump kills it); anything else that is not ours ->
   refuse unless ``force``;
3. preflight: the stdio verdicts of every fd of the tree (``_stdio.plan``),
   the session-leader rule, the pre-dump gate, the criu binary;
4. check mode stops here with a truthful prediction;
5. create ``images_dir`` (0700), take the lock ``.ckpt-lock`` (flock, non
   blocking: a concurrent dump into the same directory gets a clear error);
6. move foreign content aside (``force``) to ``DIR.replaced-<stamp>``, or
   clear our own failed attempt (its ``ckpt-failed.json`` lists its files);
7. record what cannot be read after a default dump: the process identity,
   the process tree, the fd table, the binaries' checksums;
8. run criu (own work dir, umask 077, log ``dump.log`` in images_dir);
9. failure: mark the directory with ``ckpt-failed.json`` (partial images are
   kept for diagnosis, or removed when the disk is full), make sure the
   workload runs (SIGCONT a task left stopped, and say so), raise;
   success: checksum every image, write the manifest LAST, atomically.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import tempfile
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _checksum
from ansible_collections.ckpt.criu.plugins.module_utils import _criu
from ansible_collections.ckpt.criu.plugins.module_utils import _guard
from ansible_collections.ckpt.criu.plugins.module_utils import _identity
from ansible_collections.ckpt.criu.plugins.module_utils import _lock
from ansible_collections.ckpt.criu.plugins.module_utils import _manifest
from ansible_collections.ckpt.criu.plugins.module_utils import _netaddr
from ansible_collections.ckpt.criu.plugins.module_utils import _procfs
from ansible_collections.ckpt.criu.plugins.module_utils import _safedir
from ansible_collections.ckpt.criu.plugins.module_utils import _stdio
from ansible_collections.ckpt.criu.plugins.module_utils import _transfer
from ansible_collections.ckpt.criu.plugins.module_utils import _unit
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

PROC = _procfs.PROC
FORBIDDEN_DIRS = ("/", "/proc", "/sys", "/dev", "/run", "/boot", "/etc", "/bin", "/sbin",
                  "/lib", "/lib64", "/usr", "/var", "/tmp", "/root", "/home")
FORBIDDEN_TREES = ("/proc", "/sys", "/dev")
PRE_DUMP_DIR = "pre-1"
MEM_DIRTY_FEATURE = "mem_dirty_track"
# Local images up to this size are hashed before a transfer and sent with the
# manifest in one rsync. sha256 runs at about 1.6 GB/s on a CPU with SHA
# extensions (a third of that without), so hashing 64 MiB costs 0.04-0.12 s,
# against about 0.1 s for a second rsync (its session and rsync's start on
# both ends), measured in docs/benchmarks.
ONE_PASS_BYTES = 64 * 1024 * 1024


class DumpError(CkptError):
    """A dump refused or failed, with what a person needs to act on it."""


@dataclasses.dataclass
class DumpPlan(object):
    """What the preflight of :func:`dump` decided, for the run under the lock."""

    params: dict        # the module's parameters
    opts: dict          # the dump options: params, completed by the preflight
    criu: str           # the criu executable
    version: dict       # its criu_version()
    pid: int            # the target
    pre: dict           # plan_pre_dump()'s verdict; the run adds what the pre-dump did
    report: dict        # stdio_preflight()'s report: fds, stdio, stdio_files
    force: bool
    started: float      # time.monotonic() when the module started
    proc_root: str
    unit: dict = None   # the unit dumped, with its record; None for a bare process


# ------------------------------------------------------------------ input

def validate_images_dir(path):
    """The images_dir, normalised; DumpError naming the rule it breaks."""
    if not isinstance(path, str) or not path:
        raise DumpError("images_dir must be a non-empty absolute path")
    if "\0" in path or "\n" in path:
        raise DumpError("images_dir must not contain NUL or newline characters")
    if not os.path.isabs(path):
        raise DumpError("images_dir must be an absolute path, got %r" % path)
    if ".." in path.split("/"):
        raise DumpError("images_dir must not contain '..' components, got %r" % path)
    norm = os.path.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm in FORBIDDEN_DIRS:
        raise DumpError("images_dir must be a directory of its own, not the system directory %s" % norm)
    for tree in FORBIDDEN_TREES:
        if norm.startswith(tree + "/"):
            raise DumpError("images_dir must not be inside %s (a kernel filesystem), got %s" % (tree, norm))
    try:
        _safedir.check(norm)
    except _safedir.UntrustedDirError as exc:
        raise DumpError(exc.msg)
    return norm


def port_problem(port, what, allow_zero=False):
    """A sentence when ``port`` is not a TCP port (1-65535, or 0 when ``allow_zero``), else None."""
    try:
        n = int(port)
    except (TypeError, ValueError):
        return "%s must be a TCP port number, got %r" % (what, port)
    if isinstance(port, bool) or not (0 if allow_zero else 1) <= n <= 65535:
        extra = ", or 0 to pick a free one" if allow_zero else ""
        return "%s must be between 1 and 65535%s, got %r" % (what, extra, port)
    return None


def address_problem(address, what):
    """A sentence when ``address`` is not an IPv4/IPv6 address or host name, else None."""
    import ipaddress
    try:
        ipaddress.ip_address(address)
        return None
    except ValueError:
        pass
    if isinstance(address, str) and 0 < len(address) <= 253 and all(
            part and len(part) <= 63 and part.replace("-", "").isalnum() and not part.startswith("-")
            for part in address.split(".")):
        return None
    return "%s must be an IP address or a host name, got %r" % (what, address)


def _unit_target(params):
    """The unit selected by ``unit``, with its main PID; None without one."""
    name = params.get("unit")
    if not name:
        return None
    if params.get("pid") is not None or params.get("pidfile"):
        raise DumpError("unit selects the process by itself: give unit, or pid/pidfile, not both")
    try:
        info = _unit.info(_unit.unit_name(name))
    except _unit.UnitError as exc:
        raise DumpError(exc.msg, unit=name)
    if info["active_state"] != "active" or info["main_pid"] <= 0:
        raise DumpError(_unit.refusals(info, [], [])[0], unit=info["name"])
    return info


def _check_unit(unit, tree_pids, opts, proc_root):
    """Refuse a unit CRIU cannot take alone; plan its journal stdio."""
    problems = _unit.checkpoint_refusals(unit, tree_pids, proc_root)
    if problems:
        raise DumpError("refusing to checkpoint unit %s: %s" % (unit["name"], problems[0]),
                        unit=unit["name"], problems=problems)
    unit["stdio_sockets"] = _unit.stdio_sockets(unit["main_pid"], proc_root)
    if unit["stdio_sockets"]:
        # The unit's journal stream: dumped as external, handed back by systemd on restore.
        opts["ext_unix_sk"] = True
    try:
        unit["record"] = _unit.unit_record(unit)
    except _unit.UnitError as exc:
        raise DumpError(exc.msg, unit=unit["name"])


def resolve_pid(pid=None, pidfile=None):
    """The target PID from ``pid`` or ``pidfile``; DumpError on garbage."""
    if pid is not None:
        if isinstance(pid, bool) or int(pid) <= 0:
            raise DumpError("pid must be a positive integer, got %r" % (pid,))
        return int(pid)
    return _procfs.read_pidfile(pidfile)


def process_tree(pid, proc_root=PROC):
    """[{pid, start_time, comm, exe, cmdline}] of the tree rooted at PID, root first."""
    out = []
    for p in _procfs.process_tree(pid, proc_root):
        ident = _identity.live_identity(p, proc_root)
        if ident is not None:
            out.append(_identity.private(dict((k, ident.get(k)) for k in ("pid", "start_time", "comm", "exe",
                                                                          "cmdline"))))
    return out


# ---------------------------------------------------------------- argv

def build_dump_args(pid, images_dir, work_dir, opts, pre_dump_dir=None):
    """criu dump arguments (without the action, ``-o`` and ``-v4``) from the options."""
    args = ["-t", str(int(pid))] + _criu.dir_args(images_dir, work_dir)
    args.extend(_criu.flag_args(opts, ("leave_running", "leave_stopped") + _criu.SHARED_OPTIONS))
    args.extend(_criu.external_args(opts.get("external")))
    args.extend(_criu.inherit_fd_args(sorted((opts.get("inherit_fds") or {}).items())))
    if opts.get("ghost_limit") is not None:
        args.extend(["--ghost-limit", str(int(opts["ghost_limit"]))])
    if opts.get("tcp_established") and opts.get("network_lock"):
        args.extend(["--network-lock", opts["network_lock"]])
    ps = opts.get("page_server")
    if ps:
        args.extend(["--page-server", "--address", ps["address"], "--port", str(int(ps["port"]))])
        args.extend(_criu.tls_args(ps))
    if pre_dump_dir:
        args.extend(["--prev-images-dir", pre_dump_dir, "--track-mem"])
    # What the stdio plan needs on top (single argv elements, or --external PAIRS).
    extra = list(opts.get("extra_args") or [])
    i = 0
    while i < len(extra):
        arg = extra[i]
        if arg == "--external" and i + 1 < len(extra):
            args.extend(extra[i:i + 2])
            i += 2
            continue
        if arg not in args:
            args.append(arg)
        i += 1
    return args


def plan_pre_dump(mode, feature, page_server=False):
    """{used, reason}: whether to pre-dump; DumpError for ``always`` when impossible."""
    if mode == "never":
        return {"used": False, "reason": "pre_dump is never"}
    if page_server:
        reason = "a page server serves one dump session, so pre-dump is not combined with page_server"
        if mode == "always":
            raise DumpError("pre_dump: always cannot be combined with page_server (%s); "
                            "use pre_dump: auto or never" % reason)
        return {"used": False, "reason": reason}
    if feature.get("supported"):
        return {"used": True, "reason": "criu check --feature %s passed" % MEM_DIRTY_FEATURE}
    detail = (feature.get("output") or "").strip().splitlines()
    reason = ("this kernel has no soft-dirty memory tracking (criu check --feature %s failed%s), so "
              "criu cannot pre-dump" % (MEM_DIRTY_FEATURE, (": " + detail[-1]) if detail else ""))
    if mode == "always":
        raise DumpError("pre_dump: always is impossible here: %s; use pre_dump: auto (skips it) or never. "
                        "Nothing was frozen." % reason)
    return {"used": False, "reason": reason}


# ------------------------------------------------------------ decisions

def decide(dir_info, pid, live, force, verify_problems=None):
    """What to do with images_dir, as (action, note).

    ``dir_info`` from :func:`_manifest.inspect_dir`; ``live`` is the identity
    of the process now at ``pid`` (None when there is none); for a complete
    manifest, ``verify_problems`` are its image problems.  Actions:
    ``unchanged``, ``dump``, ``clear_failed`` (then dump), ``replace`` (move
    aside, then dump).  Refusals raise DumpError.
    """
    state = dir_info["state"]
    if state in ("absent", "empty"):
        return "dump", None
    if state == "failed":
        return "clear_failed", "cleared the leftovers of an earlier failed dump (%s)" % (
            dir_info["failed"].get("cause") or "cause unknown")
    hint = "; set force: true to move the old content aside to <images_dir>.replaced-<time> and dump again"
    if state == "complete":
        m = dir_info["manifest"]
        mp = m["process"]
        if verify_problems:
            if force:
                return "replace", "the checkpoint there was damaged (%s)" % verify_problems[0]
            raise DumpError("images_dir holds a checkpoint of PID %s whose images do not verify: %s%s"
                            % (mp.get("pid"), "; ".join(verify_problems[:5]), hint),
                            problems=verify_problems)
        if mp.get("pid") != pid:
            if force:
                return "replace", "it held a checkpoint of another process (PID %s)" % mp.get("pid")
            raise DumpError("images_dir already holds a checkpoint of another process (PID %s, %s), not of "
                            "PID %d%s" % (mp.get("pid"), mp.get("comm"), pid, hint))
        if live is None:
            return "unchanged", ("a complete checkpoint of PID %d exists and the process is gone since "
                                 "(a dump without leave_running/leave_stopped ends it)" % pid)
        if _manifest.same_process(mp, live):
            return "unchanged", "a complete checkpoint of this very process (PID %d) exists" % pid
        if force:
            return "replace", ("it held a checkpoint of an earlier process with the same PID %d "
                               "(started at tick %s, boot %s)" % (pid, mp.get("start_time"), mp.get("boot_id")))
        raise DumpError("images_dir holds a checkpoint of an earlier process with PID %d (start time %s, boot %s); "
                        "PID %d is now a different process (start time %s)%s"
                        % (pid, mp.get("start_time"), mp.get("boot_id"), pid, live.get("start_time"), hint))
    if state == "invalid":
        if force:
            return "replace", "its manifest was invalid (%s)" % dir_info["problem"]
        raise DumpError("images_dir has a manifest that is not valid: %s%s" % (dir_info["problem"], hint))
    # foreign
    names = dir_info.get("entries") or []
    if force:
        return "replace", "it held content without a manifest (%s)" % ", ".join(names[:5])
    raise DumpError("images_dir is not empty and holds no checkpoint manifest (%s%s): it may be another "
                    "checkpoint or unrelated files, so it is left alone%s"
                    % (", ".join(names[:5]), ", ..." if len(names) > 5 else "", hint))


def check_session_leader(pid, shell_job, proc_root=PROC):
    sid = _identity.read_sid(pid, proc_root)
    if sid == 0 or _procfs.own_ns_session(pid, proc_root) == 0:
        raise DumpError("process %d is in a session whose leader is outside its PID namespace (its launcher, "
                        "e.g. a container's init, never called setsid): CRIU cannot dump it, not even with "
                        "shell_job. Start the workload with setsid, or under a service manager. Nothing was "
                        "frozen." % pid)
    if sid is not None and sid != pid and not shell_job:
        raise DumpError("process %d is not a session leader (its session is %d); CRIU refuses such a root "
                        "task: set shell_job: true, or start the workload with setsid. Nothing was frozen."
                        % (pid, sid))
    return sid


def stdio_preflight(pid, tree_pids, opts, proc_root=PROC, criu_version=None):
    """Classify every fd of the tree and plan; DumpError listing the blockers.

    Returns (report, plan): report = {fds: {pid: [entries]}, stdio: {fd: verdict},
    stdio_files: [{pid, fd, path, size, ...}]}; plan = {criu_args: [extra dump argv],
    blockers: [sentences], warnings: [sentences]}.  The verdicts are _stdio's, which
    walks the tree of PID itself (``tree_pids`` is not read).
    """
    try:
        cls = _stdio.classify(pid, proc_root=proc_root, criu_version=criu_version)
    except _procfs.ProcfsError as exc:
        raise DumpError("cannot inspect the file descriptors of PID %d: %s" % (pid, exc))
    sp = _stdio.plan(cls["items"], {"shell_job": opts.get("shell_job"),
                                    "tcp_established": opts.get("tcp_established"),
                                    "ext_unix_sk": opts.get("ext_unix_sk"),
                                    "inherit_fd": opts.get("inherit_fd"),
                                    "ghost_limit": opts.get("ghost_limit")})
    report = {"fds": dict((str(p), [_stdio.public_item(i) for i in items]) for p, items in cls["by_pid"].items()),
              "stdio": dict((str(i["fd"]), i["verdict"]) for i in cls["stdio"]),
              # Only files the restore needs at the same size (opened without O_APPEND).
              "stdio_files": [f for f in sp["files_on_destination"] if f.get("same_size")]}
    plan = {"criu_args": list(sp["dump_options"]), "blockers": sp["blockers"], "warnings": sp["warnings"],
            "external": sp["external"]}
    if plan["blockers"]:
        raise DumpError("the process cannot be dumped safely as asked: %s Nothing was frozen."
                        % " ".join(plan["blockers"]), blockers=plan["blockers"])
    return report, plan


# --------------------------------------------------------------- repair

def ensure_running(tree, wait=1.0, proc_root=PROC):
    """After a failed dump: SIGCONT every task of ``tree``; return sentences on what was done.

    ``tree`` is [{pid, start_time}] (or bare PIDs): with a start time, the signal goes
    through a pidfd pinned to it, so a PID reused meanwhile is never signalled. Every live
    task gets SIGCONT, whatever state it shows: criu leaves a task stopped by queueing SIGSTOP
    and detaching, so a task it just let go can still show R with the stop pending and stop a
    moment later; SIGCONT discards that pending stop."""
    notes = []
    deadline = time.monotonic() + wait
    for entry in tree:
        pid, start_time = (entry["pid"], entry.get("start_time")) if isinstance(entry, dict) else (entry, None)
        state = _identity.state_letter(pid, proc_root)
        # A task criu was tracing may show 't' for a moment after criu dies.
        while state == "t" and time.monotonic() < deadline:
            time.sleep(0.02)
            state = _identity.state_letter(pid, proc_root)
        if state is None or state in _procfs.DEAD_STATES:
            notes.append("PID %d is gone (state %s) after the failed dump" % (pid, state or "absent"))
            continue
        pending = stop_pending(pid, proc_root)
        try:
            sent = _identity.send_signal(pid, signal.SIGCONT, start_time=start_time, proc_root=proc_root)
        except OSError as exc:
            notes.append("PID %d (state %s) could not be sent SIGCONT: %s" % (pid, state, exc))
            continue
        if not sent:
            notes.append("PID %d exited or was replaced before it could be resumed" % pid)
            continue
        if state in ("T", "t") or pending:
            time.sleep(0.05)
            notes.append("PID %d was left %s by criu; sent SIGCONT, now %s" % (
                pid, {"T": "stopped", "t": "traced"}.get(state, "with a stop pending"),
                _identity.state_letter(pid, proc_root)))
    return notes


def stop_pending(pid, proc_root=PROC):
    """Whether PID has SIGSTOP queued (its own or its thread group's pending set)."""
    try:
        status = _procfs.read_status(pid, proc_root)
    except _procfs.ProcfsError:
        return False
    bit = 1 << (signal.SIGSTOP - 1)
    for key in ("SigPnd", "ShdPnd"):
        try:
            if int(status.get(key, "0"), 16) & bit:
                return True
        except ValueError:
            continue
    return False


def parasite_leftovers(pid, proc_root=PROC):
    """Mappings criu's parasite left in PID (``memfd:CRIUMFD``) after criu died mid-dump."""
    try:
        with open(os.path.join(proc_root, str(pid), "maps")) as fh:
            return [line.split()[0] for line in fh if "memfd:CRIUMFD" in line]
    except (IOError, OSError):
        return []


# ------------------------------------------------------------------ run

def _stats_timings(stats, criu_duration, total):
    def sec(key):
        return round(stats[key] / 1e6, 6) if key in stats else None
    return {
        "freezing_time": sec("freezing_time_us"),
        "frozen_time": sec("frozen_time_us"),
        "memdump_time": sec("memdump_time_us"),
        "memwrite_time": sec("memwrite_time_us"),
        "criu_duration": round(criu_duration, 4) if criu_duration is not None else None,
        "total": round(total, 4),
    }


def _options_record(opts, pre):
    ps = opts.get("page_server")
    return {
        "leave_running": bool(opts.get("leave_running")),
        "leave_stopped": bool(opts.get("leave_stopped")),
        "shell_job": bool(opts.get("shell_job")),
        "tcp_established": bool(opts.get("tcp_established")),
        "ext_unix_sk": bool(opts.get("ext_unix_sk")),
        "external": list(opts.get("external") or []),
        "file_locks": bool(opts.get("file_locks")),
        "ghost_limit": opts.get("ghost_limit"),
        "page_server": None if not ps else {
            "address": ps["address"], "port": int(ps["port"]), "tls": bool(_criu.tls_args(ps))},
        "pre_dump": pre.get("used", False),
        # What the restore must apply for the fds the stdio plan lifted (--ext-unix-sk=INODE,
        # --inherit-fd fd[N]:KEY with a replacement it opens itself).
        "ext_unix_sk_inodes": list((opts.get("external_plan") or {}).get("ext_unix_sk_inodes") or []),
        "inherit_fds": list((opts.get("external_plan") or {}).get("inherit_fds") or []),
    }


def _remote_names(tree_pids):
    return ["pagemap-%d.img" % p for p in tree_pids]


def _free_partial(images_dir, before):
    """Remove image files a failed run created (not those that were there before)."""
    removed = []
    for name in _manifest.list_images(images_dir):
        if name not in before:
            try:
                os.unlink(os.path.join(images_dir, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def _look(images_dir, pid, force, proc_root):
    """(live identity of PID, images_dir's state, decide()'s action and note), read now."""
    live = _identity.live_identity(pid, proc_root)
    info = _manifest.inspect_dir(images_dir)
    problems = None
    if info["state"] == "complete":
        problems = _manifest.verify_images(info["manifest"], images_dir)
    action, note = decide(info, pid, live, force, problems)
    return live, info, action, note


def dump(params, check_mode=False, warn=None, proc_root=PROC):
    """Run the dump as the module's params say; returns the module result dict."""
    started = time.monotonic()
    warn = warn or (lambda msg: None)
    if os.geteuid() != 0:
        raise DumpError("ckpt.criu.dump must run as root (become: true): CRIU needs root to freeze and "
                        "read another process (running as uid %d)" % os.geteuid())
    if params.get("leave_running") and params.get("leave_stopped"):
        raise DumpError("leave_running and leave_stopped are mutually exclusive; choose one")
    images_dir = validate_images_dir(params["images_dir"])
    unit = _unit_target(params)
    pid = unit["main_pid"] if unit else resolve_pid(params.get("pid"), params.get("pidfile"))
    opts = dict(params)
    opts["ghost_limit"] = _criu.parse_size(params.get("ghost_limit"), "ghost_limit")
    ps = params.get("page_server")
    if ps:
        if not ps.get("address") or not ps.get("port"):
            raise DumpError("page_server needs address and port (the destination's page server)")
        problem = (port_problem(ps.get("port"), "page_server.port")
                   or address_problem(ps["address"], "page_server.address"))
        if problem:
            raise DumpError(problem + "; nothing was frozen")
        for key in ("tls_cacert", "tls_cert", "tls_key"):
            if ps.get(key) and not os.path.isfile(ps[key]):
                raise DumpError("page_server.%s %s does not exist on this host" % (key, ps[key]))
    transfer = params.get("transfer")  # validated here, used after the dump
    if transfer:
        problems = _transfer.validate(transfer)
        if problems:
            raise DumpError(problems[0])
    force = bool(params.get("force"))
    result = {"changed": False, "images_dir": images_dir, "manifest_path": _manifest.manifest_path(images_dir),
              "pid": pid}

    # 2. What is in images_dir already? (A dump in progress there owns it.)
    _lock.DirLock(images_dir).probe()
    live, info, action, note = _look(images_dir, pid, force, proc_root)
    if action == "unchanged":
        m = info["manifest"]
        result.update({"manifest": m, "msg": note, "log_path": os.path.join(images_dir, m["criu"].get("log") or
                                                                            _manifest.DUMP_LOG_NAME),
                       "criu_cmd": m["criu"].get("argv"), "image_bytes": _manifest.checkpoint_bytes(m),
                       "pre_dump": {"used": bool(m["options"].get("pre_dump")), "reason": "no dump was needed"},
                       "timings": _stats_timings(m["criu"].get("stats") or {}, m["criu"].get("duration"),
                                                 time.monotonic() - started)})
        return result

    # 3. Preflight: the target, its stdio, the session rule, pre-dump, criu.
    _procfs.validate_target_pid(pid, proc_root=proc_root)
    check_session_leader(pid, params.get("shell_job"), proc_root)
    if params.get("service_address"):
        spec = params["service_address"]
        try:
            _netaddr.parse_service_address(spec.get("address"), spec.get("interface"))
        except _netaddr.AddressError as exc:
            raise DumpError("refusing to dump PID %d: %s" % (pid, exc.msg))
    if opts.get("tcp_established") and not opts.get("network_lock"):
        opts["network_lock"] = None
    criu = _criu.find_criu(params.get("criu_path"))
    version = _criu.criu_version(criu)
    if not version["supported"]:
        raise DumpError("criu %s at %s is too old; this collection needs CRIU >= %d.%d"
                        % (version["version"], criu, _criu.MIN_VERSION[0], _criu.MIN_VERSION[1]))
    tree = process_tree(pid, proc_root)
    if unit:
        _check_unit(unit, [t["pid"] for t in tree], opts, proc_root)
    report, stdio_plan = stdio_preflight(pid, [t["pid"] for t in tree], opts, proc_root, version["version"])
    opts["extra_args"] = stdio_plan["criu_args"]
    opts["external_plan"] = stdio_plan.get("external")
    for text in stdio_plan.get("warnings") or []:
        warn(text)
    mode = params.get("pre_dump") or "auto"
    if mode == "never":
        pre = plan_pre_dump(mode, {})
    else:
        pre = plan_pre_dump(mode, _criu.criu_feature(criu, MEM_DIRTY_FEATURE), bool(ps))
    result["pre_dump"] = pre
    if opts.get("tcp_established"):
        nft = _criu.criu_feature(criu, "network_lock_nftables")
        if nft["supported"] and not _criu.find_executable("iptables-restore"):
            opts["network_lock"] = "nftables"

    planned = {"replace": note if action == "replace" else None,
               "cleared": note if action == "clear_failed" else None}
    if check_mode:
        result.update({"changed": True, "msg": "would dump PID %d into %s%s" % (
            pid, images_dir, (" after moving the old content aside: " + note) if action == "replace" else ""),
            "criu_cmd": None, "manifest": None, "log_path": os.path.join(images_dir, _manifest.DUMP_LOG_NAME)})
        result.update(dict((k, v) for k, v in planned.items() if v))
        return result

    # 5. Create images_dir (or hold the existing one) under the trust rule, checked again
    # now, component by component, on what is held; lock it.
    plan = DumpPlan(params=params, opts=opts, criu=criu, version=version, pid=pid, pre=pre, report=report,
                    force=force, started=started, proc_root=proc_root, unit=unit)
    held = _safedir.hold_images_dir(images_dir, DumpError)
    try:
        lock = _lock.DirLock(images_dir).acquire(held)
        # criu never ends the process itself (see _guard): the module does, after the manifest.
        guard = _guard.Guard(images_dir, kill_when_committed=not (opts.get("leave_running")
                                                                  or opts.get("leave_stopped")))
        try:
            return _locked_dump(plan, held, guard, result)
        finally:
            guard.close()
            lock.release()
    finally:
        held.close()


def _locked_dump(plan, held, guard, result):
    """Dump as ``plan`` says into the held, locked images_dir; ``result`` is completed and returned."""
    images_dir = held.path
    # Re-read under the lock: a concurrent dump may have finished meanwhile.
    live, info, action, note = _look(images_dir, plan.pid, plan.force, plan.proc_root)
    if action == "unchanged":
        result.update({"manifest": info["manifest"], "msg": note})
        return result
    if live is None:
        raise DumpError("PID %d exited before the dump started; nothing was dumped" % plan.pid)
    if action == "replace":
        try:
            dest = _manifest.move_aside(images_dir)
        except OSError as exc:
            raise DumpError("cannot move the old content of %s aside (%s); %s is probably a mount point: "
                            "empty it yourself, then dump again" % (images_dir, exc.strerror or exc, images_dir))
        result["replaced"] = {"moved_to": dest, "reason": note}
    elif action == "clear_failed":
        _manifest.clear_own_leftovers(images_dir, info["failed"].get("files") or [])
        result["cleared_failed_attempt"] = note

    # 7. Everything that must be read while the process still exists.
    tree = process_tree(plan.pid, plan.proc_root)
    tree_pids = [t["pid"] for t in tree]
    # Only what the identity checks need: the program and a hash of its arguments.
    process = _identity.private(live)
    process["sid"] = _identity.read_sid(plan.pid, plan.proc_root)
    process.pop("state", None)
    try:
        binaries = _checksum.process_files(plan.pid)
    except CkptError as exc:
        raise DumpError("cannot checksum the binaries of PID %d: %s" % (plan.pid, exc.msg))
    host = _manifest.host_identity()

    log_path = _safedir.fresh_file(held, _manifest.DUMP_LOG_NAME, DumpError)
    work_dir = tempfile.mkdtemp(prefix=_manifest.PRIVATE_PREFIX + "work-", dir=images_dir)
    before = set(_manifest.list_images(images_dir))
    try:
        pre_dir = None
        if plan.pre.get("used"):
            pre_args = (["-t", str(plan.pid)] + _criu.dir_args(os.path.join(images_dir, PRE_DUMP_DIR), work_dir)
                        + ["--track-mem"] + _criu.flag_args(plan.opts, ("shell_job",)))
            os.mkdir(PRE_DUMP_DIR, 0o700, dir_fd=held.fd)
            pre_log = _safedir.fresh_file(held, "pre-dump.log", DumpError)
            pre_res = _criu.run_criu(plan.criu, "pre-dump", pre_args, pre_log,
                                     timeout=plan.params.get("timeout") or None)
            plan.pre["duration"] = round(pre_res.duration, 4)
            if not pre_res.ok:
                # A failed pre-dump leaves the task running; fall back to a plain dump.
                plan.pre.update({"used": False, "reason": "criu pre-dump failed: %s" % pre_res.cause()})
                shutil.rmtree(os.path.join(images_dir, PRE_DUMP_DIR), ignore_errors=True)
            else:
                pre_dir = PRE_DUMP_DIR
        opts = dict(plan.opts, leave_stopped=True) if guard.kill_when_committed else plan.opts
        args = build_dump_args(plan.pid, images_dir, work_dir, opts, pre_dir)
        guard.tree = tree
        # criu keeps the connections of a process it leaves stopped locked in an
        # nftables table of its own: name it for the caller, who ends or resumes it.
        locks_before = _netaddr.criu_lock_tables() if plan.opts.get("tcp_established") and plan.opts.get(
            "leave_stopped") else None
        unit_held = False
        if plan.unit and not plan.opts.get("leave_running"):
            # systemd must neither restart the unit nor fail it when its process ends.
            _unit.hold(plan.unit["name"], images_dir, _manifest.utc_now(),
                       boot=bool(plan.params.get("unit_boot_hold")))
            unit_held = True
        # Wall clock of the freeze: with the destination restore's resumed_at,
        # the downtime of a migration.
        frozen_at = time.time()
        held.check_path()
        try:
            res = _criu.run_criu(plan.criu, "dump", args, log_path,
                                 timeout=plan.params.get("timeout") or None, before_start=guard.fork,
                                 on_start=guard.start)
        except BaseException:
            if unit_held:
                _unit.release(plan.unit["name"])
            raise
        if unit_held and not res.ok:         # the process still runs: its unit is itself again
            _unit.release(plan.unit["name"])
        stats = _criu.read_stats(work_dir, "dump")
        if os.path.exists(os.path.join(work_dir, "stats-dump")):
            try:
                shutil.copy2(os.path.join(work_dir, "stats-dump"), os.path.join(images_dir, "stats-dump"))
            except (IOError, OSError):
                pass
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    if not res.ok:
        raise _failed(res, plan.pid, tree, images_dir, before, plan.opts, result, plan.started)

    # 9. Success: the process must be where the options say.
    notes = []
    if plan.opts.get("leave_stopped") or guard.kill_when_committed:
        state = _identity.wait_state(plan.pid, ("stopped",), 2.0, plan.proc_root)
        if state != "stopped":
            notes.append("criu reported success but PID %d is in state %s, not stopped" % (plan.pid, state))
    manifest = {
        "schema": _manifest.SCHEMA,
        "complete": True,
        "created": _manifest.utc_now(),
        "host": host,
        "criu": {"path": plan.criu, "version": plan.version["version"], "argv": res.argv,
                 "log": _manifest.DUMP_LOG_NAME, "duration": round(res.duration, 4), "stats": stats},
        "process": process,
        "tree": tree,
        "options": _options_record(plan.opts, plan.pre),
        "fds": plan.report.get("fds") or {},
        "stdio": plan.report.get("stdio") or {},
        "stdio_files": plan.report.get("stdio_files") or [],
        "binaries": binaries,
    }
    if plan.unit:
        manifest["unit"] = dict(plan.unit["record"], stdio_sockets=plan.unit["stdio_sockets"],
                                held=unit_held, boot_hold=unit_held and bool(plan.params.get("unit_boot_hold")))
    if plan.opts.get("page_server"):
        manifest["remote_pages"] = {"address": plan.opts["page_server"]["address"],
                                    "port": int(plan.opts["page_server"]["port"]),
                                    "files": _remote_names(tree_pids), "pattern": "pages-*.img",
                                    "bytes": int(stats.get("pages_written") or 0) * os.sysconf("SC_PAGE_SIZE")}
    # With a transfer of large images, the images leave now, while they are hashed and
    # the manifest is written here (both only read the images): the hashing is off the
    # critical path of the frozen window, and the manifest follows in a second rsync.
    # Small local images (always so with a page server, which has the pages already)
    # are hashed first and leave with the manifest in one rsync: hashing them costs
    # less than the second connection would.
    # The service address leaves with the process: off this host now, before the
    # manifest goes out (the destination claims it only once the manifest arrived).
    if plan.params.get("service_address"):
        try:
            result["service_address"] = _netaddr.place(plan.params["service_address"], present=False)
        except _netaddr.AddressError as exc:
            raise DumpError("dumped PID %d into %s, but the service address could not be taken off this host: %s"
                            % (plan.pid, images_dir, exc.msg), rc=exc.rc, cmd=exc.argv, stderr=exc.stderr)
    transfer = plan.params.get("transfer")
    remote = _remote_names(tree_pids) if plan.opts.get("page_server") else None
    one_pass = bool(transfer) and _local_bytes(images_dir) <= ONE_PASS_BYTES
    pusher = None
    if transfer and not one_pass:
        pusher = _push(plan, images_dir, transfer)
    try:
        _write_manifest(images_dir, manifest, remote)
    except BaseException:
        if pusher is not None:
            pusher.abort()
        raise
    # Committed before the manifest can leave: a guard that resumed the source
    # after that could leave it running here while the destination restores it.
    guard.committed()
    if one_pass:
        pusher = _push(plan, images_dir, transfer, with_manifest=True)
    if guard.kill_when_committed:
        # The checkpoint is complete: now, and only now, the process ends (a dump's default).
        _guard.kill_tree(tree, plan.proc_root)
        state = _identity.wait_state(plan.pid, ("absent", "zombie"), 3.0, plan.proc_root)
        if state not in ("absent", "zombie"):
            notes.append("the checkpoint is complete but PID %d still exists after SIGKILL (state %s)"
                         % (plan.pid, state))
    timings = _stats_timings(stats, res.duration, time.monotonic() - plan.started)
    timings["frozen_at"] = round(frozen_at, 6)
    if pusher is not None:
        # The process stays frozen (leave_stopped) or gone; a failure here is
        # the caller's to roll back, with the complete checkpoint still here.
        try:
            timings["transfer"] = pusher.finish()
        except _transfer.TransferError as exc:
            err = _send_failed(plan.pid, images_dir, transfer, exc)
            if locks_before is not None:
                err.details["network_lock_tables"] = [t for t in (_netaddr.criu_lock_tables() or [])
                                                      if t not in locks_before]
            raise err
    if locks_before is not None:
        result["network_lock_tables"] = [t for t in (_netaddr.criu_lock_tables() or []) if t not in locks_before]
    result.update({
        "changed": True,
        "msg": "dumped PID %d into %s" % (plan.pid, images_dir),
        "manifest": manifest,
        "log_path": log_path,
        "criu_cmd": res.argv,
        "image_bytes": _manifest.checkpoint_bytes(manifest),
        "pre_dump": plan.pre,
        "timings": timings,
    })
    if notes:
        result["warnings_after_dump"] = notes
    return result


def _local_bytes(images_dir):
    """Bytes of the images in images_dir (a page server's pages are elsewhere)."""
    return sum(os.lstat(os.path.join(images_dir, name)).st_size for name in _manifest.list_images(images_dir))


def _push(plan, images_dir, transfer, with_manifest=False):
    try:
        return _transfer.Push(images_dir, transfer, timeout=plan.params.get("timeout") or None,
                              with_manifest=with_manifest)
    except _transfer.TransferError as exc:
        raise _send_failed(plan.pid, images_dir, transfer, exc)


def _send_failed(pid, images_dir, transfer, exc):
    return DumpError("dumped PID %d into %s, but sending it to %s failed: %s" % (
        pid, images_dir, transfer.get("destination"), exc.msg), rc=exc.rc)


def _write_manifest(images_dir, manifest, remote):
    """Hash every image into the manifest and write it (atomically, last)."""
    records = _manifest.image_records(images_dir, remote=remote)
    manifest["images"] = records
    manifest["images_total_bytes"] = _manifest.images_total_bytes(records)
    try:
        os.unlink(_manifest.failed_path(images_dir))
    except OSError:
        pass
    _manifest.write_manifest(images_dir, manifest)


def page_server_cause(log_text, ps):
    """The sentence for a dump that could not reach or authenticate its page server, or None.

    criu connects to the page server before it freezes anything (cr_dump_tasks), and only says so
    on an info line; a page server serves one connection and then ends."""
    if not ps or not log_text:
        return None
    where = "%s:%s" % (ps.get("address"), ps.get("port"))
    if re.search(r"Can't connect to server ", log_text):
        return ("criu could not connect to the page server at %s, before freezing anything: nothing listens "
                "there (a page server serves one connection and then ends, so it may have been taken by "
                "another peer that connected first, or it never started); see the page server's log on "
                "the destination" % where)
    m = re.search(r"Error \(criu/tls\.c:\d+\): tls: (.*)", log_text)
    if m:
        return ("the TLS session with the page server at %s failed before anything was frozen: %s (the page "
                "server and the dump need certificates of the same CA, each naming the page server's "
                "address)" % (where, m.group(1).strip()))
    return None


def _failed(res, pid, tree, images_dir, before, opts, result, started):
    """Make sure the workload runs, mark images_dir, and build the DumpError."""
    tree_pids = [t["pid"] for t in tree]
    cause = page_server_cause(res.log_text, opts.get("page_server")) or res.cause()
    if res.rc is not None and res.rc < 0 and not res.timed_out:
        cause = "criu was killed by signal %d in the middle of the dump (%s)" % (-res.rc, cause)
    if res.helpers_killed:
        cause += "; its leftover helper processes were killed"
    repaired = ensure_running(tree)
    leftovers = []
    for p in tree_pids:
        maps = parasite_leftovers(p)
        if maps:
            leftovers.append("criu's parasite code is still mapped in PID %d (%d memfd:CRIUMFD mappings at %s): "
                             "the process runs, but restart it when convenient, since a later checkpoint "
                             "would carry these mappings" % (p, len(maps), ", ".join(maps[:2])))
    removed = []
    marker = None
    extra = {"pid": pid, "rc": res.rc, "log": _manifest.DUMP_LOG_NAME, "argv": res.argv}
    try:
        marker = _manifest.write_failed_marker(images_dir, cause, extra)
    except (IOError, OSError):
        # Probably the disk is full: the partial images are useless, free them and retry.
        removed = _free_partial(images_dir, before)
        try:
            marker = _manifest.write_failed_marker(images_dir, cause, extra)
        except (IOError, OSError):
            marker = None
    alive = [p for p in tree_pids if _identity.state_letter(p) not in (None,) + _procfs.DEAD_STATES]
    state = _identity.state_letter(pid)
    msg = "criu dump of PID %d failed: %s (log: %s)." % (pid, cause, res.log_path)
    if state in (None,) + _procfs.DEAD_STATES:
        msg += " The process is gone."
    else:
        msg += " The process is still running (state %s); no manifest was written." % state
    if repaired:
        msg += " " + "; ".join(repaired) + "."
    if leftovers:
        msg += " Note: " + "; ".join(leftovers) + "."
    return DumpError(msg, rc=res.rc, log_path=res.log_path, log_errors=res.log_errors, cmd=res.argv,
                     stdout=res.stdout or None, stderr=res.stderr or None, repaired=repaired or None, leftovers=leftovers or None,
                     failed_marker=marker, removed_partial_images=removed or None,
                     process_state=state, alive=alive, images_dir=images_dir,
                     duration=round(time.monotonic() - started, 4))
