"""The migrate role's page server speaks criu's TLS with credentials made for one migration:
real criu, real SSH, on the test fleet. An unprivileged local user (ckpt-attacker) tries the port."""
from __future__ import annotations

import os
import pwd
import re

import pytest

from fleet_testlib import listdir, migrate_root, write_inventory

pytestmark = [pytest.mark.fleet, pytest.mark.criu]

CRIU = "/opt/ckpt-criu/bin/criu"

# Records, as root on the fleet host, criu's argv and what the TLS files look like while criu runs.
# page-server: after the real criu daemonized, optionally runs /srv/after-page-server (the attacker).
# restore: keeps a copy of the page server's log before the role removes the images.
WRAPPER = r'''#!/bin/sh
out=/srv/tls-wrapper
mkdir -p "$out"
cmd=; dir=; tlsdir=
prev=
for a in "$@"; do
  case "$a" in page-server|dump|restore) [ -z "$cmd" ] && cmd=$a ;; esac
  [ "$prev" = -D ] && dir=$a
  [ "$prev" = --tls-cacert ] && tlsdir=$(dirname "$a")
  prev=$a
done
case "$cmd" in
  page-server|dump)
    printf '%s\n' "$@" > "$out/$cmd.argv"
    if [ -n "$tlsdir" ]; then
      stat -c '%a %u %g %F %n' "$tlsdir" "$tlsdir"/* > "$out/$cmd.stat"
    fi ;;
  restore)
    cp "$dir/page-server.log" "$out/page-server.log" 2>/dev/null ;;
esac
# Pin a credential file (immutable) so that its removal fails.
if [ "$cmd" = page-server ] && [ -e /srv/pin-tls ] && [ -n "$tlsdir" ]; then
  chattr +i "$tlsdir/server.pem"
  echo "$tlsdir" > /srv/pin-tls
fi
if [ "$cmd" = page-server ] && [ -x /srv/after-page-server ]; then
  @CRIU@ "$@"; rc=$?
  # In the background, a second after the page server started (the module has seen it listening).
  (sleep 1; /srv/after-page-server "$@" > "$out/attacker.out" 2>&1) < /dev/null > /dev/null 2>&1 &
  exit $rc
fi
exec @CRIU@ "$@"
'''.replace("@CRIU@", CRIU)

# The attacker: connects first to the page server (its address and port are in criu's argv), as
# ckpt-attacker, tries TLS without a certificate, then says what it got.
ATTACKER = r'''#!/bin/sh
addr=; port=; prev=
for a in "$@"; do
  [ "$prev" = --address ] && addr=$a
  [ "$prev" = --port ] && port=$a
  prev=$a
done
exec setpriv --reuid=%(uid)d --regid=%(gid)d --clear-groups -- /usr/bin/python3 -c '
import socket, ssl, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((addr, port), timeout=5)
print("connected")
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    t = ctx.wrap_socket(s)
    print("handshake", t.version())
    t.sendall(b"\0" * 64)
    data = t.recv(4096)
    print("received %%d bytes" %% len(data))
except Exception as exc:
    print("refused:", type(exc).__name__, exc)
' "$addr" "$port"
'''


def _wrap(fleet, host, attacker=False):
    path = "/srv/criu-tls-wrapper"
    p = fleet.host_path(host, path)
    with open(p, "w") as fh:
        fh.write(WRAPPER)
    os.chmod(p, 0o755)
    after = fleet.host_path(host, "/srv/after-page-server")
    if attacker:
        pw = pwd.getpwnam("ckpt-attacker")
        with open(after, "w") as fh:
            fh.write(ATTACKER % {"uid": pw.pw_uid, "gid": pw.pw_gid})
        os.chmod(after, 0o755)
    elif os.path.exists(after):
        os.unlink(after)
    return path


def _read(fleet, host, name):
    p = fleet.host_path(host, "/srv/tls-wrapper/" + name)
    return open(p).read() if os.path.exists(p) else None


def _clear(fleet, *hosts):
    for h in hosts:
        d = fleet.host_path(h, "/srv/tls-wrapper")
        if os.path.isdir(d):
            for n in os.listdir(d):
                os.unlink(os.path.join(d, n))


def _stat_rows(text):
    """{name: (mode, uid, gid, type)} from the wrapper's stat lines."""
    rows = {}
    for line in text.splitlines():
        mode, uid, gid, rest = line.split(" ", 3)
        kind, path = rest.rsplit(" ", 1)
        rows[os.path.basename(path)] = (mode, int(uid), int(gid), kind)
    return rows


def _wrapped_inventory(fleet, tmp_path, attacker=False):
    """An inventory node1 -> node2 whose criu runs through _wrap on both hosts (leftovers cleared)."""
    src_wrap, dst_wrap = _wrap(fleet, "node1"), _wrap(fleet, "node2", attacker=attacker)
    _clear(fleet, "node1", "node2")
    return write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"},
                           hostvars={"node1": {"ckpt_migrate_criu_path": src_wrap,
                                               "ckpt_migrate_destination_criu_path": dst_wrap}})


def test_page_server_migration_uses_tls_with_root_only_one_time_credentials(fleet, clean_hosts, workload,
                                                                            playbook, tmp_path):
    """Default settings: the page server and the dump run with --tls and this migration's CA; the
    page server's log shows the TLS handshake; the credentials are 0600 in 0700 root-only directories
    while criu runs (the destination holds no CA key and no client key), and gone from both hosts
    afterwards. --check makes none; a second run changes nothing."""
    inv = _wrapped_inventory(fleet, tmp_path)
    w = workload("node1")
    ev = {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1", "ckpt_migrate_transfer": "page_server"}

    check = playbook("migrate.yml", inv, ev, check=True)
    assert check.rc == 0, check.output[-4000:]
    assert check.rows(pid=w.pid)[0]["result"] == "would migrate"
    assert listdir(fleet, "node2", "/var/lib/ckpt") in ([], None)
    assert not any(n.startswith(".tls") for n in migrate_root(fleet, "node1") or [])
    assert _read(fleet, "node2", "page-server.argv") is None

    run = playbook("migrate.yml", inv, ev)
    assert run.rc == 0, run.output[-4000:]
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "migrated" and row["transfer"] == "page_server"
    assert w.running_on("node2") and w.state("node1") is None
    assert w.wait_ticks(10)
    ok, gap = w.continuity()
    assert ok, "the tick sequence repeated or skipped"

    addr = fleet.address("node2")
    ps_argv = _read(fleet, "node2", "page-server.argv").split("\n")
    dump_argv = _read(fleet, "node1", "dump.argv").split("\n")
    for argv in (ps_argv, dump_argv):
        assert "--tls" in argv and "--tls-cacert" in argv and "--tls-cert" in argv and "--tls-key" in argv, argv
        assert "--tls-no-cn-verify" not in argv
    assert ps_argv[ps_argv.index("--address") + 1] == addr, "the page server must listen on the destination only"
    ps_log = _read(fleet, "node2", "page-server.log")
    assert ps_log and "tls: TLS handshake completed" in ps_log, "no TLS handshake in the page server's log"
    m = re.search(r"Accepted connection from ([0-9.]+):", ps_log)
    assert m and m.group(1) == fleet.address("node1"), ps_log[-2000:]

    dst = _stat_rows(_read(fleet, "node2", "page-server.stat"))
    src = _stat_rows(_read(fleet, "node1", "dump.stat"))
    # The destination keeps only what the page server needs: no CA key (no more certificates can be
    # signed), no client key (only the source holds it).
    assert sorted(n for n in dst if n.endswith((".pem", ".key"))) == ["ca.pem", "server.key", "server.pem"], dst
    assert sorted(n for n in src if n.endswith((".pem", ".key"))) == ["ca.pem", "client.key", "client.pem"], src
    for rows, prefix in ((dst, ".tls-from-node1-pid-"), (src, ".tls-pid-")):
        for name, (mode, uid, gid, kind) in rows.items():
            assert uid == 0 and gid == 0, (name, uid, gid)
            if kind == "directory":
                assert name.startswith(prefix) and mode == "700", (name, mode)
            else:
                assert mode == "600", (name, mode)

    # No private key ever passed through the controller: only a request and two certificates did.
    assert "PRIVATE KEY" not in run.output

    # Gone from both hosts afterwards.
    assert migrate_root(fleet, "node1") == [".migrated"]
    assert migrate_root(fleet, "node2") == []

    again = playbook("migrate.yml", inv, ev)
    assert again.rc == 0, again.output[-4000:]
    assert again.changed("node1") == 0
    assert again.rows(pid=w.pid)[0]["result"] == "migrated already"


def test_page_server_plaintext_only_on_request(fleet, clean_hosts, workload, playbook, tmp_path):
    """ckpt_migrate_page_server_tls: false runs the page server and the dump without --tls and makes
    no credentials."""
    inv = _wrapped_inventory(fleet, tmp_path)
    w = workload("node1")
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1",
                                        "ckpt_migrate_transfer": "page_server",
                                        "ckpt_migrate_page_server_tls": "false"})
    assert run.rc == 0, run.output[-4000:]
    assert "--tls" not in _read(fleet, "node2", "page-server.argv").split("\n")
    assert "--tls" not in _read(fleet, "node1", "dump.argv").split("\n")
    assert _read(fleet, "node2", "page-server.stat") is None
    assert w.running_on("node2") and w.wait_ticks(5) and w.continuity()[0]
    assert migrate_root(fleet, "node1") == [".migrated"]
    assert migrate_root(fleet, "node2") == []


def test_a_local_user_who_connects_first_gets_nothing(fleet, clean_hosts, workload, playbook, tmp_path):
    """ckpt-attacker on the destination connects to the page server a second after it started (the
    module saw it listening), before the dump. Measured: criu's page server accepts one connection and
    then closes its listening socket; it requires a client certificate, so the attacker's handshake is
    refused and it receives no byte of the process, but the page server has ended, and the source's
    dump (which connects before it freezes) cannot connect. The migration is rolled back with nothing
    frozen, the source counts on, the message says who took the page server, and the credentials are
    gone from both hosts."""
    inv = _wrapped_inventory(fleet, tmp_path, attacker=True)
    w = workload("node1")
    try:
        run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1",
                                            "ckpt_migrate_transfer": "page_server"})
    finally:
        os.unlink(fleet.host_path("node2", "/srv/after-page-server"))
    att = _read(fleet, "node2", "attacker.out")
    assert att and att.startswith("connected"), att
    # No byte of the process: criu ends the session for want of a client certificate. (With TLS 1.3
    # the client's side of the handshake completes before the server checks the client's certificate.)
    assert "received 0 bytes" in att or "refused:" in att, att
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "rolled back" and row["source_resumed"] is True, row
    assert "could not connect to the page server at %s:" % fleet.address("node2") in row["cause"], row["cause"]
    assert "before freezing anything" in row["cause"] and row["frozen_s"] is None, row
    assert "taken by another connection" in row["cause"], row["cause"]
    assert "accepted connection from %s:" % fleet.address("node2") in row["cause"], row["cause"]
    assert "certificate is required" in row["cause"].lower(), row["cause"]
    assert w.running_on("node1") and not w.running_on("node2")
    assert w.wait_ticks(5) and w.continuity()[0]
    assert not any(n.startswith(".tls") for n in migrate_root(fleet, "node1") or [])
    assert not any(n.startswith(".tls") for n in migrate_root(fleet, "node2") or [])


def test_credentials_that_cannot_be_removed_are_reported(fleet, clean_hosts, workload, playbook, tmp_path):
    """A credential file on the destination made immutable while the page server runs: the migration
    itself succeeds, but the result is "migrated, cleanup failed" and names the directory left
    behind; the source's credentials and both hosts' images are gone."""
    inv = _wrapped_inventory(fleet, tmp_path)
    pin = fleet.host_path("node2", "/srv/pin-tls")
    open(pin, "w").close()
    w = workload("node1")
    pinned = None
    try:
        run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1",
                                            "ckpt_migrate_transfer": "page_server"})
        pinned = open(pin).read().strip()
        assert pinned.startswith("/var/lib/ckpt/migrate/.tls-from-node1-pid-"), pinned
        assert run.rc != 0
        row = run.rows(pid=w.pid)[0]
        assert row["result"] == "migrated, cleanup failed", row
        assert "TLS credentials on node2 could not be removed" in row["cause"] and pinned in row["cause"], row
        assert w.running_on("node2") and w.state("node1") is None
        assert w.wait_ticks(5) and w.continuity()[0]
        assert migrate_root(fleet, "node1") == [".migrated"]
        assert migrate_root(fleet, "node2") == [os.path.basename(pinned)]
    finally:
        if pinned:
            fleet.exec("node2", ["chattr", "-i", pinned + "/server.pem"])
            fleet.exec("node2", ["rm", "-rf", pinned])
        os.unlink(pin)
