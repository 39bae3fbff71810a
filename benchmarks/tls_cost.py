#!/usr/bin/env python
"""What criu's TLS costs a page-server dump, raw criu on loopback (no Ansible).

    python3 benchmarks/tls_cost.py [--mem MIB] [--runs N] [--criu PATH]

Makes a throw-away CA plus server and client certificates with openssl (in a
0700 directory, removed at the end), starts a counter holding --mem MiB, and
for each run and mode (plain, tls) starts ``criu page-server -d`` on
127.0.0.1 and dumps the counter into it with ``--leave-running``. Prints
criu's own frozen time (stats-dump) and the dump's wall time per run, and the
medians. Run as root.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "collections"))

from ansible_collections.ckpt.criu.plugins.module_utils import _criu  # noqa: E402


def certs(d):
    def run(*argv):
        subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=ckpt-migration-ca")
    for name in ("server", "client"):
        Path(d, name + ".ext").write_text("subjectAltName=IP:127.0.0.1\n")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
            "-subj", "/CN=127.0.0.1")
        run("openssl", "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "1", "-extfile", name + ".ext")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tls_args(d, role):
    return ["--tls", "--tls-cacert", os.path.join(d, "ca.pem"), "--tls-cert", os.path.join(d, role + ".pem"),
            "--tls-key", os.path.join(d, role + ".key")]


def one(criu, pid, work, cdir, tls):
    dst, src = os.path.join(work, "dst"), os.path.join(work, "src")
    for p in (dst, src):
        shutil.rmtree(p, ignore_errors=True)
        os.mkdir(p, 0o700)
    port = free_port()
    ps = [criu, "page-server", "-D", dst, "--address", "127.0.0.1", "--port", str(port), "-d",
          "--pidfile", os.path.join(dst, "ps.pid"), "-o", os.path.join(dst, "ps.log"), "-v4"]
    dump = [criu, "dump", "-t", str(pid), "-D", src, "-W", src, "--leave-running", "--page-server",
            "--address", "127.0.0.1", "--port", str(port), "-o", os.path.join(src, "dump.log"), "-v4"]
    if tls:
        ps += tls_args(cdir, "server")
        dump += tls_args(cdir, "client")
    subprocess.run(ps, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    rc = subprocess.run(dump, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, check=False).returncode
    wall = time.monotonic() - t0
    if rc != 0:
        raise SystemExit("criu dump failed (tls=%s); see %s/dump.log" % (tls, src))
    stats = _criu.read_stats(src, "dump")
    pages = sum(os.path.getsize(os.path.join(dst, n)) for n in os.listdir(dst) if n.startswith("pages-"))
    return stats.get("frozen_time_us", 0) / 1e6, wall, pages


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--criu", default="/opt/ckpt-criu/bin/criu")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ckpt-tls-cost-", dir="/var/tmp")
    cdir = os.path.join(work, "certs")
    os.mkdir(cdir, 0o700)
    certs(cdir)
    counter = subprocess.Popen(["setsid", sys.executable, str(REPO / "tests" / "integration" / "targets" / "setup_workloads" / "files" / "counter.py"),
                                "--out", os.path.join(work, "ticks"), "--mem", str(args.mem)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(os.path.join(work, "ticks")):
            time.sleep(0.05)
        time.sleep(0.5)
        rows = {"plain": [], "tls": []}
        for i in range(args.runs):
            for mode in ("plain", "tls"):
                frozen, wall, pages = one(args.criu, counter.pid, work, cdir, mode == "tls")
                rows[mode].append((frozen, wall))
                print("run %d %-5s frozen %.3f s  dump wall %.3f s  pages %d MiB" % (
                    i + 1, mode, frozen, wall, pages >> 20))
        for mode, r in rows.items():
            print("median %-5s frozen %.3f s  dump wall %.3f s" % (
                mode, statistics.median(x[0] for x in r), statistics.median(x[1] for x in r)))
    finally:
        counter.kill()
        counter.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
