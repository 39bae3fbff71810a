"""What an operator reads when a run stops, is forced, or meets a missing
pidfile, and how durations are written: real playbook runs on the SSH fleet."""
from __future__ import annotations

import time

import pytest

from fleet_testlib import write_inventory

pytestmark = [pytest.mark.fleet, pytest.mark.criu]

DURATIONS = ("frozen_s", "raw_limit_s", "criu_frozen_s", "dump_s", "transfer_s", "restore_s")


def _assert_milliseconds(row):
    seen = [k for k in DURATIONS if row.get(k) is not None]
    assert seen, row
    for k in seen:
        assert isinstance(row[k], (int, float)) and round(row[k], 3) == row[k], (k, row[k])
    return seen


def test_stop_by_max_fail_percentage_says_why(fleet, clean_hosts, workload, playbook, tmp_path):
    """ckpt_serial=1, ckpt_max_fail_percentage=0 (the defaults): a refused process
    and a missing pidfile on node1 stop the run before node3's batch. The output
    names the host, the processes and the variable to change; the missing pidfile
    is named, never "PID 0"; a forced run outside the window says so; the
    migrated process's durations are in milliseconds."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2", "node3": "node4"})
    good = workload("node1", name="good")
    bad = workload("node1", name="bad", stdio="pipe")
    now = time.gmtime()
    ev = {"ckpt_hosts": "node1,node3",
          "ckpt_migrate_pidfiles": "%s,%s,/srv/gone.pid" % (good.pidfile, bad.pidfile),
          "ckpt_migrate_settle": "1",
          "ckpt_force": "true",
          "ckpt_window_start": "%02d:00" % ((now.tm_hour + 2) % 24),
          "ckpt_window_end": "%02d:00" % ((now.tm_hour + 3) % 24)}
    run = playbook("migrate.yml", inv, ev)
    assert run.rc != 0, run.output[-4000:]
    out = " ".join(run.output.split())      # the yaml callback wraps long messages

    # (b) forced outside the window
    assert "Inside the maintenance window" not in out
    assert "Outside the maintenance window, running anyway because ckpt_force is set" in out

    # (a) why the run stopped, which host and processes, what to change
    assert "The run stops after this batch because of max_fail_percentage" in out, out[-4000:]
    assert "ckpt_max_fail_percentage=0" in out and "-e ckpt_max_fail_percentage=100" in out
    assert "Not run: node3" in out
    assert "node1: PID %d (pidfile %s) refused:" % (bad.pid, bad.pidfile) in out
    assert "pidfile /srv/gone.pid absent: pidfile /srv/gone.pid cannot be read" in out
    assert out.index("The run stops after this batch") < out.index("NO MORE HOSTS LEFT")
    assert run.rows(host="node3")[0]["result"] == "not run"

    # (c) the missing pidfile is named, nowhere "pid 0"
    assert "PID 0" not in out and "pid 0" not in out
    assert "(item=0)" not in out and "item=0" not in out
    gone = run.rows(host="node1", selector="pidfile /srv/gone.pid")[0]
    assert gone["result"] == "absent" and not gone["ok"]

    # (d) the process that moved has its durations in milliseconds
    row = run.rows(pid=good.pid)[0]
    assert row["result"] == "migrated"
    assert {"frozen_s", "raw_limit_s", "criu_frozen_s"} <= set(_assert_milliseconds(row))
    # The raw limit (criu and rsync alone) is about the frozen time or less, and the line shows both.
    # Its parts are timed apart: the destination's restore may start while rsync is still ending its
    # session after the last file landed, so the sum may pass frozen_s by a few milliseconds.
    assert 0 < row["criu_frozen_s"] < row["raw_limit_s"] <= row["frozen_s"] + 0.05, row
    assert "frozen %s s (raw limit %s s)" % (row["frozen_s"], row["raw_limit_s"]) in out
    assert bad.running_on("node1") and good.running_on("node2")


def test_checkpoint_durations_in_milliseconds(fleet, clean_hosts, workload, playbook, tmp_path):
    """The checkpoint role rounds like the migrate role (it wrote criu's 6 decimals)."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {}, others=["node1"])
    w = workload("node1")
    run = playbook("checkpoint.yml", inv, {"ckpt_hosts": "node1", "ckpt_checkpoint_pidfiles": w.pidfile})
    assert run.rc == 0, run.output[-4000:]
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "checkpointed"
    assert "frozen_s" in _assert_milliseconds(row)
    assert "PID %d: checkpointed, frozen %s s" % (w.pid, row["frozen_s"]) in run.output
