"""Real network services on the SSH test fleet: redis-server and nginx from the
Debian packages, each in its own directory under a host's private /srv, and a
service address on the fleet's bridge that moves with them.

The services listen inside the fleet hosts' own network namespaces, so their
fixed ports (6379, 8080) never touch the machine's. The client is the
controller (the machine's root network namespace, on the fleet's bridge).
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from ckpt_testlib import REDIS_PORT
from fleet_testlib import FLEET_SUBNET, WORKLOADS, FleetWorkload, fresh

NGINX_PORT = 8080
REDIS_SERVER = "/usr/bin/redis-server"
NGINX = "/usr/sbin/nginx"
# A service address inside the fleet's subnet that no host has at boot.
SERVICE_PREFIX = ipaddress.ip_network(FLEET_SUBNET).prefixlen


def service_ip():
    return str(ipaddress.ip_network(FLEET_SUBNET)[200])


def service_cidr():
    return "%s/%d" % (service_ip(), SERVICE_PREFIX)


def require(path, package):
    assert os.path.exists(path), "%s is missing: install the Debian package %s (make setup does)" % (path, package)


def addresses(fleet, host, dev="eth0"):
    p = fresh(fleet).exec(host, ["ip", "-j", "-4", "addr", "show", "dev", dev], stdout=subprocess.PIPE, text=True,
                          check=True)
    return [a["local"] for link in json.loads(p.stdout or "[]") for a in link.get("addr_info", [])]


def set_address(fleet, host, cidr, present, dev="eth0"):
    here = cidr.split("/")[0] in addresses(fleet, host, dev)
    if here != present:
        fresh(fleet).exec(host, ["ip", "addr", "add" if present else "del", cidr, "dev", dev], check=True)


def spawn(fleet, host, pidfile, argv, cwd="/"):
    """Start argv detached on host (its own session, stdio on /dev/null); return its PID there."""
    p = fleet.ssh(host, ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, "python3",
                         str(WORKLOADS / "spawn.py"), "--stdio", "devnull", "--pidfile", pidfile, "--"] + argv,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return int(p.stdout.split()[-1])


def wait_port(address, port, timeout=20.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise AssertionError("nothing answers on %s:%d after %.0f s: %s" % (address, port, timeout, last))


# ----------------------------------------------------------------- redis

def key(i):
    return "key:%05d" % i


def value(i):
    return "value-%d-%s" % (i, "x" * (i % 50))


def load_keys(client, n=10000, chunk=1000):
    for start in range(0, n, chunk):
        args = ["MSET"]
        for i in range(start, min(n, start + chunk)):
            args += [key(i), value(i)]
        assert client.cmd(*args) == "OK"
    assert client.cmd("DBSIZE") == n


def check_keys(client, n=10000, chunk=1000):
    """Every key with its value; returns the keys that differ."""
    bad = []
    for start in range(0, n, chunk):
        idx = list(range(start, min(n, start + chunk)))
        got = client.cmd("MGET", *[key(i) for i in idx])
        bad += [key(i) for i, v in zip(idx, got) if v != value(i)]
    return bad


def redis_config(fleet, host, bind="0.0.0.0"):
    """redis in /srv/redis on host: its own config and dir, in the foreground (no daemonize race)."""
    d = Path(fleet.host_path(host, "/srv/redis"))
    d.mkdir(parents=True, exist_ok=True)
    (d / "redis.conf").write_text("\n".join([
        "bind %s" % bind, "port %d" % REDIS_PORT, "protected-mode no", "daemonize no", "supervised no",
        'logfile ""', 'save ""', "appendonly no", "dir /srv/redis", "databases 1", ""]))
    return "/srv/redis/redis.conf"


def start_redis(fleet, host, others=(), bind="0.0.0.0"):
    """redis-server on host (and its directory on the others, as a deployment has it); a FleetWorkload."""
    require(REDIS_SERVER, "redis-server")
    for h in others:
        redis_config(fleet, h, bind)
    conf = redis_config(fleet, host, bind)
    pid = spawn(fleet, host, "/srv/redis/spawn.pid", [REDIS_SERVER, conf], cwd="/srv/redis")
    wait_port(fleet.address(host) if bind in ("0.0.0.0", "*") else bind, REDIS_PORT)
    return FleetWorkload(fleet, host, pid, "/srv/redis/spawn.pid", None)


class Pinger(threading.Thread):
    """PING on a held connection every `interval` s; records the longest wait for an answer."""

    def __init__(self, client, interval=0.05):
        super().__init__(daemon=True)
        self.client, self.interval = client, interval
        self.stop = threading.Event()
        self.count = 0
        self.longest = 0.0
        self.error = None

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                assert self.client.cmd("PING") == "PONG"
            except Exception as exc:  # noqa: BLE001  reported by the test
                self.error = exc
                return
            self.longest = max(self.longest, time.monotonic() - t)
            self.count += 1
            time.sleep(self.interval)

    def finish(self):
        self.stop.set()
        self.join(60)
        assert not self.is_alive(), "the client's PING never came back"


# ----------------------------------------------------------------- nginx

def nginx_tree(fleet, host, workers=3):
    """nginx in /srv/nginx on host: master + `workers` workers (as root), a static file."""
    d = Path(fleet.host_path(host, "/srv/nginx"))
    (d / "www").mkdir(parents=True, exist_ok=True)
    (d / "logs").mkdir(exist_ok=True)
    (d / "www" / "index.html").write_bytes(b"".join(b"line %06d of the page nginx serves\n" % i for i in range(3000)))
    (d / "logs" / "error.log").touch()
    (d / "nginx.conf").write_text("""
user root;
worker_processes %d;
daemon off;
master_process on;
pid /srv/nginx/nginx.pid;
error_log /srv/nginx/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path /srv/nginx/tmp-body;
    proxy_temp_path /srv/nginx/tmp-proxy;
    fastcgi_temp_path /srv/nginx/tmp-fastcgi;
    uwsgi_temp_path /srv/nginx/tmp-uwsgi;
    scgi_temp_path /srv/nginx/tmp-scgi;
    server {
        listen %d;
        root /srv/nginx/www;
    }
}
""" % (workers, NGINX_PORT))
    return "/srv/nginx/nginx.conf"


def start_nginx(fleet, host, others=(), workers=3):
    require(NGINX, "nginx")
    for h in others:
        nginx_tree(fleet, h, workers)
    conf = nginx_tree(fleet, host, workers)
    pid = spawn(fleet, host, "/srv/nginx/spawn.pid",
                [NGINX, "-c", conf, "-p", "/srv/nginx/", "-e", "/srv/nginx/logs/error.log"], cwd="/srv/nginx")
    wait_port(fleet.address(host), NGINX_PORT)
    return FleetWorkload(fleet, host, pid, "/srv/nginx/spawn.pid", None)


def children(fleet, host, pid):
    p = fresh(fleet).exec(host, ["ps", "-o", "pid=,comm=", "--ppid", str(pid)], stdout=subprocess.PIPE, text=True)
    return [line.split(None, 1) for line in p.stdout.splitlines() if line.strip()]


def http_get(address, port=NGINX_PORT, path="/index.html"):
    with socket.create_connection((address, port), timeout=20) as s:
        s.sendall(b"GET %s HTTP/1.0\r\nHost: test\r\n\r\n" % path.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), body


def kill_everywhere(fleet, pids):
    fresh(fleet)
    for h in fleet.hosts:
        for pid in pids:
            fleet.exec(h, ["kill", "-9", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
