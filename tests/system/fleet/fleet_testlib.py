"""Helpers for the playbook tests on the SSH test fleet (tests/system/fleet/fleet.py).

Playbooks run with real ansible-playbook over real SSH; every extra var
is passed as a string, as an AWX survey passes it.
"""
from __future__ import annotations

import json
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path


import fleet as fleet_mod
from ckpt_testlib import continuity, read_ticks

REPO = Path(__file__).resolve().parents[3]

Fleet = fleet_mod.Fleet
FleetError = fleet_mod.FleetError

WORKLOADS = REPO / "tests" / "integration" / "targets" / "setup_workloads" / "files"
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


class FleetWorkload:
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

    def read_ticks(self):
        return read_ticks(self.ticks)

    def wait_ticks(self, n=5, timeout=10.0):
        start = len(self.read_ticks())
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.read_ticks()) >= start + n:
                return True
            time.sleep(0.05)
        return False

    def continuity(self):
        return continuity(self.read_ticks())


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
