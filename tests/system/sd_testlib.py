"""Helpers of the tests that run on test-fleet hosts booting systemd
(`fleet.py up --init systemd`): the fleet module, a systemd fleet fixture
body, ssh and `systemctl show` as Python values, the drop-in that makes
Debian's redis-server.service checkpointable, and a ticker unit."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from ckpt_testlib import REPO, read_ticks

FLEET_PY = REPO / "tests" / "system" / "fleet" / "fleet.py"
WORKLOADS = REPO / "tests" / "integration" / "targets" / "setup_workloads" / "files"
# What an operator adds to Debian's redis-server.service so that CRIU can take it.
REDIS_DROP_IN = (REPO / "tests" / "system" / "files" / "redis-checkpointable.conf").read_text()


def _load_fleet_module():
    name = "ckpt_test_fleet"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, str(FLEET_PY))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


fleetmod = _load_fleet_module()


@contextmanager
def systemd_fleet(state_dir, name, subnet, hosts=2, binds=None):
    """A fleet of hosts booting systemd, taken down whatever happens."""
    if os.geteuid() != 0:
        pytest.fail("the test fleet needs root")
    f = fleetmod.Fleet(state_dir=str(state_dir), name=name, subnet=subnet, init="systemd", binds=binds)
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


def wait(pred, timeout=30, step=0.1):
    """pred()'s first true value within timeout, else its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


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
