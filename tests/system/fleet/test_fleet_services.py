"""Real network services moved between fleet hosts by playbooks/migrate.yml over
real SSH: redis-server with 10,000 keys and a client connection held through
the move via a service address, nginx master and workers, a threaded program
and a process tree with a pipe between its members, the rollback of the
service address, and the preflight refusals of sockets that could not work on
the destination."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from ckpt_testlib import REDIS_PORT, Resp, continuity, read_ticks, thread_ticks
from fleet_testlib import (WORKLOADS, dump_module_killed_once_restore_began, failing_restore, fresh, migrate_root,
                           wait, write_inventory)
from services_testlib import (Pinger, addresses, check_keys, children, http_get,
                              kill_everywhere, load_keys, service_cidr, service_ip, set_address, spawn,
                              start_nginx, start_redis)

pytestmark = [pytest.mark.fleet, pytest.mark.criu]


def record(name, **values):
    """Measured numbers: printed (-s) and appended to CKPT_FLEET_TIMINGS when set."""
    line = json.dumps(dict(test=name, **values))
    print(line)
    path = os.environ.get("CKPT_FLEET_TIMINGS")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


@pytest.fixture
def service_address(fleet):
    """The service address on node1's eth0; taken off every host afterwards."""
    set_address(fleet, "node1", service_cidr(), True)
    # The controller may remember it at another host from an earlier test.
    subprocess.run(["ip", "neigh", "flush", "to", service_ip(), "dev", fleet.bridge], check=True)
    yield service_cidr()
    for h in fleet.hosts:
        set_address(fleet, h, service_cidr(), False)


@pytest.fixture
def started(fleet):
    pids = []
    yield pids
    kill_everywhere(fleet, pids)


def test_redis_moves_with_service_address(fleet, clean_hosts, started, service_address, playbook, tmp_path):
    """10,000 keys and a client on the controller that keeps PINGing on one connection
    to the service address through the move: every key on node2, the same connection
    answers, the address moved, node1's redis is gone."""
    w = start_redis(fleet, "node1", others=["node2"])
    started.append(w.pid)
    loader = Resp(fleet.address("node1"))
    load_keys(loader)
    loader.close()
    held = Resp(service_ip())
    assert held.cmd("GET", "key:04242").startswith("value-4242-")
    pinger = Pinger(held)
    pinger.start()

    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1",
                                        "ckpt_migrate_tcp_established": "true",
                                        "ckpt_migrate_service_address": service_address,
                                        "ckpt_migrate_service_interface": "eth0"})
    time.sleep(1)
    pinger.finish()
    assert run.rc == 0, run.output[-5000:]
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "migrated", row
    assert pinger.error is None, "the held connection broke: %r" % pinger.error
    assert w.running_on("node2") and w.state("node1") is None
    assert service_ip() in addresses(fleet, "node2") and service_ip() not in addresses(fleet, "node1")
    # The same connection answers after the move, with the data.
    assert held.cmd("DBSIZE") == 10000
    assert held.cmd("GET", "key:09999") == "value-9999-%s" % ("x" * (9999 % 50))
    assert held.cmd("SET", "after", "move") == "OK"
    fresh_client = Resp(service_ip())
    assert check_keys(fresh_client) == []
    assert fresh_client.cmd("GET", "after") == "move"
    fresh_client.close()
    held.close()
    assert migrate_root(fleet, "node2") == []
    # criu's network lock of the held connection is gone from both hosts.
    for h in ("node1", "node2"):
        assert "CRIU" not in fleet.exec(h, ["nft", "list", "tables"], stdout=subprocess.PIPE, text=True).stdout, h
    assert row["service_address"] == service_address and row["address_move_s"] > 0
    record("redis_service_address", frozen_s=row["frozen_s"], criu_frozen_s=row.get("criu_frozen_s"),
           address_move_s=row["address_move_s"],
           image_bytes=row["image_bytes"], client_longest_wait_s=round(pinger.longest, 3), pings=pinger.count)


def test_redis_moves_on_wildcard_without_service_address(fleet, clean_hosts, started, playbook, tmp_path):
    """The same redis without a service address (no held client): the listener on
    0.0.0.0 comes back on node2 with every key; clients reconnect to node2."""
    w = start_redis(fleet, "node1", others=["node2"])
    started.append(w.pid)
    c = Resp(fleet.address("node1"))
    load_keys(c)
    c.close()
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1"})
    assert run.rc == 0, run.output[-5000:]
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "migrated"
    assert w.running_on("node2") and w.state("node1") is None
    c = Resp(fleet.address("node2"))
    assert check_keys(c) == []
    c.close()
    record("redis_no_service_address", frozen_s=row["frozen_s"], criu_frozen_s=row.get("criu_frozen_s"),
           image_bytes=row["image_bytes"])


def test_redis_service_address_without_clients(fleet, clean_hosts, started, service_address, playbook, tmp_path):
    """The address alone (no connection held, no tcp_established): a new client reaches
    redis at the service address on node2 with every key; the frozen time against the
    wildcard case above is the cost of moving the address."""
    w = start_redis(fleet, "node1", others=["node2"])
    started.append(w.pid)
    c = Resp(service_ip())
    load_keys(c)
    c.close()
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1",
                                        "ckpt_migrate_service_address": service_address,
                                        "ckpt_migrate_service_interface": "eth0"})
    assert run.rc == 0, run.output[-5000:]
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "migrated" and row["address_move_s"] > 0, row
    assert w.running_on("node2") and w.state("node1") is None
    assert service_ip() in addresses(fleet, "node2") and service_ip() not in addresses(fleet, "node1")
    c = Resp(service_ip())
    assert check_keys(c) == []
    c.close()
    record("redis_service_address_no_client", frozen_s=row["frozen_s"], criu_frozen_s=row.get("criu_frozen_s"),
           address_move_s=row["address_move_s"], image_bytes=row["image_bytes"])


def test_nginx_master_and_workers_move(fleet, clean_hosts, started, playbook, tmp_path):
    """nginx (master + 3 root workers): the same bytes with HTTP 200 from node2, and 3 workers there."""
    w = start_nginx(fleet, "node1", others=["node2"])
    started.append(w.pid)
    workers = children(fleet, "node1", w.pid)
    assert len(workers) == 3, workers
    started.extend(int(pw[0]) for pw in workers)
    status, before = http_get(fleet.address("node1"))
    assert status == 200 and len(before) > 100000

    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1"})
    assert run.rc == 0, run.output[-5000:]
    assert run.rows(pid=w.pid)[0]["result"] == "migrated"
    assert w.running_on("node2") and w.state("node1") is None
    after_workers = children(fleet, "node2", w.pid)
    assert sorted(after_workers) == sorted(workers), (workers, after_workers)
    assert children(fleet, "node1", w.pid) == []
    left = [pw for pw in workers if tasks(fleet, "node1", int(pw[0]))]
    assert not left, "workers of the migrated tree still on node1: %s" % left
    for _request in range(6):      # more requests than workers
        status, after = http_get(fleet.address("node2"))
        assert status == 200 and after == before
    record("nginx", frozen_s=run.rows(pid=w.pid)[0]["frozen_s"])


def tasks(fleet, host, pid):
    """The thread IDs of pid on host ([] where it does not run)."""
    p = fresh(fleet).exec(host, ["ls", "/proc/%d/task" % pid], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True)
    return sorted(int(t) for t in p.stdout.split()) if p.returncode == 0 else []


def test_threads_and_a_pipe_tree_move(fleet, clean_hosts, started, playbook, tmp_path):
    """A threaded program (4 threads, each ticking its own sequence) and a process tree
    with a pipe between its two members, moved by one migrate.yml run: every thread is
    back on node2 with its TID and continues its sequence; the tree is whole there and
    the data flows through its pipe again with no line lost or repeated."""
    n = 4
    tdir = tmp_path / "threads"         # /tmp is shared by the hosts
    tdir.mkdir()
    tpid = spawn(fleet, "node1", "/srv/threads.pid",
                 ["python3", str(WORKLOADS / "threads.py"), "--dir", str(tdir), "--threads", str(n)])
    started.append(tpid)
    pipe_ticks = tmp_path / "through-the-pipe.ticks"
    ppid = spawn(fleet, "node1", "/srv/pipe-tree.pid", ["python3", str(WORKLOADS / "pipe_tree.py"), str(pipe_ticks)])
    started.append(ppid)
    deadline = time.monotonic() + 20
    while not ((tdir / "ready").exists() and len(read_ticks(pipe_ticks)) >= 5 and children(fleet, "node1", ppid)):
        assert time.monotonic() < deadline, "the threads or the pipe tree did not start ticking on node1"
        time.sleep(0.1)
    tids = tasks(fleet, "node1", tpid)
    assert len(tids) == n + 1, tids
    (child,) = [int(c[0]) for c in children(fleet, "node1", ppid)]
    started.append(child)

    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": "/srv/threads.pid,/srv/pipe-tree.pid",
                                        "ckpt_migrate_settle": "1"})
    assert run.rc == 0, run.output[-5000:]
    for pid in (tpid, ppid):
        assert run.rows(pid=pid)[0]["result"] == "migrated", run.rows(pid=pid)
    assert tasks(fleet, "node2", tpid) == tids and tasks(fleet, "node1", tpid) == []
    assert [int(c[0]) for c in children(fleet, "node2", ppid)] == [child]
    assert tasks(fleet, "node1", ppid) == [] and tasks(fleet, "node1", child) == []

    threads_before = [len(t) for t in thread_ticks(tdir, n)]
    pipe_before = len(read_ticks(pipe_ticks))
    deadline = time.monotonic() + 20
    while not (all(len(t) >= b + 10 for t, b in zip(thread_ticks(tdir, n), threads_before))
               and len(read_ticks(pipe_ticks)) >= pipe_before + 10):
        assert time.monotonic() < deadline, "the threads or the pipe tree stopped ticking on node2"
        time.sleep(0.1)
    for i, ticks in enumerate(thread_ticks(tdir, n)):
        assert [t[0] for t in ticks] == list(range(1, len(ticks) + 1)), "thread %d skipped or repeated a tick" % i
        assert len(set(t[2] for t in ticks)) == 1, "thread %d changed TID" % i
    ok, gap = continuity(read_ticks(pipe_ticks))
    assert ok, "a line through the pipe was lost or repeated across the migration"
    record("threads_and_pipe_tree", pipe_gap_s=round(gap, 3),
           frozen_s=[run.rows(pid=pid)[0]["frozen_s"] for pid in (tpid, ppid)])


def test_service_address_rollback(fleet, clean_hosts, started, service_address, playbook, tmp_path):
    """The destination's criu restore fails after the address moved there: it goes back
    to node1, off node2, and redis answers at it on node1 with its keys, on the client's
    held connection too (tcp_established)."""
    failing_restore(fleet, before="ip -4 -o addr show dev eth0 > /srv/addresses-at-restore")
    w = start_redis(fleet, "node1", others=["node2"])
    started.append(w.pid)
    c = Resp(service_ip())
    load_keys(c, 1000)
    pinger = Pinger(c)          # a client holding its connection through the failed move
    pinger.start()
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"},
                          hostvars={"node1": {"ckpt_migrate_destination_criu_path": "/srv/criu-fails-restore"}})
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile,
                                        "ckpt_migrate_tcp_established": "true",
                                        "ckpt_migrate_service_address": service_address,
                                        "ckpt_migrate_service_interface": "eth0"})
    time.sleep(1)
    pinger.finish()
    assert pinger.error is None, "the held connection broke: %r" % pinger.error
    # The same connection answers from the resumed source (out of TCP repair mode, criu's lock lifted).
    assert c.cmd("DBSIZE") == 1000
    c.close()
    for h in ("node1", "node2"):
        assert "CRIU" not in fleet.exec(h, ["nft", "list", "tables"], stdout=subprocess.PIPE, text=True).stdout, h
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "rolled back" and row["source_resumed"] is True, row
    assert "criu restore" in row["cause"] and "service address" not in row["cause"], row["cause"]
    # The restore had put the address on node2 before criu ran: it is back on node1 only.
    with open(fleet.host_path("node2", "/srv/addresses-at-restore")) as fh:
        assert " %s/" % service_ip() in fh.read()
    assert service_ip() in addresses(fleet, "node1") and service_ip() not in addresses(fleet, "node2")
    assert w.running_on("node1") and w.state("node2") is None
    c = Resp(service_ip())
    assert check_keys(c, 1000) == []
    c.close()


def test_dump_module_dies_with_held_connections_lifts_criu_lock(fleet, clean_hosts, started, service_address,
                                                                playbook, tmp_path):
    """The dump module dies after its checkpoint of redis left, with a client's connection held
    (tcp_established), and the restore on node2 fails: the dump reported no network lock table,
    yet the one criu made on node1 goes (found by the run id in criu's log), so the resumed redis
    answers on the client's held connection and nothing of criu's lock is left on either host."""
    failing_restore(fleet, before="sleep 1")
    w = start_redis(fleet, "node1", others=["node2"])
    started.append(w.pid)
    c = Resp(service_ip())
    load_keys(c, 1000)
    pinger = Pinger(c)
    pinger.start()
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"},
                          hostvars={"node1": {"ckpt_migrate_destination_criu_path": "/srv/criu-fails-restore"}})
    with dump_module_killed_once_restore_began(fleet, w.pid) as seen:
        run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile, "ckpt_migrate_settle": "1",
                                            "ckpt_migrate_tcp_established": "true",
                                            "ckpt_migrate_service_address": service_address,
                                            "ckpt_migrate_service_interface": "eth0"})
    time.sleep(1)
    pinger.finish()
    assert seen.get("module", "None") != "None" and seen.get("began"), (seen, run.output[-3000:])
    for h in ("node1", "node2"):
        assert "CRIU" not in fleet.exec(h, ["nft", "list", "tables"], stdout=subprocess.PIPE, text=True).stdout, h
    assert pinger.error is None, "the held connection broke: %r" % pinger.error
    assert "Find criu's network lock of the dump by the run id in its log" in run.output, run.output[-4000:]
    assert c.cmd("DBSIZE") == 1000
    c.close()
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "rolled back" and row["source_resumed"] is True, row
    assert "the module died before it reported a result" in row["cause"], row["cause"]
    assert "injected restore failure" in row["cause"], row["cause"]
    assert service_ip() in addresses(fleet, "node1") and service_ip() not in addresses(fleet, "node2")
    assert w.running_on("node1") and w.state("node2") is None


def assert_refused(playbook, fleet, tmp_path, w, *texts):
    """Migrate w from node1 to node2: refused by preflight with every text in its cause, nothing frozen."""
    inv = write_inventory(fleet, tmp_path / "inv.ini", {"node1": "node2"})
    run = playbook("migrate.yml", inv, {"ckpt_migrate_pidfiles": w.pidfile})
    assert run.rc != 0
    row = run.rows(pid=w.pid)[0]
    assert row["result"] == "refused", row
    for text in texts:
        assert text in row["cause"], row["cause"]
    assert "FROZEN: freeze" not in run.output
    assert w.running_on("node1") and w.state("node2") is None


def test_preflight_refuses_port_taken_on_destination(fleet, clean_hosts, started, playbook, tmp_path):
    """node2 already listens on redis's port: refused naming the port; nothing frozen."""
    w = start_redis(fleet, "node1", others=["node2"])
    started.append(w.pid)
    squatter = spawn(fleet, "node2", "/srv/squatter.pid",
                     ["python3", "-c", "import socket, time\ns = socket.socket()\n"
                      "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                      "s.bind(('127.0.0.1', %d)); s.listen(1); time.sleep(600)" % REDIS_PORT])
    started.append(squatter)

    def listening():
        return fleet.exec("node2", ["ss", "-Htln", "sport = :%d" % REDIS_PORT], stdout=subprocess.PIPE,
                          text=True).stdout.strip()
    assert wait(listening, timeout=20), "the squatter did not take its port"
    assert_refused(playbook, fleet, tmp_path, w, "port tcp/%d is already in use on node2" % REDIS_PORT)


def test_preflight_refuses_address_only_on_source(fleet, clean_hosts, started, playbook, tmp_path):
    """redis bound to node1's own address, no service address: refused naming the address.
    The same address given as the service address would be accepted (it is named as the fix)."""
    own = fleet.address("node1")
    w = start_redis(fleet, "node1", others=["node2"], bind=own)
    started.append(w.pid)
    assert_refused(playbook, fleet, tmp_path, w, "bound to %s, an address only this host has" % own,
                   "ckpt_migrate_service_address=%s/PREFIX" % own)
