"""Helpers for the restore and process_state tests: make a real checkpoint of a
real process, and look at processes.

`make_checkpoint` dumps with ckpt.criu.dump when that module exists (and a
`run_module` is given); otherwise with raw criu plus a schema-1 manifest built
here from /proc, following docs/dev/manifest.md."""
from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import ckpt_testlib
from ckpt_testlib import sha256  # noqa: F401  (re-exported to the tests)

from ansible_collections.ckpt.criu.plugins.module_utils import _checksum

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = REPO / "tests" / "integration" / "targets" / "setup_workloads" / "files"
DUMP_MODULE = REPO / "plugins" / "modules" / "dump.py"
O_APPEND = 0o2000


def boot_id():
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def stat_fields(pid):
    text = Path("/proc/%d/stat" % pid).read_text()
    left, right = text.rsplit(")", 1)
    f = right.split()
    return {"comm": left.split(" (", 1)[1], "state": f[0], "ppid": int(f[1]), "sid": int(f[3]),
            "start_time": int(f[19])}


def state(pid):
    try:
        return stat_fields(pid)["state"]
    except OSError:
        return None


def identity(pid):
    st = stat_fields(pid)
    cmdline = Path("/proc/%d/cmdline" % pid).read_bytes().rstrip(b"\0").split(b"\0")
    uid = next(int(line.split()[1]) for line in Path("/proc/%d/status" % pid).read_text().splitlines()
               if line.startswith("Uid:"))
    return {"pid": pid, "ppid": st["ppid"], "start_time": st["start_time"], "boot_id": boot_id(),
            "uid": uid, "comm": st["comm"], "cmdline": [a.decode() for a in cmdline],
            "cwd": os.readlink("/proc/%d/cwd" % pid), "exe": os.readlink("/proc/%d/exe" % pid),
            "sid": st["sid"]}


def mapped_files(pid):
    out = []
    for line in Path("/proc/%d/maps" % pid).read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/") and not parts[5].endswith(" (deleted)"):
            if parts[5] not in out:
                out.append(parts[5])
    return out


def file_record(path):
    return {"path": path, "size": os.path.getsize(path), "sha256": sha256(path), "build_id": None}


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


def build_manifest(criu, pid, ident, fds, binaries, argv, duration, images_dir, options):
    images_dir = Path(images_dir)
    images = []
    for f in sorted(images_dir.iterdir()):
        if f.name in ("dump.log", "ckpt-manifest.json", "restore.log", "ckpt-restore.json") \
                or f.name.startswith("."):
            continue
        images.append({"name": f.name, "size": f.stat().st_size, "sha256": sha256(f)})
    stdio_files = []
    for e in fds:
        if e["kind"] == "file" and e["fd"] in (0, 1, 2):
            stdio_files.append({"pid": pid, "fd": e["fd"], "path": e["target"],
                                "size": os.path.getsize(e["target"])})
    version = subprocess.run([criu, "--version"], stdout=subprocess.PIPE, text=True, check=True).stdout
    return {
        "schema": 1,
        "complete": True,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"hostname": socket.gethostname(), "boot_id": boot_id(), "kernel": platform.release(),
                 "machine_id": Path("/etc/machine-id").read_text().strip()
                 if os.path.exists("/etc/machine-id") else None},
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
        "images_total_bytes": sum(i["size"] for i in images),
    }


def write_manifest(images_dir, manifest):
    path = Path(images_dir) / "ckpt-manifest.json"
    tmp = path.with_name(".ckpt-manifest.json.tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh, indent=2)
    os.rename(str(tmp), str(path))


def dump_module_available():
    """ckpt.criu.dump is used once it is committed (a work in progress is not)."""
    if os.environ.get("CKPT_RESTORE_TESTS_RAW_DUMP") == "1" or not DUMP_MODULE.exists():
        return False
    p = subprocess.run(["git", "ls-files", "--error-unmatch", str(DUMP_MODULE)], cwd=str(REPO),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return p.returncode == 0


def make_checkpoint(criu, pid, images_dir, run_module=None, leave_running=False, leave_stopped=False,
                    raw=False, extra=()):
    """Checkpoint PID into images_dir; return the manifest.

    Uses ckpt.criu.dump when it exists and run_module is given (unless raw),
    else raw criu + a manifest built here (also for cases the dump module
    refuses on purpose, such as a stdout pipe to a reader outside the tree).
    """
    if run_module is not None and not raw and dump_module_available():
        args = {"pid": pid, "images_dir": str(images_dir)}
        if leave_running:
            args["leave_running"] = True
        if leave_stopped:
            args["leave_stopped"] = True
        res = run_module("dump", args)
        assert not res.failed, res
        return json.loads((Path(images_dir) / "ckpt-manifest.json").read_text())
    ident = identity(pid)
    fds = fd_table(pid)
    binaries = _checksum.process_files(pid)
    argv, duration = raw_dump(criu, pid, images_dir, leave_running, leave_stopped, extra)
    manifest = build_manifest(criu, pid, ident, fds, binaries, argv, duration, images_dir,
                              {"leave_running": leave_running, "leave_stopped": leave_stopped})
    write_manifest(images_dir, manifest)
    return manifest


def wait_gone(pid, timeout=10.0):
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
    """Start counter.py under a chosen python binary (e.g. a private copy)."""
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


def read_ticks(ticks):
    """The ticks of the file at ``ticks``, which must exist."""
    if not os.path.exists(ticks):
        raise AssertionError("the workload wrote no ticks file %s" % ticks)
    return ckpt_testlib.read_ticks(ticks)


def continuity(ticks):
    return ckpt_testlib.continuity(read_ticks(ticks))


def dir_snapshot(path):
    """{name: (size, mtime_ns, mode)} of a directory, to prove nothing was touched."""
    out = {}
    for f in sorted(Path(path).iterdir()):
        st = f.stat()
        out[f.name] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out
