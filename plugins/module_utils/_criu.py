# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Find, probe and run CRIU; turn its log into a short, honest verdict.

Every criu run goes through :func:`run_criu`, which encodes the lessons of the
incident this collection exists for:

* criu's own stdin is ``/dev/null`` and its stdout/stderr are pipes, whatever
  state the calling process's fds 0-2 are in (a launcher that closed them made
  criu's own files land on fds 1 and 2 and every error vanish);
* criu always logs with ``-v4`` to an absolute ``-o`` path;
* success is never judged by the exit code alone, nor failure by the mere
  presence of an ``Error`` line: a run succeeded when criu exited 0 *and* its
  log says the action finished successfully.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time

from ansible.module_utils.common.process import get_bin_path
from ansible.module_utils.common.text.formatters import human_to_bytes

from ansible_collections.ckpt.criu.plugins.module_utils import _procfs
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

# Where scripts/install-criu.sh puts Debian 13's criu on Debian 12.
PRIVATE_PREFIX_CRIU = "/opt/ckpt-criu/bin/criu"
SEARCH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
MIN_VERSION = (4, 1)

# The line criu's log prints when an action completed.
SUCCESS_MARKERS = {
    "dump": "Dumping finished successfully",
    "pre-dump": "Pre-dumping finished successfully",
    "restore": "Restore finished successfully",
    "page-server": None,  # a page server has no completion line of its own
    "check": None,
}

# Error lines that are harmless on some hosts and must never be reported as the
# cause of a failure (nor make a successful run look failed).
NOISE_PATTERNS = (
    # No CAP_SYS_RESOURCE (containers, these test machines): criu cannot raise
    # its own fd limit and carries on.
    re.compile(r"rlimit: Can't setup RLIMIT_NOFILE"),
)

_LOG_LINE = re.compile(r"^\((?P<ts>[0-9.]+)\)\s+(?:(?P<pid>\d+):\s+)?(?P<level>Error|Warn)\b(?P<rest>.*)$")

# Known causes: a log pattern -> a sentence saying what happened and what to do.
KNOWN_CAUSES = (
    (re.compile(r"Can't fork for (\d+): File exists"),
     "the PID {0} that the checkpoint needs is taken by another process (or a zombie not yet reaped) "
     "on this host; wait for it to exit or free the PID, then restore again"),
    (re.compile(r"The root process (\d+) is not a session leader"),
     "process {0} is not a session leader; CRIU needs shell_job (--shell-job) for it, "
     "or start the workload with setsid"),
    (re.compile(r"A session leader of (\d+)\(\d+\) is outside of its pid namespace"),
     "process {0} is in a session whose leader is outside its PID namespace; CRIU cannot dump it even "
     "with shell_job: start the workload with setsid"),
    (re.compile(r"Can't lookup mount=(\d+) for fd=(\d+)"),
     "fd {1} of the process is on a mount (id {0}) that its mount namespace cannot see, usually an fd "
     "leaked from the launcher; close it in the workload or start it without the leaked fd"),
    (re.compile(r"[Ee]xternal socket is used|unix: Can't dump external socket|Can't dump half of stream unix connection"),
     "the process holds a unix socket whose peer is outside the dumped tree (journald-style stdout); "
     "pass ext_unix_sk or point the workload's output elsewhere"),
    (re.compile(r"No space left on device"),
     "the images directory ran out of space; free space or choose a larger images_dir"),
    (re.compile(r"Connected TCP socket|tcp: Connected TCP socket, consider using --tcp-established"),
     "the process has an established TCP connection; pass tcp_established (needs a network lock backend)"),
    (re.compile(r"Can't open file .* on restore|Can't open vma"),
     "a file the process had open is missing or different on this host; make the same file available"),
    (re.compile(r"File (\S+) has bad size"),
     "the file {0} the process had open does not have the size it had at dump time; restore it "
     "unchanged on this host"),
    (re.compile(r"tty: .*|Can't dump tty|Can't restore tty"),
     "the process uses a terminal; pass shell_job (--shell-job) or run the workload without a tty"),
    (re.compile(r"Unexpected EOF on|Can't open image|No such file or directory.*\.img|Corrupted image|Unknown magic"),
     "the checkpoint images are missing or corrupt; take a new checkpoint"),
    (re.compile(r"Permission denied|Operation not permitted"),
     "criu lacks a privilege it needs; run it as root (become: true) with the capabilities CRIU requires"),
)


class CriuError(CkptError):
    """A criu problem, with what a person needs to act on it."""

    def __init__(self, msg, rc=None, log_path=None, log_errors=None, argv=None,
                 stdout=None, stderr=None):
        super(CriuError, self).__init__(msg)
        self.rc = rc
        self.log_path = log_path
        self.log_errors = log_errors or []
        self.argv = argv
        self.stdout = stdout
        self.stderr = stderr

    def to_fail_kwargs(self):
        """Keyword arguments for ``module.fail_json``."""
        kw = super(CriuError, self).to_fail_kwargs()
        for key in ("rc", "log_path", "stdout", "stderr"):
            value = getattr(self, key)
            if value is not None:
                kw[key] = value
        if self.log_errors:
            kw["log_errors"] = self.log_errors
        if self.argv:
            kw["cmd"] = self.argv
        return kw


class CriuResult(object):
    """The outcome of one criu run."""

    def __init__(self, argv, rc, stdout, stderr, log_path, duration, action, timed_out=False,
                 helpers_killed=False):
        self.argv = argv
        self.helpers_killed = helpers_killed
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.log_path = log_path
        self.duration = duration
        self.action = action
        self.timed_out = timed_out
        self.log_text = read_log(log_path)
        self.log_errors = relevant_errors(self.log_text)
        self.log_warnings = log_lines(self.log_text, "Warn")

    @property
    def finished(self):
        """True when criu's log says the action finished successfully."""
        marker = SUCCESS_MARKERS.get(self.action)
        if marker is None:
            return self.rc == 0
        return marker in self.log_text

    @property
    def ok(self):
        return self.rc == 0 and not self.timed_out and self.finished

    def cause(self):
        """One sentence naming the cause of a failed run."""
        return explain_failure(self)

    def as_dict(self):
        return {
            "cmd": self.argv,
            "rc": self.rc,
            "duration": round(self.duration, 4),
            "log_path": self.log_path,
            "log_errors": self.log_errors,
            "log_warnings": self.log_warnings[-10:],
            "stdout": self.stdout,
            "stderr": self.stderr,
            "helpers_killed": self.helpers_killed,
        }

    def raise_for_failure(self, what=None):
        """Raise CriuError with the cause unless the run succeeded."""
        if self.ok:
            return
        raise CriuError(
            "%s: %s (log: %s)" % (what or "criu %s failed" % self.action, self.cause(), self.log_path),
            rc=self.rc, log_path=self.log_path, log_errors=self.log_errors,
            argv=self.argv, stdout=self.stdout, stderr=self.stderr)


# A criu log is read bounded: its head (where criu names what it starts) and its
# tail (where it says how it ended). A restorer that loops can write tens of
# MB/s of log; reading all of it would take the module's memory with it.
LOG_HEAD_BYTES = 256 * 1024
LOG_TAIL_BYTES = 1024 * 1024


def read_log(path, head=LOG_HEAD_BYTES, tail=LOG_TAIL_BYTES):
    """The text of a criu log, at most ``head + tail`` bytes of it: the whole log when it
    is small, else its first ``head`` and last ``tail`` bytes with a line saying how
    much was left out between them. Never follows a symlink."""
    if not path:
        return ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except (IOError, OSError):
        return ""
    try:
        size = os.fstat(fd).st_size
        if size <= head + tail:
            data = os.pread(fd, size, 0)
            return data.decode("utf-8", "replace")
        first = os.pread(fd, head, 0)
        last = os.pread(fd, tail, size - tail)
    except OSError:
        return ""
    finally:
        os.close(fd)
    # Cut at line boundaries so no half line is parsed.
    first = first[:first.rfind(b"\n") + 1]
    last = last[last.find(b"\n") + 1:]
    skipped = size - len(first) - len(last)
    return (first.decode("utf-8", "replace")
            + "[... %d bytes of the log left out: read the file itself ...]\n" % skipped
            + last.decode("utf-8", "replace"))


def is_noise(line):
    return any(p.search(line) for p in NOISE_PATTERNS)


def log_lines(text, level):
    out = []
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        if m and m.group("level") == level:
            out.append(line.strip())
    return out


def relevant_errors(text, limit=20):
    """Error lines of a criu log, without the known harmless ones."""
    errors = [line for line in log_lines(text, "Error") if not is_noise(line)]
    return errors[:limit]


def strip_log_prefix(line):
    """A criu log line without its timestamp, PID and level/source prefix."""
    return re.sub(r"^\([0-9.]+\)\s+(\d+:\s+)?Error\s+\([^)]*\):\s*", "", line.strip())


def explain_failure(result):
    """One sentence for a failed CriuResult: the known cause, else the first real error."""
    if result.timed_out:
        return "criu %s did not finish within the timeout and was killed" % result.action
    # Only real error lines (never the harmless noise, never debug lines).
    stderr = [line for line in (result.stderr or "").splitlines() if not is_noise(line)]
    haystack = "\n".join(result.log_errors + stderr)
    for pattern, sentence in KNOWN_CAUSES:
        m = pattern.search(haystack)
        if m:
            if "pass tcp_established" in sentence and "--tcp-established" in (result.argv or []):
                return ("criu could not dump an established TCP connection although --tcp-established was "
                        "passed: %s" % strip_log_prefix(m.string[m.start():].splitlines()[0]))
            return sentence.format(*m.groups())
    if result.log_errors:
        return "criu reported: %s" % strip_log_prefix(result.log_errors[0])
    if result.rc == 0 and not result.finished:
        return ("criu exited 0 but its log does not say the %s finished; treat the result as failed"
                % result.action)
    if not result.log_text:
        detail = (result.stderr or result.stdout or "").strip().splitlines()
        return "criu exited %s and wrote no log%s" % (
            result.rc, (": " + detail[-1]) if detail else "")
    return "criu exited %s; see the log for details" % result.rc


def parse_size(value, what="ghost_limit"):
    """Bytes from an int or a human size (``1M``, ``512K``, ``2MiB``, ``1048576``) for a
    criu size option; CriuError naming ``what`` on garbage or a negative size."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        text = str(value).strip().replace("iB", "").replace("ib", "").replace(" ", "")
        try:
            n = human_to_bytes(text)
        except (ValueError, TypeError):
            raise CriuError("%s must be a size in bytes or like 512K, 1M, 2G; got %r" % (what, value))
    if n < 0:
        raise CriuError("%s must not be negative, got %r" % (what, value))
    return int(n)


# ---------------------------------------------------------------- discovery

def find_executable(name, first=()):
    """Path of the executable NAME, or None: in the directories ``first``, then on PATH and in the
    sbin directories (``get_bin_path``), then in :data:`SEARCH_DIRS`."""
    for dirs in (first, SEARCH_DIRS):
        try:
            return get_bin_path(name, opt_dirs=list(dirs))
        except ValueError:
            continue
    return None


def find_criu(criu_path=None):
    """Path of the criu executable: the option, else the private prefix, else PATH.

    The private prefix exists only where the installer (the preflight role,
    scripts/install-criu.sh) found no criu on the host that passes its probes,
    so it comes before PATH: a distro criu left installed beside it is one
    that failed them (too old for the kernel).
    """
    if criu_path:
        if not os.path.isfile(criu_path):
            raise CriuError("criu_path %s does not exist; point criu_path at a criu executable "
                            "or leave it unset to search PATH" % criu_path)
        if not os.access(criu_path, os.X_OK):
            raise CriuError("criu_path %s is not executable; fix its mode or point criu_path elsewhere"
                            % criu_path)
        return criu_path
    found = find_executable("criu", first=(os.path.dirname(PRIVATE_PREFIX_CRIU),))
    if found:
        return found
    raise CriuError("criu was not found in /opt/ckpt-criu nor on PATH; install CRIU >= 4.2 "
                    "(the preflight role can install it, or run scripts/install-criu.sh) "
                    "or set criu_path")


def _run_simple(argv, timeout=60):
    """Run a short criu query with stdio on /dev/null and pipes."""
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, close_fds=True,
                           universal_newlines=True, check=False)
    except subprocess.TimeoutExpired:
        raise CriuError("%s did not answer within %d s" % (" ".join(argv), timeout), argv=argv)
    except OSError as exc:
        raise CriuError("cannot run %s: %s" % (argv[0], exc), argv=argv)
    return p.returncode, p.stdout, p.stderr


def parse_version(text):
    m = re.search(r"Version:\s*(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        return None
    major, minor, sub = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    return {"version": "%d.%d.%d" % (major, minor, sub) if m.group(3) else "%d.%d" % (major, minor),
            "major": major, "minor": minor, "sublevel": sub}


def criu_version(criu):
    rc, out, err = _run_simple([criu, "--version"])
    info = parse_version(out)
    if rc != 0 or info is None:
        raise CriuError("%s --version failed (rc=%s): %s" % (criu, rc, (err or out).strip()),
                        rc=rc, argv=[criu, "--version"], stdout=out, stderr=err)
    info["raw"] = out.strip()
    info["supported"] = (info["major"], info["minor"]) >= MIN_VERSION
    return info


def criu_check(criu):
    """`criu check`: {ok, rc, output}. ok means criu says "Looks good"."""
    rc, out, err = _run_simple([criu, "check"], timeout=120)
    text = (out + err).strip()
    return {"ok": rc == 0 and "Looks good" in text, "rc": rc, "output": text}


def criu_feature(criu, name):
    """`criu check --feature NAME`: {supported, rc, output}."""
    rc, out, err = _run_simple([criu, "check", "--feature", name])
    text = (out + err).strip()
    return {"supported": rc == 0, "rc": rc, "output": text}


# --------------------------------------------------------------------- argv

# The flag of each boolean option; dump and restore both build their argv from this table.
FLAGS = {
    "leave_running": "--leave-running",
    "leave_stopped": "--leave-stopped",
    "shell_job": "--shell-job",
    "tcp_established": "--tcp-established",
    "ext_unix_sk": "--ext-unix-sk",
    "file_locks": "--file-locks",
}
# The options a dump records (manifest ``options``) and its restore applies again, in argv order.
SHARED_OPTIONS = ("shell_job", "tcp_established", "ext_unix_sk", "file_locks")


def dir_args(images_dir, work_dir):
    """The images directory and criu's own work directory."""
    return ["-D", images_dir, "-W", work_dir]


def flag_args(opts, keys):
    """The flags of the options in ``keys`` (table :data:`FLAGS`, in that order) that ``opts`` sets.

    ``ext_unix_sk`` with ``ext_unix_sk_inodes`` becomes ``--ext-unix-sk=INODE,...`` (the sockets a
    dump took as external, by inode)."""
    args = []
    for key in keys:
        if not opts.get(key):
            continue
        if key == "ext_unix_sk" and opts.get("ext_unix_sk_inodes"):
            args.append("%s=%s" % (FLAGS[key], ",".join(str(i) for i in opts["ext_unix_sk_inodes"])))
        else:
            args.append(FLAGS[key])
    return args


def external_args(externals):
    """``--external`` for each external resource."""
    args = []
    for ext in externals or []:
        args.extend(["--external", ext])
    return args


def inherit_fd_args(pairs):
    """``--inherit-fd fd[N]:KEY`` for each (fd, key) pair."""
    args = []
    for fd, key in pairs:
        args.extend(["--inherit-fd", "fd[%d]:%s" % (int(fd), key)])
    return args


def tls_args(ps):
    """``--tls`` and its files, when any TLS option is set."""
    out = []
    if ps.get("tls") or ps.get("tls_cacert") or ps.get("tls_cert") or ps.get("tls_key"):
        out.append("--tls")
        for key in ("tls_cacert", "tls_cert", "tls_key"):
            if ps.get(key):
                out.extend(["--" + key.replace("_", "-"), ps[key]])
    return out


# ------------------------------------------------------------------- runner

def build_argv(criu, action, args, log_path, verbosity=4):
    """criu argv: action, the caller's args, then always -o LOG -vN."""
    if not os.path.isabs(log_path):
        raise CriuError("the criu log path must be absolute, got %r" % log_path)
    argv = [criu, action]
    argv.extend(str(a) for a in args)
    argv.extend(["-o", log_path, "-v%d" % verbosity])
    return argv


def run_criu(criu, action, args, log_path, timeout=None, env=None, umask=0o077,
             on_start=None, pass_fds=(), before_start=None):
    """Run ``criu ACTION ARGS -o LOG -v4`` safely and return a CriuResult.

    criu's stdin is /dev/null and stdout/stderr are pipes regardless of the
    caller's own fds 0-2; every other fd is closed in the child; criu runs
    under ``umask`` (077: images are process memory) in its own session so a
    timeout can kill it and whatever it forked.  ``before_start(read_fds,
    write_fds)`` is called once criu's pipes exist and before criu starts (a
    watcher forked there holds the read ends from criu's first instant);
    ``on_start(popen)`` is called right after criu starts (e.g. to record its
    PID).  ``pass_fds`` are fds
    above 2 that criu must inherit (``--inherit-fd fd[N]:KEY``); fds 0-2 are
    never passed, so a restored process can never hold the caller's pipes.
    """
    if any(fd <= 2 for fd in pass_fds):
        raise CriuError("only fds above 2 can be passed to criu (got %s); fds 0-2 are always "
                        "/dev/null and criu's own pipes" % sorted(pass_fds))
    argv = build_argv(criu, action, args, log_path)
    log_dir = os.path.dirname(log_path)
    if log_dir:
        os.makedirs(log_dir, 0o700, exist_ok=True)

    def _child_setup():
        os.umask(umask)

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    start = time.monotonic()
    try:
        if before_start is not None:
            before_start((out_r, err_r), (out_w, err_w))
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w,
                                stderr=err_w, close_fds=True, env=env,
                                pass_fds=tuple(pass_fds),
                                preexec_fn=_child_setup, start_new_session=True)
    except BaseException as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        if isinstance(exc, OSError):
            raise CriuError("cannot start %s: %s" % (criu, exc), argv=argv)
        raise
    finally:
        # criu holds the write ends now; only its end (and its helpers') closes them.
        os.close(out_w)
        os.close(err_w)
    if on_start is not None:
        on_start(proc)
    out, err, timed_out, helpers_killed = _collect(proc, (out_r, err_r), timeout)
    duration = time.monotonic() - start
    return CriuResult(argv, proc.returncode, out, err, log_path, duration, action, timed_out,
                      helpers_killed)


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except OSError:
        return False


def kill_tree(pid, rounds=20):
    """SIGKILL PID, its process group and every descendant, wherever their sessions are.

    A restore that criu forked puts each restored task in the session and group the
    image says, so killing criu's group alone leaves a half-restored task running.
    criu is stopped first (it can neither fork nor reap meanwhile), its descendants are
    killed, then criu itself; this repeats until no descendant is left.
    """
    try:
        os.kill(pid, signal.SIGSTOP)
    except OSError:
        pass
    killed = []
    for dummy in range(rounds):
        kids = _procfs.descendants(pid)
        if not kids:
            break
        for kid in kids:
            try:
                os.kill(kid, signal.SIGKILL)
                if kid not in killed:
                    killed.append(kid)
            except OSError:
                pass
        time.sleep(0.01)
    _kill_group(pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    return killed


def _collect(proc, fds, timeout, grace=0.5):
    """Read criu's stdout/stderr until EOF, criu's exit or the timeout.

    Unlike ``communicate()``, this does not wait for EOF forever once criu
    itself has exited: a criu killed mid-dump leaves a stopped helper child
    (in criu's own process group) holding the pipes. Such helpers are killed
    ``grace`` seconds after criu's exit. On timeout criu's whole process group
    is killed.  ``fds`` are the read ends of criu's stdout and stderr; they are
    closed here.  Returns (stdout, stderr, timed_out, helpers_killed).
    """
    sel = selectors.DefaultSelector()
    out_fd, err_fd = fds
    bufs = {out_fd: [], err_fd: []}
    for fd in fds:
        sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout if timeout else None
    exited_at = None
    timed_out = helpers_killed = False
    try:
        while sel.get_map():
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > grace:
                helpers_killed = _kill_group(proc.pid)
                break
            if deadline is not None and now > deadline and not timed_out:
                timed_out = True
                kill_tree(proc.pid)
                deadline = None
            for key, dummy in sel.select(0.05):
                data = os.read(key.fd, 65536)
                if data:
                    bufs[key.fd].append(data)
                else:
                    sel.unregister(key.fileobj)
    finally:
        sel.close()
        for fd in fds:
            os.close(fd)
    proc.wait()

    def text(fd):
        return b"".join(bufs[fd]).decode("utf-8", "replace")
    return text(out_fd), text(err_fd), timed_out, helpers_killed


# -------------------------------------------------------------------- stats

def _varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _protobuf_repeated(buf):
    """Decode one protobuf message into {field: [values]} (varints, packed varints kept as bytes)."""
    i, out = 0, {}
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            length, i = _varint(buf, i)
            value = bytes(buf[i:i + length])
            i += length
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value = int.from_bytes(buf[i:i + n], "little")
            i += n
        else:
            raise ValueError("unsupported protobuf wire type %d" % wire)
        out.setdefault(field, []).append(value)
    return out


def _protobuf_fields(buf):
    """Decode one protobuf message into {field: value} (the last value of a repeated field)."""
    return dict((field, values[-1]) for field, values in _protobuf_repeated(buf).items())


def _varints(values):
    """A repeated uint32 field's values, whether packed (bytes) or not."""
    out = []
    for v in values:
        if isinstance(v, bytes):
            j = 0
            while j < len(v):
                n, j = _varint(v, j)
                out.append(n)
        else:
            out.append(v)
    return out


def read_pstree(images_dir):
    """The dumped tree from ``pstree.img``: [{pid, ppid, pgid, sid, threads}], root first.

    Every PID and thread ID here is one the restore recreates, so each must be free.
    Returns None when the image is missing or unreadable.
    """
    try:
        with open(os.path.join(images_dir, "pstree.img"), "rb") as fh:
            data = fh.read()
    except (IOError, OSError):
        return None
    out, i = [], 8  # two u32 magics, then (u32 size, PstreeEntry) records
    try:
        while i + 4 <= len(data):
            size = int.from_bytes(data[i:i + 4], "little")
            i += 4
            if size <= 0 or i + size > len(data):
                return None
            fields = _protobuf_repeated(data[i:i + size])
            i += size
            one = dict((name, (fields.get(num) or [0])[0]) for num, name in
                       ((1, "pid"), (2, "ppid"), (3, "pgid"), (4, "sid")))
            one["threads"] = _varints(fields.get(5) or [])
            out.append(one)
    except (ValueError, IndexError):
        return None
    return out or None


_DUMP_STATS = {1: "freezing_time_us", 2: "frozen_time_us", 3: "memdump_time_us",
               4: "memwrite_time_us", 5: "pages_scanned", 6: "pages_skipped_parent",
               7: "pages_written", 9: "pages_lazy"}
_RESTORE_STATS = {1: "pages_compared", 2: "pages_skipped_cow", 3: "forking_time_us",
                  4: "restore_time_us", 5: "pages_restored"}


def read_stats(images_dir, kind="dump"):
    """criu's own timings from ``stats-dump`` / ``stats-restore``; {} if absent."""
    path = os.path.join(images_dir, "stats-%s" % kind)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (IOError, OSError):
        return {}
    try:
        # Two u32 magics, a u32 entry size, then a StatsEntry message.
        size = int.from_bytes(data[8:12], "little")
        entry = _protobuf_fields(data[12:12 + size])
        inner = entry.get(1 if kind == "dump" else 2)
        if not isinstance(inner, bytes):
            return {}
        names = _DUMP_STATS if kind == "dump" else _RESTORE_STATS
        fields = _protobuf_fields(inner)
        return dict((names[k], v) for k, v in fields.items() if k in names)
    except (ValueError, IndexError):
        return {}
