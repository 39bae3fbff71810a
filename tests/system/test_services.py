"""Real services checkpointed and restored on one host by ckpt.criu.dump and ckpt.criu.restore,
against the real CRIU (4.2 or newer, as `make setup` provides) and real processes:

* Debian's redis-server: 10,000 keys, its TCP listener, its background threads, and one client
  connection held open through the dump and the restore (tcp_established, the nftables lock);
* Debian's nginx: a master and 3 workers (a process tree) serving a static file; and the
  www-data-worker variant, refused before anything is frozen where CAP_SYS_RESOURCE is missing;
* a threaded program whose threads each tick their own counter;
* a process tree with a pipe between two of its members.

Each service gets a free port chosen at run time and its own files under tmp_path; everything a
test started is killed at the end, whatever happened.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckpt_testlib import WORKLOADS, Resp, continuity, free_port, read_ticks, thread_ticks, wait, wait_gone

from ansible_collections.ckpt.criu.plugins.module_utils import _procfs

pytestmark = pytest.mark.criu

REDIS = "/usr/bin/redis-server"
NGINX = "/usr/sbin/nginx"
KEYS = 10000


# ------------------------------------------------------------------ helpers

_children = _procfs.children_or_none
_descendants = _procfs.descendants


def _tids(pid):
    return sorted(int(t) for t in os.listdir("/proc/%d/task" % pid))


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _wait_for(pred, what):
    assert wait(pred, 20, 0.05, ignore=(OSError,)), "timed out after 20 s waiting for %s" % what


@pytest.fixture
def procs(tmp_path):
    """start(cmd, name) -> pid: a detached program (own session, stdio on /dev/null) from spawn.py.
    Every PID started or registered (and, at the end, their descendants) is killed at teardown."""
    pids = []

    def start(cmd, name):
        pidfile = tmp_path / ("%s.spawn.pid" % name)
        out = subprocess.run([sys.executable, str(WORKLOADS / "spawn.py"), "--stdio", "devnull",
                              "--pidfile", str(pidfile), "--"] + [str(c) for c in cmd],
                             check=True, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                             cwd=str(tmp_path)).stdout
        pid = int(out)
        pids.append(pid)
        return pid

    start.register = pids.extend
    yield start
    everything = []
    for pid in pids:
        everything.extend(_descendants(pid))
    everything = pids + everything
    for pid in everything:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in everything:
        wait_gone(pid, 10)


def _dump(run_module, criu_bin, pid, images, **kw):
    args = {"pid": pid, "images_dir": str(images), "criu_path": criu_bin}
    args.update(kw)
    res = run_module("dump", args)
    assert res.status == "ok", res.get("msg")
    return res


def _restore(run_module, criu_bin, images, **kw):
    args = {"images_dir": str(images), "criu_path": criu_bin}
    args.update(kw)
    res = run_module("restore", args)
    assert res.status == "ok", res.get("msg")
    v = res["verified"]
    assert v["alive"] and v["exe_matches"] and v["cmdline_matches"] and v["tree_matches"] is True, v
    return res


# -------------------------------------------------------------------- redis

def test_redis_with_10000_keys_and_a_held_connection(procs, run_module, criu_bin, tmp_path):
    assert os.access(REDIS, os.X_OK), "redis-server is missing: run `make setup`"
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    conf = tmp_path / "redis.conf"
    conf.write_text("\n".join([
        "port %d" % port, "bind 127.0.0.1", "daemonize no", "protected-mode yes", "dir %s" % data,
        "pidfile %s" % (data / "redis.pid"), "logfile %s" % (data / "redis.log"), 'save ""',
        "appendonly no", ""]))
    pid = procs([REDIS, conf], "redis")
    _wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
              what="redis to listen on port %d" % port)
    loader = Resp("127.0.0.1", port)
    for start in range(0, KEYS, 1000):
        assert loader.pipeline([("SET", "key:%d" % i, "value-%d" % i) for i in range(start, start + 1000)]) \
            == ["OK"] * 1000
    assert loader.cmd("DBSIZE") == KEYS
    loader.close()
    held = Resp("127.0.0.1", port)
    assert held.cmd("CLIENT", "SETNAME", "held-through-the-checkpoint") == "OK"
    assert held.cmd("PING") == "PONG"
    tids = _tids(pid)
    assert len(tids) >= 4, "redis-server runs its background (bio) threads: %s" % tids

    images = tmp_path / "img"
    table = None
    try:
        d = _dump(run_module, criu_bin, pid, images, tcp_established=True)
        argv = d["criu_cmd"]
        assert "--tcp-established" in argv and argv[argv.index("--network-lock") + 1] == "nftables"
        assert wait_gone(pid), "a plain dump ends redis"
        # The network lock holds the connection while redis is gone: criu's own nftables table.
        table = _criu_nft_table(images / "dump.log")
        assert table in _nft_tables(), "the network lock %s is not in place after the dump" % table
        # What a new client sees meanwhile: nobody listens, the connection is refused.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        # What the held client sees: a request sent now is not refused nor reset; TCP retransmits it.
        sent = time.monotonic()
        held.sock.sendall(Resp.encode("PING"))
        r = _restore(run_module, criu_bin, images)
        assert table not in _nft_tables(), "the restore lifts the network lock"
        assert r["verified"]["processes"] == 1 and r["verified"]["threads"] == len(tids)
        assert _tids(pid) == tids, "every thread is back with its own TID"
        assert held.reply() == "PONG", "the request sent while redis was checkpointed is answered"
        waited = time.monotonic() - sent
    finally:
        if table and table in _nft_tables():
            subprocess.run(["nft", "delete", "table"] + table.split(), check=False)

    # The connection held through the dump and the restore answers, on the same server-side client.
    try:
        assert held.cmd("PING") == "PONG"
        assert held.cmd("CLIENT", "GETNAME") == "held-through-the-checkpoint"
        assert held.cmd("GET", "key:4242") == "value-4242"
        fresh = Resp("127.0.0.1", port)
        assert fresh.cmd("DBSIZE") == KEYS
        for start in range(0, KEYS, 1000):
            got = fresh.cmd("MGET", *["key:%d" % i for i in range(start, start + 1000)])
            assert got == ["value-%d" % i for i in range(start, start + 1000)]
        fresh.close()
    finally:
        held.close()
    frozen, restored = d["timings"]["frozen_time"] or 0, r["timings"]["criu_duration"]
    print("redis: dump frozen %.3f s, criu restore %.3f s, %d threads; a PING sent while it was checkpointed "
          "was answered %.2f s later" % (frozen, restored, len(tids), waited))


def _criu_nft_table(log):
    """'inet CRIU-<run id>', the table of criu's nftables network lock, from its dump log."""
    m = re.search(r"Running nftables \[add element (inet CRIU-\S+) ", Path(log).read_text(errors="replace"))
    assert m, "criu's dump log names no nftables lock table"
    return m.group(1)


def _nft_tables():
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return [line[len("table "):].strip() for line in out.splitlines() if line.startswith("table ")]


# -------------------------------------------------------------------- nginx

def _nginx_conf(tmp_path, port, user):
    root = tmp_path / "nginx"
    for sub in ("www", "tmp", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    body = hashlib.sha256(str(port).encode()).digest() * 2048  # 64 KiB
    (root / "www" / "blob.bin").write_bytes(body)
    conf = root / "nginx.conf"
    conf.write_text("""
user %(user)s;
worker_processes 3;
daemon off;
master_process on;
pid %(root)s/nginx.pid;
error_log %(root)s/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %(root)s/tmp/body;
    proxy_temp_path %(root)s/tmp/proxy;
    fastcgi_temp_path %(root)s/tmp/fastcgi;
    uwsgi_temp_path %(root)s/tmp/uwsgi;
    scgi_temp_path %(root)s/tmp/scgi;
    server {
        listen 127.0.0.1:%(port)d;
        root %(root)s/www;
    }
}
""" % {"user": user, "root": root, "port": port})
    return root, conf, body


def _start_nginx(procs, tmp_path, user, status=200):
    assert os.access(NGINX, os.X_OK), "nginx is missing: run `make setup`"
    port = free_port()
    root, conf, body = _nginx_conf(tmp_path, port, user)
    master = procs([NGINX, "-p", root, "-e", root / "logs" / "error.log", "-c", conf], "nginx")
    _wait_for(lambda: len(_children(master)) == 3, what="nginx's 3 workers")
    procs.register(_children(master))
    _wait_for(lambda: _get(port)[0] == status, what="nginx to answer %d on port %d" % (status, port))
    return master, port, body


def _get(port, path="/blob.bin"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_nginx_master_and_3_workers(procs, run_module, criu_bin, tmp_path):
    master, port, body = _start_nginx(procs, tmp_path, "root")
    workers = sorted(_children(master))
    assert _get(port) == (200, body)
    images = tmp_path / "img"
    d = _dump(run_module, criu_bin, master, images)
    assert sorted(t["pid"] for t in d["manifest"]["tree"]) == sorted([master] + workers)
    for pid in [master] + workers:
        assert wait_gone(pid), "a plain dump ends the whole tree"
    r = _restore(run_module, criu_bin, images)
    assert r["verified"]["processes"] == 4
    assert sorted(_children(master)) == workers, "the 3 workers are back, with their PIDs"
    for dummy in range(6):  # several requests, whichever worker takes them
        assert _get(port) == (200, body)
    frozen, restored = d["timings"]["frozen_time"] or 0, r["timings"]["criu_duration"]
    print("nginx: dump frozen %.3f s, criu restore %.3f s" % (frozen, restored))


def _has_cap_sys_resource():
    with open("/proc/self/status") as fh:
        mask = int([ln for ln in fh if ln.startswith("CapEff:")][0].split()[1], 16)
    return bool(mask >> 24 & 1)


def test_nginx_with_www_data_workers_is_refused_without_cap_sys_resource(procs, run_module, criu_bin, tmp_path):
    # www-data cannot read below pytest's 0700 tmp_path: it answers 403, which is enough here.
    master, port, dummy = _start_nginx(procs, tmp_path, "www-data", status=403)
    workers = sorted(_children(master))
    r = run_module("fd_inspect", {"pid": master, "criu_path": criu_bin})
    assert r.status == "ok", r
    if _has_cap_sys_resource():
        # Where criu keeps CAP_SYS_RESOURCE it can read the workers' limits: nothing to refuse.
        assert not any("CAP_SYS_RESOURCE" in b for b in r["blockers"]), r["blockers"]
        return
    caps = [b for b in r["blockers"] if "CAP_SYS_RESOURCE" in b]
    assert len(caps) == 1, r["blockers"]
    assert "Processes %d (nginx)" % workers[0] in caps[0] and "uid 33" in caps[0]
    assert "Can't get rlimit 0" in caps[0] and "user root;" in caps[0]
    images = tmp_path / "img"
    d = run_module("dump", {"pid": master, "images_dir": str(images), "criu_path": criu_bin})
    assert d.failed and "CAP_SYS_RESOURCE" in d["msg"] and "Nothing was frozen" in d["msg"]
    assert not images.exists()
    assert sorted(_children(master)) == workers and _get(port)[0] == 403, "nginx answers on, untouched"
    # CRIU agrees: a raw dump (leaving the tree running) fails on the workers' limits.
    raw = tmp_path / "raw"
    raw.mkdir(mode=0o700)
    p = subprocess.run([criu_bin, "dump", "-t", str(master), "-D", str(raw), "-o", str(raw / "dump.log"), "-v4",
                        "--leave-running"], stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False)
    log = (raw / "dump.log").read_text(errors="replace")
    assert p.returncode != 0 and "Can't get rlimit 0: Operation not permitted" in log
    _wait_for(lambda: all(_alive(x) for x in [master] + workers) and _get(port)[0] == 403,
              what="nginx to run on after criu's failed dump")


# ------------------------------------------------------------------ threads

def test_threads_each_continue_their_own_sequence(procs, run_module, criu_bin, tmp_path):
    n = 4
    d = tmp_path / "threads"
    d.mkdir()
    pid = procs([sys.executable, WORKLOADS / "threads.py", "--dir", d, "--threads", n], "threads")
    _wait_for((d / "ready").exists, what="the threads to tick")
    tids = _tids(pid)
    assert len(tids) == n + 1
    images = tmp_path / "img"
    _dump(run_module, criu_bin, pid, images)
    assert wait_gone(pid)
    before = [len(t) for t in thread_ticks(d, n)]
    r = _restore(run_module, criu_bin, images)
    assert r["verified"]["threads"] == n + 1 and _tids(pid) == tids
    _wait_for(lambda: all(len(t) >= b + 10 for t, b in zip(thread_ticks(d, n), before)),
              what="every thread to tick 10 more times")
    gaps = []
    for i, ticks in enumerate(thread_ticks(d, n)):
        seqs = [t[0] for t in ticks]
        assert seqs == list(range(1, len(seqs) + 1)), "thread %d skipped or repeated a tick" % i
        assert len(set(t[2] for t in ticks)) == 1, "thread %d changed TID" % i
        gaps.append(max((b[1] - a[1]) / 1e9 for a, b in zip(ticks, ticks[1:])))
    print("threads: largest gap per thread %s s" % ", ".join("%.3f" % g for g in gaps))


# ---------------------------------------------------------------- pipe tree


def test_process_tree_with_a_pipe_between_its_members(procs, run_module, criu_bin, tmp_path):
    ticks = tmp_path / "through-the-pipe.ticks"
    root = procs([sys.executable, WORKLOADS / "pipe_tree.py", ticks], "pipe-tree")
    _wait_for(lambda: len(_children(root)) == 1 and len(read_ticks(ticks)) >= 5, what="data through the pipe")
    child = _children(root)[0]
    procs.register([child])
    images = tmp_path / "img"
    d = _dump(run_module, criu_bin, root, images)
    kinds = [i["classification"] for i in d["manifest"]["fds"][str(root)] + d["manifest"]["fds"][str(child)]]
    assert kinds.count("pipe_internal") == 2, kinds
    assert wait_gone(root) and wait_gone(child)
    n = len(read_ticks(ticks))
    r = _restore(run_module, criu_bin, images)
    assert r["verified"]["processes"] == 2 and _children(root) == [child]
    _wait_for(lambda: len(read_ticks(ticks)) >= n + 10, what="data to flow through the pipe again")
    ok, gap = continuity(read_ticks(ticks))
    assert ok, "a message through the pipe was lost or repeated across the restore"
    print("pipe tree: largest gap %.3f s" % gap)

    # The PID check covers the whole tree: a member still running here is named, nothing is run.
    images2 = tmp_path / "img2"
    _dump(run_module, criu_bin, root, images2, leave_running=True)
    os.kill(root, signal.SIGKILL)
    assert wait_gone(root) and _alive(child), "the child keeps its PID after the writer is gone"
    refused = run_module("restore", {"images_dir": str(images2), "criu_path": criu_bin, "pid_wait": 0})
    assert refused.failed
    comm = Path("/proc/%d/comm" % child).read_text().strip()
    assert "Process %d (%s) of the checkpointed tree still runs here" % (child, comm) in refused["msg"]
    assert not (images2 / "restore.log").exists() and _alive(child) and not _alive(root)
    shutil.rmtree(str(images2))
