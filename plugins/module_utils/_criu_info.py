# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What CRIU can do on this host, proven rather than assumed (the logic of ``ckpt.criu.criu_info``).

``criu check --feature NAME`` answers questions about the kernel, not about what
a dump will do: on kernel 6.16 and newer, CRIU 4.1.1 passes ``criu check`` and
still fails on every TCP socket (checkpoint-restore/criu#2705); with CRIU 4.2.1
the userfaultfd checks pass while a real lazy migration fails on the source
("page-pipe: tee: 65536: Operation not permitted"). So a feature the other
modules rely on is reported as supported only when a real probe of it passes:

``inet_dump``
    dump (``--leave-running``) a throwaway process that holds a TCP listener
    on 127.0.0.1, port 0 (tens of milliseconds);
``lazy_pages``
    a whole post-copy round trip on one host: a throwaway process dumped with
    ``--lazy-pages`` and its page server on loopback, ``criu lazy-pages`` and
    ``criu restore --lazy-pages`` in a fresh PID and mount namespace (the
    source keeps the dumped process, and its PID, until every page is sent).

Every probe runs in a private 0700 temporary directory, is bounded by a
timeout, and kills whatever it started, whatever happens.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _criu
from ansible_collections.ckpt.criu.plugins.module_utils import _procfs
from ansible_collections.ckpt.criu.plugins.module_utils._criu import CriuError

ALWAYS_PROBED = ("mem_dirty_track", "uffd", "uffd-noncoop", "network_lock_nftables")
DEFAULT_FEATURES = ("mem_dirty_track", "uffd", "uffd-noncoop", "pidfd_store", "network_lock_nftables",
                    "has_ipt_legacy", "timens", "clone3_set_tid", "ns_pid", "tcp_half_closed",
                    "memfd_hugetlb", "get_rseq_conf", "pagemap_scan")
PROBES = ("inet_dump", "lazy_pages")
FEATURE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
INSTALL_HINT = "run scripts/install-criu.sh or install criu >= 4.2 (or set criu_path)"

CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

# Capabilities criu uses, with what their absence costs.
CRIU_CAPS = (
    ("CAP_SYS_ADMIN", "criu cannot dump or restore most processes (namespaces, mounts, map_files)"),
    ("CAP_CHECKPOINT_RESTORE", "criu cannot set PIDs on restore nor read map_files without CAP_SYS_ADMIN"),
    ("CAP_SYS_PTRACE", "criu cannot seize the processes it dumps"),
    ("CAP_SYS_RESOURCE", "criu cannot raise its file descriptor limit (a harmless log line on small processes) "
                         "nor read the limits of a process of another user, so a tree with members of "
                         "another uid (nginx's www-data workers) fails to dump"),
    ("CAP_NET_ADMIN", "criu cannot lock the network or dump TCP connections"),
    ("CAP_DAC_OVERRIDE", "criu cannot open files the dumped process owns"),
    ("CAP_DAC_READ_SEARCH", "criu cannot open files by handle (inotify, fanotify)"),
    ("CAP_SETUID", "criu cannot restore processes of other users"),
    ("CAP_SETGID", "criu cannot restore processes of other groups"),
    ("CAP_KILL", "criu cannot signal the processes it dumps"),
    ("CAP_SYS_CHROOT", "criu cannot restore a process's root directory"),
    ("CAP_FOWNER", "criu cannot restore file ownership details"),
)

# The throwaway processes the probes dump. argv[1] is the fd of a pipe the
# process closes once it is ready; then it only sleeps (bounded, in case the
# probe itself dies before it can kill it).
_INET_CHILD = (
    "import os, socket, sys, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
    "s.bind(('127.0.0.1', 0))\n"
    "s.listen(1)\n"
    "os.close(int(sys.argv[1]))\n"
    "time.sleep(300)\n"
)
_LAZY_CHILD = (
    "import os, sys, time\n"
    "b = bytearray(4 << 20)\n"
    "b[::4096] = b'\\x5a' * len(range(0, len(b), 4096))\n"
    "os.close(int(sys.argv[1]))\n"
    "end = time.time() + 300\n"
    "while time.time() < end:\n"
    "    time.sleep(0.05)\n"
)


# ------------------------------------------------------------ capabilities

def capabilities(status_path="/proc/self/status"):
    """Effective capabilities of this process and the criu-relevant missing ones."""
    mask = None
    try:
        with open(status_path) as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    mask = line.split(":", 1)[1].strip()
                    break
    except (IOError, OSError):
        pass
    if mask is None:
        return {"effective": None, "names": [], "missing": [],
                "notes": ["the effective capabilities could not be read from %s" % status_path]}
    value = int(mask, 16)
    names = [name for bit, name in enumerate(CAP_NAMES) if value >> bit & 1]
    missing, notes = [], []
    for name, cost in CRIU_CAPS:
        if name not in names:
            missing.append(name)
            notes.append("%s is missing: %s" % (name, cost))
    if "CAP_SYS_ADMIN" in names and "CAP_CHECKPOINT_RESTORE" in missing:
        # CAP_SYS_ADMIN covers everything CAP_CHECKPOINT_RESTORE grants.
        idx = missing.index("CAP_CHECKPOINT_RESTORE")
        missing.pop(idx)
        notes.pop(idx)
    return {"effective": mask, "names": names, "missing": missing, "notes": notes}


def has_capability(name, status_path="/proc/self/status"):
    """True/False for one effective capability of this process; None when it cannot be read."""
    caps = capabilities(status_path)
    if caps["effective"] is None:
        return None
    return name in caps["names"]


# ---------------------------------------------------------------- features

def probe_features(criu, names):
    """({name: supported}, {name: {supported, known, rc, output}}) from ``criu check --feature``."""
    features, details = {}, {}
    for name in names:
        if name in features:
            continue
        if not FEATURE_NAME.match(name):
            features[name] = False
            details[name] = {"supported": False, "known": False, "rc": None,
                             "output": "not a feature name; use the names criu check --feature knows"}
            continue
        res = _criu.criu_feature(criu, name)
        known = "Unknown feature" not in res["output"]
        features[name] = bool(res["supported"]) and known
        details[name] = {"supported": features[name], "known": known, "rc": res.get("rc"),
                         "output": res["output"]}
    return features, details


def feature_names(requested):
    """The requested names, then the always-probed ones not already there."""
    names = list(requested or [])
    return names + [n for n in ALWAYS_PROBED if n not in names]


def finish_network_lock(nl):
    """Fill ``available`` (best first, ``skip`` last) and ``recommended`` of a network_lock dict."""
    available = []
    if nl["nftables"]:
        available.append("nftables")
    if nl["iptables"]:
        available.append("iptables")
    available.append("skip")
    nl["available"] = available
    nl["recommended"] = available[0] if available[0] != "skip" else None
    return nl


def last_line(text):
    lines = [ln for ln in (text or "").splitlines() if ln.strip() and "RLIMIT_NOFILE" not in ln]
    return lines[-1].strip() if lines else "no output"


# ------------------------------------------------------------------ probes

def not_run(reason):
    """A probe result for a probe that did not run."""
    return {"ran": False, "ok": False, "error": reason, "log_errors": [], "duration": None}


def log_cause(log_texts):
    """(first real error without its prefix, the real error lines) of criu logs, noise left out."""
    errors = []
    for text in log_texts:
        errors.extend(_criu.relevant_errors(text or "", limit=10))
    if not errors:
        return None, []
    return _criu.strip_log_prefix(errors[0]), errors


def probe_result(ok, started, error=None, log_texts=()):
    """A probe result: {ran, ok, error, log_errors, duration}; the error is the log's first real one."""
    cause, errors = log_cause(log_texts)
    if not ok and cause and (error is None or error.startswith("criu ")):
        error = cause if error is None else "%s: %s" % (error, cause)
    return {"ran": True, "ok": bool(ok), "error": None if ok else (error or "the probe failed"),
            "log_errors": [] if ok else errors[:10], "duration": round(time.monotonic() - started, 4)}


def _start_child(code, tmp):
    """Start a throwaway python process (own session, stdio /dev/null); return it once it is ready."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", code, str(w)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp,
                                pass_fds=(w,), close_fds=True, start_new_session=True)
    finally:
        os.close(w)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready, dummy, dummy2 = select.select([r], [], [], 0.1)
            if ready and not os.read(r, 64):
                return proc
            if proc.poll() is not None:
                break
    finally:
        os.close(r)
    _kill(proc)
    raise CriuError("the throwaway process of the probe did not start (%s)" % sys.executable)


def _kill(proc):
    """SIGKILL a process we started (and its process group) and reap it."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.kill()
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _spawn(argv, tmp, name):
    """Start one criu run of a probe in its own session, stdout/stderr to files in tmp."""
    out = open(os.path.join(tmp, name + ".out"), "wb")
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                close_fds=True, start_new_session=True, cwd=tmp,
                                preexec_fn=lambda: os.umask(0o077))
    finally:
        out.close()


def _wait(proc, deadline):
    """The exit code of proc, or None when the deadline passed first."""
    try:
        return proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None


def _wait_for(predicate, deadline, interval=0.01):
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _contains(path, text):
    return text in _criu.read_log(path)


def free_port(address="127.0.0.1"):
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((address, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def inet_dump_probe(criu, timeout=30):
    """Can this criu dump a TCP listener on this kernel? Dump a throwaway one, leaving it running."""
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="ckpt-probe-")
    child = None
    try:
        child = _start_child(_INET_CHILD, tmp)
        images = os.path.join(tmp, "img")
        os.mkdir(images, 0o700)
        log = os.path.join(tmp, "dump.log")
        res = _criu.run_criu(criu, "dump", ["-t", str(child.pid), "-D", images, "-W", tmp, "--leave-running"],
                             log, timeout=timeout)
        error = None if res.ok else ("criu dump timed out after %d s" % timeout if res.timed_out
                                     else "criu dump exited %s" % res.rc)
        return probe_result(res.ok, started, error, [res.log_text, res.stderr])
    except CriuError as exc:
        return probe_result(False, started, exc.msg)
    finally:
        _kill(child)
        shutil.rmtree(tmp, ignore_errors=True)


def lazy_pages_probe(criu, timeout=30):
    """A real post-copy round trip on this host; see the module docstring."""
    unshare, nsenter = _criu.find_executable("unshare"), _criu.find_executable("nsenter")
    if not unshare or not nsenter:
        return not_run("unshare and nsenter (util-linux) are needed for the lazy pages probe and are missing")
    started = time.monotonic()
    deadline = started + timeout
    tmp = tempfile.mkdtemp(prefix="ckpt-probe-")
    images = os.path.join(tmp, "img")
    logs = dict((k, os.path.join(tmp, "%s.log" % k)) for k in ("dump", "lazy", "restore"))
    child = ns = dump = lazy = restore = None
    try:
        os.mkdir(images, 0o700)
        child = _start_child(_LAZY_CHILD, tmp)
        # The destination: a fresh PID and mount namespace with its own /proc, whose init only
        # waits; the restored process gets the same PID there. Killing the init ends it all.
        ns = subprocess.Popen([unshare, "--pid", "--fork", "--mount", "--mount-proc", "--propagation",
                               "private", "sleep", str(int(timeout) + 5)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
                              start_new_session=True)
        init = []

        def ns_init():
            init[:] = _children(ns.pid)
            return bool(init)
        if not _wait_for(ns_init, min(deadline, time.monotonic() + 5)):
            return probe_result(False, started, "could not create a PID namespace with unshare for the restore")
        enter = [nsenter, "--target", str(init[0]), "--pid", "--mount", "--"]
        port = free_port()
        dump = _spawn(_criu.build_argv(criu, "dump", [
            "-t", str(child.pid), "-D", images, "-W", images, "--lazy-pages", "--address", "127.0.0.1",
            "--port", str(port)], logs["dump"]), tmp, "dump")
        if not _wait_for(lambda: dump.poll() is not None or _contains(logs["dump"], "Starting page server"),
                         deadline):
            return probe_result(False, started, "criu dump --lazy-pages did not start its page server",
                                [_criu.read_log(logs["dump"])])
        if dump.poll() is not None:
            return probe_result(False, started, "criu dump --lazy-pages exited %s" % dump.returncode,
                                [_criu.read_log(logs["dump"])])
        sock = os.path.join(images, "lazy-pages.socket")
        lazy = _spawn(enter + _criu.build_argv(criu, "lazy-pages", [
            "--page-server", "--address", "127.0.0.1", "--port", str(port), "-D", images, "-W", images],
            logs["lazy"]), tmp, "lazy")
        if not _wait_for(lambda: lazy.poll() is not None or os.path.exists(sock), deadline):
            return probe_result(False, started, "criu lazy-pages did not open its socket",
                                [_criu.read_log(logs[k]) for k in ("lazy", "dump")])
        restore = _spawn(enter + _criu.build_argv(criu, "restore", [
            "-D", images, "-W", images, "--lazy-pages", "-d"], logs["restore"]), tmp, "restore")
        rc = {"restore": _wait(restore, deadline), "lazy": _wait(lazy, deadline), "dump": _wait(dump, deadline)}
        texts = [_criu.read_log(logs[k]) for k in ("dump", "lazy", "restore")]
        late = [k for k, v in rc.items() if v is None]
        if late:
            return probe_result(False, started, "criu %s did not finish within %d s" % (", ".join(late), timeout),
                                texts)
        ok = (all(v == 0 for v in rc.values()) and "Restore finished successfully" in texts[2]
              and "Dumping finished successfully" in texts[0])
        restored = [p for p in _descendants(init[0]) if _state(p) not in (None, "Z", "X")]
        if ok and not restored:
            return probe_result(False, started, "criu reported a lazy restore, but the restored process is "
                                "not running in the probe's namespace", texts)
        bad = ", ".join("%s exited %s" % (k, v) for k, v in sorted(rc.items()) if v != 0)
        return probe_result(ok, started, "criu %s" % (bad or "logs do not say the lazy migration finished"),
                            texts)
    except (CriuError, OSError) as exc:
        return probe_result(False, started, getattr(exc, "msg", None) or str(exc))
    finally:
        for proc in (dump, lazy, restore):
            _kill(proc)
        _kill(child)
        _kill_ns(ns)
        shutil.rmtree(tmp, ignore_errors=True)


_children = _procfs.children_or_none
_descendants = _procfs.descendants


def _state(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (IOError, OSError, IndexError):
        return None


def _kill_ns(ns):
    """Kill the init of the probe's PID namespace (so everything in it) and reap unshare."""
    if ns is None:
        return
    for p in _children(ns.pid):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    _kill(ns)


# ------------------------------------------------------------------ gather

def empty_result():
    return {
        "changed": False,
        "criu": {"found": False, "path": None, "version": None, "major": None, "minor": None,
                 "sublevel": None, "supported": False},
        "check": {"ok": False, "rc": None, "output": "", "skipped": True},
        "features": {},
        "feature_details": {},
        "pre_dump_supported": False,
        "uffd_supported": False,
        "lazy_pages_supported": False,
        "inet_dump_supported": False,
        "probes": dict((name, not_run("criu was not found")) for name in PROBES),
        "root": os.geteuid() == 0,
        "capabilities": capabilities(),
        "network_lock": {"iptables": _criu.find_executable("iptables-restore") is not None, "nftables": False,
                         "available": [], "recommended": None},
    }


def run_probes(criu, wanted, feats, root, check_ok):
    """{name: probe result} for the probes in ``wanted``; the others say why they did not run."""
    out = {}
    for name in PROBES:
        if name not in wanted:
            out[name] = not_run("not requested (probes)")
        elif not root:
            out[name] = not_run("the probes dump a process and need root")
        elif not check_ok:
            out[name] = not_run("criu check did not pass (or did not run)")
        elif name == "lazy_pages" and not (feats.get("uffd") and feats.get("uffd-noncoop")):
            out[name] = not_run("the kernel's userfaultfd checks (uffd, uffd-noncoop) do not pass")
        elif name == "inet_dump":
            out[name] = inet_dump_probe(criu)
        else:
            out[name] = lazy_pages_probe(criu)
    return out


def derive(result):
    """The derived facts from features and probes (pure)."""
    feats, probes = result["features"], result["probes"]
    result["pre_dump_supported"] = feats.get("mem_dirty_track", False)
    result["uffd_supported"] = bool(feats.get("uffd", False) and feats.get("uffd-noncoop", False))
    result["inet_dump_supported"] = bool(probes.get("inet_dump", {}).get("ok"))
    result["lazy_pages_supported"] = bool(result["uffd_supported"] and probes.get("lazy_pages", {}).get("ok"))
    result["network_lock"]["nftables"] = feats.get("network_lock_nftables", False)
    finish_network_lock(result["network_lock"])
    return result


def _probe_word(probe, yes, no):
    if probe["ok"]:
        return yes
    if not probe["ran"]:
        return "%s not probed (%s)" % (no, probe["error"])
    return "%s NOT supported (%s)" % (no, probe["error"])


def summary(result, check_ran):
    """One sentence summing up the host (pure)."""
    parts = ["criu %s at %s" % (result["criu"]["version"], result["criu"]["path"])]
    if check_ran:
        parts.append("criu check %s" % ("passed" if result["check"]["ok"] else "FAILED"))
    parts.append("pre-dump %s" % ("supported" if result["pre_dump_supported"]
                                  else "not supported (no soft-dirty memory tracking)"))
    parts.append(_probe_word(result["probes"]["inet_dump"], "TCP/UDP sockets can be dumped",
                             "dumping TCP/UDP sockets"))
    parts.append(_probe_word(result["probes"]["lazy_pages"], "lazy pages supported (round trip passed)",
                             "lazy pages"))
    return "; ".join(parts)


def gather(params):
    """(result, problems): everything criu_info reports; problems matter only with ``required``."""
    result = empty_result()
    problems = []
    try:
        criu = _criu.find_criu(params.get("criu_path"))
    except CriuError as exc:
        result["criu"]["msg"] = exc.msg
        result["msg"] = exc.msg
        finish_network_lock(result["network_lock"])
        return result, ["%s; %s" % (exc.msg.split(";")[0], INSTALL_HINT)]
    result["criu"].update(found=True, path=criu)
    try:
        ver = _criu.criu_version(criu)
        result["criu"].update(version=ver["version"], major=ver["major"], minor=ver["minor"],
                              sublevel=ver["sublevel"], supported=bool(ver.get("supported")))
        if not result["criu"]["supported"]:
            problems.append("criu %s at %s is older than 4.1, which this collection needs; %s"
                            % (ver["version"], criu, INSTALL_HINT))
    except CriuError as exc:
        result["criu"]["found"] = False
        result["criu"]["msg"] = "%s exists but does not run as criu: %s" % (criu, exc.msg)
        result["msg"] = result["criu"]["msg"]
        result["probes"] = dict((name, not_run(result["criu"]["msg"])) for name in PROBES)
        finish_network_lock(result["network_lock"])
        return result, ["%s; %s" % (result["criu"]["msg"], INSTALL_HINT)]

    check = params.get("check", True)
    if check:
        chk = _criu.criu_check(criu)
        result["check"] = {"ok": bool(chk["ok"]), "rc": chk.get("rc"), "output": chk["output"], "skipped": False}
        if not chk["ok"]:
            problems.append("criu check failed on this host (rc=%s): %s; fix what it reports (kernel "
                            "configuration, privileges) before checkpointing here" % (
                                chk.get("rc"), last_line(chk["output"])))

    feats, details = probe_features(criu, feature_names(params.get("features")))
    result["features"], result["feature_details"] = feats, details
    wanted = PROBES if params.get("probes") is None else params["probes"]
    # Without `criu check` the probes still run: a failing one then says why.
    result["probes"] = run_probes(criu, wanted, feats, result["root"], result["check"]["ok"] or not check)
    derive(result)
    result["msg"] = summary(result, check)
    return result, problems
