"""Trust between hosts, tried as the unprivileged local user ckpt-attacker on the SSH test fleet."""
from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from fleet_testlib import write_inventory

pytestmark = [pytest.mark.fleet, pytest.mark.criu]

# A fake SSH connection-sharing master: accepts on a unix socket and counts who connects.
FAKE_MASTER = r'''
import os, socket, sys
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)
s.listen(16)
open(log, "a").close()
while True:
    c, _ = s.accept()
    with open(log, "a") as fh:
        fh.write("connection\n")
    c.close()
'''


def _attacker():
    try:
        pw = pwd.getpwnam("ckpt-attacker")
    except KeyError:
        pytest.fail("the unprivileged user ckpt-attacker is missing: run `make setup`")
    return ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--clear-groups", "--"]


def test_ssh_control_socket_cannot_be_planted_by_another_user(fleet, clean_hosts, workload, playbook, tmp_path):
    """Finding 1: the ControlPath was /tmp/.ckpt-ssh-%C, predictable and in a world-writable directory;
    nobody listened there as a fake master and root's rsync handed it the whole checkpoint."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    local = fleet.exec("node1", ["hostname"], stdout=subprocess.PIPE, text=True).stdout.strip()
    # ssh's %C: sha1 of local host name, remote host, port and remote user.
    digest = hashlib.sha1(("%s%s%s%s" % (local, fleet.address("node2"), "22", "root")).encode()).hexdigest()
    planted = "/tmp/.ckpt-ssh-%s" % digest
    own = tempfile.mkdtemp(prefix="ckpt-attacker-", dir="/var/tmp")
    os.chmod(own, 0o755)
    os.chown(own, pwd.getpwnam("ckpt-attacker").pw_uid, -1)
    log = Path(own) / "fake-master.log"
    try:
        os.unlink(planted)
    except FileNotFoundError:
        pass
    fake = subprocess.Popen(_attacker() + [sys.executable, "-c", FAKE_MASTER, planted, str(log)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline and not log.exists():
            time.sleep(0.05)
        assert log.exists(), "the attacker's fake master did not start"
        w = workload("node1")
        run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1"})
        assert log.read_text() == "", "root's ssh connected to a control socket another user planted"
        assert run.rc == 0, run.output[-4000:]
        assert w.running_on("node2") and w.wait_ticks(5) and w.continuity()[0]
    finally:
        fake.kill()
        fake.wait()
        try:
            os.unlink(planted)
        except OSError:
            pass
        shutil.rmtree(own, ignore_errors=True)


def _criu_wrapper(fleet, host, name, on_restore):
    """A criu on host that runs ``on_restore`` (sh) instead of criu restore."""
    path = "/srv/%s" % name
    with open(fleet.host_path(host, path), "w") as fh:
        fh.write("#!/bin/sh\n"
                 "prev=; for a in \"$@\"; do [ \"$prev\" = -o ] && log=$a; prev=$a; done\n"
                 "for a in \"$@\"; do [ \"$a\" = restore ] && { %s; }; done\n"
                 "exec /opt/ckpt-criu/bin/criu \"$@\"\n" % on_restore)
    os.chmod(fleet.host_path(host, path), 0o755)
    return path


def _assert_rolled_back(run, w, fleet):
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "rolled back" and row["source_resumed"] is True, row
    assert w.running_on("node1"), "the source was not resumed"
    assert w.wait_ticks(10) and w.continuity()[0], "the source does not count on without a gap in its sequence"
    assert not w.running_on("node2")
    return row


def test_rollback_keeps_the_destinations_logs_and_says_where(fleet, clean_hosts, workload, playbook, tmp_path):
    """Finding 13: a rolled-back migration named the destination's restore.log, but the rollback had
    already deleted it, even with keep_images."""
    wrapper = _criu_wrapper(fleet, "node2", "criu-fails-restore",
                            "echo 'injected restore failure' >> \"$log\"; exit 1")
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"},
                          hostvars={"node1": {"ckpt_migrate_destination_criu_path": wrapper}})
    w = workload("node1")
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile})
    row = _assert_rolled_back(run, w, fleet)
    kept = row.get("destination_logs") or []
    assert any(k.endswith("/restore.log") for k in kept), row
    log = [k for k in kept if k.endswith("/restore.log")][0]
    assert os.path.dirname(log) in row["cause"], row["cause"]
    st = os.stat(fleet.host_path("node2", log))
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o600
    with open(fleet.host_path("node2", log)) as fh:
        assert "injected restore failure" in fh.read(), "the kept log is not the failed restore's"


def test_a_killed_destination_restore_is_reported_as_dead(fleet, clean_hosts, workload, playbook, tmp_path):
    """Finding 15: a killed destination restore showed async_wrapper's traceback ("No start of json char
    found") as the cause, not "the restore died"."""
    # criu's parent is the restore module: the wrapper kills it the moment criu restore would start.
    wrapper = _criu_wrapper(fleet, "node2", "criu-kills-module", "kill -9 $PPID; sleep 1; exit 1")
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"},
                          hostvars={"node1": {"ckpt_migrate_destination_criu_path": wrapper}})
    w = workload("node1")
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile})
    row = _assert_rolled_back(run, w, fleet)
    assert "No start of json char found" not in row["cause"] and "Traceback" not in row["cause"], row["cause"]
    assert "the restore on node2 died" in row["cause"], row["cause"]


def _restores_on(fleet, host):
    """Outer PIDs of restore modules running on host."""
    out = []
    for outer, dummy, dummy2 in fleet.processes(host):
        try:
            with open("/proc/%d/cmdline" % outer, "rb") as fh:
                if b"AnsiballZ_restore.py" in fh.read():
                    out.append(outer)
        except OSError:
            pass
    return out


def test_an_orphaned_destination_restore_is_stopped_even_when_its_images_stay(fleet, clean_hosts, workload,
                                                                              playbook, tmp_path):
    """Finding 14: cleanup failures were hidden, and an orphaned destination restore kept its
    prefault memory for up to 600 s."""
    w = workload("node1")
    dest = "/var/lib/ckpt/migrate/from-node1/pid-%d" % w.pid
    # The source's dump waits for the test's go, then fails: the destination's restore is left waiting.
    go = fleet.host_path("node1", "/srv/go")
    with open(fleet.host_path("node1", "/srv/criu-fails-dump"), "w") as fh:
        fh.write("#!/bin/sh\n"
                 "for a in \"$@\"; do [ \"$a\" = dump ] && { while [ ! -e /srv/go ]; do sleep 0.1; done; "
                 "echo 'injected dump failure' >&2; exit 1; }; done\n"
                 "exec /opt/ckpt-criu/bin/criu \"$@\"\n")
    os.chmod(fleet.host_path("node1", "/srv/criu-fails-dump"), 0o755)
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"},
                          hostvars={"node1": {"ckpt_migrate_criu_path": "/srv/criu-fails-dump",
                                              "ckpt_migrate_destination_criu_path": "/opt/ckpt-criu/bin/criu"}})
    stuck = os.path.join(fleet.host_path("node2", dest), "stuck")
    result = {}
    runner = threading.Thread(target=lambda: result.update(
        run=playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile})))
    runner.start()
    try:
        deadline = time.time() + 300
        while time.time() < deadline and runner.is_alive() and not os.path.exists(
                os.path.join(os.path.dirname(stuck), ".ckpt-restore-ready")):
            time.sleep(0.1)
        assert runner.is_alive(), "the migration ended before its restore waited: %s" % (
            result["run"].output[-3000:])
        # A file the rollback cannot remove: the destination's images stay.
        with open(stuck, "w") as fh:
            fh.write("x")
        subprocess.run(["chattr", "+i", stuck], check=True)
        open(go, "w").close()
        runner.join(600)
        run = result["run"]
        row = run.rows(pid=w.pid)[0]
        assert row["result"] == "rolled back" and w.running_on("node1"), row
        assert "could not be removed" in row["cause"], row["cause"]
        deadline = time.time() + 20
        while time.time() < deadline and _restores_on(fleet, "node2"):
            time.sleep(0.2)
        assert not _restores_on(fleet, "node2"), "the orphaned restore on node2 still waits (and holds its memory)"
    finally:
        open(go, "w").close()
        runner.join(600)
        subprocess.run(["chattr", "-i", stuck], check=False, stderr=subprocess.DEVNULL)
        for pid in _restores_on(fleet, "node2"):
            os.kill(pid, 9)


def test_a_source_images_root_others_can_write_is_refused(fleet, clean_hosts, workload, playbook, tmp_path):
    """The images root and the records directory are made once for the host, before the processes: an images
    root that another user can write fails each process with the reason, which the report shows, and nothing
    is frozen, made or written under it."""
    root = "/srv/shared-root"
    os.makedirs(fleet.host_path("node1", root))
    os.chmod(fleet.host_path("node1", root), 0o777)     # what an attacker could plant symlinks in
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    w = workload("node1")
    extra = {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_images_root": root, "ckpt_migrate_settle": "1"}
    run = playbook("migrate.yml", inv, extra)
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "rolled back", row
    assert root in row["cause"] and "stage prepare" in row["cause"], row
    assert row["frozen_s"] is None, "the process was frozen: %s" % row
    assert w.running_on("node1") and w.wait_ticks(5) and w.continuity()[0]
    assert not w.running_on("node2")
    assert os.listdir(fleet.host_path("node1", root)) == [], "something was made in a root others can write"


def test_a_destination_images_root_others_can_write_is_refused(fleet, clean_hosts, workload, playbook, tmp_path):
    """The destination's images root is writable by others: the run that makes the processes' images
    directories there, once for the host, fails, and each process is refused with the reason before
    anything is frozen; no rsync key is made or authorized, nothing is made under that root, and the
    source's images root keeps nothing of the process."""
    root = "/srv/shared-dest"
    os.makedirs(fleet.host_path("node2", root))
    os.chmod(fleet.host_path("node2", root), 0o777)
    authorized = fleet.host_path("node2", "/root/.ssh/authorized_keys")
    before = Path(authorized).read_text() if os.path.exists(authorized) else ""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    ws = [workload("node1", name="w%d" % i) for i in range(2)]
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": ",".join(w.pidfile for w in ws),
                                        "ckpt_migrate_destination_images_root": root,
                                        "ckpt_migrate_continue_on_failure": "true", "ckpt_migrate_settle": "1"})
    assert run.rc != 0
    for w in ws:
        row = run.rows(pid=w.pid)[0]
        assert row["result"] == "rolled back" and row["frozen_s"] is None, row
        assert root in row["cause"] and "stage prepare" in row["cause"], row["cause"]
        assert w.running_on("node1") and w.wait_ticks(5) and w.continuity()[0]
        assert not w.running_on("node2")
    assert os.listdir(fleet.host_path("node2", root)) == [], "something was made in a root others can write"
    assert os.listdir(fleet.host_path("node1", "/var/lib/ckpt/migrate")) == [".migrated"]
    after = Path(authorized).read_text() if os.path.exists(authorized) else ""
    assert after == before, "a key was authorized for a migration that was refused"


def test_an_images_directory_that_cannot_be_made_refuses_only_its_process(fleet, clean_hosts, workload, playbook,
                                                                          tmp_path):
    """One process's images directory on the source cannot be made afresh (something is mounted there):
    that process alone is refused with the reason, before anything is frozen, and nothing is made for
    it on the destination; the host's other process migrates."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    stuck, other = workload("node1", name="stuck"), workload("node1", name="other")
    busy = "/var/lib/ckpt/migrate/pid-%d" % stuck.pid
    fleet.exec("node1", ["mkdir", "-p", busy])
    assert fleet.exec("node1", ["mount", "-t", "tmpfs", "-o", "size=1m", "ckpt-test", busy]).returncode == 0
    try:
        run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": "%s,%s" % (stuck.pidfile, other.pidfile),
                                            "ckpt_migrate_continue_on_failure": "true", "ckpt_migrate_settle": "1"})
    finally:
        fleet.exec("node1", ["umount", busy])
    row = run.rows(pid=stuck.pid)[0]
    assert row["result"] == "rolled back" and row["frozen_s"] is None, row
    assert "cannot make %s afresh" % busy in row["cause"] and "stage prepare" in row["cause"], row["cause"]
    assert stuck.running_on("node1") and stuck.wait_ticks(5) and stuck.continuity()[0]
    assert not os.path.exists(fleet.host_path("node2", "/var/lib/ckpt/migrate/from-node1/pid-%d" % stuck.pid))
    assert run.rows(pid=other.pid)[0]["result"] == "migrated", run.rows()
    assert other.running_on("node2") and other.wait_ticks(5) and other.continuity()[0]
