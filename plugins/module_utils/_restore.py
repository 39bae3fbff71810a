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

Public API (used by plugins/modules/restore.py and process_state.py):

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
import threading
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _checksum
from ansible_collections.ckpt.criu.plugins.module_utils import _criu
from ansible_collections.ckpt.criu.plugins.module_utils import _identity
from ansible_collections.ckpt.criu.plugins.module_utils import _manifest
from ansible_collections.ckpt.criu.plugins.module_utils import _procfs
from ansible_collections.ckpt.criu.plugins.module_utils import _safedir

MANIFEST_NAME = _manifest.MANIFEST_NAME
RECORD_NAME = _manifest.RESTORE_RECORD_NAME
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

# Restore-time flags that mirror the dump's options (manifest `options`).
BOOL_FLAGS = (
    ("shell_job", "--shell-job"),
    ("tcp_established", "--tcp-established"),
    ("ext_unix_sk", "--ext-unix-sk"),
    ("file_locks", "--file-locks"),
)


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
                           "written by ckpt.criu.dump)" % (prefix, MANIFEST_NAME))
    manifest, raw = loaded
    problems = manifest_problems(manifest)
    if problems:
        raise RestoreError(_first_problem_msg(prefix, problems), details={"problems": problems})
    return manifest, hashlib.sha256(raw).hexdigest()


def wait_for_manifest(images_dir, timeout, interval=0.01, on_arrival=None):
    """Wait up to ``timeout`` seconds for a checkpoint to arrive in images_dir.

    A migration starts the destination's restore before the source is frozen,
    so that the restore begins the instant the source's dump has sent the
    manifest (sent last, renamed into place atomically). Returns the seconds
    waited. Raises RestoreError if the directory disappears (the migration was
    rolled back) or nothing arrives in time. ``on_arrival()`` is called once,
    as soon as the first image (a page server's pages, an rsync temporary
    file) appears, which is just after the source froze.
    """
    t0 = time.monotonic()
    path = os.path.join(images_dir, MANIFEST_NAME)
    abort = os.path.join(images_dir, ABORT_NAME)
    while not os.path.exists(path):
        if not os.path.isdir(images_dir) or os.path.lexists(abort):
            raise RestoreError("no checkpoint arrived: %s was %s while this restore waited for it "
                               "(the migration was rolled back)" % (
                                   images_dir, "removed" if not os.path.isdir(images_dir) else "marked aborted"))
        if time.monotonic() - t0 >= timeout:
            raise RestoreError("no checkpoint arrived in %s within %.0f s (wait_for_manifest); the dump on "
                               "the source failed or never started" % (images_dir, timeout))
        if on_arrival is not None and _images_arriving(images_dir):
            on_arrival()
            on_arrival = None
        time.sleep(interval)
    if on_arrival is not None:
        on_arrival()
    return time.monotonic() - t0


def _images_arriving(images_dir):
    try:
        names = os.listdir(images_dir)
    except OSError:
        return False
    return any(not _manifest.is_own_file(n) for n in names)


def read_record(images_dir):
    """The restore record in images_dir, or None."""
    try:
        with open(os.path.join(images_dir, RECORD_NAME)) as fh:
            record = json.load(fh)
        return record if isinstance(record, dict) else None
    except (IOError, OSError, ValueError):
        return None


# ----------------------------------------------------------- verifications

def image_problems(manifest, images_dir):
    """Every image must exist with its recorded size and sha256 (page-server images must
    exist); an ``*.img`` the manifest does not list is a problem too."""
    return _manifest.verify_images(manifest, images_dir, check_remote=True, extra=True)


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
        except _checksum.ChecksumError as exc:
            problems.append("binary %s cannot be verified: %s" % (path, exc))
            continue
        expected.append(entry)
    if expected:
        _matches, mismatches = _checksum.compare(expected, actual)
        for m in mismatches:
            problems.append("binary %s" % m["msg"] if m["msg"].startswith("/") else m["msg"])
    return problems


def stdio_file_problems(manifest):
    """Regular files opened without O_APPEND must be here with the recorded size."""
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
    return problems


def pid_holder(manifest, pid_wait, proc_root=_identity.PROC):
    """Wait for a zombie/exiting holder of the checkpoint's PID; return a live one (or None)."""
    pid = manifest["process"]["pid"]
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


def precheck_problems(manifest, images_dir, verify_images=True, verify_binaries=True):
    """Every file-level read-only verification (not the PID), as sentences."""
    problems = []
    if verify_images:
        problems.extend(image_problems(manifest, images_dir))
    if verify_binaries:
        problems.extend(binary_problems(manifest))
    problems.extend(stdio_file_problems(manifest))
    return problems


# -------------------------------------------------------------------- criu

def effective_options(manifest, params):
    """Restore options: the module's value when set, else the manifest's dump option."""
    dumped = manifest.get("options") or {}
    opts = {}
    for key, _flag in BOOL_FLAGS:
        value = params.get(key)
        opts[key] = bool(dumped.get(key)) if value is None else bool(value)
    external = params.get("external")
    opts["external"] = list(dumped.get("external") or []) if external is None else list(external)
    opts["leave_stopped"] = bool(params.get("leave_stopped"))
    return opts


def restore_args(images_dir, work_dir, pidfile, opts):
    """criu restore arguments (run_criu adds -o LOG -v4): always detached."""
    args = ["-d", "-D", images_dir, "-W", work_dir, "--pidfile", pidfile]
    for key, flag in BOOL_FLAGS:
        if opts.get(key):
            args.append(flag)
    for ext in opts.get("external") or []:
        args.extend(["--external", ext])
    if opts.get("leave_stopped"):
        args.append("--leave-stopped")
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


def stdio_problems(manifest, pid, proc_root=_identity.PROC):
    """Sentences for fds 0-2 of the restored PID that differ from the checkpoint's."""
    root = str(manifest["process"]["pid"])
    entries = [e for e in (manifest.get("fds") or {}).get(root) or []
               if isinstance(e, dict) and e.get("fd") in (0, 1, 2)]
    if not entries:
        return []  # the manifest recorded no stdio (nothing to compare)
    recorded = dict((e["fd"], e.get("target")) for e in entries)
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


def verify_restored(manifest, settle, leave_stopped, proc_root=_identity.PROC, interval=0.05):
    """Watch the restored PID for ``settle`` seconds, then check exe, cmdline and stdio.

    Returns (verified dict, identity, problem sentence or None).
    """
    pid = manifest["process"]["pid"]
    want_exe = manifest["binaries"]["exe"]["sha256"]
    start = time.monotonic()
    deadline = start + max(0.0, settle)
    first = _identity.read_identity(pid, proc_root)
    verified = {"settle": settle, "alive": False, "state": None, "exe_sha256": None,
                "exe_matches": False, "cmdline_matches": False, "stdio_matches": False}
    if first is None or first["state"] in _identity.DEAD_STATES:
        return verified, first, ("criu restore exited 0 but process %d died within %.2f s of the restore (dead at the "
                                 "first look); %s" % (pid, time.monotonic() - start, explain_death(manifest)))
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
    problems = stdio_problems(manifest, pid, proc_root)
    verified["stdio_matches"] = not problems
    if problems:
        return verified, ident, "; ".join(problems)
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


def _public_identity(ident):
    if not ident:
        return None
    out = dict(ident)
    out["state"] = _identity.state_word(ident.get("state"))
    return out


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

class Prefault(object):
    """Touch memory in a thread while the restore waits for its checkpoint; free it as the
    checkpoint arrives and just before criu.

    On a virtual machine whose balloon reports free pages to the hypervisor, memory the
    guest freed more than about 2 s ago must be faulted in by the hypervisor again on its
    next use: a restore of 1 GiB then spends 1.3-2.5 s more in criu's read of the pages
    (measured with benchmarks/first_touch.py). A migration keeps its source frozen until
    the restore is verified, so its restore cannot reuse the source's pages the way a
    kill-then-restore does. Pages touched here and freed right before they are needed
    are warm when they are taken.

    Twice ``nbytes`` is touched (at most half of MemAvailable): the images that arrive
    need about as much page cache as the process needs memory. arrival() frees all but
    ``nbytes`` for the images; release() frees the rest right before criu, and stops at
    once. ``on_done(self)`` runs in the thread when the touching has finished first.
    """

    CHUNK = 8 << 20

    def __init__(self, nbytes, proc_root=_identity.PROC, on_done=None):
        self.requested = int(nbytes)
        self._on_done = on_done
        self.limit = max(0, min(2 * self.requested, _procfs.mem_available(proc_root) // 2))
        self.touched = 0
        self.freed_at_arrival = 0
        self._chunks = []
        self._stop = threading.Event()
        self._info = None
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="ckpt-prefault")
        self._thread.daemon = True
        self._thread.start()

    def _run(self):
        while self.touched < self.limit and not self._stop.is_set():
            n = min(self.CHUNK, self.limit - self.touched)
            chunk = bytearray(n)
            chunk[::4096] = b"\1" * len(range(0, n, 4096))
            self._chunks.append(chunk)
            self.touched += n
        if self._on_done is not None and not self._stop.is_set():
            self._on_done(self)

    def arrival(self):
        """The first images arrive: stop touching, keep at most ``nbytes`` for criu restore."""
        self._stop.set()
        self._thread.join()
        held = self.touched - self.freed_at_arrival
        while self._chunks and held > self.requested:
            n = len(self._chunks.pop())
            held -= n
            self.freed_at_arrival += n

    def release(self):
        """Stop touching, free everything touched; return what was done (idempotent)."""
        if self._info is None:
            self._stop.set()
            self._thread.join()
            del self._chunks[:]
            self._info = {"requested_bytes": self.requested, "limit_bytes": self.limit,
                          "touched_bytes": self.touched, "freed_at_arrival_bytes": self.freed_at_arrival,
                          "seconds": round(time.monotonic() - self._t0, 4)}
        return self._info


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
            prefault = Prefault(params["prefault"], on_done=lambda pf: mark_ready(ready, pf.touched))
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
    waited = None
    if params.get("wait_for_manifest") and not check_mode:
        waited = wait_for_manifest(images_dir, params["wait_for_manifest"],
                                   on_arrival=prefault.arrival if prefault is not None else None)
        t0 = time.monotonic()
    held = hold_trusted(images_dir)
    try:
        return _restore_held(params, check_mode, proc_root, prefault, held, t0, waited)
    finally:
        held.close()


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
    return round(DEFAULT_TIMEOUT_BASE + float(manifest.get("images_total_bytes") or 0) / DEFAULT_TIMEOUT_RATE, 1)


def _restore_held(params, check_mode, proc_root, prefault, held, t0, waited):
    images_dir = held.path
    manifest, manifest_sha = load_manifest(images_dir)
    pid = manifest["process"]["pid"]
    log_path = os.path.join(images_dir, LOG_NAME)
    record = read_record(images_dir)

    done, ident = already_restored(manifest, manifest_sha, record, proc_root)
    if done:
        return {"changed": False, "pid": pid, "process": _public_identity(ident),
                "restore_record": record, "verified": record.get("verified"),
                "log_path": log_path, "criu_cmd": (record.get("criu") or {}).get("argv"),
                "timings": {"criu_duration": None, "stats": {}, "verify": None,
                            "total": round(time.monotonic() - t0, 4)},
                "msg": "process %d from %s is already restored and running here" % (pid, images_dir)}

    tc = time.monotonic()
    problems = precheck_problems(manifest, images_dir, params.get("verify_images", True),
                                 params.get("verify_binaries", True))
    if problems:
        raise RestoreError(_first_problem_msg("refusing to restore %s" % images_dir, problems),
                           details={"problems": problems, "pid": pid})
    pid_wait = float(params.get("pid_wait") or 0)
    holder = pid_holder(manifest, pid_wait, proc_root)
    problem = pid_problem(manifest, holder, pid_wait)
    if problem:
        raise RestoreError("refusing to restore %s: %s" % (images_dir, problem),
                           details={"problems": [problem], "pid": pid,
                                    "holder": _public_identity(holder)})
    checks_duration = time.monotonic() - tc

    criu = _criu.find_criu(params.get("criu_path"))
    opts = effective_options(manifest, params)
    if check_mode:
        return {"changed": True, "pid": pid, "process": None, "restore_record": None,
                "verified": None, "log_path": log_path, "criu_cmd": None, "options": opts,
                "timings": {"criu_duration": None, "stats": {}, "verify": None,
                            "checks": round(checks_duration, 4),
                            "total": round(time.monotonic() - t0, 4)},
                "msg": "process %d would be restored from %s" % (pid, images_dir)}

    prefaulted = prefault.release() if prefault is not None else None
    timeout = params.get("timeout") or default_timeout(manifest)
    try:
        held.check_path()
        held.fresh(LOG_NAME)
    except _safedir.UntrustedDirError as exc:
        raise RestoreError("refusing to restore %s: %s" % (images_dir, exc.msg))
    work_dir = tempfile.mkdtemp(prefix="ckpt-restore-")
    try:
        pidfile = os.path.join(work_dir, "restore.pid")
        args = restore_args(images_dir, work_dir, pidfile, opts)
        result = _criu.run_criu(criu, "restore", args, log_path, timeout=timeout)
        # Wall clock of the moment the process runs again (criu restore -d has
        # returned): with the dump's frozen_at, the downtime of a migration.
        resumed_at = time.time()
        if result.timed_out:
            raise RestoreError("criu restore of %s did not finish within %.0f s (%s) and was killed, with every "
                               "process it had restored so far; see %s" % (
                                   images_dir, timeout, "the timeout option" if params.get("timeout") else
                                   "the default for %d bytes of images" % (manifest.get("images_total_bytes") or 0),
                                   log_path),
                               rc=result.rc, log_path=log_path, log_errors=result.log_errors, argv=result.argv,
                               details={"pid": pid, "timeout": timeout})
        result.raise_for_failure("criu restore of %s failed" % images_dir)
        # criu writes stats-restore into its work directory (-W), not the images.
        stats = _criu.read_stats(work_dir, "restore")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    tv = time.monotonic()
    verified, ident, problem = verify_restored(manifest, float(params.get("settle") or 0),
                                               opts["leave_stopped"], proc_root)
    verify_duration = time.monotonic() - tv
    timings = {"criu_duration": round(result.duration, 4), "stats": stats,
               "verify": round(verify_duration, 4), "checks": round(checks_duration, 4),
               "total": round(time.monotonic() - t0, 4), "resumed_at": round(resumed_at, 6),
               "waited_for_manifest": None if waited is None else round(waited, 4),
               "prefault": prefaulted}
    if problem and ident is not None and verified.get("alive") and not verified.get("exe_matches"):
        # It runs code other than the checkpointed one (verify_binaries off, or the file changed
        # since): it is never left running.
        killed = _criu.kill_tree(pid)
        problem += ("; it was killed (with %d descendants) rather than left running code that is not the "
                    "checkpoint's%s" % (len(killed), "" if params.get("verify_binaries", True) else
                                        " (verify_binaries was off, so this was not caught before the restore)"))
    if problem:
        raise RestoreError(problem, rc=result.rc, log_path=log_path, log_errors=result.log_errors,
                           argv=result.argv,
                           details={"verified": verified, "pid": pid, "timings": timings,
                                    "process": _public_identity(ident)})
    rec = make_record(manifest_sha, ident, result.argv, result.duration, stats, verified, proc_root)
    _manifest.write_json_atomic(os.path.join(images_dir, RECORD_NAME), rec)
    timings["total"] = round(time.monotonic() - t0, 4)
    return {"changed": True, "pid": pid, "process": _public_identity(ident), "restore_record": rec,
            "verified": verified, "log_path": log_path, "criu_cmd": result.argv, "options": opts,
            "timings": timings,
            "msg": "process %d restored from %s and verified after %.1f s" % (
                pid, images_dir, verified["settle"])}


# ------------------------------------------------------------ process_state

STATE_SIGNALS = {"running": "SIGCONT", "stopped": "SIGSTOP", "killed": "SIGKILL"}


def expected_identity(params):
    """(identity dict, source description) of the process params name."""
    if params.get("identity"):
        ident = dict(params["identity"])
        missing = [k for k in ("pid", "start_time") if ident.get(k) in (None, "")]
        if missing:
            raise RestoreError("identity must name at least pid and start_time (the PID alone may "
                               "have been reused); missing: %s" % ", ".join(missing))
        try:
            ident["pid"] = int(ident["pid"])
            ident["start_time"] = int(ident["start_time"])
        except (TypeError, ValueError):
            raise RestoreError("identity pid and start_time must be integers, got %r and %r"
                               % (ident.get("pid"), ident.get("start_time")))
        return ident, "the identity given"
    if params.get("manifest"):
        images_dir = os.path.dirname(os.path.abspath(params["manifest"]))
        if os.path.basename(params["manifest"]) != MANIFEST_NAME:
            raise RestoreError("manifest must be the path of a %s, got %s" % (MANIFEST_NAME, params["manifest"]))
    else:
        images_dir = os.path.abspath(params["images_dir"])
    manifest, manifest_sha = load_manifest(images_dir)
    if params.get("instance") == "restored":
        record = read_record(images_dir)
        if not record or record.get("manifest_sha256") != manifest_sha:
            raise RestoreError("no restore record for the checkpoint in %s: the process was not restored "
                               "from it by ckpt.criu.restore (or the checkpoint changed since)" % images_dir)
        proc = record.get("process") or {}
        return ({k: proc.get(k) for k in ("pid", "start_time", "boot_id", "exe", "cmdline")},
                "the process restored from %s" % images_dir)
    proc = manifest["process"]
    ident = {k: proc.get(k) for k in ("pid", "start_time", "boot_id", "exe", "cmdline", "comm")}
    if ident.get("boot_id") is None:
        ident["boot_id"] = (manifest.get("host") or {}).get("boot_id")
    return ident, "the process checkpointed in %s" % images_dir


def ensure_process_state(params, check_mode=False, proc_root=_identity.PROC):
    """Bring the named process to params['state']; return the module result."""
    want = params["state"]
    wait = float(params.get("wait") if params.get("wait") is not None else 10.0)
    expected, source = expected_identity(params)
    pid = expected["pid"]
    live = _identity.read_identity(pid, proc_root)
    before = _identity.state_word(live["state"]) if live else "absent"
    result = {"changed": False, "pid": pid, "state": want, "before": before, "after": before,
              "expected": expected, "process": _public_identity(live), "signal": None}

    if live is not None:
        diffs = _identity.differences(expected, live)
        if diffs:
            raise RestoreError(
                "PID %d now belongs to a different process than %s (%s differ): expected %s, found %s; "
                "nothing was signalled" % (pid, source, ", ".join(diffs), _identity.describe(expected),
                                           _identity.describe(live)),
                details={"pid": pid, "expected": expected, "process": _public_identity(live),
                         "differences": diffs, "before": before})

    if want == "killed":
        if before in ("absent", "zombie"):
            result["msg"] = "process %d from %s is not running (%s); nothing to kill" % (pid, source, before)
            return result
    else:
        if before in ("absent", "zombie"):
            raise RestoreError("process %d from %s is not running (%s); it cannot be made %s"
                               % (pid, source, "gone" if before == "absent" else "a zombie", want),
                               details={"pid": pid, "before": before, "expected": expected})
        if before == "traced":
            raise RestoreError("process %d from %s is stopped by a tracer (ptrace); a signal cannot make it %s "
                               "(is criu still running against it?)" % (pid, source, want),
                               details={"pid": pid, "before": before})
        if (want == "running" and before == "running") or (want == "stopped" and before == "stopped"):
            result["msg"] = "process %d from %s is already %s" % (pid, source, want)
            return result

    result["changed"] = True
    result["signal"] = STATE_SIGNALS[want]
    if check_mode:
        result["after"] = want if want != "killed" else "absent"
        result["msg"] = "process %d from %s would be sent %s" % (pid, source, result["signal"])
        return result

    if not _identity.send_signal(pid, _identity.SIGNALS[want], start_time=live["start_time"], proc_root=proc_root):
        raise RestoreError("process %d from %s exited or was replaced before it could be sent %s; nothing was "
                           "signalled" % (pid, source, result["signal"]), details={"pid": pid, "before": before})
    if want == "killed":
        gone = _identity.wait_gone(pid, wait, proc_root, start_time=live["start_time"])
        now = _identity.read_stat(pid, proc_root)
        if gone or now is None or now["start_time"] != live["start_time"]:
            result["after"] = "absent"
        else:
            result["after"] = _identity.state_word(now["state"])
            if result["after"] != "zombie":
                raise RestoreError("process %d was sent SIGKILL but is still %s after %.1f s"
                                   % (pid, result["after"], wait), details=dict(result))
            result["warnings"] = ["process %d is dead but its parent (pid %d) has not reaped it after %.1f s; "
                                  "its PID stays taken until then" % (pid, now["ppid"], wait)]
    else:
        result["after"] = _identity.wait_state(pid, (want,), wait, proc_root)
        if result["after"] != want:
            raise RestoreError("process %d was sent %s but is %s after %.1f s"
                               % (pid, result["signal"], result["after"], wait), details=dict(result))
    result["process"] = _public_identity(_identity.read_identity(pid, proc_root))
    result["msg"] = "process %d from %s: %s -> %s" % (pid, source, before, result["after"])
    return result
