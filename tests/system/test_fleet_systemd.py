"""Tests of the systemd flavour of the test fleet (`fleet.py up --init
systemd`): each host boots the machine's systemd as its PID 1 on an overlay of
/, runs sshd as a unit, is reached over real SSH, and really reboots.

These hosts are what the tests of systemd units stand on, so what is proven
here is what those tests rely on: systemd supervises units for real (it
restarts a killed Restart=always service), a reboot from inside ends PID 1 and
boots a new one, and nothing a host writes reaches the machine."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from fleet_testlib import FLEET_PY, show, ssh, systemd_fleet, wait
from fleet_testlib import fleet_mod as fleetmod

CRIU = os.environ.get("CKPT_CRIU", "/opt/ckpt-criu/bin/criu")
SUBNET = os.environ.get("CKPT_FLEET_TEST_SUBNET3", "10.213.93.0/24")
# A second fleet's, beside SUBNET (10.213.94.0/24 by default), whatever SUBNET is.
_NET = ipaddress.ip_network(SUBNET)
SUBNET_NEXT = str(ipaddress.ip_network((int(_NET.network_address) + _NET.num_addresses, _NET.prefixlen)))

pytestmark = [pytest.mark.fleet]


@pytest.fixture(scope="module")
def sdfleet(tmp_path_factory):
    with systemd_fleet(tmp_path_factory.mktemp("sdfleet") / "state", "cksd", SUBNET) as f:
        yield f


def test_hosts_boot_systemd_and_run_sshd_as_a_unit(sdfleet):
    st = sdfleet.status()
    assert st["up"] and st["config"]["init"] == "systemd", st
    for h in sdfleet.hosts:
        assert ssh(sdfleet, h, ["cat", "/proc/1/comm"]).strip() == "systemd"
        assert ssh(sdfleet, h, ["hostname"]).strip() == h
        state = ssh(sdfleet, h, ["systemctl", "is-system-running", "--wait"], check=False).strip()
        failed = ssh(sdfleet, h, ["systemctl", "--failed", "--no-legend", "--plain"], check=False)
        assert state == "running", "%s is %s; failed units:\n%s" % (h, state, failed)
        sshd = show(sdfleet, h, "ssh.service", "ActiveState", "MainPID")
        assert sshd["ActiveState"] == "active" and int(sshd["MainPID"]) > 1, sshd
        # systemd knows it runs in a container, and each host has its own identity
        assert ssh(sdfleet, h, ["systemd-detect-virt", "--container"], check=False).strip() != "none"
    ids = set(ssh(sdfleet, h, ["cat", "/etc/machine-id"]).strip() for h in sdfleet.hosts)
    assert len(ids) == 2 and Path("/etc/machine-id").read_text().strip() not in ids


def test_nothing_a_host_writes_reaches_the_machine(sdfleet):
    tag = "ckpt-fleet-probe-%s" % uuid.uuid4().hex[:12]
    ssh(sdfleet, "node1", ["sh", "-c", "echo %s > /etc/%s && echo %s > /var/tmp/%s && echo %s > /tmp/%s"
                           " && echo %s > /srv/%s" % ((tag,) * 8)])
    for d in ("/etc", "/var/tmp", "/tmp", "/srv"):
        assert not os.path.exists(os.path.join(d, tag)), d
    out = ssh(sdfleet, "node2", ["sh", "-c", "ls /etc/%s /var/tmp/%s /tmp/%s /srv/%s 2>&1; true" % ((tag,) * 4)])
    assert out.count("No such file or directory") == 4, out
    # The private directories are still where the controller can read them.
    assert Path(sdfleet.host_path("node1", "/srv/" + tag)).read_text().strip() == tag
    # systemd empties /tmp at boot: the machine's /tmp must not be the host's.
    fd, mine = tempfile.mkstemp(dir="/tmp", prefix="ckpt-fleet-probe-")
    os.close(fd)
    try:
        assert "No such file" in ssh(sdfleet, "node1", ["sh", "-c", "ls %s 2>&1; true" % mine])
    finally:
        os.unlink(mine)


def test_systemd_supervises_units_for_real(sdfleet):
    """A Restart=always service whose main process is killed is started again
    by systemd: the trap a checkpoint of a unit must avoid."""
    unit = "ckpt-fleet-tick-%s" % uuid.uuid4().hex[:8]
    ssh(sdfleet, "node1", ["systemd-run", "--unit", unit, "-p", "Restart=always", "-p", "RestartSec=100ms",
                           "sleep", "1000"])
    try:
        first = show(sdfleet, "node1", unit + ".service", "MainPID", "NRestarts", "ActiveState")
        assert first["ActiveState"] == "active" and first["NRestarts"] == "0", first
        ssh(sdfleet, "node1", ["kill", "-9", first["MainPID"]])

        def restarted():
            s = show(sdfleet, "node1", unit + ".service", "MainPID", "NRestarts", "ActiveState")
            return s if s["NRestarts"] == "1" and s["ActiveState"] == "active" else None

        again = wait(restarted, timeout=10)
        assert again and again["MainPID"] != first["MainPID"], again
        # the unit's processes live in the host's own cgroup tree
        cg = ssh(sdfleet, "node1", ["cat", "/proc/%s/cgroup" % again["MainPID"]])
        assert "/system.slice/%s.service" % unit in cg, cg
    finally:
        ssh(sdfleet, "node1", ["systemctl", "stop", unit], check=False)


def test_criu_runs_inside_a_systemd_host(sdfleet):
    out = ssh(sdfleet, "node2", [CRIU, "check"], check=False)
    assert "Looks good" in out, out


def test_reboot_from_inside_restarts_pid_1(sdfleet):
    """`systemctl reboot` over SSH (what ansible.builtin.reboot does) ends the
    host's systemd; the supervisor boots a new one: new PID 1, same disk and
    address, no runtime units left."""
    before = sdfleet.status()["hosts"]["node2"]
    ssh(sdfleet, "node2", ["sh", "-c", "echo kept > /srv/reboot-probe; echo kept > /etc/reboot-probe"])
    ssh(sdfleet, "node2", ["systemd-run", "--unit", "ckpt-fleet-transient", "sleep", "1000"])
    ssh(sdfleet, "node2", ["systemctl", "reboot"], check=False)    # the connection may drop

    def rebooted():
        h = fleetmod.Fleet(state_dir=sdfleet.state_dir).status()["hosts"]["node2"]
        return h if h["boots"] == before["boots"] + 1 and h["sshd"] else None

    after = wait(rebooted, timeout=60)
    assert after, "node2 did not come back: %s" % sdfleet.status()["hosts"]["node2"]
    assert after["init_pid"] != before["init_pid"]
    assert ssh(sdfleet, "node2", ["cat", "/proc/1/comm"]).strip() == "systemd"
    assert ssh(sdfleet, "node2", ["cat", "/srv/reboot-probe", "/etc/reboot-probe"]) == "kept\nkept\n"
    assert ssh(sdfleet, "node2", ["systemctl", "is-active", "ckpt-fleet-transient"], check=False).strip() \
        in ("inactive", "unknown")
    assert ssh(sdfleet, "node2", ["systemctl", "is-system-running", "--wait"], check=False).strip() == "running"


def test_fleet_reboot_is_a_clean_systemd_reboot(sdfleet):
    before = sdfleet.status()["hosts"]["node1"]
    sdfleet.reboot("node1", timeout=60)
    after = sdfleet.status()["hosts"]["node1"]
    assert after["boots"] == before["boots"] + 1 and after["init_pid"] != before["init_pid"], (before, after)
    log = Path(sdfleet.host_dir("node1"), "init.log").read_text()
    assert "PID 1 ended with a reboot" in log, log
    p = subprocess.run([sys.executable, str(FLEET_PY), "--state-dir", sdfleet.state_dir, "status", "--json"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, timeout=60, check=False)
    assert p.returncode == 0 and json.loads(p.stdout)["hosts"]["node1"]["init_pid"] == after["init_pid"]


def test_down_leaves_no_cgroup_mount_or_process(tmp_path):
    f = fleetmod.Fleet(state_dir=str(tmp_path / "state"), name="cksdx", subnet=SUBNET_NEXT,
                       init="systemd")
    f.up(hosts=1, timeout=60)
    init = f.init_pid("node1")
    cgroup = f.cgroup_name("node1")
    assert any(os.path.isdir(os.path.join(b, cgroup)) for b in fleetmod._cgroup_bases())  # pylint: disable=protected-access
    f.down()
    assert not os.path.exists("/proc/%d" % init) or fleetmod._proc_start(init) is None  # pylint: disable=protected-access
    assert not any(os.path.isdir(os.path.join(b, cgroup)) for b in fleetmod._cgroup_bases())  # pylint: disable=protected-access
    assert not os.path.exists(str(tmp_path / "state"))
    with open("/proc/self/mountinfo") as fh:
        assert "ckpt-fleet-root" not in fh.read()
