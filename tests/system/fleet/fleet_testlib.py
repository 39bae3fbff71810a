"""Helpers of the tests on the SSH test fleet (fleet.py, beside this file).

Playbooks run with real ansible-playbook over real SSH; every extra var
is passed as a string, as an AWX survey passes it. The tests on hosts booting
systemd (`fleet.py up --init systemd`) have their helpers here too: a systemd
fleet, ssh and `systemctl show` as Python values, the drop-in that makes
Debian's redis-server.service checkpointable, and a ticker unit.
"""
from __future__ import annotations

import json
import ipaddress
import os
import re
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import fleet as fleet_mod
from ckpt_testlib import REPO, WORKLOADS, Ticker, read_ticks, wait

Fleet = fleet_mod.Fleet
FleetError = fleet_mod.FleetError

FLEET_PY = Path(fleet_mod.__file__).resolve()
# What an operator adds to Debian's redis-server.service so that CRIU can take it.
REDIS_DROP_IN = (REPO / "tests" / "system" / "files" / "redis-checkpointable.conf").read_text()
PLAYBOOKS = REPO / "playbooks"
STATE_DIR = os.environ.get("CKPT_ROLES_FLEET_STATE_DIR", "/run/ckpt-fleet-roles-it")
# Name and subnet can be changed so that two checkouts can run their fleet
# tests on one machine at once.
FLEET_NAME = os.environ.get("CKPT_ROLES_FLEET_NAME", "ckrit")
FLEET_SUBNET = os.environ.get("CKPT_ROLES_FLEET_SUBNET", "10.216.0.0/24")
HOSTS = 6


def fresh(fleet):
    """Reload the fleet's state: a reboot by a fleet.py subprocess changed it."""
    fleet.state = fleet._load()  # pylint: disable=protected-access
    return fleet


def reset_pid_counters(fleet):
    """Start every host's PID counter again at that host's base.

    Each host is its own PID namespace with its own range, so that a process
    restored with its PID finds it free on the destination. Over a long
    session a busy destination's counter wraps past pid_max into the other
    hosts' ranges; its SSH sessions then hold PIDs a workload may get too.
    A host that is down is left alone."""
    for h, st in fresh(fleet).state["hosts"].items():
        if st.get("pid_base"):
            fleet.exec(h, ["sh", "-c", "echo %d > /proc/sys/kernel/ns_last_pid" % st["pid_base"]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pid_taken_elsewhere(fleet, host, pid):
    """The fleet hosts other than host on which pid is in use."""
    return [h for h in fleet.hosts if h != host
            and fleet.exec(h, ["test", "-e", "/proc/%d" % pid]).returncode == 0]


class FleetWorkload(Ticker):
    """A counter started over SSH on a fleet host (as a daemon would be)."""

    def __init__(self, fleet, host, pid, pidfile, ticks):
        self.fleet, self.host, self.pid, self.pidfile, self.ticks = fleet, host, pid, pidfile, ticks

    def state(self, host=None):
        """Process state letter of self.pid on host, or None when it is gone."""
        p = fresh(self.fleet).exec(host or self.host, ["cat", "/proc/%d/stat" % self.pid],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if p.returncode != 0:
            return None
        st = p.stdout.rsplit(")", 1)[1].split()[0]
        return None if st in ("Z", "X") else st

    def running_on(self, host):
        return self.state(host) in ("R", "S", "D")

    def wait_ticks(self, n=5, timeout=10.0):
        return super().wait_ticks(n, timeout)


def unreachable_address():
    """An address in the fleet's subnet that no host has."""
    return str(ipaddress.ip_network(FLEET_SUBNET)[254])


def write_inventory(fleet, path, sources, others=(), hostvars=None, unreachable=()):
    """sources: {src: dest}; others: hosts in group spares; hostvars: {host: {k: v}}."""
    hostvars = hostvars or {}

    def line(h):
        addr = unreachable_address() if h in unreachable else fleet.address(h)
        hv = dict(hostvars.get(h, {}))
        if h in sources:
            hv["ckpt_migrate_destination"] = sources[h]
        return " ".join(["%s ansible_host=%s" % (h, addr)] + ["%s=%s" % (k, v) for k, v in hv.items()])

    text = ["[ckpt_sources]"] + [line(h) for h in sources]
    spares = [h for h in list(others) + sorted(set(sources.values())) if h not in sources]
    text += ["", "[spares]"] + [line(h) for h in dict.fromkeys(spares)]
    text += ["", "[all:vars]", "ansible_user=root",
             "ansible_ssh_private_key_file=%s" % fleet.key_path,
             "ansible_ssh_common_args='-F %s -o ConnectTimeout=3'" % fleet.ssh_config_path,
             "ansible_python_interpreter=/usr/bin/python3", ""]
    Path(path).write_text("\n".join(text))
    return str(path)


class PlaybookRun:
    def __init__(self, proc, report_path):
        self.rc = proc.returncode
        self.output = proc.stdout
        self.report = None
        if report_path and Path(report_path).exists():
            self.report = json.loads(Path(report_path).read_text())

    def changed(self, host):
        m = re.search(r"^%s\s*:\s*ok=\d+\s+changed=(\d+)" % re.escape(host), self.output, re.M)
        assert m, "no recap for %s in:\n%s" % (host, self.output[-3000:])
        return int(m.group(1))

    def rows(self, **match):
        return [r for r in (self.report or {}).get("processes", [])
                if all(r.get(k) == v for k, v in match.items())]


def listdir(fleet, host, path):
    p = fresh(fleet).exec(host, ["ls", "-A", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return p.stdout.split() if p.returncode == 0 else None


def migrate_root(fleet, host, root="/var/lib/ckpt/migrate"):
    """What is in the migrate role's images root on ``host`` (None when it does not exist), without
    the directories of the sources that migrated to it (``from-<source>``): the role keeps those,
    like the root itself, and they must be empty."""
    names = listdir(fleet, host, root)
    if names is None:
        return None
    for name in (n for n in names if n.startswith("from-")):
        assert listdir(fleet, host, "%s/%s" % (root, name)) == [], "%s:%s/%s is not empty" % (host, root, name)
    return [n for n in names if not n.startswith("from-")]


def copy_python(fleet, host, alter=False):
    """Put a copy of the python binary at /srv/bin/python3 on host (altered: one byte more)."""
    real = os.path.realpath("/usr/bin/python3")
    dst = Path(fleet.host_path(host, "/srv/bin/python3"))
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(real, dst)
    if alter:
        with open(dst, "ab") as fh:
            fh.write(b"\0")
    return "/srv/bin/python3"


# ------------------------------------------------------- hosts booting systemd


@contextmanager
def systemd_fleet(state_dir, name, subnet, hosts=2, binds=None):
    """A fleet of hosts booting systemd, taken down whatever happens."""
    if os.geteuid() != 0:
        pytest.fail("the test fleet needs root")
    f = fleet_mod.Fleet(state_dir=str(state_dir), name=name, subnet=subnet, init="systemd", binds=binds)
    try:
        f.up(hosts=hosts, timeout=60)
        yield f
    finally:
        f.down()


def ssh(fleet, host, argv, check=True, timeout=120, input=None):  # pylint: disable=redefined-builtin
    """stdout of argv run on host over SSH; asserts rc 0 unless check=False."""
    kw = {"input": input} if input is not None else {}
    p = fleet.ssh(host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, **kw)
    if check:
        assert p.returncode == 0, "ssh %s %s: rc=%d\n%s%s" % (host, argv, p.returncode, p.stdout, p.stderr)
    return p.stdout


def show(fleet, host, unit, *props):
    """{prop: value} of `systemctl show UNIT -p PROPS` on host."""
    out = ssh(fleet, host, ["systemctl", "show", unit, "-p", ",".join(props)])
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def install_ticker(fleet, hosts, unit, ticks, enable=False, start_on=None):
    """A Restart=always simple service whose ticks (file and journal) prove
    continuity, installed on hosts; started on start_on. Returns the
    controller-side path of the ticks file on start_on (or `ticks`)."""
    body = ("[Unit]\nDescription=ckpt.criu test ticker\n[Service]\nType=simple\nRestart=always\n"
            "RestartSec=100ms\nExecStart=/usr/bin/python3 %s --out %s --interval 0.02 --stdout\n"
            "[Install]\nWantedBy=multi-user.target\n" % (WORKLOADS / "counter.py", ticks))
    for h in hosts:
        ssh(fleet, h, ["sh", "-c", "cat > /etc/systemd/system/%s.service && systemctl daemon-reload" % unit],
            input=body)
        if enable:
            ssh(fleet, h, ["systemctl", "enable", unit])
    if not start_on:
        return ticks
    ssh(fleet, start_on, ["systemctl", "start", unit])
    path = fleet.host_path(start_on, ticks) if ticks.startswith(("/srv/", "/root/", "/var/lib/ckpt/")) else ticks
    wait(lambda: len(read_ticks(path)) >= 5, timeout=10, step=0.05)
    assert len(read_ticks(path)) >= 5, "the ticker wrote no ticks"
    return path


def install_redis(fleet, host, keys=10000, start=True):
    """Debian's redis-server.service with the checkpointable drop-in; `keys` keys written."""
    ssh(fleet, host, ["sh", "-c", "mkdir -p /etc/systemd/system/redis-server.service.d && cat > "
                      "/etc/systemd/system/redis-server.service.d/checkpointable.conf && systemctl daemon-reload"
                      + (" && systemctl enable --now redis-server && systemctl restart redis-server" if start
                         else " && systemctl stop redis-server")], input=REDIS_DROP_IN)
    if start and keys:
        script = "".join("SET key:%d value-%d\n" % (i, i * 7) for i in range(keys))
        out = ssh(fleet, host, ["redis-cli", "--pipe"], input=script)
        assert "errors: 0, replies: %d" % keys in out, out


# Run inside the source: once the dump module's rsync that carries the manifest starts, stop the
# module (SIGSTOP; rsync, its child, goes on) and print its PID; SIGKILL it on a line on stdin.
STOP_THE_DUMP_MODULE = r"""
import os, signal, sys, time
mark, module, t_end = "/pid-%s/" % sys.argv[1], None, time.time() + 300
while module is None and time.time() < t_end:
    for d in (d for d in os.listdir("/proc") if d.isdigit()):
        try:
            with open("/proc/%s/cmdline" % d, "rb") as fh:
                argv = fh.read().decode("utf-8", "replace").split("\0")
            if (os.path.basename(argv[0]) != "rsync" or not any(mark in a for a in argv)
                    or any(a.startswith("--exclude=/ckpt-manifest.json") for a in argv)):
                continue
            with open("/proc/%s/stat" % d) as fh:
                module = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        os.kill(module, signal.SIGSTOP)
        break
    else:
        time.sleep(0.002)
print(module, flush=True)
if module is None:
    sys.exit(1)
sys.stdin.readline()
os.kill(module, signal.SIGKILL)
"""


@contextmanager
def dump_module_killed_once_restore_began(fleet, pid, source="node1", destination="node2",
                                          images_root="/var/lib/ckpt/migrate"):
    """While the body runs (a migration of ``pid``): the dump module on ``source`` is stopped as its
    rsync carrying the manifest starts, and SIGKILLed once criu restore has begun on ``destination``
    (its restore.log exists). Yields a dict: ``module`` (the module's PID as text, "None" if never
    seen) and ``began`` (the restore had begun when it was killed)."""
    stopper = fleet.popen(source, ["python3", "-c", STOP_THE_DUMP_MODULE, str(pid)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    began = fleet.host_path(destination, "%s/from-%s/pid-%d/restore.log" % (images_root, source, pid))
    seen = {}

    def kill_once_the_restore_began():
        seen["module"] = stopper.stdout.readline().strip()
        t_end = time.monotonic() + 120
        while not os.path.exists(began) and time.monotonic() < t_end:
            time.sleep(0.005)
        seen["began"] = os.path.exists(began)
        stopper.stdin.write("kill\n")
        stopper.stdin.flush()

    killer = threading.Thread(target=kill_once_the_restore_began, daemon=True)
    killer.start()
    try:
        yield seen
    finally:
        killer.join(timeout=130)
        stopper.kill()
        stopper.wait()


def failing_restore(fleet, host="node2", before=""):
    """Write /srv/criu-fails-restore on ``host``: a criu that fails every restore ('injected restore
    failure') after running the shell lines ``before``, and runs the fleet's criu otherwise. Returns
    its path on the host (for ckpt_migrate_destination_criu_path)."""
    path = "/srv/criu-fails-restore"
    with open(fleet.host_path(host, path), "w") as fh:
        fh.write("#!/bin/sh\n"
                 "for a in \"$@\"; do [ \"$a\" = restore ] && {\n"
                 + "".join("  %s\n" % line for line in before.splitlines())
                 + "  echo 'injected restore failure' >&2; exit 1; }; done\n"
                 "exec /opt/ckpt-criu/bin/criu \"$@\"\n")
    os.chmod(fleet.host_path(host, path), 0o755)
    return path
