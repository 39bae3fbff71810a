"""The rsync key of a host's migrations (ckpt_migrate_transfer_auth: ephemeral), on the SSH test fleet.

The fleet gives every host root's standing key, authorized everywhere (the
controller logs in with it). These tests take that trust away from the source
first: its root key is replaced by one nobody authorized, so only the key the
role makes for the migration can carry the images.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fleet_testlib import fresh, wait, write_inventory

pytestmark = [pytest.mark.fleet, pytest.mark.criu]

CONTROL_DIR = "/run/ckpt-criu-ssh"
PROBE_SSH = ("ssh -F none -i /srv/probe/id -o BatchMode=yes -o IdentitiesOnly=yes "
             "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")


def _authorized(fleet, host):
    return Path(fleet.host_path(host, "/root/.ssh/authorized_keys")).read_text()


def _key_dirs(fleet, host):
    p = fresh(fleet).exec(host, ["ls", "-A", CONTROL_DIR], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return [n for n in p.stdout.split() if n.startswith("key-")]


def _inbox(fleet, source, destination="node2"):
    """What is in the source's directory on the destination now (nothing when it does not exist)."""
    try:
        return set(os.listdir(fleet.host_path(destination, "/var/lib/ckpt/migrate/from-%s" % source)))
    except OSError:
        return set()


def _play_while(watch, done, play, *args):
    """play(*args) while watch() runs in a thread; done is set and the thread joined whatever happens."""
    t = threading.Thread(target=watch)
    t.start()
    try:
        return play(*args)
    finally:
        done.set()
        t.join()


@pytest.fixture
def source_without_standing_key(fleet):
    """node1's root key is replaced by a fresh one that no host authorizes; put back afterwards."""
    key = Path(fleet.host_path("node1", "/root/.ssh/id_ed25519"))
    saved = {p: p.read_bytes() for p in (key, key.with_suffix(".pub"))}
    key.unlink()
    key.with_suffix(".pub").unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "node1-unauthorized", "-f", str(key)],
                   check=True)
    try:
        yield
    finally:
        for p, data in saved.items():
            p.write_bytes(data)
            os.chmod(p, 0o600)


def _run_on(fleet, host, argv, timeout=30):
    return fresh(fleet).exec(host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)


def _probe_on(fleet, host, argv, timeout=30):
    """_run_on, tried again while rrsync's one-session lock is held by the role's own transfer."""
    p = _run_on(fleet, host, argv, timeout)
    for _attempt in range(50):
        if "Another instance of rrsync" not in p.stderr:
            break
        time.sleep(0.1)
        p = _run_on(fleet, host, argv, timeout)
    return p


def test_ephemeral_key_only_for_rsync_into_that_directory(fleet, clean_hosts, workload, playbook, tmp_path,
                                                          source_without_standing_key):
    """Issue 10, finding 5: no standing root trust from the source; the key of its migrations is authorized
    with from= and rrsync on this source's directory on the destination, cannot run anything else, cannot
    read, cannot write elsewhere, cannot be used from another host, serves both processes of the host,
    and is gone from both hosts afterwards."""
    dest = fleet.address("node2")
    # The source's own root key is not accepted by the destination.
    p = _run_on(fleet, "node1", ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "node2", "true"])
    assert p.returncode == 255 and "Permission denied" in p.stderr, p.stderr
    before = _authorized(fleet, "node2")
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    # 768 MiB: the key is authorized from before the first freeze until the last dump has sent the
    # images, and sending them takes seconds, time for the probes below.
    w = workload("node1", mem=768)
    w2 = workload("node1", name="w2")
    pidfiles = "%s,%s" % (w.pidfile, w2.pidfile)

    # Standing trust must be asked for, and here there is none: the migration stops before the freeze.
    standing = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": pidfiles,
                                             "ckpt_migrate_transfer_auth": "standing"})
    assert standing.rc != 0
    assert "Permission denied" in standing.output
    assert w.running_on("node1") and w.wait_ticks(5) and w.continuity()[0]

    seen = {"lines": [], "key_dirs": [], "probes": None, "error": None, "inbox": set()}
    done = threading.Event()

    def probe():
        """Once the key is authorized and the role has tried it (it is taken away once the dump has sent
        everything), try it. rrsync lets one session at a time into its directory (a flock): the probes
        wait for the role's own test login to end, and one that meets the lock held is tried again."""
        out = {}
        d = "%s/key-node2" % CONTROL_DIR
        role_login_ended = ["sh", "-c", "test -S %s/cm && ! pgrep -f -- '%s/id .* true$'" % (d, d)]
        wait(lambda: _run_on(fleet, "node1", role_login_ended).returncode == 0, timeout=60, step=0.05)
        _run_on(fleet, "node1", ["sh", "-c", "mkdir -p /srv/probe && cp %s/id /srv/probe/id && echo x > /srv/probe/x"
                                 % d])
        out["id"] = _probe_on(fleet, "node1", PROBE_SSH.split() + ["root@" + dest, "id"])
        out["pull"] = _probe_on(fleet, "node1", ["rsync", "-a", "--rsh=" + PROBE_SSH, "root@%s:/" % dest,
                                                 "/srv/pulled/"])
        out["escape"] = _probe_on(fleet, "node1", ["rsync", "-a", "--rsh=" + PROBE_SSH, "/srv/probe/x",
                                                   "root@%s:/../x" % dest])
        out["abs"] = _probe_on(fleet, "node1", ["rsync", "-a", "--rsh=" + PROBE_SSH, "/srv/probe/x",
                                                "root@%s:/root/.ssh/x" % dest])
        out["forward"] = _probe_on(fleet, "node1", PROBE_SSH.split() + ["-N", "-o", "ExitOnForwardFailure=yes",
                                                                        "-R", "127.0.0.1:40999:127.0.0.1:22",
                                                                        "root@" + dest], timeout=15)
        # The same key from another host: from= refuses it.
        Path(fleet.host_path("node3", "/srv/probe")).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fleet.host_path("node1", "/srv/probe/id"), fleet.host_path("node3", "/srv/probe/id"))
        os.chmod(fleet.host_path("node3", "/srv/probe/id"), 0o600)
        out["other_host"] = _run_on(fleet, "node3", PROBE_SSH.split() + ["root@" + dest, "true"])
        out["still_authorized"] = "from=" in _authorized(fleet, "node2")
        return out

    def watch():
        try:
            while not done.is_set():
                lines = [ln for ln in _authorized(fleet, "node2").splitlines() if "from=" in ln]
                if lines and lines not in seen["lines"]:
                    seen["lines"].append(lines)
                    seen["key_dirs"] = _key_dirs(fleet, "node1")
                if lines and seen["probes"] is None:
                    seen["probes"] = probe()
                seen["inbox"] |= _inbox(fleet, "node1")
                if not lines and seen["lines"] and "source_at_removal" not in seen:
                    seen["source_at_removal"] = w2.state("node1")
                time.sleep(0.1)
        except Exception as exc:  # pylint: disable=broad-except
            seen["error"] = exc

    run = _play_while(watch, done, playbook, "migrate.yml", inv,
                      {"ckpt_migrate_pidfiles": pidfiles})
    assert seen["error"] is None, seen["error"]
    assert run.rc == 0, run.output[-4000:]
    for proc in (w, w2):
        row = run.rows(pid=proc.pid)[0]
        assert row["result"] == "migrated"
        assert proc.running_on("node2") and proc.state("node1") is None
        assert proc.wait_ticks(10)
        ok, gap = proc.continuity()
        assert ok and gap < row["frozen_s"] + 0.5
    # Both images directories were in this source's directory on the destination.
    assert {"pid-%d" % w.pid, "pid-%d" % w2.pid} <= seen["inbox"], seen["inbox"]

    # During the migrations: one line, the same for both processes, from the source only, forced to
    # rrsync on this source's directory.
    assert len(seen["lines"]) == 1 and len(seen["lines"][0]) == 1, seen["lines"]
    line = seen["lines"][0][0]
    assert line.startswith('from="%s",restrict,command="/usr/bin/rrsync -wo -no-del /var/lib/ckpt/migrate/from-node1" '
                           'ssh-ed25519 ' % fleet.address("node1")), line
    assert seen["key_dirs"] == ["key-node2"]

    pr = seen["probes"]
    assert pr is not None, "the key was never seen authorized"
    assert pr["still_authorized"], "the probes ran after the key was removed: they prove nothing"
    assert pr["id"].returncode != 0 and "uid=" not in pr["id"].stdout
    assert "does not run rsync" in pr["id"].stderr, pr["id"].stderr
    assert pr["pull"].returncode != 0 and "reading from write-only server is not allowed" in pr["pull"].stderr
    assert pr["escape"].returncode != 0 and "do not use .." in pr["escape"].stderr
    # An absolute path lands under this source's directory (rrsync roots "/" there), never at that path.
    assert not Path(fleet.host_path("node2", "/root/.ssh/x")).exists()
    assert pr["forward"].returncode != 0 and "forwarding failed" in pr["forward"].stderr, pr["forward"].stderr
    assert pr["other_host"].returncode == 255 and "Permission denied" in pr["other_host"].stderr

    # Taken away once the last images were sent, before the last commit: the last source was still
    # there, frozen.
    assert seen.get("source_at_removal") == "T", "the key was taken away with the source in state %s, not T" % (
        seen.get("source_at_removal"),)
    assert "Take the rsync key of this host's migrations away" in run.output

    # Afterwards: nothing authorized, no key on the source, no images.
    assert _authorized(fleet, "node2") == before
    assert _key_dirs(fleet, "node1") == []
    assert not [ln for ln in _run_on(fleet, "node1", ["ps", "-eo", "args"]).stdout.splitlines()
                if ln.startswith("ssh") and CONTROL_DIR in ln], "the migration's SSH master still runs"


def test_wrong_host_key_fails_before_the_freeze(fleet, clean_hosts, workload, playbook, tmp_path,
                                                source_without_standing_key):
    """The destination presents a host key other than its known one: the source refuses it (no
    accept-new), before the freeze; the workload never stopped, the key is taken away again."""
    pub = Path(fleet.host_dir("node2")) / "etc-ssh" / "ssh_host_ed25519_key.pub"
    saved = pub.read_bytes()
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    before = _authorized(fleet, "node2")
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    w = workload("node1")
    try:
        # What the controller reads as node2's host key is not the key its sshd presents.
        pub.write_bytes(Path(str(other) + ".pub").read_bytes())
        run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1"})
    finally:
        pub.write_bytes(saved)
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "rolled back", row
    assert "stage prepare" in row["cause"] and "Host key verification failed" in row["cause"], row["cause"]
    assert "nothing was frozen" in row["cause"]
    assert row["frozen_s"] is None
    assert w.running_on("node1") and not w.running_on("node2")
    assert w.wait_ticks(10)
    assert w.continuity()[0]
    assert _authorized(fleet, "node2") == before
    assert _key_dirs(fleet, "node1") == []


def test_no_readable_host_key_refuses_before_anything_is_made(fleet, clean_hosts, workload, playbook, tmp_path,
                                                              source_without_standing_key):
    """The destination's host key file holds no key: every process is refused with what was read, before
    a key is made or authorized; the workload never stopped."""
    pub = Path(fleet.host_dir("node2")) / "etc-ssh" / "ssh_host_ed25519_key.pub"
    saved = pub.read_bytes()
    before = _authorized(fleet, "node2")
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    w = workload("node1")
    try:
        pub.write_text("not a key\n")
        run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1"})
    finally:
        pub.write_bytes(saved)
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "rolled back" and row["frozen_s"] is None, row
    assert "no host key could be read from /etc/ssh/ssh_host_*_key.pub on node2 (none there is a public key)" \
        in row["cause"] and "stage prepare" in row["cause"], row["cause"]
    assert w.running_on("node1") and not w.running_on("node2") and w.wait_ticks(10)
    assert _authorized(fleet, "node2") == before
    assert _key_dirs(fleet, "node1") == []


def test_two_sources_to_one_destination_at_once(fleet, clean_hosts, workload, playbook, tmp_path):
    """Two sources in one batch migrate to the same destination: each authorizes and removes its
    own block in the destination's authorized_keys (throttled), each writes into its own directory
    there, both migrate, nothing is left."""
    before = _authorized(fleet, "node2")
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2", "node3": "node2"})
    w1 = workload("node1", name="w1")
    w3 = workload("node3", name="w3")
    for w in (w1, w3):
        fleet.exec(w.host, ["cp", w.pidfile, "/srv/w.pid"])
    markers, inboxes = set(), {"node1": set(), "node3": set()}
    done = threading.Event()

    def watch():
        while not done.is_set():
            text = _authorized(fleet, "node2")
            markers.update(ln.split()[-1] for ln in text.splitlines() if ln.startswith("# BEGIN ckpt.criu migrate"))
            for source, names in inboxes.items():
                names |= _inbox(fleet, source)
            time.sleep(0.05)

    run = _play_while(watch, done, playbook, "migrate.yml", inv,
                      {"ckpt_migrate_pidfiles": "/srv/w.pid", "ckpt_serial": "2", "ckpt_migrate_settle": "1"})
    assert run.rc == 0, run.output[-4000:]
    for w in (w1, w3):
        assert run.rows(host=w.host)[0]["result"] == "migrated"
        assert w.running_on("node2") and w.wait_ticks(5) and w.continuity()[0]
        assert _key_dirs(fleet, w.host) == []
    assert markers == {"node1", "node3"}, markers
    # Each source wrote only into its own directory there.
    assert inboxes == {"node1": {"pid-%d" % w1.pid}, "node3": {"pid-%d" % w3.pid}}, inboxes
    assert _authorized(fleet, "node2") == before


def test_a_key_that_cannot_be_removed_is_reported(fleet, clean_hosts, workload, playbook, tmp_path):
    """The destination's ~/.ssh turns read-only while the key is authorized: the migration itself
    succeeded, but a row of the host says the key is still authorized there and must go by hand."""
    before = _authorized(fleet, "node2")
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    w = workload("node1")
    state = {"ro": False}
    done = threading.Event()

    def watch():
        while not done.is_set() and not state["ro"]:
            if "from=" in _authorized(fleet, "node2"):
                ro = "mount --bind /root/.ssh /root/.ssh && mount -o remount,bind,ro /root/.ssh"
                p = _run_on(fleet, "node2", ["sh", "-c", ro])
                state["ro"] = p.returncode == 0
                state["err"] = p.stderr
                return
            time.sleep(0.1)

    try:
        run = _play_while(watch, done, playbook, "migrate.yml", inv,
                          {"ckpt_migrate_pidfiles": w.pidfile})
    finally:
        while _run_on(fleet, "node2", ["umount", "/root/.ssh"]).returncode == 0:
            pass
    try:
        assert state["ro"], state
        assert run.rc != 0
        assert run.rows(pid=w.pid)[0]["result"] == "migrated"
        row = run.rows(host="node1", pid=None)[0]
        assert row["result"] == "cleanup failed" and not row["ok"], row
        assert row["selector"] == "rsync key of the migrations", row
        assert "the migration key is still authorized on node2" in row["cause"], row["cause"]
        assert "remove it by hand" in row["cause"]
        assert row["cause"].count("still authorized") == 1, row["cause"]
        assert w.running_on("node2") and w.wait_ticks(5)
        assert _key_dirs(fleet, "node1") == []
        assert "from=" in _authorized(fleet, "node2")
    finally:
        Path(fleet.host_path("node2", "/root/.ssh/authorized_keys")).write_text(before)


@pytest.mark.parametrize("auth", ["ephemeral", "standing"])
def test_cipher_preference_reaches_the_transfer(fleet, clean_hosts, workload, playbook, tmp_path, auth):
    """ckpt_migrate_ssh_ciphers is what the transfer's ssh offers: a cipher the destination's sshd
    does not allow (3des-cbc) fails the migration before the freeze in ssh's own words, the
    workload never stopped; one it allows, other than ssh's default first choice, migrates."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    w = workload("node1")
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1",
                                        "ckpt_migrate_transfer_auth": auth, "ckpt_migrate_ssh_ciphers": "3des-cbc"})
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "rolled back", row
    assert "no matching cipher found" in row["cause"], row["cause"]
    assert "set it to [] to leave the choice to ssh" in row["cause"], row["cause"]
    assert row["frozen_s"] is None
    assert w.running_on("node1") and not w.running_on("node2")
    assert w.wait_ticks(10)
    assert w.continuity()[0]
    assert _key_dirs(fleet, "node1") == []

    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1",
                                        "ckpt_migrate_transfer_auth": auth, "ckpt_migrate_ssh_ciphers": "aes256-ctr,aes192-ctr"})
    assert run.rc == 0, run.output
    assert run.rows(pid=w.pid)[0]["result"] == "migrated"
    assert w.running_on("node2") and not w.running_on("node1")
    assert w.continuity()[0]
