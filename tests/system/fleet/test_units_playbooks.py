"""The playbooks on systemd units, over real SSH, on hosts that boot systemd
(the fleet's `--init systemd` flavour):

- maintenance.yml: checkpoint -> real reboot (ansible.builtin.reboot) ->
  restore, for enabled units (a Restart=always ticker and Debian's
  redis-server.service with 10,000 keys): neither runs as a fresh copy after
  the reboot, both come back as the same process, NRestarts unchanged;
- migrate.yml moves redis-server.service with its 10,000 keys;
- migrate.yml: a unit moves between hosts: active on the destination with the
  restored PID, inactive on the source, no fresh copy on either; a
  destination with another unit file is refused before the freeze and the
  source runs on.
"""
from __future__ import annotations

import os
import time
import uuid

import pytest

from ckpt_testlib import continuity, read_ticks
from fleet_testlib import Fleet, install_redis, install_ticker, show, ssh, systemd_fleet, write_inventory

SUBNET = os.environ.get("CKPT_FLEET_TEST_SUBNET5", "10.213.96.0/24")

pytestmark = [pytest.mark.fleet, pytest.mark.criu]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A directory that is the same on the controller and both hosts (their
    /tmp is private): the tickers write there, so continuity survives a move."""
    d = tmp_path_factory.mktemp("units-shared")
    os.chmod(str(d), 0o755)
    return d


@pytest.fixture(scope="module")
def sd(tmp_path_factory, shared):
    with systemd_fleet(tmp_path_factory.mktemp("units-pb") / "state", "cksp", SUBNET,
                       binds=[("node1", str(shared), str(shared)), ("node2", str(shared), str(shared))]) as f:
        yield f


def test_maintenance_reboot_keeps_enabled_units(sd, shared, playbook, tmp_path):
    ticker = "ckpt-mtick-%s" % uuid.uuid4().hex[:6]
    ticks = str(shared / (ticker + ".ticks"))
    install_ticker(sd, ["node1"], ticker, ticks, enable=True, start_on="node1")
    install_redis(sd, "node1")
    before = {u: show(sd, "node1", u, "MainPID", "NRestarts") for u in (ticker + ".service", "redis-server.service")}
    boots = sd.status()["hosts"]["node1"]["boots"]
    inv = write_inventory(sd, tmp_path / "inv.ini", {}, others=["node1"])
    ev = {"ckpt_hosts": "node1", "ckpt_checkpoint_units": "%s,redis-server" % ticker,
          "ckpt_maintenance_reboot": "reboot",
          "ckpt_maintenance_boot_time_command": "systemctl show -p UserspaceTimestampMonotonic --value",
          "ckpt_window_start": "00:00", "ckpt_window_end": "23:59", "ckpt_window_utc": "true"}
    run = playbook("maintenance.yml", inv, ev)
    assert run.rc == 0, run.output[-5000:]
    assert Fleet(state_dir=sd.state_dir).status()["hosts"]["node1"]["boots"] == boots + 1, "node1 did not reboot"
    assert sorted(r["result"] for r in run.rows(action="checkpoint")) == ["checkpointed", "checkpointed"]
    assert sorted(r["result"] for r in run.rows(action="restore")) == sorted(
        ["restored under unit %s.service" % ticker, "restored under unit redis-server.service"]), run.rows()
    for unit, was in before.items():
        now = show(sd, "node1", unit, "MainPID", "NRestarts", "ActiveState", "UnitFileState")
        assert now == dict(was, ActiveState="active", UnitFileState="enabled"), (unit, was, now)
    assert ssh(sd, "node1", ["redis-cli", "DBSIZE"]).strip() == "10000"
    assert ssh(sd, "node1", ["redis-cli", "GET", "key:4242"]).strip() == "value-29694"
    time.sleep(0.3)
    ok, _gap = continuity(read_ticks(ticks))
    assert ok, "the ticker's sequence broke: a fresh copy ran, or ticks were lost"
    leftovers = ssh(sd, "node1", ["sh", "-c", "ls /run/systemd/system/*.d /etc/systemd/system/*.d 2>/dev/null | "
                                  "grep ckpt-criu; true"])
    assert leftovers.strip() == "", leftovers
    ssh(sd, "node1", ["sh", "-c", "systemctl disable --now %s redis-server" % ticker])


def test_restore_leaves_a_fresh_copy_and_reports_it(sd, shared, playbook, tmp_path):
    """checkpoint.yml (mode kill) holds the unit; systemd then runs it anyway (the hold
    removed and the unit started by hand, as an operator would): restore.yml leaves that
    fresh copy running as the unit's MainPID, and the report's row says "fresh copy
    running", not "restored" nor "failed"."""
    ticker = "ckpt-fresh-%s" % uuid.uuid4().hex[:6]
    ticks = str(shared / (ticker + ".ticks"))
    install_ticker(sd, ["node1"], ticker, ticks, start_on="node1")
    root = "/var/lib/ckpt/%s" % ticker
    inv = write_inventory(sd, tmp_path / "inv.ini", {}, others=["node1"])
    run = playbook("checkpoint.yml", inv, {"ckpt_hosts": "node1", "ckpt_checkpoint_units": ticker,
                                           "ckpt_checkpoint_mode": "kill", "ckpt_checkpoint_images_root": root})
    assert run.rc == 0, run.output[-5000:]
    assert show(sd, "node1", ticker, "ActiveState")["ActiveState"] == "inactive"
    ssh(sd, "node1", ["sh", "-c", "rm /run/systemd/system/%s.service.d/50-ckpt-criu-hold.conf && "
                      "systemctl daemon-reload && systemctl start %s" % (ticker, ticker)])
    fresh = int(show(sd, "node1", ticker, "MainPID")["MainPID"])
    assert fresh > 0
    run = playbook("restore.yml", inv, {"ckpt_hosts": "node1", "ckpt_restore_images_root": root})
    assert run.rc != 0, "a checkpoint not restored is a failure of the host"
    (row,) = run.rows(action="restore")
    assert row["result"] == "fresh copy running" and not row["ok"] and "fresh copy" in row["cause"], row
    assert show(sd, "node1", ticker, "ActiveState", "MainPID") == {"ActiveState": "active", "MainPID": str(fresh)}
    ssh(sd, "node1", ["sh", "-c", "systemctl stop %s; rm -rf %s" % (ticker, root)])


def test_migrate_a_unit(sd, shared, playbook, tmp_path):
    ticker = "ckpt-mig-%s" % uuid.uuid4().hex[:6]
    ticks = str(shared / (ticker + ".ticks"))
    install_ticker(sd, ["node1", "node2"], ticker, ticks, start_on="node1")
    pid = int(show(sd, "node1", ticker, "MainPID")["MainPID"])
    inv = write_inventory(sd, tmp_path / "inv.ini", {"node1": "node2"})
    run = playbook("migrate.yml", inv, {"ckpt_migrate_units": ticker})
    assert run.rc == 0, run.output[-5000:]
    assert [r["result"] for r in run.rows(action="migrate")] == ["migrated"], run.rows()
    dst = show(sd, "node2", ticker, "ActiveState", "MainPID", "NRestarts")
    assert dst == {"ActiveState": "active", "MainPID": str(pid), "NRestarts": "0"}, dst
    src = show(sd, "node1", ticker, "ActiveState", "MainPID", "NRestarts", "Result")
    assert src == {"ActiveState": "inactive", "MainPID": "0", "NRestarts": "0", "Result": "success"}, src
    time.sleep(0.5)
    assert show(sd, "node1", ticker, "ActiveState")["ActiveState"] == "inactive", "the source restarted"
    ok, _gap = continuity(read_ticks(ticks))
    assert ok
    ssh(sd, "node2", ["systemctl", "stop", ticker])


def test_migrate_a_unit_the_destination_defines_otherwise(sd, shared, playbook, tmp_path):
    ticker = "ckpt-odd-%s" % uuid.uuid4().hex[:6]
    ticks = str(shared / (ticker + ".ticks"))
    install_ticker(sd, ["node1"], ticker, ticks, start_on="node1")
    ssh(sd, "node2", ["sh", "-c", "cat > /etc/systemd/system/%s.service && systemctl daemon-reload" % ticker],
        input="[Service]\nExecStart=/bin/sleep 1000\n")
    pid = int(show(sd, "node1", ticker, "MainPID")["MainPID"])
    inv = write_inventory(sd, tmp_path / "inv.ini", {"node1": "node2"})
    run = playbook("migrate.yml", inv, {"ckpt_migrate_units": ticker})
    assert run.rc != 0
    row = run.rows(action="migrate")[0]
    # refused by the preflight, before anything was frozen
    assert row["result"] == "refused" and "is defined otherwise" in row["cause"], row
    assert "FROZEN" not in run.output
    src = show(sd, "node1", ticker, "ActiveState", "MainPID", "NRestarts")
    assert src == {"ActiveState": "active", "MainPID": str(pid), "NRestarts": "0"}, src
    assert show(sd, "node2", ticker, "ActiveState")["ActiveState"] == "inactive"
    leftovers = ssh(sd, "node1", ["sh", "-c", "ls /run/systemd/system/%s.service.d 2>/dev/null; true" % ticker])
    assert leftovers.strip() == "", leftovers
    n = len(read_ticks(ticks))
    time.sleep(0.3)
    assert len(read_ticks(ticks)) > n and continuity(read_ticks(ticks))[0]
    ssh(sd, "node1", ["systemctl", "stop", ticker])


def test_migrate_redis_server_service(sd, playbook, tmp_path):
    """Debian's Type=notify redis-server.service, 10,000 keys, moves with migrate.yml."""
    install_redis(sd, "node2", start=False)
    try:
        install_redis(sd, "node1")
        pid = int(show(sd, "node1", "redis-server", "MainPID")["MainPID"])
        inv = write_inventory(sd, tmp_path / "inv.ini", {"node1": "node2"})
        run = playbook("migrate.yml", inv, {"ckpt_migrate_units": "redis-server"})
        assert run.rc == 0, run.output[-5000:]
        dst = show(sd, "node2", "redis-server", "ActiveState", "MainPID", "NRestarts", "Type")
        assert dst == {"ActiveState": "active", "MainPID": str(pid), "NRestarts": "0", "Type": "notify"}, dst
        src = show(sd, "node1", "redis-server", "ActiveState", "MainPID", "NRestarts")
        assert src == {"ActiveState": "inactive", "MainPID": "0", "NRestarts": "0"}, src
        assert ssh(sd, "node2", ["redis-cli", "DBSIZE"]).strip() == "10000"
        assert ssh(sd, "node2", ["redis-cli", "GET", "key:9999"]).strip() == "value-69993"
        ssh(sd, "node2", ["systemctl", "restart", "redis-server"])
        assert int(show(sd, "node2", "redis-server", "MainPID")["MainPID"]) != pid
    finally:
        for h in ("node1", "node2"):
            ssh(sd, h, ["sh", "-c", "systemctl disable --now redis-server; rm -rf "
                        "/etc/systemd/system/redis-server.service.d; systemctl daemon-reload"], check=False)
