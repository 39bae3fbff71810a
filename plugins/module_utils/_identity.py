# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Who holds a PID, and is it the process we mean?

A process identity is (boot_id, pid, start time in clock ticks since boot):
a PID alone is reused, a start time alone repeats across boots.  This module
reads just enough of ``/proc`` to answer "is PID N still the process from the
checkpoint (or the one we restored)?" and to signal it safely.  Every reader
takes a ``proc_root`` so unit tests can point it at a fake tree.

Used by ``ckpt.criu.restore`` (is the PID free? is the restored process the
one the record names?), ``ckpt.criu.process_state`` (signal a process only
when it is provably the one named), ``ckpt.criu.dump`` (the target's identity,
state and session) and ``ckpt.criu.page_server`` (is the recorded server still
itself?).
"""

from __future__ import annotations

import hashlib
import os
import signal
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _procfs

PROC = _procfs.PROC

# /proc/PID/stat state letters, grouped the way callers care about.
STOPPED_STATES = ("T",)
TRACED_STATES = ("t",)
DEAD_STATES = _procfs.DEAD_STATES

# Fields of an identity that must agree for two records to be the same process.
IDENTITY_KEYS = ("boot_id", "pid", "start_time")


def read_stat(pid, proc_root=PROC):
    """The parsed stat of PID ({pid, comm, state, ppid, start_time, ...}), or None when it does not exist."""
    try:
        return _procfs.read_stat(int(pid), proc_root)
    except _procfs.ProcfsError:
        return None


def state_letter(pid, proc_root=PROC):
    """The state letter of PID (field 3 of /proc/PID/stat), or None when it does not exist."""
    st = read_stat(pid, proc_root)
    return st["state"] if st else None


def read_sid(pid, proc_root=PROC):
    """The session id of PID (field 6 of /proc/PID/stat), or None when it does not exist."""
    st = read_stat(pid, proc_root)
    return st["session"] if st else None


def process_state(pid, proc_root=PROC):
    """One word for what PID is doing: absent, zombie, stopped, traced or running."""
    st = read_stat(pid, proc_root)
    return state_word(st["state"] if st else None)


def state_word(letter):
    if letter is None:
        return "absent"
    if letter in DEAD_STATES:
        return "zombie"
    if letter in STOPPED_STATES:
        return "stopped"
    if letter in TRACED_STATES:
        return "traced"
    return "running"


def public(ident):
    """An identity as a result shows it: its state as a word (:func:`state_word`); None stays None."""
    if not ident:
        return None
    out = dict(ident)
    out["state"] = state_word(ident.get("state"))
    return out


def read_identity(pid, proc_root=PROC):
    """The identity of the process holding PID now, or None when there is none.

    {boot_id, pid, start_time, ppid, sid, uid, comm, state, cmdline, exe, cwd}
    (``_procfs.process_identity``); a field the kernel hides (a zombie has no
    exe) is None.
    """
    try:
        return _procfs.process_identity(int(pid), proc_root)
    except _procfs.ProcfsError:
        return None


def live_identity(pid, proc_root=PROC):
    """The identity of the live process at PID, or None when there is none (or only a zombie)."""
    ident = read_identity(pid, proc_root)
    if ident is None or ident.get("state") in DEAD_STATES:
        return None
    return ident


def cmdline_sha256(cmdline):
    """sha256 of a command line (its arguments joined by NUL, as in /proc/PID/cmdline)."""
    return hashlib.sha256("\0".join(cmdline or []).encode("utf-8", "surrogateescape")).hexdigest()


def private(ident):
    """A copy of an identity whose command line keeps only the program (argv[0]), plus
    ``cmdline_sha256`` (enough to recognise the same command line) and ``cmdline_args``
    (how many arguments were left out). Arguments often carry secrets
    (``--db-password=...``); results, reports and manifests carry this form."""
    if not isinstance(ident, dict) or not isinstance(ident.get("cmdline"), list) or "cmdline_sha256" in ident:
        return ident
    out = dict(ident)
    out["cmdline_sha256"] = cmdline_sha256(ident["cmdline"])
    out["cmdline_args"] = max(0, len(ident["cmdline"]) - 1)
    out["cmdline"] = ident["cmdline"][:1]
    return out


def cmdline_matches(recorded, cmdline):
    """True when the live ``cmdline`` is the one ``recorded`` (a full or a :func:`private` identity)."""
    if not isinstance(recorded, dict) or cmdline is None:
        return False
    if recorded.get("cmdline_sha256"):
        return cmdline_sha256(cmdline) == recorded["cmdline_sha256"]
    return recorded.get("cmdline") == cmdline


def hide_cmdlines(obj):
    """``obj`` (a result) with every identity-like dict's command line made :func:`private`."""
    if isinstance(obj, dict):
        out = dict((k, hide_cmdlines(v)) for k, v in obj.items())
        return private(out) if isinstance(out.get("cmdline"), list) else out
    if isinstance(obj, list):
        return [hide_cmdlines(v) for v in obj]
    return obj


def shown_result(params, result):
    """RESULT as a module with the include_cmdline option shows it: command lines hidden unless
    ``params["include_cmdline"]`` asks for them (see :func:`hide_cmdlines`)."""
    return result if params["include_cmdline"] else hide_cmdlines(result)


def describe(ident):
    """'pid 1234 [python3 +1 args] (start time 5678, ...)' for messages: the program, never its
    arguments (they may carry secrets)."""
    if not ident:
        return "no process"
    args = ident.get("cmdline") or []
    cmd = args[0] if args else (ident.get("comm") or "?")
    extra_args = ident.get("cmdline_args", max(0, len(args) - 1))
    if extra_args:
        cmd += " +%d args" % extra_args
    if len(cmd) > 120:
        cmd = cmd[:117] + "..."
    extra = []
    if ident.get("start_time") is not None:
        extra.append("start time %s" % ident["start_time"])
    if ident.get("exe"):
        extra.append("exe %s" % ident["exe"])
    if ident.get("boot_id"):
        extra.append("boot %s" % str(ident["boot_id"])[:8])
    return "pid %s [%s] (%s)" % (ident.get("pid"), cmd, ", ".join(extra))


def _norm_exe(path):
    if path and path.endswith(" (deleted)"):
        return path[:-len(" (deleted)")]
    return path


def differences(expected, actual):
    """Fields in which the live process ``actual`` is not ``expected``.

    pid, start_time and boot_id always count when ``expected`` has them; exe
    counts when both sides know it (a zombie's exe is unreadable).
    """
    diffs = []
    for key in IDENTITY_KEYS:
        want = expected.get(key)
        if want is None:
            continue
        have = actual.get(key)
        if key in ("pid", "start_time"):
            try:
                want, have = int(want), (None if have is None else int(have))
            except (TypeError, ValueError):
                pass
        if want != have:
            diffs.append(key)
    if expected.get("exe") and actual.get("exe"):
        if _norm_exe(expected["exe"]) != _norm_exe(actual["exe"]):
            diffs.append("exe")
    return diffs


def wait_gone(pid, timeout, proc_root=PROC, interval=0.05, start_time=None):
    """Wait until PID is gone from /proc (or holds another process); True when it is."""
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        st = read_stat(pid, proc_root)
        if st is None or (start_time is not None and st["start_time"] != int(start_time)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_state(pid, words, timeout, proc_root=PROC, interval=0.02):
    """Wait until process_state(pid) is one of ``words``; return the last state seen."""
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        now = process_state(pid, proc_root)
        if now in words or time.monotonic() >= deadline:
            return now
        time.sleep(interval)


def send_signal(pid, sig, start_time=None, proc_root=PROC):
    """Signal PID, treating 'already gone' as done; False when nothing was signalled.

    Where the kernel offers pidfds (Linux >= 5.3, Python >= 3.9), the process
    is pinned first with ``pidfd_open`` and its start time checked through
    that pin, then signalled with ``pidfd_send_signal``: if PID was reused
    since the caller checked who holds it, the pidfd names the new holder,
    whose start time differs, and nothing is sent. Without pidfds, ``os.kill``
    right after the same check.
    """
    pid = int(pid)
    try:
        pidfd = _pidfd_open(pid)
    except ProcessLookupError:
        return False
    if pidfd is None:
        if start_time is not None and not _started_at(pid, start_time, proc_root):
            return False
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False
    try:
        # The pidfd pins the process: /proc/PID read now is that process, or it is gone.
        if start_time is not None and not _started_at(pid, start_time, proc_root):
            return False
        try:
            signal.pidfd_send_signal(pidfd, sig)
            return True
        except ProcessLookupError:
            return False
    finally:
        os.close(pidfd)


def _pidfd_open(pid):
    """A pidfd for PID, or None when the kernel or Python has none; ProcessLookupError when PID is gone."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None or not hasattr(signal, "pidfd_send_signal"):
        return None
    try:
        return opener(pid)
    except ProcessLookupError:
        raise
    except OSError:
        return None  # ENOSYS: a kernel without pidfds


def _started_at(pid, start_time, proc_root):
    st = read_stat(pid, proc_root)
    return st is not None and st["start_time"] == int(start_time)


SIGNALS = {"running": signal.SIGCONT, "stopped": signal.SIGSTOP, "killed": signal.SIGKILL}
