"""systemd units, checkpointed and restored by the modules on hosts that boot
systemd (the test fleet's `--init systemd` flavour), over real SSH.

What must hold (and is checked here, against real systemd 252 and CRIU):
- a checkpoint of a Restart=always unit does not make systemd start a fresh
  copy, and leaves the unit inactive (not failed) with a drop-in naming the
  checkpoint;
- the restore puts the process back under its unit: active, MainPID = the
  restored PID, in the unit's cgroup, logging to the journal again; every
  drop-in of the collection is gone, and stop/restart work as usual;
- units the collection cannot take are refused before anything changes;
- Debian's redis-server.service (Type=notify) keeps its 10,000 keys;
- an enabled unit held over a real reboot does not start as a fresh copy,
  and comes back restored.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ckpt_testlib import REPO, VENV_BIN, continuity, read_ticks
from fleet_testlib import install_redis, install_ticker, show, ssh, systemd_fleet, wait

SUBNET = os.environ.get("CKPT_FLEET_TEST_SUBNET4", "10.213.95.0/24")
pytestmark = [pytest.mark.fleet, pytest.mark.criu]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    with systemd_fleet(tmp_path_factory.mktemp("units") / "state", "cksu", SUBNET) as f:
        yield f


@pytest.fixture
def module(sd, tmp_path):
    """module(host, name, args, check=False) -> (status, result) over real SSH."""
    counter = {"n": 0}

    def _run(host, name, args, check=False):
        counter["n"] += 1
        rfile = tmp_path / ("result-%d.jsonl" % counter["n"])
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                   ANSIBLE_CALLBACK_PLUGINS=str(REPO / "tests" / "system" / "plugins" / "callback"),
                   ANSIBLE_CALLBACKS_ENABLED="result_json", CKPT_RESULT_FILE=str(rfile),
                   ANSIBLE_SSH_CONTROL_PATH_DIR=str(tmp_path / "cp"),
                   ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
                   PATH="%s:%s" % (VENV_BIN, os.environ.get("PATH", "")))
        cmd = [str(VENV_BIN / "ansible"), "-i", sd.inventory_path, host, "-m", "ckpt.criu." + name,
               "-a", json.dumps(args)] + (["--check"] if check else [])
        p = subprocess.run(cmd, env=env, cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
        assert rfile.exists(), "ansible produced no result (rc=%d):\n%s" % (p.returncode, p.stdout)
        rec = json.loads(rfile.read_text().splitlines()[-1])
        return rec["status"], rec["result"]

    return _run


def start_ticker(fleet, host, unit, enable=False):
    """The ticker unit started on host; the controller-side path of its ticks file."""
    return install_ticker(fleet, [host], unit, "/srv/%s.ticks" % unit, enable=enable, start_on=host)


def our_drop_ins(fleet, host, unit):
    out = ssh(fleet, host, ["sh", "-c", "ls /run/systemd/system/%s.service.d /etc/systemd/system/%s.service.d "
                            "2>/dev/null; true" % (unit, unit)])
    return [ln for ln in out.split() if ln.startswith(("50-ckpt-criu", "60-ckpt-criu"))]


def test_checkpoint_and_restore_a_restart_always_unit(sd, module):
    unit = "ckpt-tick-%s" % uuid.uuid4().hex[:6]
    ticks = start_ticker(sd, "node1", unit)
    before = show(sd, "node1", unit, "MainPID", "NRestarts", "ActiveState")
    pid = int(before["MainPID"])
    images = "/var/lib/ckpt/%s" % unit

    # check mode changes nothing, not even a drop-in
    status, res = module("node1", "dump", {"unit": unit, "images_dir": images}, check=True)
    assert status == "ok" and res["changed"] is True, res
    assert our_drop_ins(sd, "node1", unit) == []

    status, res = module("node1", "dump", {"unit": unit, "images_dir": images})
    assert status == "ok" and res["changed"], res
    assert res["manifest"]["unit"]["name"] == unit + ".service"
    assert res["manifest"]["unit"]["stdio_sockets"], res["manifest"]["unit"]
    time.sleep(1.0)     # RestartSec is 100 ms: a restart would have happened by now
    after = show(sd, "node1", unit, "MainPID", "NRestarts", "ActiveState", "Result")
    assert after == {"MainPID": "0", "NRestarts": "0", "ActiveState": "inactive", "Result": "success"}, after
    assert our_drop_ins(sd, "node1", unit) == ["50-ckpt-criu-hold.conf"]
    assert images in ssh(sd, "node1", ["systemctl", "cat", unit])      # the drop-in names the checkpoint
    n_before = len(read_ticks(ticks))
    time.sleep(0.3)
    assert len(read_ticks(ticks)) == n_before, "something still ticks: a fresh copy runs"

    status, res = module("node1", "restore", {"images_dir": images})
    assert status == "ok" and res["changed"], res
    assert res["unit"]["name"] == unit + ".service" and res["unit"]["main_pid"] == pid, res["unit"]
    st = show(sd, "node1", unit, "MainPID", "NRestarts", "ActiveState", "SubState", "Type", "ControlGroup")
    assert st["ActiveState"] == "active" and st["SubState"] == "running", st
    assert int(st["MainPID"]) == pid and st["NRestarts"] == "0" and st["Type"] == "simple", st
    assert "/system.slice/%s.service" % unit in ssh(sd, "node1", ["cat", "/proc/%d/cgroup" % pid])
    assert our_drop_ins(sd, "node1", unit) == []
    # its stdout is the journal again: new ticks appear under the unit
    time.sleep(0.5)
    ok, gap = continuity(read_ticks(ticks))
    assert ok, "the tick sequence broke"
    after = read_ticks(ticks)[-1][0] + 1         # a tick only the restored process writes

    def journal_ticks():
        journal = ssh(sd, "node1", ["journalctl", "-u", unit, "-o", "cat", "--no-pager", "-n", "200"])
        return [int(w[0]) for w in (line.split(" ", 1) for line in journal.splitlines())
                if w[0].isdigit() and int(w[0]) >= after]
    # journald writes asynchronously: wait for it rather than expect it within a fixed time
    assert wait(journal_ticks, timeout=30), "no tick from %d on reached the journal of %s" % (after, unit)
    # idempotent
    status, res = module("node1", "restore", {"images_dir": images})
    assert status == "ok" and res["changed"] is False, res
    # and stop / restart behave as for a unit started normally
    ssh(sd, "node1", ["systemctl", "restart", unit])
    st = show(sd, "node1", unit, "MainPID", "NRestarts", "ActiveState", "Type")
    assert st["ActiveState"] == "active" and int(st["MainPID"]) not in (0, pid) and st["NRestarts"] == "0", st
    ssh(sd, "node1", ["systemctl", "stop", unit])
    assert show(sd, "node1", unit, "ActiveState")["ActiveState"] == "inactive"


def test_units_the_collection_cannot_take_are_refused(sd, module):
    unit = "ckpt-stray-%s" % uuid.uuid4().hex[:6]
    # a process that left the main process's tree but stays in the unit's cgroup
    ssh(sd, "node2", ["systemd-run", "--unit", unit, "sh", "-c", "(sleep 1000 &) ; exec sleep 1000"])
    status, res = module("node2", "dump", {"unit": unit, "images_dir": "/var/lib/ckpt/" + unit})
    assert status == "failed" and "outside the tree of its main process" in res["msg"], res
    assert show(sd, "node2", unit, "ActiveState")["ActiveState"] == "active"
    assert our_drop_ins(sd, "node2", unit) == []
    ssh(sd, "node2", ["systemctl", "stop", unit])
    # not running
    status, res = module("node2", "dump", {"unit": unit, "images_dir": "/var/lib/ckpt/" + unit})
    assert status == "failed" and ("not running" in res["msg"] or "not loaded" in res["msg"]), res
    # Debian's redis-server.service as shipped: a user namespace of its own
    ssh(sd, "node2", ["systemctl", "start", "redis-server"])
    try:
        status, res = module("node2", "dump", {"unit": "redis-server", "images_dir": "/var/lib/ckpt/redis-x"})
        assert status == "failed" and "PrivateUsers=" in res["msg"], res
        assert show(sd, "node2", "redis-server", "ActiveState")["ActiveState"] == "active"
    finally:
        ssh(sd, "node2", ["systemctl", "stop", "redis-server"])
    # no such unit
    status, res = module("node2", "dump", {"unit": "no-such-unit", "images_dir": "/var/lib/ckpt/none"})
    assert status == "failed" and "not loaded" in res["msg"], res
    assert ssh(sd, "node2", ["ls", "/var/lib/ckpt"]).split() == []


def redis_cli(fleet, host, *args):
    return ssh(fleet, host, ["redis-cli"] + list(args)).strip()


def test_redis_server_service_keeps_its_keys(sd, module):
    """Debian's Type=notify redis-server.service, with the drop-in an operator
    adds for checkpoints, 10,000 keys: checkpoint, restore, all keys back."""
    install_redis(sd, "node1")
    try:
        assert redis_cli(sd, "node1", "DBSIZE") == "10000"
        pid = int(show(sd, "node1", "redis-server", "MainPID")["MainPID"])
        status, res = module("node1", "dump", {"unit": "redis-server", "images_dir": "/var/lib/ckpt/redis",
                                               "tcp_established": True})
        assert status == "ok" and res["changed"], res
        assert show(sd, "node1", "redis-server", "ActiveState", "NRestarts") == \
            {"ActiveState": "inactive", "NRestarts": "0"}
        status, res = module("node1", "restore", {"images_dir": "/var/lib/ckpt/redis"})
        assert status == "ok" and res["unit"]["main_pid"] == pid, res
        st = show(sd, "node1", "redis-server", "ActiveState", "MainPID", "Type", "NRestarts")
        assert st == {"ActiveState": "active", "MainPID": str(pid), "Type": "notify", "NRestarts": "0"}, st
        assert redis_cli(sd, "node1", "DBSIZE") == "10000"
        assert redis_cli(sd, "node1", "GET", "key:9999") == "value-69993"
        ssh(sd, "node1", ["systemctl", "restart", "redis-server"])
        assert int(show(sd, "node1", "redis-server", "MainPID")["MainPID"]) != pid
    finally:
        ssh(sd, "node1", ["sh", "-c", "systemctl stop redis-server; rm -rf /var/lib/ckpt/redis "
                          "/etc/systemd/system/redis-server.service.d; systemctl daemon-reload"], check=False)


def test_enabled_unit_held_over_a_real_reboot(sd, module):
    """checkpoint (boot hold) -> systemctl reboot -> the enabled unit does not
    start as a fresh copy -> restore brings the checkpointed process back."""
    unit = "ckpt-boot-%s" % uuid.uuid4().hex[:6]
    ticks = start_ticker(sd, "node2", unit, enable=True)
    pid = int(show(sd, "node2", unit, "MainPID")["MainPID"])
    images = "/var/lib/ckpt/" + unit
    status, res = module("node2", "dump", {"unit": unit, "images_dir": images, "unit_boot_hold": True})
    assert status == "ok" and res["manifest"]["unit"]["boot_hold"] is True, res
    boots = sd.status()["hosts"]["node2"]["boots"]
    sd.reboot("node2", timeout=60)
    assert sd.status()["hosts"]["node2"]["boots"] == boots + 1
    st = show(sd, "node2", unit, "ActiveState", "MainPID", "UnitFileState", "ConditionResult")
    assert st["UnitFileState"] == "enabled" and st["ActiveState"] == "inactive" and st["MainPID"] == "0", st
    assert st["ConditionResult"] == "no", st        # held by the checkpoint, not failed
    n = len(read_ticks(ticks))
    time.sleep(0.3)
    assert len(read_ticks(ticks)) == n
    status, res = module("node2", "restore", {"images_dir": images})
    assert status == "ok" and res["unit"]["main_pid"] == pid, res
    st = show(sd, "node2", unit, "ActiveState", "MainPID", "NRestarts")
    assert st == {"ActiveState": "active", "MainPID": str(pid), "NRestarts": "0"}, st
    assert our_drop_ins(sd, "node2", unit) == []
    time.sleep(0.3)
    ok, _gap = continuity(read_ticks(ticks))
    assert ok and len(read_ticks(ticks)) > n
    ssh(sd, "node2", ["systemctl", "disable", "--now", unit])


def test_a_fresh_copy_is_not_overwritten(sd, module):
    """When systemd runs the unit anyway (no boot hold), restore refuses and says so."""
    unit = "ckpt-fresh-%s" % uuid.uuid4().hex[:6]
    start_ticker(sd, "node1", unit)
    images = "/var/lib/ckpt/" + unit
    status, res = module("node1", "dump", {"unit": unit, "images_dir": images})
    assert status == "ok", res
    ssh(sd, "node1", ["sh", "-c", "rm /run/systemd/system/%s.service.d/50-ckpt-criu-hold.conf && "
                      "systemctl daemon-reload && systemctl start %s" % (unit, unit)])
    fresh = int(show(sd, "node1", unit, "MainPID")["MainPID"])
    status, res = module("node1", "restore", {"images_dir": images})
    assert status == "failed" and "fresh copy" in res["msg"] and res.get("main_pid") == fresh, res
    assert res.get("fresh_copy") is True, res
    assert int(show(sd, "node1", unit, "MainPID")["MainPID"]) == fresh
    ssh(sd, "node1", ["systemctl", "stop", unit])


def test_migrate_a_unit_between_systemd_hosts(sd, module):
    """The module steps of a migration, on a unit: the source frozen (held),
    images sent, the destination restores under the same unit, the source is
    killed. Active on node2 with the restored PID, inactive on node1, and
    systemd started no fresh copy on either."""
    unit = "ckpt-move-%s" % uuid.uuid4().hex[:6]
    ticks1 = start_ticker(sd, "node1", unit)
    # the same unit file on the destination, and the ticks file it holds open
    body = ssh(sd, "node1", ["cat", "/etc/systemd/system/%s.service" % unit])
    p = sd.ssh("node2", ["sh", "-c", "cat > /etc/systemd/system/%s.service && systemctl daemon-reload" % unit],
               input=body, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    pid = int(show(sd, "node1", unit, "MainPID")["MainPID"])
    images = "/var/lib/ckpt/" + unit
    status, res = module("node1", "dump", {"unit": unit, "images_dir": images, "leave_stopped": True,
                                           "transfer": {"destination": "node2", "path": images}})
    assert status == "ok", res
    # the source is frozen, still its unit's main process
    assert show(sd, "node1", unit, "ActiveState", "MainPID") == {"ActiveState": "active", "MainPID": str(pid)}
    # the ticks file the process holds (O_APPEND) must be there on the destination
    dest_ticks = Path(sd.host_path("node2", "/srv/%s.ticks" % unit))
    dest_ticks.write_bytes(Path(ticks1).read_bytes())
    os.chmod(str(dest_ticks), 0o600)
    status, res = module("node2", "restore", {"images_dir": images})
    assert status == "ok" and res["unit"]["main_pid"] == pid, res
    status, res = module("node1", "process_state", {"images_dir": images, "state": "killed"})
    assert status == "ok" and res["unit"]["active_state"] == "inactive", res
    assert res["unit"]["released"] == ["50-ckpt-criu-hold"], res
    time.sleep(0.5)
    src = show(sd, "node1", unit, "ActiveState", "MainPID", "NRestarts", "Result")
    assert src == {"ActiveState": "inactive", "MainPID": "0", "NRestarts": "0", "Result": "success"}, src
    dst = show(sd, "node2", unit, "ActiveState", "MainPID", "NRestarts")
    assert dst == {"ActiveState": "active", "MainPID": str(pid), "NRestarts": "0"}, dst
    assert our_drop_ins(sd, "node1", unit) == [] and our_drop_ins(sd, "node2", unit) == []
    ticks2 = sd.host_path("node2", "/srv/%s.ticks" % unit)
    time.sleep(0.3)
    ok, _gap = continuity(read_ticks(ticks2))
    assert ok and len(read_ticks(ticks2)) > len(read_ticks(ticks1))
    # rollback on the destination: killing the restored unit's process does not restart it
    status, res = module("node2", "process_state", {"identity": {"pid": pid, "start_time": int(
        ssh(sd, "node2", ["cut", "-d", " ", "-f", "22", "/proc/%d/stat" % pid]).strip())},
        "state": "killed", "unit": unit})
    assert status == "ok" and res["unit"]["active_state"] == "inactive", res
    time.sleep(0.5)
    assert show(sd, "node2", unit, "ActiveState", "NRestarts") == {"ActiveState": "inactive", "NRestarts": "0"}
    assert our_drop_ins(sd, "node2", unit) == []


def test_rolled_back_unit_runs_on_as_itself(sd, module):
    """A source frozen for a migration that fails is resumed: its unit runs on
    with the same process and without the collection's drop-ins."""
    unit = "ckpt-back-%s" % uuid.uuid4().hex[:6]
    ticks = start_ticker(sd, "node1", unit)
    pid = int(show(sd, "node1", unit, "MainPID")["MainPID"])
    images = "/var/lib/ckpt/" + unit
    status, res = module("node1", "dump", {"unit": unit, "images_dir": images, "leave_stopped": True})
    assert status == "ok", res
    assert our_drop_ins(sd, "node1", unit) == ["50-ckpt-criu-hold.conf"]
    status, res = module("node1", "process_state", {"images_dir": images, "state": "running"})
    assert status == "ok" and res["unit"]["active_state"] == "active" and res["unit"]["main_pid"] == pid, res
    assert our_drop_ins(sd, "node1", unit) == []
    n = len(read_ticks(ticks))
    time.sleep(0.3)
    ok, _gap = continuity(read_ticks(ticks))
    assert ok and len(read_ticks(ticks)) > n
    # Restart=always is the unit's again: a crash now is restarted as usual
    ssh(sd, "node1", ["kill", "-9", str(pid)])
    deadline = time.time() + 10
    while time.time() < deadline and show(sd, "node1", unit, "NRestarts")["NRestarts"] != "1":
        time.sleep(0.1)
    assert show(sd, "node1", unit, "NRestarts")["NRestarts"] == "1"
    ssh(sd, "node1", ["systemctl", "stop", unit])


def test_restore_refuses_a_different_unit_file(sd, module):
    unit = "ckpt-diff-%s" % uuid.uuid4().hex[:6]
    start_ticker(sd, "node1", unit)
    images = "/var/lib/ckpt/" + unit
    status, res = module("node1", "dump", {"unit": unit, "images_dir": images,
                                           "transfer": {"destination": "node2", "path": images}})
    assert status == "ok", res
    # no such unit on node2
    status, res = module("node2", "restore", {"images_dir": images})
    assert status == "failed" and "not loaded" in res["msg"] and "as_unit=false" in res["msg"], res
    # a unit of that name, but another definition
    p = sd.ssh("node2", ["sh", "-c", "cat > /etc/systemd/system/%s.service && systemctl daemon-reload" % unit],
               input="[Service]\nExecStart=/bin/sleep 1000\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
               text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    status, res = module("node2", "restore", {"images_dir": images})
    assert status == "failed" and "differ from the checkpointed host's" in res["msg"], res
    assert show(sd, "node2", unit, "ActiveState")["ActiveState"] == "inactive"
    assert our_drop_ins(sd, "node2", unit) == []


def test_unit_info_reads_without_changing(sd, module):
    unit = "ckpt-info-%s" % uuid.uuid4().hex[:6]
    start_ticker(sd, "node1", unit)
    status, here = module("node1", "unit_info", {"name": unit})
    assert status == "ok" and here["changed"] is False, here
    assert here["exists"] and here["running"] and here["refusals"] == [] and len(here["files_sha256"]) == 64
    assert here["main_pid"] == int(show(sd, "node1", unit, "MainPID")["MainPID"])
    status, there = module("node2", "unit_info", {"name": unit})
    assert status == "ok" and there["exists"] is False and there["files_sha256"] is None, there
    assert "not loaded" in there["msg"]
    body = ssh(sd, "node1", ["cat", "/etc/systemd/system/%s.service" % unit])
    p = sd.ssh("node2", ["sh", "-c", "cat > /etc/systemd/system/%s.service && systemctl daemon-reload" % unit],
               input=body, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    status, there = module("node2", "unit_info", {"name": unit})
    assert there["exists"] and not there["running"] and there["files_sha256"] == here["files_sha256"], there
    assert "is not running" in there["refusals"][0]
    status, bad = module("node2", "unit_info", {"name": "x;y"})
    assert status == "failed" and "not a systemd unit name" in bad["msg"], bad
    ssh(sd, "node1", ["systemctl", "stop", unit])
