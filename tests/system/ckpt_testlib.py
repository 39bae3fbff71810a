"""The helpers of the system tests (real processes, real CRIU): workloads and
their ticks, processes in /proc, a running criu, checkpoints.

Tests import these directly (``from ckpt_testlib import wait_gone``); the
fixtures that use them live in conftest.py, and the helpers only the test
fleet needs in fleet/fleet_testlib.py.

`make_checkpoint` dumps with ckpt.criu.dump when given a `run_module`;
without one (``raw=True``, for what the dump module refuses on purpose) it runs
criu itself and writes the manifest with the collection's own manifest code
(module_utils/_manifest.py), from what /proc says about the process.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ansible_collections.ckpt.criu.plugins.module_utils import _checksum, _manifest, _procfs

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = REPO / "tests" / "integration" / "targets" / "setup_workloads" / "files"
VENV_BIN = REPO / ".venv" / "bin"
O_APPEND = 0o2000


def criu_binary():
    for c in (os.environ.get("CKPT_CRIU"), "/opt/ckpt-criu/bin/criu", "/usr/sbin/criu"):
        if c and os.access(c, os.X_OK):
            return c
    return None


def sha256(path):
    """sha256 of a file, computed here independently of the collection's code."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_ticks(path):
    """[(seq, time_ns)] from a counter's ticks file; [] if it is missing."""
    out = []
    try:
        text = Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((int(parts[0]), int(parts[1])))
    return out


def thread_ticks(directory, n):
    """[[(seq, time_ns, tid)] per thread] of tests/integration/targets/setup_workloads/files/threads.py's files in directory."""
    out = []
    for i in range(n):
        ticks = []
        for line in (Path(directory) / ("thread-%d.ticks" % i)).read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                ticks.append((int(parts[0]), int(parts[1]), int(parts[2])))
        out.append(ticks)
    return out


def ticks_of(path):
    """The ticks of the file at path, which must exist (a workload that never wrote fails here)."""
    if not os.path.exists(path):
        raise AssertionError("the workload wrote no ticks file %s" % path)
    return read_ticks(path)


def continuity(ticks):
    """(ok, max_gap_seconds): ok when the sequence never repeats or skips.

    ticks: [(seq, time_ns)], or the path of a ticks file (which must exist)."""
    if isinstance(ticks, (str, Path)):
        ticks = ticks_of(ticks)
    seqs = [tick[0] for tick in ticks]
    gaps = [(later[1] - earlier[1]) / 1e9 for earlier, later in zip(ticks, ticks[1:])]
    return seqs == list(range(1, len(seqs) + 1)), (max(gaps) if gaps else 0.0)


class Ticker:
    """A counter writing its ticks to the file self.ticks."""

    ticks = None

    def read_ticks(self):
        return read_ticks(self.ticks)

    def wait_ticks(self, n=3, timeout=10.0):
        """Wait until at least n more ticks have been written; return the ticks."""
        start = len(self.read_ticks())
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = self.read_ticks()
            if len(t) >= start + n:
                return t
            time.sleep(0.02)
        raise AssertionError("the workload writing %s wrote %d new ticks in %.1fs, not %d: is it running?"
                             % (self.ticks, len(self.read_ticks()) - start, timeout, n))

    def continuity(self):
        """(ok, max_gap_seconds): ok when the sequence never repeats or skips."""
        return continuity(self.read_ticks())


class Workload(Ticker):
    def __init__(self, pid, pidfile, ticks, aux):
        self.pid = pid
        self.pidfile = pidfile
        self.ticks = ticks
        self.aux = aux

    def alive(self, pid=None):
        pid = pid or self.pid
        try:
            with open("/proc/%d/stat" % pid) as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
            return state not in ("Z", "X")
        except OSError:
            return False

    def kill(self):
        for p in [self.pid] + self.aux:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def free_port():
    """A TCP port on 127.0.0.1 that is free now (bind port 0): no fixed ports in tests."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait(pred, timeout=30, step=0.1, ignore=()):
    """pred()'s first true value within timeout, else its last value; an
    exception of a class in ``ignore`` (say OSError, for a port that does not
    listen yet) counts as a false value."""
    def look():
        try:
            return pred()
        except ignore:
            return False
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = look()
        if value:
            return value
        time.sleep(step)
    return look()


def wait_gone(pid, timeout=10.0):
    """Wait until /proc/PID no longer exists (PID 1 reaps orphans slowly)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not os.path.exists("/proc/%d" % pid):
            return True
        time.sleep(0.02)
    return False


def kill_and_wait(pid, timeout=10.0):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    return wait_gone(pid, timeout)


# ------------------------------------------------------------ processes and criu


def state(pid):
    """The state letter of PID, or None when it is gone."""
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_state(pid, letters, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = state(pid)
        if s in letters:
            return s
        time.sleep(0.02)
    return state(pid)


def mode(path):
    return os.stat(path).st_mode & 0o777


def read_manifest(images_dir):
    """The manifest in images_dir as written, not validated (tests also read broken ones)."""
    return json.loads((Path(images_dir) / "ckpt-manifest.json").read_text())


def find_criu(action, target=None):
    """PIDs of running criu processes for ACTION (and -t TARGET)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path("/proc/%s/cmdline" % name).read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode("utf-8", "replace") for a in argv if a]
        if not any(a.endswith("/criu") or a == "criu" for a in args) or action not in args:
            continue
        if target is not None and str(target) not in args:
            continue
        out.append(int(name))
    return out


def ticks_after(workload, seconds):
    """Ticks written in the next `seconds` (0 means the process is not running)."""
    before = len(workload.read_ticks())
    time.sleep(seconds)
    return len(workload.read_ticks()) - before


def still_ticking(ticks, seconds=0.3):
    """True when the counter writing TICKS (a path) adds lines within SECONDS."""
    before = len(ticks.read_text().splitlines())
    time.sleep(seconds)
    return len(ticks.read_text().splitlines()) > before


class Tmpfs(object):
    """A tiny tmpfs at path (for disk-full tests); unmount() in teardown."""

    def __init__(self, path, size="2m"):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", self.path],
                       check=True)

    def unmount(self):
        subprocess.run(["umount", "-l", self.path], check=False)


class _Launched(object):
    """A counter started under a launcher that stays outside the dumped tree.

    ``pid`` is the counter's PID; kill() and wait() end both the counter and its launcher."""

    def __init__(self, launcher, pid):
        self.launcher = launcher
        self.pid = pid

    def kill(self):
        for pid in (self.pid, self.launcher.pid):
            try:
                os.kill(pid, 9)
            except OSError:
                pass

    def wait(self):
        self.launcher.wait()


def _counter_argv(ticks):
    return [sys.executable, str(WORKLOADS / "counter.py"), "--out", str(ticks), "--interval", "0.02"]


def _launch(argv, tmp_path, ticks, new_session):
    launcher = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, close_fds=True, cwd=str(tmp_path),
                                start_new_session=new_session)
    deadline = time.time() + 10
    pid = None
    while time.time() < deadline and not (pid and ticks.exists() and ticks.read_text()):
        try:
            kids = _procfs.children(launcher.pid)
            pid = kids[0] if kids else None
        except _procfs.ProcfsError:
            pid = None
        time.sleep(0.02)
    assert pid, "the counter did not start under %s" % argv[0]
    return _Launched(launcher, pid)


def start_plain_child(tmp_path, name="child"):
    """A counter that is not a session leader: the child of a shell that is (so its session leader is
    outside the dumped tree but inside its PID namespace, whatever session pytest runs in).

    Returns (handle with .pid/.kill()/.wait(), ticks_path)."""
    ticks = tmp_path / ("%s.ticks" % name)
    argv = ["sh", "-c", "\"$@\" & wait", "sh"] + _counter_argv(ticks)
    return _launch(argv, tmp_path, ticks, new_session=True), ticks


def start_child_in_new_pidns(tmp_path, name="pidns"):
    """A counter that is PID 1 of a new PID namespace, in a session whose leader is outside it
    (NSsid ends in 0), as a child of a container's init that never called setsid would be.

    Returns (handle with .pid/.kill()/.wait(), ticks_path)."""
    ticks = tmp_path / ("%s.ticks" % name)
    argv = ["unshare", "--pid", "--fork", "--kill-child"] + _counter_argv(ticks)
    return _launch(argv, tmp_path, ticks, new_session=False), ticks


# ------------------------------------------------------------------ checkpoints

def stat_fields(pid):
    text = Path("/proc/%d/stat" % pid).read_text()
    left, right = text.rsplit(")", 1)
    f = right.split()
    return {"comm": left.split(" (", 1)[1], "state": f[0], "ppid": int(f[1]), "sid": int(f[3]),
            "start_time": int(f[19])}


def identity(pid):
    """PID's identity as a manifest records it, read from /proc here."""
    st = stat_fields(pid)
    cmdline = Path("/proc/%d/cmdline" % pid).read_bytes().rstrip(b"\0").split(b"\0")
    uid = next(int(line.split()[1]) for line in Path("/proc/%d/status" % pid).read_text().splitlines()
               if line.startswith("Uid:"))
    return {"pid": pid, "ppid": st["ppid"], "start_time": st["start_time"],
            "boot_id": _manifest.host_identity()["boot_id"],
            "uid": uid, "comm": st["comm"], "cmdline": [a.decode() for a in cmdline],
            "cwd": os.readlink("/proc/%d/cwd" % pid), "exe": os.readlink("/proc/%d/exe" % pid),
            "sid": st["sid"]}


def fd_table(pid):
    out = []
    for name in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
        fd = int(name)
        target = os.readlink("/proc/%d/fd/%d" % (pid, fd))
        flags = 0
        for line in Path("/proc/%d/fdinfo/%d" % (pid, fd)).read_text().splitlines():
            if line.startswith("flags:"):
                flags = int(line.split()[1], 8)
        if target == "/dev/null":
            kind = "devnull"
        elif target.startswith("pipe:"):
            kind = "pipe"
        elif target.startswith("socket:"):
            kind = "socket"
        elif target.startswith("/dev/pts") or target.startswith("/dev/tty"):
            kind = "tty"
        elif target.startswith("/"):
            kind = "file_append" if flags & O_APPEND else "file"
        else:
            kind = "other"
        out.append({"fd": fd, "kind": kind, "target": target, "flags": flags})
    return out


def raw_dump(criu, pid, images_dir, leave_running=False, leave_stopped=False, extra=()):
    images_dir = Path(images_dir)
    images_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = [criu, "dump", "-t", str(pid), "-D", str(images_dir), "-o", str(images_dir / "dump.log"), "-v4"]
    if leave_running:
        argv.append("--leave-running")
    if leave_stopped:
        argv.append("--leave-stopped")
    argv += list(extra)
    t0 = time.monotonic()
    old = os.umask(0o077)
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120, check=False)
    finally:
        os.umask(old)
    if p.returncode != 0:
        log = (images_dir / "dump.log").read_text(errors="replace")
        raise AssertionError("criu dump failed rc=%d:\n%s" % (p.returncode, log[-3000:]))
    return argv, time.monotonic() - t0


def raw_manifest(criu, pid, ident, fds, binaries, argv, duration, images_dir, options):
    """A complete manifest of a checkpoint raw criu made: the images and the host
    as the collection's manifest code records them, the process from /proc."""
    images = _manifest.image_records(str(images_dir))
    stdio_files = [{"pid": pid, "fd": e["fd"], "path": e["target"], "size": os.path.getsize(e["target"])}
                   for e in fds if e["kind"] == "file" and e["fd"] in (0, 1, 2)]
    version = subprocess.run([criu, "--version"], stdout=subprocess.PIPE, text=True, check=True).stdout
    return {
        "schema": _manifest.SCHEMA,
        "complete": True,
        "created": _manifest.utc_now(),
        "host": _manifest.host_identity(),
        "criu": {"path": criu, "version": version.split("Version:")[-1].split()[0], "argv": argv,
                 "log": "dump.log", "duration": round(duration, 4), "stats": {}},
        "process": ident,
        "tree": [{k: ident[k] for k in ("pid", "start_time", "comm", "exe", "cmdline")}],
        "options": dict({"leave_running": False, "leave_stopped": False, "shell_job": False,
                         "tcp_established": False, "ext_unix_sk": False, "external": [],
                         "file_locks": False, "ghost_limit": None, "page_server": None,
                         "pre_dump": False}, **options),
        "fds": {str(pid): fds},
        "stdio": {str(e["fd"]): {"kind": e["kind"], "target": e["target"]} for e in fds if e["fd"] in (0, 1, 2)},
        "stdio_files": stdio_files,
        "binaries": binaries,
        "images": images,
        "images_total_bytes": _manifest.images_total_bytes(images),
    }


def write_manifest(images_dir, manifest):
    """Write a (possibly altered) manifest with the collection's writer, which validates it."""
    _manifest.write_manifest(str(images_dir), manifest)


def make_checkpoint(criu, pid, images_dir, run_module=None, leave_running=False, leave_stopped=False,
                    raw=False, extra=()):
    """Checkpoint PID into images_dir; return the manifest.

    With run_module (and not raw): ckpt.criu.dump. Otherwise raw criu and a
    manifest from raw_manifest(), for what the dump module refuses on purpose,
    such as a stdout pipe to a reader outside the tree.
    """
    if run_module is not None and not raw:
        args = {"pid": pid, "images_dir": str(images_dir)}
        if leave_running:
            args["leave_running"] = True
        if leave_stopped:
            args["leave_stopped"] = True
        res = run_module("dump", args)
        assert not res.failed, res
        return read_manifest(images_dir)
    assert raw, "make_checkpoint needs run_module (ckpt.criu.dump) or raw=True (raw criu)"
    ident = identity(pid)
    fds = fd_table(pid)
    binaries = _checksum.process_files(pid)
    argv, duration = raw_dump(criu, pid, images_dir, leave_running, leave_stopped, extra)
    manifest = raw_manifest(criu, pid, ident, fds, binaries, argv, duration, images_dir,
                            {"leave_running": leave_running, "leave_stopped": leave_stopped})
    write_manifest(images_dir, manifest)
    return manifest


def flip_byte(path, offset=None):
    """Flip one byte (the middle one by default) in place; returns the offset."""
    size = os.path.getsize(path)
    offset = size // 2 if offset is None else offset
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))
    return offset


def start_workload(tmp_path, python, stdio="devnull", name="w", interval=0.02, stdout=False, extra_env=None):
    """Start counter.py under a chosen python binary (e.g. a private copy); (pid, ticks path)."""
    pidfile = tmp_path / ("%s.pid" % name)
    ticks = tmp_path / ("%s.ticks" % name)
    cmd = [sys.executable, str(WORKLOADS / "spawn.py"), "--stdio", stdio, "--pidfile", str(pidfile),
           "--", str(python), str(WORKLOADS / "counter.py"), "--out", str(ticks),
           "--interval", str(interval)]
    if stdout:
        cmd.append("--stdout")
    env = dict(os.environ, **(extra_env or {}))
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env,
                         stdin=subprocess.DEVNULL, cwd=str(tmp_path)).stdout
    pid = int(out.strip())
    deadline = time.time() + 10
    while time.time() < deadline and (not ticks.exists() or not ticks.read_text()):
        time.sleep(0.02)
    return pid, ticks


def dir_snapshot(path):
    """{name: (size, mtime_ns, mode)} of a directory, to prove nothing was touched."""
    out = {}
    for f in sorted(Path(path).iterdir()):
        st = f.stat()
        out[f.name] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


# ------------------------------------------------------------------ redis

REDIS_PORT = 6379


class Resp:
    """A minimal RESP (redis protocol) client on one TCP connection (held open on purpose).

    Replies: simple strings and bulk strings as str, integers as int, arrays as lists."""

    def __init__(self, address, port=REDIS_PORT, timeout=30.0):
        self.sock = socket.create_connection((address, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            text = rest.decode()
            if kind == b"-":
                raise RuntimeError("redis error: %s" % text)
            return text
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            return [self.reply() for _i in range(int(rest))]
        raise RuntimeError("unexpected redis reply %r" % line)

    def cmd(self, *args):
        self.sock.sendall(self.encode(*args))
        return self.reply()

    def pipeline(self, commands):
        self.sock.sendall(b"".join(self.encode(*c) for c in commands))
        return [self.reply() for _c in commands]
