"""Fixtures for the playbook tests on the SSH test fleet (tests/fleet/fleet.py).

One fleet for the whole directory, torn down at the end even when a test
fails. Playbooks run with real ansible-playbook over real SSH; every extra var
is passed as a string, as an AWX survey passes it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "fleet"))
import fleet as fleet_mod  # noqa: E402  pylint: disable=wrong-import-position

WORKLOADS = REPO / "tests" / "workloads"
PLAYBOOKS = REPO / "playbooks"
STATE_DIR = os.environ.get("CKPT_ROLES_FLEET_STATE_DIR", "/run/ckpt-fleet-roles-it")
HOSTS = 6


@pytest.fixture(scope="session")
def fleet():
    if os.geteuid() != 0:
        pytest.skip("the test fleet needs root")
    f = fleet_mod.Fleet(state_dir=STATE_DIR, name="ckrit", subnet="10.216.0.0/24")
    try:
        f.down()            # leftovers of an interrupted run
    except fleet_mod.FleetError:
        pass
    f = fleet_mod.Fleet(state_dir=STATE_DIR, name="ckrit", subnet="10.216.0.0/24")
    try:
        f.up(hosts=HOSTS)
        yield f
    finally:
        # A fresh object: reboots by fleet.py subprocesses changed the state file.
        fleet_mod.Fleet(state_dir=STATE_DIR).down()


def fresh(fleet):
    """Reload the fleet's state: a reboot by a fleet.py subprocess changed it."""
    fleet.state = fleet._load()  # pylint: disable=protected-access
    return fleet


def read_ticks(path):
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
        t = self.read_ticks()
        seqs = [a for a, _ in t]
        gaps = [(b[1] - a[1]) / 1e9 for a, b in zip(t, t[1:])]
        return seqs == list(range(1, len(seqs) + 1)), (max(gaps) if gaps else 0.0)


@pytest.fixture
def workload(fleet, tmp_path):
    """workload(host, name="w", stdio="devnull", python="python3") -> FleetWorkload."""
    started = []

    def _start(host, name="w", stdio="devnull", python="python3", interval=0.02):
        pidfile = "/srv/%s.pid" % name
        ticks = str(tmp_path / ("%s.ticks" % name))     # /tmp is shared by the hosts
        argv = [python, str(WORKLOADS / "spawn.py"), "--stdio", stdio, "--pidfile", pidfile,
                "--", python, str(WORKLOADS / "counter.py"), "--out", ticks, "--interval", str(interval)]
        p = fleet.ssh(host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        w = FleetWorkload(fleet, host, int(p.stdout.split()[-1]), pidfile, ticks)
        started.append(w)
        assert w.wait_ticks(2, timeout=3 * interval + 10), "workload on %s wrote no ticks" % host
        return w

    yield _start
    fresh(fleet)
    for w in started:
        for h in fleet.hosts:
            fleet.exec(h, ["kill", "-9", str(w.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def clean_hosts(fleet):
    """Remove the images and records the playbooks leave on every host."""
    def _clean():
        fresh(fleet)
        for h in fleet.hosts:
            fleet.exec(h, ["sh", "-c", "rm -rf /var/lib/ckpt/* /var/lib/ckpt/.[!.]* /srv/*"])
    _clean()
    yield _clean
    _clean()


def write_inventory(fleet, path, sources, others=(), hostvars=None, unreachable=()):
    """sources: {src: dest}; others: hosts in group spares; hostvars: {host: {k: v}}."""
    hostvars = hostvars or {}

    def line(h):
        addr = "10.216.0.254" if h in unreachable else fleet.address(h)
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


@pytest.fixture
def playbook(tmp_path):
    """playbook(name, inventory, extra_vars, check=False) -> PlaybookRun.

    Every extra var goes in as a string (as an AWX survey passes them), through
    an extra-vars file."""
    counter = {"n": 0}

    def _run(name, inventory, extra_vars=None, check=False, timeout=600):
        counter["n"] += 1
        report_dir = tmp_path / "reports"
        report_name = "run%d" % counter["n"]
        ev = {"ckpt_become": "false", "ckpt_report_dir": str(report_dir),
              "ckpt_report_name": report_name}
        for k, v in (extra_vars or {}).items():
            ev[k] = v if isinstance(v, str) else json.dumps(v)
        assert all(isinstance(v, str) for v in ev.values())
        evfile = tmp_path / ("extra-%d.json" % counter["n"])
        evfile.write_text(json.dumps(ev))
        env = dict(os.environ)
        env.update({"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                    "ANSIBLE_HOST_KEY_CHECKING": "true",
                    "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp"),
                    "PATH": "%s:%s" % (REPO / ".venv" / "bin", env.get("PATH", ""))})
        cmd = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", inventory,
               str(PLAYBOOKS / name), "-e", "@%s" % evfile]
        if check:
            cmd.append("--check")
        p = subprocess.run(cmd, env=env, cwd=str(REPO), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, check=False)
        run = PlaybookRun(p, report_dir / (report_name + ".json"))
        (tmp_path / ("output-%d.txt" % counter["n"])).write_text(p.stdout)
        return run

    return _run


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
