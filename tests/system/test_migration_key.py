"""ckpt.criu.migration_key: one task makes the migration's own SSH key and
known hosts, root-only; bad input and an untrusted parent change nothing."""
from __future__ import annotations

import os
import stat
import subprocess

HOSTS = "10.9.8.7 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake\n"


def test_makes_a_root_only_key_and_known_hosts_and_a_new_key_each_time(tmp_path, run_module):
    d = tmp_path / "ssh" / "pid-1"
    r = run_module("migration_key", {"path": str(d), "comment": "ckpt.criu migrate node1 pid-1", "known_hosts": HOSTS})
    assert r.status == "ok" and r["changed"], r
    assert r["public_key"].startswith("ssh-ed25519 ") and r["public_key"].endswith("ckpt.criu migrate node1 pid-1")
    assert "PRIVATE KEY" not in str(dict(r))
    assert sorted(os.listdir(d)) == ["id", "id.pub", "known_hosts"]
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700
    assert {n: stat.S_IMODE(os.lstat(d / n).st_mode) for n in os.listdir(d)} == {
        "id": 0o600, "id.pub": 0o600, "known_hosts": 0o600}
    assert (d / "known_hosts").read_text() == HOSTS
    # The private key matches the public key returned.
    pub = subprocess.run(["ssh-keygen", "-y", "-f", str(d / "id")], check=True, stdout=subprocess.PIPE,
                         text=True).stdout.split()[:2]
    assert pub == r["public_key"].split()[:2]
    again = run_module("migration_key", {"path": str(d), "comment": "c", "known_hosts": HOSTS})
    assert again.status == "ok" and again["public_key"].split()[1] != r["public_key"].split()[1]


def test_route_to_reads_the_source_address_also_in_check_mode(tmp_path, run_module):
    d = tmp_path / "ssh" / "key-node2"
    args = {"path": str(d), "comment": "c", "known_hosts": HOSTS, "route_to": "127.0.0.1"}
    check = run_module("migration_key", args, check=True)
    assert check.status == "ok" and check["changed"] and not d.exists(), check
    r = run_module("migration_key", args)
    assert r.status == "ok" and r["public_key"], r
    for res in (check, r):
        assert res["route"]["rc"] == 0 and " src 127.0.0.1" in res["route"]["stdout"], res["route"]
        assert res["route"]["cmd"][1:] == ["-o", "route", "get", "127.0.0.1"], res["route"]
    # No route is not a failure: the route says why (the role refuses the processes with it).
    r = run_module("migration_key", dict(args, route_to="not-an-address"))
    assert r.status == "ok" and r["route"]["rc"] != 0 and r["route"]["stderr"], r["route"]
    r = run_module("migration_key", {"path": str(d), "comment": "c", "known_hosts": HOSTS})
    assert r.status == "ok" and "route" not in r, r


def test_a_planted_link_is_removed_not_followed(tmp_path, run_module):
    parent = tmp_path / "ssh"
    parent.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.mkdir()
    os.symlink(str(victim), str(parent / "pid-1"))
    r = run_module("migration_key", {"path": str(parent / "pid-1"), "comment": "c", "known_hosts": HOSTS})
    assert r.status == "ok", r
    assert os.listdir(victim) == [] and not os.path.islink(parent / "pid-1")


def test_bad_input_and_an_untrusted_parent_change_nothing(tmp_path, run_module):
    r = run_module("migration_key", {"path": str(tmp_path / "ssh" / "k"), "comment": "c", "known_hosts": " \n"})
    assert r.failed and "known_hosts is empty" in r["msg"], r
    assert not (tmp_path / "ssh").exists()
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    r = run_module("migration_key", {"path": str(shared / "k"), "comment": "c", "known_hosts": HOSTS})
    assert r.failed and "writable" in r["msg"] and "nothing was changed" in r["msg"], r
    assert os.listdir(shared) == []
    r = run_module("migration_key", {"path": str(tmp_path / "chk" / "k"), "comment": "c", "known_hosts": HOSTS},
                   check=True)
    assert r.status == "ok" and r["changed"] and "public_key" not in r, r
    assert not (tmp_path / "chk").exists()


def test_absent_closes_no_master_and_removes_the_key_through_its_parent(tmp_path, run_module):
    """state=absent in one run: ssh -O exit on the key's control socket (no master listens on this one:
    ssh says so, rc 255, which counts as closed), then the directory goes; a second run has nothing to do;
    a symlink planted at the key's path is removed, never followed."""
    d = tmp_path / "ssh" / "key-node2"
    assert run_module("migration_key", {"path": str(d), "comment": "c", "known_hosts": HOSTS}).status == "ok"
    sock = __import__("socket").socket(__import__("socket").AF_UNIX)
    sock.bind(str(d / "cm"))   # a socket no ssh master serves
    sock.close()
    check = run_module("migration_key", {"path": str(d), "state": "absent"}, check=True)
    assert check.status == "ok" and check["changed"] and d.exists(), check
    r = run_module("migration_key", {"path": str(d), "state": "absent"})
    assert r.status == "ok" and r["changed"], r
    assert r["close"]["rc"] == 255 and r["close"]["stderr"], r["close"]
    assert not d.exists() and (tmp_path / "ssh").exists()
    again = run_module("migration_key", {"path": str(d), "state": "absent"})
    assert again.status == "ok" and not again["changed"] and again["close"] == {}, again
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    os.symlink(str(victim), str(d))
    r = run_module("migration_key", {"path": str(d), "state": "absent"})
    assert r.status == "ok" and not os.path.lexists(d) and os.listdir(victim) == ["keep"], r


def test_absent_under_an_untrusted_parent_removes_nothing(tmp_path, run_module):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "key-node2").mkdir()
    os.chmod(shared, 0o777)
    r = run_module("migration_key", {"path": str(shared / "key-node2"), "state": "absent"})
    assert r.failed and "cannot remove the migration's key" in r["msg"] and "writable" in r["msg"], r
    assert (shared / "key-node2").is_dir()
    r = run_module("migration_key", {"path": str(tmp_path / "k")})
    assert r.failed and "comment" in r["msg"] and "known_hosts" in r["msg"], r
