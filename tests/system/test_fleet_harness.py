"""Tests of the test fleet itself (tests/system/fleet/fleet.py): real namespaces, real
sshd, real SSH from Ansible, and a real CRIU migration between two hosts.

The fleets here use their own names and subnets (CKPT_FLEET_TEST_SUBNET*),
so they do not disturb a fleet someone started with the defaults."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckpt_testlib import REPO, WORKLOADS
from fleet_testlib import FLEET_PY, wait
from fleet_testlib import fleet_mod as fleetmod

ANSIBLE = REPO / ".venv" / "bin" / "ansible"
CRIU = os.environ.get("CKPT_CRIU", "/opt/ckpt-criu/bin/criu")

SUBNET = os.environ.get("CKPT_FLEET_TEST_SUBNET", "10.213.91.0/24")
SUBNET2 = os.environ.get("CKPT_FLEET_TEST_SUBNET2", "10.213.92.0/24")


pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(os.geteuid() != 0, reason="the test fleet needs root"),
]


def _timing(name, seconds):
    """Print a measured time (visible with -s) and keep it for the report."""
    sys.stdout.write("\n[fleet timing] %s: %.3f s\n" % (name, seconds))
    out = os.environ.get("CKPT_FLEET_TIMINGS")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"name": name, "seconds": round(seconds, 4)}) + "\n")


@pytest.fixture(scope="module")
def variant_files(tmp_path_factory):
    """A file that is the same path on every host, except node3, where
    another file is bind-mounted over it (the --bind mechanism)."""
    d = tmp_path_factory.mktemp("variant")
    shared = d / "app-version"
    shared.write_text("build-a\n")
    other = d / "app-version-b"
    other.write_text("build-b\n")
    return str(shared), str(other)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, variant_files):
    state = tmp_path_factory.mktemp("fleet") / "state"
    f = fleetmod.Fleet(state_dir=str(state), name="ckt", subnet=SUBNET,
                       binds=[("node3", variant_files[1], variant_files[0])])
    try:
        t0 = time.time()
        f.up(hosts=3, timeout=30)
        _timing("up (3 hosts)", time.time() - t0)
        yield f
    finally:
        t0 = time.time()
        f.down()
        _timing("down (3 hosts)", time.time() - t0)


def _ssh(fleet, host, argv, timeout=60):
    p = fleet.ssh(host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    assert p.returncode == 0, "ssh %s %s: rc=%d\n%s%s" % (host, argv, p.returncode, p.stdout, p.stderr)
    return p.stdout


def _cli(*args, state_dir=None, timeout=120):
    argv = [sys.executable, str(FLEET_PY)]
    if state_dir:
        argv += ["--state-dir", state_dir]
    return subprocess.run(argv + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)


# --------------------------------------------------------------------------
# the running fleet


def test_up_writes_inventory_and_ssh_config(fleet):
    st = fleet.status()
    assert st["up"], st
    assert sorted(st["hosts"]) == ["node1", "node2", "node3"]
    addrs = [v["address"] for v in st["hosts"].values()]
    assert len(set(addrs)) == 3 and all(a.startswith(SUBNET.rsplit(".", 1)[0] + ".") for a in addrs)
    inv = Path(fleet.inventory_path).read_text()
    assert "[fleet]" in inv and "ansible_ssh_common_args='-F %s'" % fleet.ssh_config_path in inv
    for h in fleet.hosts:
        assert "%s ansible_host=%s" % (h, fleet.address(h)) in inv
    cfg = Path(fleet.ssh_config_path).read_text()
    assert "Host node2\n  HostName %s" % fleet.address("node2") in cfg
    assert oct(os.stat(fleet.state_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(fleet.key_path).st_mode & 0o777) == "0o600"
    # the CLI reads the same state
    p = _cli("inventory", state_dir=fleet.state_dir)
    assert p.returncode == 0 and p.stdout.strip() == fleet.inventory_path
    p = _cli("status", "--json", state_dir=fleet.state_dir)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["up"] is True


def test_ansible_ping_over_real_ssh(fleet, tmp_path):
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"), ANSIBLE_DEPRECATION_WARNINGS="0",
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(tmp_path / "cp"))
    p = subprocess.run([str(ANSIBLE), "-i", fleet.inventory_path, "fleet", "-m", "ansible.builtin.ping"],
                       env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=180, check=False)
    assert p.returncode == 0, p.stdout
    for h in fleet.hosts:
        assert re.search(r"^%s \| SUCCESS" % h, p.stdout, re.M), p.stdout
    assert len(re.findall(r'"?ping"?: "?pong', p.stdout)) == 3, p.stdout
    # ... and each answer really comes from that host (its own UTS namespace)
    p = subprocess.run([str(ANSIBLE), "-i", fleet.inventory_path, "fleet", "-m", "ansible.builtin.command",
                        "-a", "hostname"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=180, check=False)
    assert p.returncode == 0, p.stdout
    for h in fleet.hosts:
        assert re.search(r"^%s \| CHANGED \| rc=0 >>\n%s$" % (h, h), p.stdout, re.M), p.stdout


def test_pid_namespace(fleet):
    """A process started over ssh gets a PID of node1's own PID namespace, and
    node1's /proc shows node1's processes only."""
    p = subprocess.Popen(fleet.ssh_argv("node1", ["sh", "-c", "echo $$; ls /proc; exec sleep 30"]),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        inner = int(p.stdout.readline())
        listing = []
        while True:
            line = p.stdout.readline().strip()
            if not line or line == "sys":
                break
            listing.append(line)
        inner_pids = sorted(int(x) for x in listing if x.isdigit())
        base = fleet.status()["hosts"]["node1"]["pid_base"]
        assert 1 in inner_pids
        assert inner in inner_pids
        assert base < inner < base + 5000 if base else inner < 1000
        procs = fleet.processes("node1")
        outer = fleet.outer_pid("node1", inner)
        assert outer != inner and outer > 1
        # what node1's /proc listed is exactly node1's processes (give or take
        # the short-lived ones around the ssh session)
        mine = set(x[1] for x in procs)
        assert all(x > inner for x in set(inner_pids) - mine), (inner_pids, procs)   # only `ls` is gone
        assert len(inner_pids) < 15, inner_pids
        assert fleet.init_pid("node1") not in inner_pids
        # PID 1 is the fleet's init, and sshd runs under it
        comm = dict((x[1], x[2]) for x in procs)
        assert comm[1].startswith("python"), procs
        assert "sshd" in comm.values(), procs
        # node2's processes are not node1's
        assert not mine & set(x[0] for x in fleet.processes("node2"))
    finally:
        p.kill()
        p.wait()


def test_mount_isolation_and_shared_root(fleet, tmp_path):
    tag = "from-node1-%d" % os.getpid()
    _ssh(fleet, "node1", ["sh", "-c", "echo %s > /srv/iso && echo %s > /var/lib/ckpt/iso && echo %s > /root/iso"
                          % (tag, tag, tag)])
    out = _ssh(fleet, "node2", ["sh", "-c", "ls /srv/iso /var/lib/ckpt/iso /root/iso 2>&1; true"])
    assert out.count("No such file or directory") == 3, out
    # the controller sees node1's private files only where the fleet keeps its disk
    assert Path(fleet.host_path("node1", "/srv/iso")).read_text().strip() == tag
    assert Path(fleet.host_path("node1", "/var/lib/ckpt/iso")).read_text().strip() == tag
    assert not Path(fleet.host_path("node2", "/srv/iso")).exists()
    assert not os.path.exists("/srv/iso")
    # the rest of the filesystem is shared: a file the controller writes in /tmp
    # is the same file on every host
    shared = tmp_path / "shared.txt"
    shared.write_text("same everywhere\n")
    for h in fleet.hosts:
        assert _ssh(fleet, h, ["cat", str(shared)]) == "same everywhere\n"
    # the state dir (keys, other hosts' disks) is hidden inside the hosts
    out = _ssh(fleet, "node2", ["sh", "-c", "ls -A %s | wc -l" % fleet.state_dir])
    assert out.strip() == "0"
    # each host has its own /run
    _ssh(fleet, "node1", ["touch", "/run/only-on-node1"])
    assert "only-on-node1" not in _ssh(fleet, "node2", ["ls", "/run"])


def test_variant_file_on_one_host(fleet, variant_files):
    shared = variant_files[0]
    assert _ssh(fleet, "node1", ["cat", shared]) == "build-a\n"
    assert _ssh(fleet, "node2", ["cat", shared]) == "build-a\n"
    assert _ssh(fleet, "node3", ["cat", shared]) == "build-b\n"
    # the other mechanism: a file in one host's private /srv
    p = Path(fleet.host_path("node2", "/srv/app/VERSION"))
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("node2-only\n")
    assert _ssh(fleet, "node2", ["cat", "/srv/app/VERSION"]) == "node2-only\n"
    assert "No such file" in _ssh(fleet, "node1", ["sh", "-c", "cat /srv/app/VERSION 2>&1; true"])


def test_hosts_reach_each_other_by_name_ssh_and_rsync(fleet):
    assert _ssh(fleet, "node1", ["ssh", "node2", "hostname"]).strip() == "node2"
    assert _ssh(fleet, "node1", ["ssh", fleet.address("node3"), "hostname"]).strip() == "node3"
    assert _ssh(fleet, "node3", ["getent", "hosts", "node1"]).split()[0] == fleet.address("node1")
    _ssh(fleet, "node1", ["sh", "-c", "mkdir -p /var/lib/ckpt/xfer && head -c 1048576 /dev/urandom "
                                      "> /var/lib/ckpt/xfer/blob && sha256sum /var/lib/ckpt/xfer/blob "
                                      "> /var/lib/ckpt/xfer.sum"])
    t0 = time.time()
    _ssh(fleet, "node1", ["rsync", "-a", "/var/lib/ckpt/xfer/", "node2:/var/lib/ckpt/xfer/"])
    _timing("rsync 1 MiB node1 -> node2 (incl. ssh)", time.time() - t0)
    want = Path(fleet.host_path("node1", "/var/lib/ckpt/xfer.sum")).read_text().split()[0]
    got = _ssh(fleet, "node2", ["sha256sum", "/var/lib/ckpt/xfer/blob"]).split()[0]
    assert got == want


def test_exec_runs_inside_the_host(fleet):
    p = fleet.exec("node2", ["hostname"], stdout=subprocess.PIPE, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "node2"
    p = fleet.exec("node2", ["sh", "-c", "echo $$; readlink /proc/1/exe"], stdout=subprocess.PIPE, text=True)
    pid, exe = p.stdout.split()
    assert int(pid) != 1 and "python" in exe
    p = _cli("exec", "node3", "--", "sh", "-c", "test -f /srv/nope || exit 7", state_dir=fleet.state_dir)
    assert p.returncode == 7, p.stderr
    p = _cli("exec", "node3", "--cwd", "/srv", "--", "pwd", state_dir=fleet.state_dir)
    assert p.returncode == 0 and p.stdout == "/srv\n", p.stderr
    with pytest.raises(fleetmod.FleetError):
        fleet.exec("node2", "hostname")          # a shell string is refused


def test_init_reaps_orphans_and_keeps_sshd_alive(fleet):
    h = "node3"
    _ssh(fleet, h, ["sh", "-c", "for i in 1 2 3 4 5; do (sleep 0.1 &) ; done"])

    def zombies():
        states = fleet.exec(h, ["ps", "-eo", "stat="], stdout=subprocess.PIPE, text=True).stdout.split()
        return [x for x in states if x.startswith("Z")]
    assert wait(lambda: not zombies(), timeout=10), zombies()
    sshd = int(fleet.exec(h, ["cat", "/run/sshd.pid"], stdout=subprocess.PIPE, text=True).stdout)
    assert fleet.exec(h, ["kill", str(sshd)]).returncode == 0
    deadline = time.time() + 10
    while time.time() < deadline:
        if fleet.ssh(h, ["true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            break
        time.sleep(0.1)
    assert _ssh(fleet, h, ["cat", "/run/sshd.pid"]).strip() != str(sshd)


def test_up_again_reuses_the_running_fleet(fleet):
    before = {h: fleet.init_pid(h) for h in fleet.hosts}
    t0 = time.time()
    p = _cli("up", "--hosts", "3", state_dir=fleet.state_dir)
    _timing("up again (reuse, 3 hosts)", time.time() - t0)
    assert p.returncode == 0, p.stderr
    assert "0 booted" in p.stderr
    again = fleetmod.Fleet(state_dir=fleet.state_dir)
    assert {h: again.init_pid(h) for h in again.hosts} == before


def test_reboot_kills_processes_keeps_disk_and_address(fleet):
    h = "node2"
    _ssh(fleet, h, ["sh", "-c", "echo disk > /srv/survives && echo gone > /run/volatile"])
    out = _ssh(fleet, h, ["sh", "-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"])
    inner = int(out)
    outer = fleet.outer_pid(h, inner)
    old_init = fleet.init_pid(h)
    boots = fleet.status()["hosts"][h]["boots"]
    t0 = time.time()
    fleet.reboot(h)
    _timing("reboot (until ssh answers)", time.time() - t0)
    assert not os.path.exists("/proc/%d" % old_init) or fleetmod._proc_start(old_init) is None
    assert fleetmod._proc_start(outer) is None, "the sleep survived the reboot"
    assert inner not in [x[1] for x in fleet.processes(h)]
    st = fleet.status()["hosts"][h]
    assert st["sshd"] and st["boots"] == boots + 1 and st["address"] == fleet.address(h)
    assert _ssh(fleet, h, ["cat", "/srv/survives"]) == "disk\n"
    assert "No such file" in _ssh(fleet, h, ["sh", "-c", "cat /run/volatile 2>&1; true"])
    assert _ssh(fleet, "node1", ["ssh", h, "hostname"]).strip() == h
    # the other hosts were not touched
    assert all(fleet.status()["hosts"][x]["boots"] == 1 for x in ("node1", "node3"))


# --------------------------------------------------------------------------
# errors, and a whole life cycle that must leave nothing behind


def test_errors_are_clear(fleet, tmp_path, monkeypatch):
    # the subnet is taken (by the running test fleet's bridge)
    f = fleetmod.Fleet(state_dir=str(tmp_path / "conflict"), name="ckx", subnet=SUBNET)
    with pytest.raises(fleetmod.FleetError, match="address conflict"):
        f.up(hosts=3)
    assert not (tmp_path / "conflict").exists()
    # the name is taken by another fleet
    f = fleetmod.Fleet(state_dir=str(tmp_path / "name"), name="ckt", subnet=SUBNET2)
    with pytest.raises(fleetmod.FleetError, match="not this fleet's"):
        f.up(hosts=3)
    assert fleet.status()["up"]
    # sshd missing
    monkeypatch.setitem(fleetmod.TOOLS, "sshd", "/nonexistent/sshd")
    with pytest.raises(fleetmod.FleetError, match="make setup"):
        fleetmod.Fleet(state_dir=str(tmp_path / "nosshd"), name="cky", subnet=SUBNET2).up()
    monkeypatch.undo()
    # not root
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "/usr/bin/python3", str(FLEET_PY), "--state-dir", str(tmp_path / "nr"), "up"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60, check=False)
    assert p.returncode == 2 and "needs root" in p.stderr, p.stderr
    # bad input
    with pytest.raises(fleetmod.FleetError):
        fleetmod.Fleet(state_dir=str(tmp_path / "has space"))
    with pytest.raises(fleetmod.FleetError):
        fleetmod.Fleet(state_dir=str(tmp_path / "x"), name="Bad-Name!")
    p = _cli("reboot", "node9", state_dir=fleet.state_dir)
    assert p.returncode == 2 and "no host 'node9'" in p.stderr


def _namespaced_pids(pidns_inodes):
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat("/proc/%s/ns/pid" % d).st_ino in pidns_inodes and fleetmod._proc_start(int(d)):
                    found.append(int(d))
            except OSError:
                pass
    return found


def test_lifecycle_down_leaves_nothing(tmp_path):
    """A fleet of its own: up, down, nothing left; down again is fine."""
    state = str(tmp_path / "state")
    t0 = time.time()
    p = _cli("up", "--hosts", "3", "--name", "ckd", "--subnet", SUBNET2, state_dir=state)
    _timing("CLI up (3 hosts, fresh)", time.time() - t0)
    try:
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == os.path.join(state, "inventory.ini")
        f = fleetmod.Fleet(state_dir=state)
        st = f.state
        inits = [(v["init_pid"], v["init_start"]) for v in st["hosts"].values()]
        unshares = [(v["unshare_pid"], v["unshare_start"]) for v in st["hosts"].values()]
        pidns = set(v["pidns"] for v in st["hosts"].values())
        assert len(_namespaced_pids(pidns)) >= 6       # init + sshd per host
        # an ssh session leaves a process behind on a host, like a user would
        _ssh(f, "node1", ["sh", "-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 &"])
    finally:
        t0 = time.time()
        p = _cli("down", state_dir=state)
        _timing("CLI down (3 hosts)", time.time() - t0)
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(state)
    assert not _namespaced_pids(pidns)
    for pid, start in inits + unshares:
        assert fleetmod._proc_start(pid) != start
    ns = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True, check=True).stdout
    assert "ckd-" not in ns
    links = subprocess.run(["ip", "-br", "link"], stdout=subprocess.PIPE, text=True, check=True).stdout
    assert "ckd-" not in links
    addrs = subprocess.run(["ip", "-br", "addr"], stdout=subprocess.PIPE, text=True, check=True).stdout
    assert SUBNET2.rsplit(".", 1)[0] + "." not in addrs
    with open("/proc/self/mountinfo") as fh:
        assert state not in fh.read()
    # down again, and down of a fleet that never existed
    assert _cli("down", state_dir=state).returncode == 0
    assert _cli("down", state_dir=str(tmp_path / "never")).returncode == 0


# --------------------------------------------------------------------------
# CRIU: the fleet is a realistic migration target


@pytest.mark.criu
@pytest.mark.parametrize("mem", [0, 256], ids=["mem0", "mem256MiB"])
def test_criu_migration_node1_to_node2(fleet, tmp_path, mem):
    """dump on node1, rsync over ssh from node1 to node2, restore on node2:
    the counter keeps its PID and keeps counting in the same ticks file (in
    /tmp, which all hosts share)."""
    if not os.access(CRIU, os.X_OK):
        pytest.fail("no criu at %s: run `make setup`" % CRIU)
    work = tmp_path / "w"
    work.mkdir()
    ticks = work / "ticks"
    imgs = "/var/lib/ckpt/smoke-%d" % os.getpid()
    out = _ssh(fleet, "node1", ["sh", "-c", "cd %s && exec python3 %s --stdio devnull --pidfile %s -- "
                                "python3 %s --out %s --interval 0.02 --mem %d"
                                % (work, WORKLOADS / "spawn.py", work / "w.pid", WORKLOADS / "counter.py", ticks,
                                   mem)])
    pid = int(out.strip())
    outer1 = fleet.outer_pid("node1", pid)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and (not ticks.exists() or len(ticks.read_text().splitlines()) < 5):
            time.sleep(0.02)
        assert len(ticks.read_text().splitlines()) >= 5, "the counter does not count on node1"

        def step(host, argv, name):
            name = "%s (%d MiB)" % (name, mem)
            t = time.time()
            p = fleet.exec(host, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
            dt = time.time() - t
            _timing(name, dt)
            assert p.returncode == 0, "%s failed (rc=%d):\n%s" % (name, p.returncode, p.stdout)
            return dt

        fleet.exec("node1", ["mkdir", "-p", "-m", "0700", imgs], check=True)
        t_dump = step("node1", [CRIU, "dump", "-t", str(pid), "-D", imgs, "-o", "dump.log", "-v4"], "criu dump on node1")
        frozen_from = time.time()
        deadline = time.time() + 5
        while time.time() < deadline and fleetmod._proc_start(outer1) is not None:
            time.sleep(0.01)
        assert fleetmod._proc_start(outer1) is None, "criu dump left the source running"
        t_xfer = step("node1", ["rsync", "-a", imgs + "/", "node2:%s/" % imgs], "rsync images node1 -> node2 over ssh")
        t_rest = step("node2", [CRIU, "restore", "-d", "-D", imgs, "-o", "restore.log", "-v4"], "criu restore on node2")
        _timing("dump + rsync + restore (%d MiB)" % mem, t_dump + t_xfer + t_rest)
        _timing("restored after (from the end of dump, %d MiB)" % mem, time.time() - frozen_from)
        outer2 = fleet.outer_pid("node2", pid)         # same PID, inside node2
        assert outer2 != outer1
        assert pid not in [x[1] for x in fleet.processes("node1")]
        n = len(ticks.read_text().splitlines())
        deadline = time.time() + 10
        while time.time() < deadline and len(ticks.read_text().splitlines()) < n + 10:
            time.sleep(0.02)
        lines = ticks.read_text().splitlines()
        assert len(lines) >= n + 10, "the restored counter does not count on node2"
        seqs = [int(x.split()[0]) for x in lines]
        assert seqs == list(range(1, len(seqs) + 1)), "ticks repeated or skipped"
        stamps = [int(x.split()[1]) for x in lines]
        gap = max(b - a for a, b in zip(stamps, stamps[1:])) / 1e9
        _timing("largest gap between ticks (frozen time, %d MiB)" % mem, gap)
        # the images really travelled: node1's copy is in node1's private dir
        assert os.path.exists(fleet.host_path("node1", imgs + "/pstree.img"))
        assert os.path.exists(fleet.host_path("node2", imgs + "/pstree.img"))
        assert not os.path.exists(imgs + "/pstree.img")
    finally:
        for h in ("node1", "node2"):
            fleet.exec(h, ["sh", "-c", "kill -9 %d 2>/dev/null; rm -rf %s" % (pid, imgs)])
