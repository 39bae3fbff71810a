"""Fixtures for the playbook tests on the SSH test fleet (tests/system/fleet/fleet.py).

One fleet for the whole directory, torn down at the end even when a test
fails. The helpers the tests share live in fleet_testlib.py.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fleet_testlib import (FLEET_NAME, FLEET_SUBNET, HOSTS, PLAYBOOKS, REPO, STATE_DIR, WORKLOADS, FleetWorkload, PlaybookRun,
                           Fleet, FleetError, fresh, pid_taken_elsewhere, reset_pid_counters)


# The ansible-core under test: the pinned one, or another of the support
# matrix (scripts/matrix.sh sets CKPT_ANSIBLE_BIN to its virtualenv's bin).
ANSIBLE_BIN = Path(os.environ.get("CKPT_ANSIBLE_BIN") or REPO / ".venv" / "bin")


@pytest.fixture(scope="session")
def fleet():
    if os.geteuid() != 0:
        pytest.skip("the test fleet needs root")
    f = Fleet(state_dir=STATE_DIR, name=FLEET_NAME, subnet=FLEET_SUBNET)
    try:
        f.down()            # leftovers of an interrupted run
    except FleetError:
        pass
    f = Fleet(state_dir=STATE_DIR, name=FLEET_NAME, subnet=FLEET_SUBNET)
    try:
        f.up(hosts=HOSTS)
        yield f
    finally:
        # A fresh object: reboots by fleet.py subprocesses changed the state file.
        Fleet(state_dir=STATE_DIR).down()


@pytest.fixture
def workload(fleet, tmp_path):
    """workload(host, name="w", stdio="devnull", python="python3", mem=0) -> FleetWorkload (mem: MiB of
    touched memory)."""
    started = []

    def _start(host, name="w", stdio="devnull", python="python3", interval=0.02, mem=0):
        pidfile = "/srv/%s.pid" % name
        ticks = str(tmp_path / ("%s.ticks" % name))     # /tmp is shared by the hosts
        argv = [python, str(WORKLOADS / "spawn.py"), "--stdio", stdio, "--pidfile", pidfile,
                "--", python, str(WORKLOADS / "counter.py"), "--out", ticks, "--interval", str(interval),
                "--mem", str(mem)]
        reset_pid_counters(fleet)
        for _attempt in range(5):      # its PID must be free on the hosts it may move to
            p = fleet.ssh(host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
            assert p.returncode == 0, p.stderr
            w = FleetWorkload(fleet, host, int(p.stdout.split()[-1]), pidfile, ticks)
            started.append(w)
            if not pid_taken_elsewhere(fleet, host, w.pid):
                break
            fleet.exec(host, ["kill", "-9", str(w.pid)])
            if os.path.exists(ticks):
                os.unlink(ticks)
        else:
            pytest.fail("no PID free on every host for workload %s on %s" % (name, host))
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
                    "PATH": "%s:%s" % (ANSIBLE_BIN, env.get("PATH", ""))})
        cmd = [str(ANSIBLE_BIN / "ansible-playbook"), "-i", inventory,
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
