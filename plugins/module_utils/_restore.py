# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Restore a checkpoint, verified before and after.

Before criu runs, nothing is touched until every read-only check passed: the
manifest is complete, every image has its recorded size and sha256, every
binary on this host has the checksum recorded at dump time, regular stdio
files opened without O_APPEND have their recorded size, and the PID is free
(a zombie or exiting holder is waited for, a live one is named and refused).

criu always runs detached (``-d``; without it criu blocks until the
application exits and reports 0 even when it died), with its own work
directory and a ``-v4`` log next to the images.  Success is then verified, not
assumed: the PID must still be alive after ``settle`` seconds (a process whose
stdout was a pipe to a reader outside the checkpoint restores with rc 0 and
dies a moment later), running the recorded executable (sha256) with the
recorded command line.  Only then is the restore record written.

Public API (used by plugins/modules/restore.py, and by _process_state for the checkpoint
and the record a process is named by):

* :func:`restore` -- the whole operation, returns the module result.
* :func:`load_manifest`, :func:`read_record` -- the checkpoint and the record.
* :func:`precheck_problems` -- every read-only verification, as sentences.
* :func:`restore_args` -- criu's arguments for a manifest and options.
* :func:`already_restored` -- the idempotence test.
* :func:`explain_death` -- why a restored process may have died, from the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _checksum
from ansible_collections.ckpt.criu.plugins.module_utils import _criu
from ansible_collections.ckpt.criu.plugins.module_utils import _identity
from ansible_collections.ckpt.criu.plugins.module_utils import _manifest
from ansible_collections.ckpt.criu.plugins.module_utils import _unit
from ansible_collections.ckpt.criu.plugins.module_utils import _netaddr
from ansible_collections.ckpt.criu.plugins.module_utils import _prefault
from ansible_collections.ckpt.criu.plugins.module_utils import _safedir
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

LOG_NAME = "restore.log"
# Written into images_dir by a restore that waits for its checkpoint, once its
# prefault is done: a migration freezes the source only after it appears, so the
# touching never competes with the dump for the CPU and memory bandwidth.
READY_NAME = _manifest.PRIVATE_PREFIX + "restore-ready"
# Written into images_dir by a migration's rollback: a restore still waiting for its
# checkpoint ends at once (and frees its prefault memory), even when the directory
# itself cannot be removed.
ABORT_NAME = _manifest.PRIVATE_PREFIX + "abort"
SCHEMA = 1
DEFAULT_TIMEOUT_BASE = 30.0
DEFAULT_TIMEOUT_RATE = float(16 << 20)  # bytes per second of the default timeout


class RestoreError(_criu.CriuError):
    """A refused or failed restore, with extra result keys for fail_json."""

    def __init__(self, msg, details=None, **kwargs):
        super(RestoreError, self).__init__(msg, **kwargs)
        self.details = details or {}

    def to_fail_kwargs(self):
        kw = super(RestoreError, self).to_fail_kwargs()
        for key, value in self.details.items():
            kw.setdefault(key, value)
        return kw


# ------------------------------------------------------------------ helpers

def _first_problem_msg(prefix, problems):
    if len(problems) == 1:
        return "%s: %s" % (prefix, problems[0])
    return "%s: %s (and %d more: %s)" % (prefix, problems[0], len(problems) - 1, "; ".join(problems[1:4]))


# ----------------------------------------------------------------- manifest

def manifest_problems(manifest):
    """Why a parsed manifest is not a complete schema-1 checkpoint we can restore ([] when it is)."""
    problems = _manifest.validate(manifest)
    if problems:
        return problems
    if not isinstance(manifest["process"].get("cmdline"), list):
        problems.append("the manifest has no process.cmdline")
    for img in manifest["images"]:
        name = img["name"]
        if not name or os.path.isabs(name) or ".." in name.split("/"):
            problems.append("the manifest lists an image with an invalid name %r" % (name,))
            break
    return problems


def load_manifest(images_dir):
    """(manifest, sha256 of its bytes); RestoreError when there is no complete checkpoint."""
    prefix = "no complete checkpoint in %s" % images_dir
    if not os.path.isdir(images_dir):
        raise RestoreError("%s: the directory does not exist" % prefix)
    try:
        loaded = _manifest.load_manifest_bytes(images_dir)
    except _manifest.ManifestError as exc:
        raise RestoreError("%s: %s" % (prefix, exc))
    if loaded is None:
        raise RestoreError("%s: %s is missing (the dump did not finish, or this is not a checkpoint "
                           "written by ckpt.criu.dump)" % (prefix, _manifest.MANIFEST_NAME))
    manifest, raw = loaded
    problems = manifest_problems(manifest)
    if problems:
        raise RestoreError(_first_problem_msg(prefix, problems), details={"problems": problems})
    return manifest, hashlib.sha256(raw).hexdigest()


def wait_for_manifest(images_dir, timeout, interval=0.01, on_arrival=None, known=None):
    """Wait up to ``timeout`` seconds for a checkpoint to arrive in images_dir.

    A migration starts the destination's restore before the source is frozen,
    so that the restore begins the instant the source's dump has sent the
    manifest (renamed into place atomically) and the images it lists are all
    here: sent in one rsync with small images, the manifest may land before
    them (rsync sends in name order), so the wait goes on until every listed
    image has arrived whole; images still missing when the time is up are left
    to the verification, which names them. Returns the seconds waited. Raises
    RestoreError if the directory disappears (the migration was rolled back)
    or nothing arrives in time. ``on_arrival()`` is called once,
    as soon as the first image (a page server's pages, an rsync temporary
    file) appears, which is just after the source froze. With ``known`` (a
    dict), the images that arrive are hashed while it waits
    (:func:`_manifest.hash_arrived`), one between two looks for the manifest.
    """
    t0 = time.monotonic()
    path = os.path.join(images_dir, _manifest.MANIFEST_NAME)
    abort = os.path.join(images_dir, ABORT_NAME)
    while not os.path.exists(path):
        _check_not_rolled_back(images_dir, abort)
        if time.monotonic() - t0 >= timeout:
            raise RestoreError("no checkpoint arrived in %s within %.0f s (wait_for_manifest); the dump on "
                               "the source failed or never started" % (images_dir, timeout))
        if on_arrival is not None and _images_arriving(images_dir):
            on_arrival()
            on_arrival = None
        if known is not None and _manifest.hash_arrived(images_dir, known, _pages_written_in_place(images_dir)):
            continue
        time.sleep(interval)
    if on_arrival is not None:
        on_arrival()
    manifest = _manifest.read_record(path) or {}
    while _manifest.images_to_come(manifest, images_dir) and time.monotonic() - t0 < timeout:
        _check_not_rolled_back(images_dir, abort)
        if known is not None and _manifest.hash_arrived(images_dir, known, _pages_written_in_place(images_dir)):
            continue
        time.sleep(interval)
    return time.monotonic() - t0


def _check_not_rolled_back(images_dir, abort):
    if not os.path.isdir(images_dir) or os.path.lexists(abort):
        raise RestoreError("no checkpoint arrived: %s was %s while this restore waited for it "
                           "(the migration was rolled back)" % (
                               images_dir, "removed" if not os.path.isdir(images_dir) else "marked aborted"),
                           details={"aborted": True})


def _pages_written_in_place(images_dir):
    """Name patterns of images still being written under their own name: a
    page server's pages, when one serves this directory."""
    if os.path.lexists(os.path.join(images_dir, _manifest.PAGE_SERVER_RECORD_NAME)):
        return ("pages-*.img",)
    return ()


def _images_arriving(images_dir):
    try:
        names = os.listdir(images_dir)
    except OSError:
        return False
    return any(not _manifest.is_own_file(n) for n in names)


def read_record(images_dir):
    """The restore record in images_dir, or None."""
    return _manifest.read_record(os.path.join(images_dir, _manifest.RESTORE_RECORD_NAME))


# ----------------------------------------------------------- verifications

def image_problems(manifest, images_dir, known=None):
    """Every image must exist with its recorded size and sha256 (page-server images must
    exist); an ``*.img`` the manifest does not list is a problem too."""
    return _manifest.verify_images(manifest, images_dir, check_remote=True, extra=True, known=known)


def _binary_entries(manifest):
    """Binary records of the manifest worth checking here (exe first, each path once)."""
    binaries = manifest.get("binaries") or {}
    seen, out = set(), []
    for entry in [binaries.get("exe")] + list(binaries.get("files") or []):
        if not isinstance(entry, dict) or not entry.get("path") or not entry.get("sha256"):
            continue
        path = entry["path"]
        # A file deleted before the dump is carried in the images by criu (ghost file).
        if path in seen or not path.startswith("/") or path.endswith(" (deleted)") or entry.get("deleted"):
            continue
        seen.add(path)
        out.append(entry)
    return out


def binary_problems(manifest):
    """The executable and every mapped file must be here with the recorded sha256."""
    problems, actual, expected = [], [], []
    for entry in _binary_entries(manifest):
        path = entry["path"]
        if not os.path.lexists(path):
            problems.append("binary %s that the process ran is missing on this host; install the same "
                            "file there" % path)
            continue
        try:
            actual.append(_checksum.file_record(path))
        except CkptError as exc:
            problems.append("binary %s cannot be verified: %s" % (path, exc.msg))
            continue
        expected.append(entry)
    if expected:
        _matches, mismatches = _checksum.compare(expected, actual)
        for m in mismatches:
            problems.append("binary %s" % m["msg"] if m["msg"].startswith("/") else m["msg"])
    return problems


def stdio_file_problems(manifest):
    """Regular files opened without O_APPEND must be here with the recorded size
    and, when recorded, mode (criu compares the whole st_mode)."""
    problems = []
    for entry in manifest.get("stdio_files") or []:
        path, want = entry.get("path"), entry.get("size")
        what = "fd %s of pid %s" % (entry.get("fd"), entry.get("pid"))
        try:
            st = os.stat(path)
        except (OSError, TypeError):
            problems.append("%s was the file %s (opened without O_APPEND); it is missing on this host"
                            % (what, path))
            continue
        if want is not None and st.st_size != want:
            problems.append("%s was the file %s (opened without O_APPEND) of %d bytes; it is %d bytes now "
                            "and criu refuses a file of another size: put the file back as it was at "
                            "dump time" % (what, path, want, st.st_size))
        elif entry.get("mode") is not None and st.st_mode != entry["mode"]:
            problems.append("%s was the file %s (opened without O_APPEND) with mode 0%o; it has mode 0%o now "
                            "and criu refuses a file of another mode: chmod it back as it was at dump time"
                            % (what, path, entry["mode"], st.st_mode))
    return problems


def dumped_tree(manifest, images_dir):
    """Every process the restore recreates: [{pid, ppid, threads, comm, start_time}], root first.

    Read from the images (``pstree.img``: its PIDs and thread IDs are the ones criu recreates),
    else from the manifest's ``tree``, else the root alone. ``threads`` is [] when unknown.
    """
    root = manifest["process"]["pid"]
    recorded = dict((t.get("pid"), t) for t in manifest.get("tree") or [] if isinstance(t, dict))
    tree = _criu.read_pstree(images_dir)
    if not tree:
        tree = [{"pid": p, "ppid": None, "threads": list(t.get("threads") or [])} for p, t in recorded.items()]
    if not any(t["pid"] == root for t in tree):
        tree.insert(0, {"pid": root, "ppid": None, "threads": []})
    tree.sort(key=lambda t: t["pid"] != root)
    for t in tree:
        rec = recorded.get(t["pid"]) or (manifest["process"] if t["pid"] == root else {})
        t["comm"] = rec.get("comm")
        t["start_time"] = rec.get("start_time")
    return tree


def tree_ids(tree):
    """[(id, process entry, is_thread)] of every PID and thread ID of the tree, root first."""
    out = []
    for t in tree:
        out.append((t["pid"], t, False))
        out.extend((tid, t, True) for tid in t.get("threads") or [] if tid != t["pid"])
    return out


def _member(entry, is_thread, tid):
    what = "process %d (%s)" % (entry["pid"], entry.get("comm") or "?")
    return ("thread %d of %s" % (tid, what)) if is_thread else what


def tree_pid_problems(manifest, tree, pid_wait, proc_root=_identity.PROC):
    """(problems, holders): a sentence for every PID or thread ID of the tree that is taken here.

    The root's PID gets pid_problem's sentences; every other ID names the member of the
    tree that needs it and the process that holds it. Zombies are waited for up to
    ``pid_wait`` seconds in all.
    """
    root = manifest["process"]["pid"]
    deadline = time.monotonic() + max(0.0, pid_wait)
    problems, holders = [], []
    recorded = dict((t["pid"], t) for t in tree)
    for tid, entry, is_thread in tree_ids(tree):
        holder = pid_holder(manifest, max(0.0, deadline - time.monotonic()), proc_root, pid=tid)
        if holder is None:
            continue
        holders.append(_identity.public(holder))
        if tid == root:
            problems.append(pid_problem(manifest, holder, pid_wait))
            continue
        needed = "%s of the checkpointed tree" % _member(entry, is_thread, tid)
        if holder["state"] in _identity.DEAD_STATES:
            problems.append("PID %d that the checkpoint needs (%s) is still held by a zombie after waiting %.1f s "
                            "(its parent, pid %s, has not reaped it); retry later or raise pid_wait"
                            % (tid, needed, pid_wait, holder.get("ppid")))
            continue
        rec = recorded.get(tid)
        if rec and not is_thread and rec.get("start_time") == holder.get("start_time") \
                and holder.get("boot_id") == (manifest.get("host") or {}).get("boot_id"):
            problems.append("%s still runs here as %s: kill the whole checkpointed tree first "
                            "(ckpt.criu.process_state state=killed with this checkpoint kills every member)"
                            % (needed[0].upper() + needed[1:], _identity.describe(holder)))
            continue
        problems.append("PID %d that the checkpoint needs (%s) is held by another live process, %s; stop it or "
                        "restore in another PID namespace" % (tid, needed, _identity.describe(holder)))
    return problems, holders


def pid_holder(manifest, pid_wait, proc_root=_identity.PROC, pid=None):
    """Wait for a zombie/exiting holder of the checkpoint's PID (or ``pid``); return a live one (or None)."""
    pid = manifest["process"]["pid"] if pid is None else pid
    deadline = time.monotonic() + max(0.0, pid_wait)
    while True:
        ident = _identity.read_identity(pid, proc_root)
        if ident is None:
            return None
        if ident["state"] not in _identity.DEAD_STATES:
            return ident
        if time.monotonic() >= deadline:
            return ident
        time.sleep(0.05)


def pid_problem(manifest, holder, pid_wait):
    """A sentence for a PID that is not free (holder from pid_holder), or None."""
    if holder is None:
        return None
    pid = manifest["process"]["pid"]
    if holder["state"] in _identity.DEAD_STATES:
        return ("PID %d that the checkpoint needs is still held by a zombie after waiting %.1f s "
                "(its parent, pid %s, has not reaped it); retry later or raise pid_wait"
                % (pid, pid_wait, holder.get("ppid")))
    original = manifest["process"]
    if not _identity.differences(original, holder):
        return ("the checkpointed process itself still runs here as %s (state %s; dumped with "
                "leave_running or leave_stopped): kill it first (ckpt.criu.process_state "
                "state=killed) or resume it to roll back" % (_identity.describe(holder),
                                                             _identity.state_word(holder["state"])))
    return ("PID %d that the checkpoint needs is held by another live process, %s; stop it or "
            "restore in another PID namespace" % (pid, _identity.describe(holder)))


def precheck_problems(manifest, images_dir, verify_images=True, verify_binaries=True, known=None):
    """Every file-level read-only verification (not the PID), as sentences.
    ``known``: images hashed while they arrived (:func:`wait_for_manifest`)."""
    problems = []
    if verify_images:
        problems.extend(image_problems(manifest, images_dir, known))
    if verify_binaries:
        problems.extend(binary_problems(manifest))
    problems.extend(stdio_file_problems(manifest))
    return problems


# -------------------------------------------------------------------- criu

def effective_options(manifest, params):
    """Restore options: the module's value when set, else the manifest's dump option."""
    dumped = manifest.get("options") or {}
    opts = {}
    for key in _criu.SHARED_OPTIONS:
        value = params.get(key)
        opts[key] = bool(dumped.get(key)) if value is None else bool(value)
    external = params.get("external")
    opts["external"] = list(dumped.get("external") or []) if external is None else list(external)
    opts["leave_stopped"] = bool(params.get("leave_stopped"))
    # The external plan the dump recorded: the unix sockets it dumped as external, by inode.
    opts["ext_unix_sk_inodes"] = [int(i) for i in dumped.get("ext_unix_sk_inodes") or []] \
        if opts["ext_unix_sk"] else []
    return opts


def inherit_plan(manifest, inherit_fd_file):
    """[(key, writes)] of the fds the restore must hand criu with --inherit-fd; RestoreError
    when the checkpoint has some and no replacement file is given."""
    recs = [r for r in (manifest.get("options") or {}).get("inherit_fds") or [] if isinstance(r, dict)]
    if not recs:
        return []
    if not inherit_fd_file:
        first = recs[0]
        raise RestoreError("the checkpoint's fd %s of PID %s was %s outside the checkpoint (dumped with inherit_fd): "
                           "the restore must hand it a replacement; set inherit_fd_file to the file the restored "
                           "process %s instead" % (first.get("fd"), first.get("pid"), first.get("key"),
                                                   "writes to" if first.get("writes") else "reads from"),
                           details={"inherit_fds": recs})
    return [(r["key"], bool(r.get("writes")), r.get("pid"), r.get("fd")) for r in recs]


def open_inherited(plan, path):
    """Open ``path`` once per planned fd (O_APPEND for writers); [(fd, key)]. Fds are above 2."""
    opened = []
    try:
        for key, writes, dummy_pid, dummy_fd in plan:
            flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT) if writes else os.O_RDONLY
            fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
            opened.append((fd, key))
    except OSError as exc:
        close_inherited(opened)
        raise RestoreError("cannot open inherit_fd_file %s for the restored process: %s"
                           % (path, exc.strerror or exc))
    return opened


def close_inherited(opened):
    for fd, dummy in opened:
        try:
            os.close(fd)
        except OSError:
            pass


def restore_args(images_dir, work_dir, pidfile, opts, inherited=()):
    """criu restore arguments (run_criu adds -o LOG -v4): always detached."""
    args = ["-d"] + _criu.dir_args(images_dir, work_dir) + ["--pidfile", pidfile]
    args.extend(_criu.flag_args(opts, _criu.SHARED_OPTIONS))
    args.extend(_criu.external_args(opts.get("external")))
    args.extend(_criu.inherit_fd_args(inherited))
    args.extend(_criu.flag_args(opts, ("leave_stopped",)))
    return args


# ----------------------------------------------------------- verification

def _fd_texts(manifest):
    """{fd: lower-case text of everything the manifest says about fds 0-2 of the root}."""
    pid = str(manifest["process"]["pid"])
    stdio = manifest.get("stdio") or {}
    fds = (manifest.get("fds") or {}).get(pid) or []
    out = {}
    for fd in ("0", "1", "2"):
        parts = []
        if stdio.get(fd) is not None:
            parts.append(json.dumps(stdio[fd]))
        for entry in fds:
            if isinstance(entry, dict) and str(entry.get("fd")) == fd:
                parts.append(json.dumps(entry))
        out[fd] = " ".join(parts).lower()
    return out


def explain_death(manifest):
    """Why a process that criu restored may have died, from its recorded stdio."""
    names = {"0": "stdin", "1": "stdout", "2": "stderr"}
    texts = _fd_texts(manifest)
    for fd in ("1", "2", "0"):
        text = texts[fd]
        if "pipe" in text:
            return ("its %s was a pipe to a process outside the checkpoint, which criu cannot "
                    "reconnect: the first write hits a pipe without a reader (SIGPIPE); point the "
                    "workload's output to a file or /dev/null before checkpointing it, or checkpoint "
                    "the reader together with it"
                    % names[fd])
        if "socket" in text or "unix" in text:
            return ("its %s was a socket to a peer outside the checkpoint, which is gone after the "
                    "restore; point the workload's output to a file or /dev/null" % names[fd])
        if "tty" in text or "pty" in text:
            return ("its %s was a terminal that does not exist after the restore; run the workload "
                    "without a terminal" % names[fd])
    return ("the manifest records nothing about its stdio that explains it; read %s and the "
            "application's own logs" % LOG_NAME)


def _exe_sha256(pid, proc_root=_identity.PROC):
    try:
        return _checksum.sha256_file(os.path.join(proc_root, str(pid), "exe"))
    except (IOError, OSError):
        return None


def _fd_kind(target):
    """What an fd points at, comparable across a restore: the path of a file
    (kept), or only the kind of a pipe/socket/anon inode (their inode numbers
    are new after a restore); None for a closed fd."""
    if not target:
        return None
    if target.startswith("/"):
        return target
    return target.split(":", 1)[0]


def stdio_problems(manifest, pid, proc_root=_identity.PROC, replaced=None):
    """Sentences for fds 0-2 of the restored PID that differ from the checkpoint's
    (``replaced``: {fd: path} handed to the restore with --inherit-fd instead)."""
    root = str(manifest["process"]["pid"])
    entries = [e for e in (manifest.get("fds") or {}).get(root) or []
               if isinstance(e, dict) and e.get("fd") in (0, 1, 2)]
    if not entries:
        return []  # the manifest recorded no stdio (nothing to compare)
    recorded = dict((e["fd"], e.get("target")) for e in entries)
    recorded.update(replaced or {})
    names = {0: "stdin", 1: "stdout", 2: "stderr"}
    problems = []
    for fd in (0, 1, 2):
        try:
            have = os.readlink(os.path.join(proc_root, str(pid), "fd", str(fd)))
        except OSError:
            have = None
        want = recorded.get(fd)
        if _fd_kind(have) != _fd_kind(want):
            problems.append("fd %d (%s) of restored process %d is %s, the checkpoint recorded %s"
                            % (fd, names[fd], pid, have or "closed", want or "closed"))
    return problems


def tree_missing(tree, proc_root=_identity.PROC, threads=True):
    """Sentences for members of the tree (and, with ``threads``, thread IDs) that are not back here."""
    missing = []
    for tid, entry, is_thread in tree_ids(tree):
        if is_thread and not threads:
            continue
        if is_thread:
            task_dir = os.path.join(proc_root, str(entry["pid"]), "task")
            if not os.path.isdir(task_dir) or os.path.isdir(os.path.join(task_dir, str(tid))):
                continue
            missing.append("%s is not back" % _member(entry, True, tid))
            continue
        st = _identity.read_stat(tid, proc_root)
        if st is None or st["state"] in _identity.DEAD_STATES:
            missing.append("%s is not running after the restore (%s)"
                           % (_member(entry, False, tid), "gone" if st is None else "a zombie"))
        elif entry.get("comm") and st.get("comm") != entry["comm"]:
            missing.append("PID %d runs %s, the checkpoint's %s does not"
                           % (tid, st.get("comm"), _member(entry, False, tid)))
    return missing


def verify_restored(manifest, settle, leave_stopped, proc_root=_identity.PROC, interval=0.05, tree=None,
                    replaced=None):
    """Watch the restored PID for ``settle`` seconds, then check exe, cmdline and stdio; with
    ``tree`` (from dumped_tree), every process of the tree and its threads must be back too.

    Returns (verified dict, identity, problem sentence or None).
    """
    pid = manifest["process"]["pid"]
    want_exe = manifest["binaries"]["exe"]["sha256"]
    start = time.monotonic()
    deadline = start + max(0.0, settle)
    first = _identity.read_identity(pid, proc_root)
    verified = {"settle": settle, "alive": False, "state": None, "exe_sha256": None,
                "exe_matches": False, "cmdline_matches": False, "stdio_matches": False,
                "processes": None, "threads": None, "tree_matches": None}
    if first is None or first["state"] in _identity.DEAD_STATES:
        return verified, first, ("criu restore exited 0 but process %d died within %.2f s of the restore (dead at the "
                                 "first look); %s" % (pid, time.monotonic() - start, explain_death(manifest)))
    # Threads are counted at the first look: criu recreated them all, a program may end some later.
    thread_gaps = tree_missing(tree, proc_root) if tree else []
    while True:
        now = time.monotonic()
        st = _identity.read_stat(pid, proc_root)
        if st is None or st["state"] in _identity.DEAD_STATES or st["start_time"] != first["start_time"]:
            return verified, first, ("criu restore exited 0 but process %d died within %.1f s; %s"
                                     % (pid, now - start, explain_death(manifest)))
        if leave_stopped and st["state"] not in _identity.STOPPED_STATES:
            verified["state"] = _identity.state_word(st["state"])
            return verified, first, ("process %d was restored with leave_stopped but is %s, not stopped"
                                     % (pid, verified["state"]))
        if now >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - now)))
    ident = _identity.read_identity(pid, proc_root)
    if ident is None or ident["state"] in _identity.DEAD_STATES:
        return verified, ident, ("criu restore exited 0 but process %d died within %.1f s; %s"
                                 % (pid, settle, explain_death(manifest)))
    verified["alive"] = True
    verified["state"] = _identity.state_word(ident["state"])
    verified["exe_sha256"] = _exe_sha256(pid, proc_root)
    verified["exe_matches"] = verified["exe_sha256"] == want_exe
    verified["cmdline_matches"] = _identity.cmdline_matches(manifest["process"], ident.get("cmdline"))
    if not verified["exe_matches"]:
        return verified, ident, ("restored process %d runs an executable whose sha256 (%s) is not the "
                                 "checkpoint's (%s)" % (pid, verified["exe_sha256"], want_exe))
    if not verified["cmdline_matches"]:
        return verified, ident, ("restored process %d has another command line than the checkpoint recorded "
                                 "(now %s)" % (pid, _identity.describe(ident)))
    problems = stdio_problems(manifest, pid, proc_root, replaced)
    verified["stdio_matches"] = not problems
    if problems:
        return verified, ident, "; ".join(problems)
    if tree:
        gone = tree_missing(tree, proc_root, threads=False)
        gaps = gone + [t for t in thread_gaps if t not in gone and "thread" in t]
        verified["processes"] = len(tree)
        verified["threads"] = sum(max(1, len(t.get("threads") or [])) for t in tree)
        verified["tree_matches"] = not gaps
        if gaps:
            more = "; and %d more" % (len(gaps) - 5) if len(gaps) > 5 else ""
            return verified, ident, ("process %d is back but its tree is not whole: %s%s"
                                     % (pid, "; ".join(gaps[:5]), more))
    return verified, ident, None


def already_restored(manifest, manifest_sha256, record, proc_root=_identity.PROC):
    """(True, identity) when the record's process runs here, same identity, exe and cmdline."""
    if not record or record.get("manifest_sha256") != manifest_sha256:
        return False, None
    rec_proc = record.get("process") or {}
    pid = manifest["process"]["pid"]
    if rec_proc.get("pid") != pid:
        return False, None
    ident = _identity.read_identity(pid, proc_root)
    if ident is None or ident["state"] in _identity.DEAD_STATES:
        return False, ident
    if _identity.differences({k: rec_proc.get(k) for k in _identity.IDENTITY_KEYS}, ident):
        return False, ident
    if not _identity.cmdline_matches(manifest["process"], ident.get("cmdline")):
        return False, ident
    if _exe_sha256(pid, proc_root) != manifest["binaries"]["exe"]["sha256"]:
        return False, ident
    return True, ident


def make_record(manifest_sha256, ident, argv, duration, stats, verified, proc_root=_identity.PROC):
    return {
        "schema": SCHEMA,
        "manifest_sha256": manifest_sha256,
        "host": _manifest.host_identity(proc_root=proc_root),
        "restored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "process": _identity.private({"pid": ident["pid"], "start_time": ident["start_time"],
                                      "boot_id": ident["boot_id"], "exe": ident.get("exe"),
                                      "cmdline": ident.get("cmdline")}),
        "criu": {"argv": argv, "log": LOG_NAME, "duration": round(duration, 4), "stats": stats},
        "verified": verified,
    }


# ------------------------------------------------------------------ restore

def mark_ready(path, touched_bytes):
    """Write the ready marker (best effort: it only lets a caller freeze its source earlier)."""
    try:
        _manifest.write_json_atomic(path, {"pid": os.getpid(), "at": round(time.time(), 6),
                                           "prefault_bytes": touched_bytes})
    except OSError:
        pass


def clear_ready(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def restore(params, check_mode=False, proc_root=_identity.PROC):
    """Restore the checkpoint in params['images_dir']; return the module result.

    Raises RestoreError / CriuError with a one-sentence cause on any failure.
    """
    prefault = ready = None
    if params.get("wait_for_manifest") and not check_mode and os.geteuid() == 0:
        if os.path.isdir(params["images_dir"]):
            hold_trusted(os.path.abspath(params["images_dir"])).close()  # the rule before any write
        ready = os.path.join(os.path.abspath(params["images_dir"]), READY_NAME)
        clear_ready(ready)
        if params.get("prefault"):
            prefault = _prefault.Prefault(params["prefault"], on_done=lambda pf: mark_ready(ready, pf.touched))
        else:
            mark_ready(ready, 0)
    try:
        return _restore(params, check_mode, proc_root, prefault)
    finally:
        if prefault is not None:
            prefault.release()
        if ready is not None:
            clear_ready(ready)


def _restore(params, check_mode, proc_root, prefault):
    t0 = time.monotonic()
    images_dir = os.path.abspath(params["images_dir"])
    if os.geteuid() != 0:
        raise RestoreError("restoring a checkpoint needs root, this runs as uid %d; use become: true"
                           % os.geteuid())
    service = params.get("service_address")
    if service:
        try:
            _netaddr.parse_service_address(service.get("address"), service.get("interface"))
        except _netaddr.AddressError as exc:
            raise RestoreError("refusing to restore %s: %s" % (images_dir, exc.msg))
    waited = None
    known = {}
    if params.get("wait_for_manifest") and not check_mode:
        waited = wait_for_manifest(images_dir, params["wait_for_manifest"],
                                   on_arrival=prefault.arrival if prefault is not None else None,
                                   known=known if params.get("verify_images", True) else None)
        t0 = time.monotonic()
    held = hold_trusted(images_dir)
    try:
        out = _restore_held(params, check_mode, proc_root, prefault, held, t0, waited, known)
    finally:
        held.close()
    if params.get("remove_images") and not check_mode:
        out.update(remove_images(images_dir))
        out["msg"] += ("; its images were removed" if out["images_removed"] else
                       "; its images could not be removed: %s" % out["images_remove_error"])
    return out


def remove_images(images_dir):
    """Remove the images of a verified restore: the checkpoint is used up. The
    process runs, so a failure is returned (``images_remove_error``), not raised."""
    try:
        _safedir.remove_dir(images_dir)
    except _safedir.UntrustedDirError as exc:
        return {"images_removed": False, "images_remove_error": exc.msg}
    except OSError as exc:
        return {"images_removed": False,
                "images_remove_error": "cannot remove %s: %s" % (images_dir, exc.strerror or exc)}
    return {"images_removed": True}


def hold_trusted(images_dir):
    """images_dir held open after the trust rule (_safedir); RestoreError naming the broken rule."""
    try:
        return _safedir.hold(images_dir)
    except _safedir.UntrustedDirError as exc:
        raise RestoreError("refusing to restore %s: %s" % (images_dir, exc.msg))
    except FileNotFoundError:
        raise RestoreError("no complete checkpoint in %s: the directory does not exist" % images_dir)
    except OSError as exc:
        raise RestoreError("cannot open %s: %s" % (images_dir, exc.strerror or exc))


def default_timeout(manifest):
    """Seconds a restore of this checkpoint may take before criu is killed:
    30 s plus 1 s per 16 MiB of images (criu restores hundreds of MB/s here)."""
    return round(DEFAULT_TIMEOUT_BASE + float(_manifest.checkpoint_bytes(manifest)) / DEFAULT_TIMEOUT_RATE, 1)


def _restore_held(params, check_mode, proc_root, prefault, held, t0, waited, known):
    images_dir = held.path
    service = params.get("service_address")     # validated by _restore
    manifest, manifest_sha = load_manifest(images_dir)
    pid = manifest["process"]["pid"]
    log_path = os.path.join(images_dir, LOG_NAME)
    record = read_record(images_dir)

    done, ident = already_restored(manifest, manifest_sha, record, proc_root)
    if done:
        return {"changed": False, "pid": pid, "process": _identity.public(ident),
                "restore_record": record, "verified": record.get("verified"),
                "log_path": log_path, "criu_cmd": (record.get("criu") or {}).get("argv"),
                "timings": {"criu_duration": None, "stats": {}, "verify": None,
                            "total": round(time.monotonic() - t0, 4)},
                "msg": "process %d from %s is already restored and running here" % (pid, images_dir)}

    tc = time.monotonic()
    problems = precheck_problems(manifest, images_dir, params.get("verify_images", True),
                                 params.get("verify_binaries", True), known=known)
    if problems:
        raise RestoreError(_first_problem_msg("refusing to restore %s" % images_dir, problems),
                           details={"problems": problems, "pid": pid})
    pid_wait = float(params.get("pid_wait") or 0)
    tree = dumped_tree(manifest, images_dir)
    taken, holders = tree_pid_problems(manifest, tree, pid_wait, proc_root)
    if taken:
        raise RestoreError(_first_problem_msg("refusing to restore %s" % images_dir, taken),
                           details={"problems": taken, "pid": pid, "holder": holders[0],
                                    "holders": holders})
    unit = unit_target(manifest, params, images_dir)
    checks_duration = time.monotonic() - tc

    criu = _criu.find_criu(params.get("criu_path"))
    opts = effective_options(manifest, params)
    inherit = inherit_plan(manifest, params.get("inherit_fd_file"))
    if check_mode:
        return {"changed": True, "pid": pid, "process": None, "restore_record": None,
                "verified": None, "log_path": log_path, "criu_cmd": None, "options": opts,
                "timings": {"criu_duration": None, "stats": {}, "verify": None,
                            "checks": round(checks_duration, 4),
                            "total": round(time.monotonic() - t0, 4)},
                "msg": "process %d would be restored from %s" % (pid, images_dir)}

    if waited is not None and os.path.lexists(os.path.join(images_dir, ABORT_NAME)):
        # The migration's rollback marked it while the images were verified: its source
        # resumes, so nothing is restored. Once criu restore has begun, the marker is not
        # looked at: the rollback waits for this restore's verdict.
        raise RestoreError("the migration of %s was rolled back before this restore began (%s is there): "
                           "nothing was restored" % (images_dir, ABORT_NAME), details={"pid": pid, "aborted": True})
    prefaulted = prefault.release() if prefault is not None else None
    timeout = params.get("timeout") or default_timeout(manifest)
    moved = None
    if service:
        # The source took it off before it sent the manifest; criu binds the sockets to it.
        moved = _claim(service, images_dir)
    try:
        held.check_path()
        held.fresh(LOG_NAME)
    except _safedir.UntrustedDirError as exc:
        raise RestoreError("refusing to restore %s: %s" % (images_dir, exc.msg))
    work_dir = tempfile.mkdtemp(prefix="ckpt-restore-")
    inherited = open_inherited(inherit, params.get("inherit_fd_file")) if inherit else []
    try:
        if unit:
            # systemd starts the unit with criu restore as its ExecStart and adopts the process.
            if inherited:
                raise RestoreError("refusing to restore %s under unit %s: the checkpoint needs fds handed to "
                                   "criu (inherit_fd), which a restore started by systemd cannot pass; "
                                   "restore it with as_unit=false" % (images_dir, unit))
            pidfile = _unit.pidfile_for(unit)
            args = restore_args(images_dir, work_dir, pidfile, opts) + \
                _unit.inherit_args(manifest["unit"].get("stdio_sockets"))
            result = _unit.restore_in_unit(unit, criu, args, log_path, timeout)
        else:
            pidfile = os.path.join(work_dir, "restore.pid")
            args = restore_args(images_dir, work_dir, pidfile, opts, inherited)
            result = _criu.run_criu(criu, "restore", args, log_path, timeout=timeout,
                                    pass_fds=[fd for fd, dummy in inherited])
        # Wall clock of the moment the process runs again (criu restore -d has
        # returned): with the dump's frozen_at, the downtime of a migration.
        resumed_at = time.time()
        if result.timed_out:
            raise RestoreError("criu restore of %s did not finish within %.0f s (%s) and was killed, with every "
                               "process it had restored so far; see %s" % (
                                   images_dir, timeout, "the timeout option" if params.get("timeout") else
                                   "the default for %d bytes of images" % _manifest.checkpoint_bytes(manifest),
                                   log_path),
                               rc=result.rc, log_path=log_path, log_errors=result.log_errors, argv=result.argv,
                               details={"pid": pid, "timeout": timeout})
        result.raise_for_failure("criu restore of %s failed" % images_dir)
        # criu writes stats-restore into its work directory (-W), not the images.
        stats = _criu.read_stats(work_dir, "restore")
    finally:
        close_inherited(inherited)
        shutil.rmtree(work_dir, ignore_errors=True)
    if moved is not None:
        # Only now that the process owns its sockets here: a peer that learnt the new
        # MAC address earlier could have been answered with a reset.
        moved["announced"] = _announce(service, images_dir)

    tv = time.monotonic()
    keys = set(rec[0] for rec in inherit)
    root_fds = (manifest.get("fds") or {}).get(str(manifest["process"]["pid"])) or []
    replaced = dict((e["fd"], os.path.abspath(params["inherit_fd_file"])) for e in root_fds
                    if isinstance(e, dict) and e.get("fd") in (0, 1, 2) and e.get("target") in keys)
    verified, ident, problem = verify_restored(manifest, float(params.get("settle") or 0),
                                               opts["leave_stopped"], proc_root, tree=tree, replaced=replaced)
    verify_duration = time.monotonic() - tv
    timings = {"criu_duration": round(result.duration, 4), "stats": stats,
               "verify": round(verify_duration, 4), "checks": round(checks_duration, 4),
               "total": round(time.monotonic() - t0, 4), "resumed_at": round(resumed_at, 6),
               "waited_for_manifest": None if waited is None else round(waited, 4),
               "hashed_while_waiting": len(known),
               "prefault": prefaulted}
    if problem and ident is not None and verified.get("alive") and not verified.get("exe_matches"):
        # It runs code other than the checkpointed one (verify_binaries off, or the file changed
        # since): it is never left running.
        killed = _criu.kill_tree(pid)
        problem += ("; it was killed (with %d descendants) rather than left running code that is not the "
                    "checkpoint's%s" % (len(killed), "" if params.get("verify_binaries", True) else
                                        " (verify_binaries was off, so this was not caught before the restore)"))
    if problem:
        if unit:
            _unit.release(unit)
        raise RestoreError(problem, rc=result.rc, log_path=log_path, log_errors=result.log_errors,
                           argv=result.argv,
                           details={"verified": verified, "pid": pid, "timings": timings,
                                    "process": _identity.public(ident)})
    unit_state = None
    if unit:
        try:
            unit_state = dict(_unit.finish_restored(unit, pid), name=unit,
                              start_seconds=result.unit_start.get("start_seconds"))
        except _unit.UnitError as exc:
            raise RestoreError("process %d restored from %s, but %s" % (pid, images_dir, exc.msg),
                               details={"pid": pid, "unit": unit})
    rec = make_record(manifest_sha, ident, result.argv, result.duration, stats, verified, proc_root)
    _manifest.write_json_atomic(os.path.join(images_dir, _manifest.RESTORE_RECORD_NAME), rec)
    timings["total"] = round(time.monotonic() - t0, 4)
    out = {"changed": True, "pid": pid, "process": _identity.public(ident), "restore_record": rec,
           "verified": verified, "log_path": log_path, "criu_cmd": result.argv, "options": opts,
           "timings": timings,
           "msg": "process %d restored from %s and verified after %.1f s" % (
               pid, images_dir, verified["settle"])}
    if unit_state:
        out["unit"] = unit_state
        out["msg"] += "; unit %s is active with it as MainPID" % unit
    if moved is not None:
        out["service_address"] = moved
    return out


def unit_target(manifest, params, images_dir):
    """The unit to restore the process under (None for a plain restore).

    A checkpoint of a unit comes back under that unit when the unit exists
    here with the same unit file and is not running a copy of its own."""
    rec = manifest.get("unit")
    if not rec or not params.get("as_unit", True):
        return None
    name = rec["name"]
    try:
        here = _unit.info(name)
        digest = _unit.unit_record(here)["files_sha256"]
    except _unit.UnitError as exc:
        raise RestoreError("refusing to restore %s under unit %s: %s (or set as_unit=false to restore the "
                           "process outside systemd)" % (images_dir, name, exc.msg),
                           details={"unit": name})
    if digest != rec.get("files_sha256"):
        raise RestoreError("refusing to restore %s under unit %s: the unit's files here (%s) differ from the "
                           "checkpointed host's (%s); install the same unit file and drop-ins" % (
                               images_dir, name, ", ".join(_unit.unit_record(here)["files"]),
                               ", ".join(rec.get("files") or [])),
                           details={"unit": name})
    if here["active_state"] in ("active", "activating", "reloading") and here["main_pid"] > 0:
        raise RestoreError("refusing to restore %s: unit %s is already running here (MainPID %d), a fresh "
                           "copy and not the checkpoint; stop it (systemctl stop %s) and restore again" % (
                               images_dir, name, here["main_pid"], name),
                           details={"unit": name, "fresh_copy": True, "main_pid": here["main_pid"]})
    return name


def _claim(service, images_dir):
    try:
        return _netaddr.place(service, present=True)
    except _netaddr.AddressError as exc:
        raise RestoreError("refusing to restore %s: the service address could not be put on this host: %s"
                           % (images_dir, exc.msg), rc=exc.rc, argv=exc.argv, stderr=exc.stderr)


def _announce(service, images_dir):
    """Frames sent; a failure is reported, not fatal: the process runs, and peers find the
    address by ARP once their neighbour entry expires."""
    try:
        return _netaddr.announce(*_netaddr.parse_service_address(service["address"], service["interface"]))
    except _netaddr.AddressError as exc:
        return "restored %s, but the service address was not announced (%s); peers reach it once their " \
               "ARP entry for it expires" % (images_dir, exc.msg)
