"""The playbooks on the SSH test fleet: real SSH, real CRIU, real processes."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fleet_testlib import (WORKLOADS, copy_python, dump_module_killed_once_restore_began, failing_restore, listdir,
                           migrate_root, write_inventory)

pytestmark = [pytest.mark.fleet, pytest.mark.criu]


def test_migrate_counter(fleet, clean_hosts, workload, playbook, tmp_path):
    """A -> B: continuity, frozen time recorded, source gone, images cleaned up;
    --check before and a rerun after change nothing."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    w = workload("node1")
    ev = {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1"}

    check = playbook("migrate.yml", inv, ev, check=True)
    assert check.rc == 0, check.output[-4000:]
    assert w.running_on("node1") and not w.running_on("node2")
    assert listdir(fleet, "node2", "/var/lib/ckpt") in ([], None)
    assert check.rows(pid=w.pid)[0]["result"] == "would migrate"

    run = playbook("migrate.yml", inv, ev)
    assert run.rc == 0, run.output[-4000:]
    # The freeze waited for the destination's restore to be ready, and never had to check on it.
    assert run.output.index("Wait until the destination's restore is ready") < run.output.index("FROZEN: freeze")
    assert "ended before the freeze" not in run.output
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "migrated" and row["host"] == "node1" and row["destination"] == "node2"
    assert 0 < row["frozen_s"] < 10 and row["image_bytes"] > 0
    assert w.running_on("node2"), "the process does not run on the destination"
    assert w.state("node1") is None, "the source still exists"
    assert w.wait_ticks(10)
    ok, gap = w.continuity()
    assert ok, "the tick sequence repeated or skipped"
    assert gap < row["frozen_s"] + 0.5
    assert migrate_root(fleet, "node1") == [".migrated"]
    assert migrate_root(fleet, "node2") == []
    assert run.report["summary"]["frozen_max_s"] == row["frozen_s"]
    for ext in ("md", "html"):
        assert (tmp_path / "reports" / ("run2." + ext)).read_text().count("node1") >= 1

    again = playbook("migrate.yml", inv, ev)
    assert again.rc == 0, again.output[-4000:]
    assert again.changed("node1") == 0
    assert again.rows(pid=w.pid)[0]["result"] == "migrated already"
    check2 = playbook("migrate.yml", inv, ev, check=True)
    assert check2.rc == 0 and check2.changed("node1") == 0
    assert w.running_on("node2")


def test_migrate_counter_page_server(fleet, clean_hosts, workload, playbook, tmp_path):
    """A -> B with the pages streamed to a page server started on the
    destination before the freeze: continuity, source gone, images cleaned."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    w = workload("node1")
    ev = {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1",
          "ckpt_migrate_transfer": "page_server"}
    run = playbook("migrate.yml", inv, ev)
    assert run.rc == 0, run.output[-4000:]
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "migrated" and row["transfer"] == "page_server"
    assert 0 < row["frozen_s"] < 10 and row["image_bytes"] > 0
    assert w.running_on("node2") and w.state("node1") is None
    assert w.wait_ticks(10)
    ok, gap = w.continuity()
    assert ok, "the tick sequence repeated or skipped"
    assert gap < row["frozen_s"] + 0.5
    assert migrate_root(fleet, "node2") == []


def test_destination_binary_differs(fleet, clean_hosts, workload, playbook, tmp_path):
    """Refused before any freeze; the source is untouched."""
    py = copy_python(fleet, "node1")
    copy_python(fleet, "node2", alter=True)
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    w = workload("node1", python=py)
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile})
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "refused"
    assert "sha256" in row["cause"] and "/srv/bin/python3" in row["cause"]
    assert row["frozen_s"] is None and not row.get("source_resumed"), row
    assert w.running_on("node1") and not w.running_on("node2")
    assert w.wait_ticks(5)
    ok, gap = w.continuity()
    assert ok and gap < 0.5, "the source was disturbed (largest gap %.2f s)" % gap
    assert migrate_root(fleet, "node1") in (None, [])


def test_destination_restore_fails(fleet, clean_hosts, workload, playbook, tmp_path):
    """A failure injected into the destination's restore: the source resumes and
    counts on, the destination is clean, the play fails with the cause. The host's
    third process is not attempted (the second was dumped before the first one's
    failure was known: it is rolled back too): it runs on untouched, its row says
    why, and the directories made for it are gone on both hosts."""
    failing_restore(fleet)
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"},
                          hostvars={"node1": {"ckpt_migrate_destination_criu_path": "/srv/criu-fails-restore"}})
    w = workload("node1")
    second = workload("node1", name="second")
    other = workload("node1", name="other")
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": ",".join((w.pidfile, second.pidfile, other.pidfile))})
    assert run.rc != 0
    assert run.rows(pid=second.pid)[0]["result"] == "rolled back"
    left = run.rows(pid=other.pid)[0]
    assert left["result"] == "not attempted" and left["ok"] is False and left["frozen_s"] is None, left
    assert "rolled back" in left["cause"] and "ckpt_migrate_continue_on_failure" in left["cause"], left
    assert other.running_on("node1") and other.wait_ticks(10) and other.continuity()[0]
    assert "FROZEN: freeze, dump and send the checkpoint to the destination, PID %d" % other.pid not in run.output
    assert migrate_root(fleet, "node1") == [".migrated"], "the images directories were not removed on node1"
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "rolled back" and row["source_resumed"] is True
    assert "destination's restore" in row["cause"], row["cause"]
    assert row["frozen_s"] is not None and row["frozen_s"] > 0
    assert "rolled back" in run.output and "PID %d" % w.pid in run.output
    assert w.running_on("node1"), "the source was not resumed"
    assert w.wait_ticks(10), "the source does not count on"
    ok = w.continuity()[0]
    assert ok
    assert not w.running_on("node2") and w.state("node2") is None
    assert migrate_root(fleet, "node2") in ([], [".rolled-back"])  # only the kept logs


@pytest.mark.parametrize("restore", ["verified", "fails"])
def test_dump_module_dies_after_its_checkpoint_left(fleet, clean_hosts, workload, playbook, tmp_path, restore):
    """The dump module dies once the destination's restore has begun (its manifest had left): the
    process never runs twice. A restore that verified the copy completes the migration (the source,
    frozen at that checkpoint, is killed); a restore that failed is awaited before the source resumes."""
    hostvars = {}
    if restore == "fails":
        failing_restore(fleet, before="sleep 1")
        hostvars = {"node1": {"ckpt_migrate_destination_criu_path": "/srv/criu-fails-restore"}}
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"}, hostvars=hostvars)
    w = workload("node1")
    with dump_module_killed_once_restore_began(fleet, w.pid) as seen:
        run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1"})
    assert seen.get("module", "None") != "None" and seen.get("began"), (seen, run.output[-3000:])
    assert "Wait for the verdict of the destination's restore" in run.output, run.output[-4000:]
    row = run.rows(pid=w.pid)[0]
    assert "the module died before it reported a result (exit status 137: killed by signal 9)" in row["cause"], row
    if restore == "verified":
        assert run.rc == 0, run.output[-4000:]
        assert row["result"] == "migrated" and row["ok"], row
        assert "the dump task failed after its checkpoint had reached node2" in row["cause"], row["cause"]
        assert "completed instead of rolled back" in row["cause"], row["cause"]
        assert 0 < row["frozen_s"] < 30, row
        assert w.running_on("node2") and w.state("node1") is None
        assert migrate_root(fleet, "node1") == [".migrated"]
        assert migrate_root(fleet, "node2") == []
    else:
        assert run.rc != 0
        assert row["result"] == "rolled back" and row["source_resumed"] is True, row
        assert "the restore on node2, awaited before the source resumed, failed" in row["cause"], row["cause"]
        assert "injected restore failure" in row["cause"], row["cause"]
        assert w.running_on("node1") and w.state("node2") is None
        assert migrate_root(fleet, "node2") in ([], [".rolled-back"])
    # Never on both hosts: the tick sequence neither repeats nor skips.
    assert w.wait_ticks(10)
    ok, gap = w.continuity()
    assert ok, "the tick sequence repeated or skipped: the process ran twice"


def test_record_fails_after_the_source_was_killed(fleet, clean_hosts, workload, playbook, tmp_path):
    """The commit killed the source, then cannot write the migration's record (here its name is taken
    by a directory; a full disk does the same): the copy on node2 is the process now, so nothing is
    rolled back. The row says migrated, cleanup failed, naming the record; the process runs on node2,
    and the migration's images are removed on both hosts."""
    w = workload("node1")
    record = fleet.host_path("node1", "/var/lib/ckpt/migrate/.migrated/pid-%d.json" % w.pid)
    os.makedirs(os.path.join(record, "taken"), mode=0o700)
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1"})
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "migrated, cleanup failed" and row["source_resumed"] is False, row
    assert 'stage committed, task "Fail the cleanup when the record or the images on the source failed"' in row["cause"]
    assert ("cannot write the migration record /var/lib/ckpt/migrate/.migrated/pid-%d.json: Is a directory" % w.pid
            in row["cause"]), row["cause"]
    assert w.running_on("node2") and w.state("node1") is None
    # The images of the migration, done, do not stay behind.
    assert migrate_root(fleet, "node1") == [".migrated"]
    assert migrate_root(fleet, "node2") == []
    assert w.wait_ticks(10)
    assert w.continuity()[0]


def test_settle_checks_overlap_the_next_migration_and_a_copy_that_dies_rolls_back(
        fleet, clean_hosts, workload, playbook, tmp_path):
    """Three processes of node1: each restore's settle check runs while the next process is migrated,
    and is collected after that one's dump. The second process's copy is killed on node2 during its
    settle check: that process alone is rolled back and runs on node1 again; the first and the third
    (dumped before the failure was known) are migrated, each in its own continuous tick sequence."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    ws = [workload("node1", name="w%d" % i) for i in range(3)]
    victim = ws[1]
    killed = threading.Event()
    stop = threading.Event()

    def kill_the_copy():
        # The restore module writes restore.log before criu restores; the PID exists on node2 only once restored.
        while not stop.is_set():
            if fleet.exec("node2", ["kill", "-9", str(victim.pid)], stderr=subprocess.DEVNULL).returncode == 0:
                killed.set()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_copy, daemon=True)
    killer.start()
    try:
        run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": ",".join(w.pidfile for w in ws),
                                            "ckpt_migrate_settle": "2"})
    finally:
        stop.set()
        killer.join(10)
    assert killed.is_set(), "the second process never ran on node2"
    assert run.rc != 0
    out = run.output
    # The first process's verdict is collected after the second process's dump, not before it.
    assert out.index("FROZEN: freeze, dump and send the checkpoint to the destination, PID %d" % ws[1].pid) < \
        out.index("Collect the destination's restore and its settle check, PID %d" % ws[0].pid)
    rows = {w.pid: run.rows(pid=w.pid)[0] for w in ws}
    for w in (ws[0], ws[2]):
        assert rows[w.pid]["result"] == "migrated", rows[w.pid]
        assert w.running_on("node2") and w.state("node1") is None
        assert w.wait_ticks(10)
        assert w.continuity()[0], "the tick sequence of PID %d repeated or skipped" % w.pid
    row = rows[victim.pid]
    assert row["result"] == "rolled back" and row["source_resumed"] is True, row
    assert "Collect the destination's restore" in row["cause"], row["cause"]
    assert victim.running_on("node1") and not victim.running_on("node2")
    assert victim.wait_ticks(10)
    assert migrate_root(fleet, "node2") in ([], [".rolled-back"])


def test_destination_restore_ended_before_the_freeze(fleet, clean_hosts, workload, playbook, tmp_path):
    """The destination's restore ends before the source is frozen (here: told not to
    wait for the checkpoint, so it finds none): the process is never frozen."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"},
                          hostvars={"node1": {"ckpt_migrate_wait_for_checkpoint": 0,
                                              "ckpt_migrate_ready_timeout": 3}})
    w = workload("node1")
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile})
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "rolled back" and row["frozen_s"] is None, row
    assert "ended before the freeze" in row["cause"] and "nothing was frozen" in row["cause"], row["cause"]
    assert "ckpt-manifest.json is missing" in row["cause"], row["cause"]
    assert "Refuse to freeze" in run.output and "FROZEN: freeze" not in run.output
    assert w.running_on("node1") and not w.running_on("node2")
    assert w.wait_ticks(5)
    ok, gap = w.continuity()
    assert ok and gap < 0.5, "the source was disturbed (largest gap %.2f s)" % gap
    assert migrate_root(fleet, "node2") in ([], [".rolled-back"])  # only the kept logs


def test_stdio_blocker_refuses_one(fleet, clean_hosts, workload, playbook, tmp_path):
    """A process whose stdout is a pipe to a reader outside it is refused with the
    sentence; the other process of the host migrates."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    good = workload("node1", name="good")
    bad = workload("node1", name="bad", stdio="pipe")
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": "%s,%s" % (bad.pidfile, good.pidfile)})
    assert run.rc != 0
    brow = run.rows(pid=bad.pid)[0]
    grow = run.rows(pid=good.pid)[0]
    assert brow["result"] == "refused" and "pipe" in brow["cause"] and "fd 1" in brow["cause"]
    assert grow["result"] == "migrated"
    assert good.running_on("node2") and good.state("node1") is None
    assert bad.running_on("node1") and not bad.running_on("node2")


def test_unreachable_host_in_batch(fleet, clean_hosts, workload, playbook, tmp_path):
    """node3 is unreachable: with max_fail_percentage 50 the rest of its batch and
    the next batch finish; with 0 the run stops and the next batch is not run."""
    srcs = {"node1": "node2", "node3": "node4", "node5": "node6"}
    inv = write_inventory(fleet, tmp_path / "inv.ini", srcs, unreachable=("node3",))
    w1 = workload("node1", name="w1")
    w5 = workload("node5", name="w5")
    ev = {"ckpt_migrate_pidfiles": "/srv/w1.pid,/srv/w5.pid", "ckpt_serial": "2",
          "ckpt_migrate_settle": "1"}
    # The pidfiles are per host: a host without one of them lists it as absent.
    ev["ckpt_migrate_pidfiles"] = "/srv/w.pid"
    for w in (w1, w5):
        fleet.exec(w.host, ["cp", w.pidfile, "/srv/w.pid"])

    # 0 %: node3 is lost in the first batch; node1 finishes its migration (nothing
    # is left half-done), but the second batch (node5) does not start.
    stopped = playbook("migrate.yml", inv, dict(ev, ckpt_max_fail_percentage="0"))
    assert stopped.rc != 0
    assert "more than ckpt_max_fail_percentage" in stopped.output
    assert stopped.rows(host="node1")[0]["result"] == "migrated"
    assert stopped.rows(host="node3")[0]["result"] == "host failed"
    assert stopped.rows(host="node5")[0]["result"] == "not run"
    assert w1.running_on("node2") and w5.running_on("node5") and not w5.running_on("node6")

    # 50 %: one of two lost is allowed; the next batch runs.
    run = playbook("migrate.yml", inv, dict(ev, ckpt_max_fail_percentage="50"))
    assert run.rc != 0                       # node3 stays failed
    assert "unreachable=1" in run.output
    assert run.rows(host="node1")[0]["result"] == "migrated already"
    assert run.rows(host="node5")[0]["result"] == "migrated"
    assert run.rows(host="node3")[0]["result"] == "host failed"
    assert w1.running_on("node2") and w5.running_on("node6")


def test_maintenance_reboot_restores(fleet, clean_hosts, workload, playbook, tmp_path):
    """checkpoint -> simulated reboot -> restore; outside the window it refuses;
    --check and a rerun change nothing."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {}, others=["node1"])
    w = workload("node1", interval=0.1)
    import sys
    from fleet_testlib import REPO, STATE_DIR
    from fleet import Fleet
    ev = {"ckpt_hosts": "node1", "ckpt_checkpoint_pidfiles": w.pidfile,
          "ckpt_maintenance_reboot": "command",
          "ckpt_maintenance_reboot_command": [sys.executable, str(REPO / "tests" / "system" / "fleet" / "fleet.py"),
                                              "--state-dir", STATE_DIR, "reboot", "{host}"],
          "ckpt_window_start": "00:00", "ckpt_window_end": "23:59", "ckpt_window_utc": "true"}

    now = time.gmtime()
    outside = dict(ev, ckpt_window_start="%02d:00" % ((now.tm_hour + 2) % 24),
                   ckpt_window_end="%02d:00" % ((now.tm_hour + 3) % 24))
    refused = playbook("maintenance.yml", inv, outside)
    assert refused.rc != 0 and "Outside the maintenance window" in refused.output
    assert "node1" not in refused.output.split("PLAY RECAP")[-1]
    assert w.running_on("node1")

    check = playbook("maintenance.yml", inv, ev, check=True)
    assert check.rc == 0, check.output[-4000:]
    assert w.running_on("node1") and listdir(fleet, "node1", "/var/lib/ckpt/checkpoint") in (None, [])
    ok, gap = w.continuity()
    assert ok and gap < 2.5, "check mode disturbed the process (gap %.2f s)" % gap

    boots = Fleet(state_dir=STATE_DIR).status()["hosts"]["node1"]["boots"]
    run = playbook("maintenance.yml", inv, ev)
    assert run.rc == 0, run.output[-4000:]
    assert Fleet(state_dir=STATE_DIR).status()["hosts"]["node1"]["boots"] == boots + 1, "node1 did not reboot"
    assert [r["result"] for r in run.rows(action="checkpoint")] == ["checkpointed"]
    assert [r["result"] for r in run.rows(action="restore")] == ["restored"]
    assert w.running_on("node1")
    assert w.wait_ticks(2, timeout=8)
    ok = w.continuity()[0]
    assert ok

    again = playbook("maintenance.yml", inv, ev)
    assert again.rc == 0 and again.changed("node1") == 0
    assert again.rows()[0]["result"] == "done already"


def test_checkpoint_restore_preflight_idempotent(fleet, clean_hosts, workload, playbook, tmp_path):
    """checkpoint, restore and preflight: --check changes nothing, a rerun changes nothing."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {}, others=["node1"])
    w = workload("node1")
    ev = {"ckpt_hosts": "node1", "ckpt_checkpoint_pidfiles": w.pidfile, "ckpt_preflight_pidfiles": w.pidfile}

    pre = playbook("preflight.yml", inv, ev)
    assert pre.rc == 0 and pre.changed("node1") == 0
    assert pre.rows(pid=w.pid)[0]["result"] == "ready"

    check = playbook("checkpoint.yml", inv, ev, check=True)
    assert check.rc == 0, check.output[-4000:]
    assert listdir(fleet, "node1", "/var/lib/ckpt/checkpoint") in (None, [])
    run = playbook("checkpoint.yml", inv, ev)
    assert run.rc == 0, run.output[-4000:]
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "checkpointed" and row["image_bytes"] > 0
    assert listdir(fleet, "node1", "/var/lib/ckpt/checkpoint/pid-%d" % w.pid)
    assert w.running_on("node1")
    again = playbook("checkpoint.yml", inv, ev)
    assert again.rc == 0 and again.changed("node1") == 0
    check2 = playbook("checkpoint.yml", inv, ev, check=True)
    assert check2.rc == 0 and check2.changed("node1") == 0

    fleet.exec("node1", ["kill", "-9", str(w.pid)])
    deadline = time.time() + 10
    while w.state() is not None and time.time() < deadline:
        time.sleep(0.1)
    # Should the manifest list the ticks file as one the restore needs at its
    # dump-time size (only files written without O_APPEND belong there), put it
    # back at that size, as the restore would ask.
    import json
    mpath = fleet.host_path("node1", "/var/lib/ckpt/checkpoint/pid-%d/ckpt-manifest.json" % w.pid)
    for f in json.load(open(mpath)).get("stdio_files") or []:
        if f["path"] == w.ticks:
            os.truncate(w.ticks, f["size"])
    rcheck = playbook("restore.yml", inv, ev, check=True)
    assert rcheck.rc == 0, rcheck.output[-4000:]
    assert w.state() is None
    rrun = playbook("restore.yml", inv, ev)
    assert rrun.rc == 0, rrun.output[-4000:]
    assert rrun.rows(pid=w.pid)[0]["result"] == "restored"
    assert w.running_on("node1")
    ragain = playbook("restore.yml", inv, ev)
    assert ragain.rc == 0 and ragain.changed("node1") == 0
    assert ragain.rows(pid=w.pid)[0]["result"] == "running already"


def test_tree_pid_taken_on_the_destination_is_refused_before_the_freeze(fleet, clean_hosts, playbook, tmp_path):
    """Every PID of the tree must be free on the destination, not only the root's:
    a child's PID taken there refuses the process in the preflight, nothing frozen."""
    ticks = tmp_path / "tree.ticks"
    tree = fleet.ssh("node1", ["python3", str(WORKLOADS / "spawn.py"), "--stdio", "devnull", "--pidfile",
                               "/srv/tree.pid", "--", "sh", "-c",
                               "sleep 1000 & exec python3 %s --out %s --interval 0.05"
                               % (WORKLOADS / "counter.py", ticks)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert tree.returncode == 0, tree.stderr
    root = int(tree.stdout.split()[-1])
    deadline = time.time() + 10
    kids = []
    while time.time() < deadline and not kids:
        p = fleet.ssh("node1", ["cat", "/proc/%d/task/%d/children" % (root, root)], stdout=subprocess.PIPE,
                      text=True, timeout=30)
        kids = [int(k) for k in p.stdout.split()]
        time.sleep(0.05)
    assert kids, "the tree has no child"
    child = kids[0]
    # the same PID, taken on node2 by a process of its own
    taker = fleet.exec("node2", ["sh", "-c", "echo %d > /proc/sys/kernel/ns_last_pid; sleep 1000 >/dev/null 2>&1 & "
                                 "echo $!" % (child - 1)], stdout=subprocess.PIPE, text=True, timeout=30)
    assert int(taker.stdout.split()[-1]) == child, "could not take PID %d on node2: %s" % (child, taker.stdout)
    try:
        inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
        run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": "/srv/tree.pid"})
        assert run.rc != 0
        row = run.rows(pid=root)[0]
        assert row["result"] == "refused", row
        assert "PID %d, a process of the tree of PID %d, is already in use on node2" % (child, root) in row["cause"]
        assert "FROZEN" not in run.output
        alive = fleet.ssh("node1", ["kill", "-0", str(root), str(child)], timeout=30)
        assert alive.returncode == 0, "the tree on node1 was disturbed"
    finally:
        fleet.exec("node2", ["kill", "-9", str(child)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fleet.exec("node1", ["kill", "-9", str(root), str(child)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def test_files_reopened_by_path_are_looked_for_on_the_destination(fleet, clean_hosts, workload, playbook, tmp_path):
    """The process's stdout is a file opened by path without O_APPEND (the restore reopens it there,
    at its offset): missing on the destination, then of another size, then of another mode there
    (criu checks both), the process is refused before anything is frozen, naming the file; with the
    file in place at its size and mode, it migrates. The destination looks for all such files in one
    run."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    w = workload("node1", stdio="file")
    path = w.pidfile + ".stdio"
    size = os.path.getsize(fleet.host_path("node1", path))
    dest = Path(fleet.host_path("node2", path))
    if dest.exists():
        dest.unlink()
    extra = {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1"}
    run = playbook("migrate.yml", inv, extra)
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "refused", row
    assert "%s, open as fd 1 of PID %d, does not exist on node2" % (path, w.pid) in row["cause"], row["cause"]
    dest.write_bytes(b"x" * (size + 5))
    run = playbook("migrate.yml", inv, extra)
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "refused", row
    assert "%s is %d bytes on node2, %d here" % (path, size + 5, size) in row["cause"], row["cause"]
    assert w.running_on("node1") and w.state("node1") != "T" and w.wait_ticks(5)
    os.truncate(str(dest), size)
    mode = os.stat(fleet.host_path("node1", path)).st_mode
    os.chmod(str(dest), (mode & 0o7777) ^ 0o044)
    run = playbook("migrate.yml", inv, extra)
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "refused", row
    assert "%s has mode file 0%03o on node2, file 0%03o here" % (path, (mode & 0o7777) ^ 0o044, mode & 0o7777) \
        in row["cause"], row["cause"]
    os.chmod(str(dest), mode & 0o7777)
    run = playbook("migrate.yml", inv, extra)
    assert run.rc == 0, run.output[-3000:]
    assert run.rows(pid=w.pid)[0]["result"] == "migrated"
    assert w.running_on("node2") and w.wait_ticks(10) and w.continuity()[0]
