"""A fleet of test hosts on one machine: namespaces + sshd, reached over real SSH.

Each host is a PID + mount + UTS + IPC namespace (a fresh one per boot) joined
to its own network namespace (kept across reboots), with a veth into a bridge
in the root network namespace, its own sshd, and private directories that
survive a reboot like a disk. See docs/test-fleet.md.

With ``--init systemd`` each host boots systemd as its PID 1 instead of the
harness's small init: its root is an overlay of the machine's / with a private
upper layer (nothing the host writes reaches the machine), it has private
/run, /dev and cgroups, sshd runs as the ``ssh.service`` unit, and a reboot is
real (``systemctl reboot`` inside the host ends its PID 1; a supervisor boots
it again).

    fleet.py up [--hosts N] [--state-dir DIR] [--name NAME] [--subnet CIDR] [--init systemd] ...
    fleet.py down [--keep-state]
    fleet.py status [--json]
    fleet.py reboot HOST
    fleet.py exec HOST -- CMD [ARGS...]
    fleet.py ssh HOST [-- CMD [ARGS...]]
    fleet.py inventory | ssh-config
    fleet.py path HOST PATH

Python API: ``Fleet(state_dir=...).up(hosts=3)``, ``.exec(host, argv)``,
``.ssh(host, argv)``, ``.reboot(host)``, ``.down()``; see the class.

Standard library only; every external command is an argv list.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SELF = os.path.abspath(__file__)

DEFAULT_STATE_DIR = os.environ.get("CKPT_FLEET_STATE_DIR", "/run/ckpt-fleet")
DEFAULT_NAME = "ckf"
DEFAULT_SUBNET = "10.213.0.0/24"
DEFAULT_HOSTS = 3
DEFAULT_PYTHON = "/usr/bin/python3"
INITS = ("plain", "systemd")
SYSTEMD = "/lib/systemd/systemd"
# Units of the machine's packages that a systemd host must not start at boot
# (tests enable what they need; a unit not installed here is skipped), and
# units that make no sense in a host without terminals.
SYSTEMD_DISABLED = ("redis-server.service", "nginx.service", "postgresql.service", "e2scrub_reap.service",
                    "apt-daily-upgrade.timer", "apt-daily.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
                    "fstrim.timer", "man-db.timer")
SYSTEMD_MASKED = ("getty.target", "console-getty.service", "serial-getty@ttyS0.service",
                  "systemd-firstboot.service")
HOST_OFFSET = 10            # nodeN gets <network> + 10 + N; the root netns <network> + 1
STATE_VERSION = 1

# Private directories inside every host: (path inside the host, name of the
# backing directory under <state>/hosts/<host>/disk). Everything else is the
# machine's root filesystem, shared by all hosts and the controller.
PRIVATE_DIRS = (
    ("/root", "root"),
    ("/srv", "srv"),
    ("/var/lib/ckpt", "var-lib-ckpt"),
)
# Mount points the fleet may have to create on the real filesystem (and removes
# again on `down` when empty and no longer a mount point anywhere).
CREATABLE_MOUNTPOINTS = ("/srv", "/var/lib/ckpt")

TOOLS = {
    "sshd": "/usr/sbin/sshd",
    "ssh": "ssh",
    "ssh-keygen": "ssh-keygen",
    "ip": "ip",
    "unshare": "unshare",
    "nsenter": "nsenter",
    "mount": "mount",
    "rsync": "rsync",
}
SYSTEMD_TOOLS = {"systemd": SYSTEMD, "systemctl": "systemctl", "pivot_root": "pivot_root"}

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]*$")
_HOST_RE = re.compile(r"^node([1-9][0-9]*)$")


class FleetError(Exception):
    """A failure with a sentence a person can act on."""


# --------------------------------------------------------------------------
# small helpers


def _log(msg):
    sys.stderr.write("fleet: %s\n" % msg)
    sys.stderr.flush()


def _run(argv, check=True, capture=True, timeout=60, **kw):
    """Run argv (a list); raise FleetError with its output when check fails."""
    p = subprocess.run(argv, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None,
                       timeout=timeout, text=True, check=False, **kw)
    if check and p.returncode != 0:
        raise FleetError("%s failed (rc=%d): %s" % (
            " ".join(shlex.quote(a) for a in argv), p.returncode,
            ((p.stderr or "") + (p.stdout or "")).strip()))
    return p


def _check_path(path, what):
    if not os.path.isabs(path) or not _SAFE_PATH.match(path) or "/../" in path + "/":
        raise FleetError("%s must be an absolute path of letters, digits and _./+- only: %r" % (what, path))
    return os.path.normpath(path)


def _proc_start(pid):
    """Start time (clock ticks since boot) of a live, non-zombie PID, or None."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(pid, start):
    return bool(pid) and _proc_start(pid) == start


def _ns_inode(pid, ns):
    try:
        return os.stat("/proc/%d/ns/%s" % (pid, ns)).st_ino
    except OSError:
        return None


def _pidns_child(popen, timeout):
    """The child `unshare --pid --fork` (popen) started in a new PID namespace:
    the host's PID 1; None when there is none within timeout or popen exited."""
    deadline = time.time() + timeout
    while time.time() < deadline and popen.poll() is None:
        try:
            with open("/proc/%d/task/%d/children" % (popen.pid, popen.pid)) as fh:
                kids = [int(k) for k in fh.read().split()]
        except OSError:
            kids = []
        for k in kids:
            if _ns_inode(k, "pid") != _ns_inode(os.getpid(), "pid"):
                return k
        time.sleep(0.005)
    return None


def _write(path, text, mode=0o644):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _mountpoints_everywhere():
    """Every mount point path in every mount namespace on the machine."""
    seen_ns, points = set(), set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ino = os.stat("/proc/%s/ns/mnt" % d).st_ino
            if ino in seen_ns:
                continue
            seen_ns.add(ino)
            with open("/proc/%s/mountinfo" % d) as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) > 4:
                        points.add(parts[4].replace("\\040", " "))
        except OSError:
            continue
    return points


def check_environment(init="plain"):
    """Raise FleetError unless root and every tool the fleet needs is present."""
    if os.geteuid() != 0:
        raise FleetError("the test fleet needs root (namespaces, veths, sshd): run it as root")
    tools = dict(TOOLS, **(SYSTEMD_TOOLS if init == "systemd" else {}))
    missing = [name for name, exe in tools.items()
               if not (os.access(exe, os.X_OK) if os.path.isabs(exe) else shutil.which(exe))]
    if missing:
        raise FleetError("missing %s: run `make setup` (scripts/setup.sh installs openssh-server, "
                         "openssh-client, rsync, iproute2, util-linux, systemd)" % ", ".join(missing))
    if init == "systemd" and not os.path.isdir("/sys/fs/cgroup/systemd") \
            and not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        raise FleetError("systemd hosts need a cgroup hierarchy at /sys/fs/cgroup (name=systemd or cgroup2)")


# --------------------------------------------------------------------------
# the fleet


def _in_state_dir(name):
    """A read-only Fleet attribute: the path of NAME in the fleet's state_dir."""
    return property(lambda self: os.path.join(self.state_dir, name))


class Fleet:
    """A fleet of namespace hosts described by <state_dir>/state.json.

    Fleet(state_dir=None, name=None, subnet=None, python=None, pid_spacing=None,
          binds=None, init=None)        init: "plain" (default) or "systemd"
      Settings left as None come from an existing state file, else defaults.

    up(hosts=None, recreate=False, timeout=30.0) -> self
    down(keep_state=False) -> None
    reboot(host, timeout=30.0) -> None
    status() -> dict
    exec(host, argv, cwd="/", **subprocess_run_kwargs) -> CompletedProcess
    popen(host, argv, cwd="/", **popen_kwargs) -> Popen
    ssh(host, argv_or_None, **subprocess_run_kwargs) -> CompletedProcess
    ssh_argv(host, argv=None) -> list
    hosts -> ["node1", ...]; address(host) -> "10.213.0.11"
    inventory_path, ssh_config_path, key_path, known_hosts_path
    host_path(host, path) -> the controller-side path backing a private path
    processes(host) -> [(outer_pid, inner_pid, comm), ...]
    outer_pid(host, inner_pid) -> int
    init_pid(host) -> outer PID of the host's init
    """

    def __init__(self, state_dir=None, name=None, subnet=None, python=None,
                 pid_spacing=None, binds=None, init=None):
        self.state_dir = _check_path(os.path.abspath(state_dir or DEFAULT_STATE_DIR), "state dir")
        self.state = self._load()
        cfg = self.state.get("config", {})
        self.name = name or cfg.get("name") or DEFAULT_NAME
        if not re.match(r"^[a-z][a-z0-9]{0,4}$", self.name):
            raise FleetError("fleet name must be 1-5 lowercase letters/digits, starting with a letter "
                             "(it prefixes interface names): %r" % self.name)
        self.subnet = str(ipaddress.ip_network(subnet or cfg.get("subnet") or DEFAULT_SUBNET, strict=True))
        self.python = _check_path(python or cfg.get("python") or DEFAULT_PYTHON, "python")
        self.pid_spacing = pid_spacing if pid_spacing is not None else cfg.get("pid_spacing")
        self.binds = [tuple(b) for b in (binds if binds is not None else cfg.get("binds", []))]
        self.init = init or cfg.get("init") or "plain"
        if self.init not in INITS:
            raise FleetError("init must be one of %s, not %r" % (", ".join(INITS), self.init))
        for host, src, dst in self.binds:
            if not _HOST_RE.match(host):
                raise FleetError("bind: bad host name %r (hosts are node1..nodeN)" % host)
            _check_path(src, "bind source")
            _check_path(dst, "bind target")

    # ---- paths (files in state_dir)
    state_file = _in_state_dir("state.json")
    inventory_path = _in_state_dir("inventory.ini")
    ssh_config_path = _in_state_dir("ssh_config")
    key_path = _in_state_dir("id_ed25519")
    known_hosts_path = _in_state_dir("known_hosts")
    host_key_path = _in_state_dir("ssh_host_ed25519_key")

    @property
    def bridge(self):
        return "%s-br" % self.name

    @property
    def bridge_address(self):
        return str(ipaddress.ip_network(self.subnet)[1])

    @property
    def prefixlen(self):
        return ipaddress.ip_network(self.subnet).prefixlen

    @property
    def hosts(self):
        return sorted(self.state.get("hosts", {}), key=lambda h: int(h[4:]))

    def host_dir(self, host):
        return os.path.join(self.state_dir, "hosts", host)

    def host_path(self, host, path):
        """Controller-side path backing `path` inside `host` (a private dir)."""
        path = os.path.normpath(path)
        for inside, disk in PRIVATE_DIRS:
            if path == inside or path.startswith(inside + "/"):
                return os.path.join(self.host_dir(host), "disk", disk, os.path.relpath(path, inside))
        raise FleetError("%s is not in a private directory of the hosts (%s): it is the same file "
                         "on every host and on the controller" % (path, ", ".join(p[0] for p in PRIVATE_DIRS)))

    def address(self, host):
        return self._host(host)["address"]

    def netns(self, host):
        return "%s-%s" % (self.name, host)

    def veth(self, host):
        return "%s-%s" % (self.name, host)

    def _host(self, host):
        try:
            return self.state["hosts"][host]
        except KeyError:
            raise FleetError("no host %r in the fleet at %s (hosts: %s)" % (
                host, self.state_dir, ", ".join(self.hosts) or "none; run `fleet.py up`"))

    # ---- state
    def _load(self):
        try:
            with open(self.state_file) as fh:
                st = json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise FleetError("unreadable fleet state %s: %s" % (self.state_file, e))
        if st.get("version") != STATE_VERSION:
            raise FleetError("fleet state %s has version %r, this harness writes %d: run `fleet.py down`"
                             % (self.state_file, st.get("version"), STATE_VERSION))
        return st

    def _save(self):
        self.state["version"] = STATE_VERSION
        _write(self.state_file, json.dumps(self.state, indent=2, sort_keys=True) + "\n", 0o600)

    def _config(self, n):
        spacing = self.pid_spacing
        if spacing is None:
            spacing = _default_pid_spacing(n)
        cfg = {"name": self.name, "subnet": self.subnet, "hosts": n, "python": self.python,
               "pid_spacing": spacing, "binds": [list(b) for b in self.binds]}
        if self.init != "plain":
            cfg["init"] = self.init
        return cfg

    # ---- up
    def up(self, hosts=None, recreate=False, timeout=30.0):
        """Bring the fleet up (idempotent: converges to `hosts` running hosts).

        Same settings as the running fleet: hosts that run are reused, dead
        ones are booted. Different settings, or recreate=True: the fleet is
        torn down (state included) and created afresh."""
        check_environment(self.init)
        n = int(hosts or self.state.get("config", {}).get("hosts") or DEFAULT_HOSTS)
        if n < 1:
            raise FleetError("--hosts must be at least 1")
        net = ipaddress.ip_network(self.subnet)
        if net.num_addresses < HOST_OFFSET + n + 2:
            raise FleetError("subnet %s is too small for %d hosts" % (self.subnet, n))
        cfg = self._config(n)
        if self.state.get("config") and (recreate or self.state["config"] != cfg):
            _log("recreating the fleet at %s (%s)" % (
                self.state_dir, "asked to" if recreate else "settings changed"))
            self.down(keep_state=False)
            self.state = {}
        t0 = time.time()
        fresh = not any(self._running(h) for h in self.hosts)
        kept_disks = bool(self.state.get("config"))    # e.g. after `down --keep-state`
        self._preflight(n)
        try:
            started = self._converge(n, cfg, timeout)
        except BaseException:
            if fresh:   # leave nothing running behind from a failed start; kept disks stay
                try:
                    self.down(keep_state=kept_disks, quiet=True)
                except Exception as e:  # pylint: disable=broad-except
                    _log("cleanup after the failed start failed too: %s" % e)
            raise
        self.state["up_seconds"] = round(time.time() - t0, 3)
        self._save()
        _log("%d hosts up (%s booted) in %.2f s; inventory %s" % (
            n, len(started), time.time() - t0, self.inventory_path))
        return self

    @property
    def _tag(self):
        return "ckpt-fleet:%s" % self.state_dir

    def _preflight(self, n):
        """Every conflict check, before anything is created or written."""
        alias = self._link_alias(self.bridge)
        if alias is not None and alias != self._tag:
            raise FleetError("interface %s exists and is not this fleet's (alias %r): another fleet uses "
                             "the name %r; pick another --name and --subnet, or take that one down with "
                             "`fleet.py --state-dir DIR down`" % (self.bridge, alias, self.name))
        for i in range(1, n + 1):
            h = "node%d" % i
            if os.path.exists("/run/netns/%s" % self.netns(h)) and self._link_alias(self.veth(h)) != self._tag:
                raise FleetError("network namespace %s exists and is not this fleet's: pick another --name, "
                                 "or remove it (ip netns del %s) if it is a leftover" % (self.netns(h), self.netns(h)))
        if alias is None:
            net = ipaddress.ip_network(self.subnet)
            for link in json.loads(_run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
                for a in link.get("addr_info", []):
                    other = ipaddress.ip_network("%s/%s" % (a["local"], a["prefixlen"]), strict=False)
                    if other.overlaps(net):
                        raise FleetError("address conflict: %s/%s on %s overlaps the fleet subnet %s; pick "
                                         "another with --subnet" % (a["local"], a["prefixlen"], link["ifname"],
                                                                    self.subnet))
            for r in json.loads(_run(["ip", "-j", "-4", "route", "show"]).stdout or "[]"):
                dst = r.get("dst")
                if dst and dst != "default":
                    if ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False).overlaps(net):
                        raise FleetError("route conflict: %s via %s overlaps the fleet subnet %s; pick another "
                                         "with --subnet" % (dst, r.get("dev"), self.subnet))
        for bh, src, dst in self.binds:
            if int(bh[4:]) > n:
                raise FleetError("bind for %s, but the fleet has %d hosts" % (bh, n))
            if not os.path.exists(src):
                raise FleetError("bind source %s does not exist" % src)
            if not os.path.exists(dst):
                raise FleetError("bind target %s must exist on the shared filesystem (create it, "
                                 "e.g. an empty file or directory, before `up`)" % dst)
            if os.path.isdir(src) != os.path.isdir(dst):
                raise FleetError("bind %s=%s: both must be files or both directories" % (src, dst))

    def _converge(self, n, cfg, timeout):
        net = ipaddress.ip_network(self.subnet)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self.state.setdefault("created_dirs", [])
        self.state["config"] = cfg
        self.state.setdefault("hosts", {})
        for i in range(1, n + 1):
            h = "node%d" % i
            self.state["hosts"].setdefault(h, {})
            self.state["hosts"][h].update({
                "index": i, "address": str(net[HOST_OFFSET + i]),
                "netns": self.netns(h), "veth": self.veth(h),
                "pid_base": (i * cfg["pid_spacing"]) if cfg["pid_spacing"] else 0})
        self._save()
        self._keys()
        self._files()
        self._mountpoints()
        self._bridge()
        for h in self.hosts:
            self._host_net(h)
        self._save()
        started = [h for h in self.hosts if not self._running(h)]
        for h in started:
            self._boot(h)
        self._save()
        self._wait_ssh(self.hosts, timeout)
        return started

    def _keys(self):
        for path, comment in ((self.key_path, "ckpt-fleet-client"), (self.host_key_path, "ckpt-fleet-host")):
            if not os.path.exists(path):
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])

    def _files(self):
        with open(self.host_key_path + ".pub") as fh:
            host_pub = " ".join(fh.read().split()[:2])
        with open(self.key_path + ".pub") as fh:
            client_pub = fh.read().strip()
        names = self.hosts
        known = "".join("%s,%s %s\n" % (h, self.address(h), host_pub) for h in names)
        _write(self.known_hosts_path, known)
        common = ("Host *\n"
                  "  User root\n"
                  "  Port 22\n"
                  "  IdentityFile {key}\n"
                  "  IdentitiesOnly yes\n"
                  "  PasswordAuthentication no\n"
                  "  BatchMode yes\n"
                  "  ConnectTimeout 5\n"
                  "  ServerAliveInterval 5\n"
                  "  ServerAliveCountMax 3\n"
                  "  LogLevel ERROR\n")
        host_entries = "".join("Host %s\n  HostName %s\n" % (h, self.address(h)) for h in names)
        _write(self.ssh_config_path,
               "# ckpt.criu test fleet at %s: ssh -F %s node1\n" % (self.state_dir, self.ssh_config_path)
               + host_entries + common.format(key=self.key_path)
               + "  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n"
                 "  StrictHostKeyChecking yes\n" % self.known_hosts_path)
        inv = ["# ckpt.criu test fleet at %s (tests/system/fleet/fleet.py)" % self.state_dir, "[fleet]"]
        inv += ["%s ansible_host=%s" % (h, self.address(h)) for h in names]
        inv += ["", "[fleet:vars]", "ansible_user=root",
                "ansible_ssh_private_key_file=%s" % self.key_path,
                "ansible_ssh_common_args='-F %s'" % self.ssh_config_path,
                "ansible_python_interpreter=%s" % self.python, ""]
        _write(self.inventory_path, "\n".join(inv))
        for h in names:
            hd = self.host_dir(h)
            disk = os.path.join(hd, "disk")
            for d in (x[1] for x in PRIVATE_DIRS):
                os.makedirs(os.path.join(disk, d), exist_ok=True)
            os.chmod(os.path.join(disk, "root"), 0o700)
            os.chmod(os.path.join(disk, "var-lib-ckpt"), 0o700)
            dot_ssh = os.path.join(disk, "root", ".ssh")
            os.makedirs(dot_ssh, mode=0o700, exist_ok=True)
            shutil.copyfile(self.key_path, os.path.join(dot_ssh, "id_ed25519"))
            os.chmod(os.path.join(dot_ssh, "id_ed25519"), 0o600)
            shutil.copyfile(self.key_path + ".pub", os.path.join(dot_ssh, "id_ed25519.pub"))
            _write(os.path.join(dot_ssh, "authorized_keys"), client_pub + "\n", 0o600)
            etc_ssh = os.path.join(hd, "etc-ssh")
            os.makedirs(etc_ssh, mode=0o755, exist_ok=True)
            shutil.copyfile(self.host_key_path, os.path.join(etc_ssh, "ssh_host_ed25519_key"))
            os.chmod(os.path.join(etc_ssh, "ssh_host_ed25519_key"), 0o600)
            shutil.copyfile(self.host_key_path + ".pub", os.path.join(etc_ssh, "ssh_host_ed25519_key.pub"))
            if os.path.exists("/etc/ssh/moduli"):
                shutil.copyfile("/etc/ssh/moduli", os.path.join(etc_ssh, "moduli"))
            _write(os.path.join(etc_ssh, "ssh_known_hosts"), known)
            _write(os.path.join(etc_ssh, "sshd_config"),
                   "# sshd of fleet host %s\n"
                   "ListenAddress %s:22\n"
                   "HostKey /etc/ssh/ssh_host_ed25519_key\n"
                   "PidFile /run/sshd.pid\n"
                   "PermitRootLogin prohibit-password\n"
                   "PubkeyAuthentication yes\n"
                   "AuthorizedKeysFile .ssh/authorized_keys\n"
                   "PasswordAuthentication no\n"
                   "KbdInteractiveAuthentication no\n"
                   "UsePAM no\n"
                   "UseDNS no\n"
                   "PrintMotd no\n"
                   "X11Forwarding no\n"
                   "MaxStartups 100:30:200\n"
                   "MaxSessions 100\n"
                   "AcceptEnv LANG LC_*\n"
                   "Subsystem sftp /usr/lib/openssh/sftp-server\n" % (h, self.address(h)))
            _write(os.path.join(etc_ssh, "ssh_config"),
                   "# ssh client config of fleet host %s: `ssh nodeN` reaches the other hosts\n" % h
                   + host_entries + common.format(key="/root/.ssh/id_ed25519")
                   + "  GlobalKnownHostsFile /etc/ssh/ssh_known_hosts\n"
                     "  StrictHostKeyChecking accept-new\n")
            _write(os.path.join(hd, "hosts"),
                   "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                   + "".join("%s\t%s\n" % (self.address(x), x) for x in names)
                   + "%s\tcontroller\n" % self.bridge_address)
            _write(os.path.join(hd, "hostname"), h + "\n")
            mounts = [[os.path.join(disk, d), inside] for inside, d in PRIVATE_DIRS]
            mounts += [[etc_ssh, "/etc/ssh"], [os.path.join(hd, "hosts"), "/etc/hosts"],
                       [os.path.join(hd, "hostname"), "/etc/hostname"]]
            mounts += [[src, dst] for bh, src, dst in self.binds if bh == h]
            _write(os.path.join(hd, "host.json"), json.dumps({
                "host": h, "mounts": mounts, "pid_base": self.state["hosts"][h]["pid_base"],
                "state_dir": self.state_dir, "sshd": TOOLS["sshd"], "init": self.init,
                "python": self.python, "netns": self.netns(h), "cgroup": self.cgroup_name(h),
                "host_dir": hd}, indent=2) + "\n")

    def _mountpoints(self):
        for d in CREATABLE_MOUNTPOINTS:
            if not os.path.isdir(d):
                os.makedirs(d, mode=0o755)
                if d not in self.state["created_dirs"]:
                    self.state["created_dirs"].append(d)
        self._save()

    def _link_alias(self, dev):
        p = _run(["ip", "-j", "link", "show", "dev", dev], check=False)
        if p.returncode != 0:
            return None
        try:
            return json.loads(p.stdout)[0].get("ifalias", "")
        except (ValueError, IndexError):
            return ""

    def _bridge(self):
        if self._link_alias(self.bridge) is None:
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            _run(["ip", "link", "set", "dev", self.bridge, "alias", self._tag])
            _run(["ip", "addr", "add", "%s/%d" % (self.bridge_address, self.prefixlen), "dev", self.bridge])
        _run(["ip", "link", "set", "dev", self.bridge, "up"])

    def _host_net(self, h):
        ns, veth = self.netns(h), self.veth(h)
        if not os.path.exists("/run/netns/%s" % ns):
            _run(["ip", "netns", "add", ns])
        self.state["hosts"][h]["netns_owned"] = True
        if _run(["ip", "-n", ns, "link", "show", "dev", "eth0"], check=False).returncode != 0:
            if self._link_alias(veth) is not None:
                _run(["ip", "link", "del", veth])
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            _run(["ip", "link", "set", "dev", veth, "alias", self._tag])
        _run(["ip", "link", "set", "dev", veth, "master", self.bridge, "up"])
        _run(["ip", "-n", ns, "addr", "replace", "%s/%d" % (self.address(h), self.prefixlen), "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "dev", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "dev", "lo", "up"])

    def _running(self, h):
        st = self._refresh(h)
        return _alive(st.get("init_pid"), st.get("init_start"))

    def cgroup_name(self, h):
        return "ckpt-fleet-%s-%s" % (self.name, h)

    def _refresh(self, h):
        """A systemd host's supervisor boots it again after a reboot from
        inside: take its PID 1 from the supervisor's boot record."""
        st = self.state.get("hosts", {}).get(h, {})
        if self.init != "systemd" or not st:
            return st
        try:
            with open(os.path.join(self.host_dir(h), "boot.json")) as fh:
                rec = json.load(fh)
        except (OSError, ValueError):
            return st
        if rec.get("supervisor_pid") == st.get("supervisor_pid") and _alive(rec.get("init_pid"), rec.get("init_start")):
            for k in ("init_pid", "init_start", "pidns", "mntns", "boots", "booted_at"):
                if k in rec:
                    st[k] = rec[k]
        return st

    def _boot(self, h):
        """Start a fresh PID+mount+UTS+IPC namespace with init and sshd for h."""
        if self.init == "systemd":
            return self._boot_systemd(h)
        hd = self.host_dir(h)
        p = self._spawn(h, ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc",
                            "--mount-proc", "--propagation", "private", "--",
                            self.python, SELF, "_init", os.path.join(hd, "host.json")])
        child = _pidns_child(p, 10)
        if child is None and p.poll() is not None:
            raise FleetError("host %s did not start (rc=%s); its init.log ends with:\n%s" % (
                h, p.returncode, self._log_tail(h)))
        if child is None:
            raise FleetError("host %s: no init process after 10 s; its init.log ends with:\n%s" % (
                h, self._log_tail(h)))
        st = self.state["hosts"][h]
        st.update({"init_pid": child, "init_start": _proc_start(child), "unshare_pid": p.pid,
                   "unshare_start": _proc_start(p.pid), "pidns": _ns_inode(child, "pid"),
                   "mntns": _ns_inode(child, "mnt"), "netns_inode": _ns_inode(child, "net"),
                   "booted_at": time.time(), "boots": st.get("boots", 0) + 1})
        # Popen objects that are never waited for warn at exit; the CLI exits
        # right after, and the process is reaped by the machine's init.
        p.returncode = 0

    def _spawn(self, h, argv):
        """Start argv in h's network namespace, in a session of its own, logging to init.log."""
        log = open(os.path.join(self.host_dir(h), "init.log"), "ab")
        try:
            return subprocess.Popen(["nsenter", "--net=/run/netns/%s" % self.netns(h), "--"] + argv,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True, cwd="/",
                                    env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                         "LANG": "C.UTF-8"})
        finally:
            log.close()

    def _boot_systemd(self, h):
        """Start h's supervisor, which boots systemd as the host's PID 1 (and
        boots it again after every reboot from inside)."""
        hd = self.host_dir(h)
        for d in ("upper", "work", "rootfs"):
            os.makedirs(os.path.join(hd, d), mode=0o755, exist_ok=True)
        try:
            os.remove(os.path.join(hd, "boot.json"))
        except FileNotFoundError:
            pass
        p = self._spawn(h, [self.python, SELF, "_supervise", os.path.join(hd, "host.json")])
        st = self.state["hosts"][h]
        st.update({"supervisor_pid": p.pid, "supervisor_start": _proc_start(p.pid)})
        p.returncode = 0        # never waited for: the machine's init reaps it
        deadline = time.time() + 20
        while time.time() < deadline:
            if _alive(self._refresh(h).get("init_pid"), st.get("init_start")):
                return
            if not _alive(p.pid, st["supervisor_start"]):
                break
            time.sleep(0.01)
        raise FleetError("host %s: systemd did not start as its PID 1; its init.log ends with:\n%s" % (
            h, self._log_tail(h)))

    def _systemd_reboot(self, h, timeout):
        """`systemctl reboot` inside h, then wait for the supervisor's next boot."""
        st = self._refresh(h)
        old, boots = (st.get("init_pid"), st.get("init_start")), st.get("boots", 0)
        self.exec(h, ["systemctl", "reboot"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                  timeout=30)
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self._refresh(h)
            now = (st.get("init_pid"), st.get("init_start"))
            if st.get("boots", 0) > boots and now != old and _alive(*now):
                self._save()
                return
            if not _alive(st.get("supervisor_pid"), st.get("supervisor_start")):
                raise FleetError("host %s: its supervisor ended during the reboot; init.log ends with:\n%s"
                                 % (h, self._log_tail(h)))
            time.sleep(0.05)
        raise FleetError("host %s did not come back within %.0f s of `systemctl reboot`; init.log ends "
                         "with:\n%s" % (h, timeout, self._log_tail(h)))

    def _log_tail(self, h, lines=8):
        try:
            with open(os.path.join(self.host_dir(h), "init.log")) as fh:
                return "".join(fh.readlines()[-lines:]).rstrip() or "(empty)"
        except OSError:
            return "(no init.log)"

    def _wait_ssh(self, hosts, timeout):
        """Wait until a real `ssh HOST true` works for every host."""
        errors = {}

        def one(h):
            deadline = time.time() + timeout
            addr = self.address(h)
            last = "sshd never accepted a connection"
            while time.time() < deadline:
                if not self._running(h):
                    last = "the host's init died"
                    break
                try:
                    with socket.create_connection((addr, 22), timeout=0.5) as s:
                        s.settimeout(1.0)
                        if not s.recv(4).startswith(b"SSH-"):
                            raise OSError("no SSH banner")
                except OSError as e:
                    last = "tcp %s:22: %s" % (addr, e)
                    time.sleep(0.03)
                    continue
                p = subprocess.run(self.ssh_argv(h, ["true"]), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   timeout=max(5.0, deadline - time.time()), check=False)
                if p.returncode == 0:
                    return
                last = "ssh true: rc=%d %s" % (p.returncode, p.stdout.strip())
                time.sleep(0.1)
            errors[h] = last

        threads = [threading.Thread(target=one, args=(h,)) for h in hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            tails = ["%s: %s\n%s" % (h, e, self._log_tail(h)) for h, e in sorted(errors.items())]
            raise FleetError("sshd not answering within %.0f s:\n%s" % (timeout, "\n".join(tails)))

    # ---- reboot
    def reboot(self, host, timeout=30.0):
        """Kill every process of `host` and boot it again: same address, same
        private directories (like a disk), fresh PID/mount namespaces, new sshd."""
        check_environment(self.init)
        self._host(host)
        t0 = time.time()
        if self.init == "systemd" and self._running(host):
            self._systemd_reboot(host, timeout)
            self._wait_ssh([host], timeout)
            _log("%s rebooted (systemctl reboot) in %.2f s" % (host, time.time() - t0))
            return
        self._kill_host(host)
        self._host_net(host)
        self._boot(host)
        self._save()
        self._wait_ssh([host], timeout)
        _log("%s rebooted in %.2f s" % (host, time.time() - t0))

    def _kill_host(self, h):
        st = self.state["hosts"].get(h, {})
        spid = st.get("supervisor_pid")
        if _alive(spid, st.get("supervisor_start")):
            os.kill(spid, signal.SIGKILL)        # before init, so that it boots nothing again
        self._refresh(h)
        pid = st.get("init_pid")
        if _alive(pid, st.get("init_start")):
            os.kill(pid, signal.SIGKILL)        # the kernel kills the whole PID namespace
        upid = st.get("unshare_pid")
        if _alive(upid, st.get("unshare_start")):
            try:
                os.kill(upid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and (_alive(pid, st.get("init_start")) or self.processes(h)):
            time.sleep(0.01)
        for k in ("init_pid", "init_start", "unshare_pid", "unshare_start", "supervisor_pid",
                  "supervisor_start"):
            st.pop(k, None)
        if self.init == "systemd":
            _remove_cgroups(self.cgroup_name(h))

    # ---- down
    def down(self, keep_state=False, quiet=False):
        """Stop every host and remove the network, mounts and (unless
        keep_state) the state dir. Idempotent. Touches only what this fleet
        created: processes by recorded PID and start time, interfaces by
        their alias (ckpt-fleet:<state dir>), network namespaces it created."""
        if os.geteuid() != 0:
            raise FleetError("the test fleet needs root: run it as root")
        t0 = time.time()
        hosts = dict(self.state.get("hosts", {}))
        for h in list(hosts):
            self._kill_host(h)
        # Our network namespaces: recorded as created by us, or (a leftover of
        # a crashed run) named like ours with our veth still attached.
        nss = set(st["netns"] for st in hosts.values() if st.get("netns_owned") and st.get("netns"))
        prefix = "%s-" % self.name
        if os.path.isdir("/run/netns"):
            nss.update(n for n in os.listdir("/run/netns")
                       if n.startswith(prefix) and _HOST_RE.match(n[len(prefix):])
                       and self._link_alias(n) == self._tag)
        # Anything else still living in them (entered with `ip netns exec`).
        for ns in sorted(nss):
            p = _run(["ip", "netns", "pids", ns], check=False)
            for pid in p.stdout.split() if p.returncode == 0 else []:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        tag = self._tag
        data = json.loads(_run(["ip", "-j", "link", "show"]).stdout or "[]")
        for link in data:
            if link.get("ifalias") == tag and link["ifname"] != self.bridge:
                _run(["ip", "link", "del", link["ifname"]], check=False)
        for ns in sorted(nss):
            if os.path.exists("/run/netns/%s" % ns):
                _run(["ip", "netns", "del", ns], check=False)
        if self._link_alias(self.bridge) == tag:
            _run(["ip", "link", "del", self.bridge])
        created = self.state.get("created_dirs", [])
        if created:
            points = _mountpoints_everywhere()
            for d in created:
                if d not in points and os.path.isdir(d) and not os.listdir(d):
                    os.rmdir(d)
        if keep_state:
            if self.state:
                for h in self.state.get("hosts", {}):
                    for k in ("pidns", "mntns", "netns_inode"):
                        self.state["hosts"][h].pop(k, None)
                self.state["created_dirs"] = []
                self._save()
        elif os.path.isdir(self.state_dir):
            shutil.rmtree(self.state_dir)
            self.state = {}
        if not quiet:
            _log("down in %.2f s%s" % (time.time() - t0, " (state kept in %s)" % self.state_dir if keep_state else ""))

    # ---- running things on hosts
    def init_pid(self, host):
        self._host(host)
        st = self._refresh(host)
        if not _alive(st.get("init_pid"), st.get("init_start")):
            raise FleetError("host %s is not running: `fleet.py up` or `fleet.py reboot %s`" % (host, host))
        return st["init_pid"]

    def nsenter_argv(self, host, argv, cwd="/"):
        if isinstance(argv, str) or not argv:
            raise FleetError("exec wants a non-empty argv list, not a shell string")
        return ["nsenter", "-t", str(self.init_pid(host)), "-m", "-u", "-i", "-n", "-p",
                "--wd=%s" % cwd, "--"] + list(argv)

    def exec(self, host, argv, cwd="/", **kw):
        """Run argv inside host's namespaces (like nsenter); subprocess.run kwargs."""
        check = kw.pop("check", False)
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.nsenter_argv(host, argv, cwd), check=check, **kw)

    def popen(self, host, argv, cwd="/", **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.nsenter_argv(host, argv, cwd), **kw)

    def ssh_argv(self, host, argv=None):
        """ssh argv for a real SSH connection from the controller to host.
        argv (a list) is quoted for the remote shell."""
        self._host(host)
        cmd = ["ssh", "-F", self.ssh_config_path, host]
        if argv:
            if isinstance(argv, str):
                raise FleetError("ssh wants an argv list; it quotes it for the remote shell")
            cmd += ["--", " ".join(shlex.quote(a) for a in argv)]
        return cmd

    def ssh(self, host, argv, **kw):
        check = kw.pop("check", False)
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.ssh_argv(host, argv), check=check, **kw)

    def processes(self, host):
        """[(outer_pid, inner_pid, comm)] of every process in host's PID namespace."""
        st = self._refresh(host) if host in self.state.get("hosts", {}) else {}
        ino = st.get("pidns")
        out = []
        if not ino:
            return out
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            pid = int(d)
            if _ns_inode(pid, "pid") != ino:
                continue
            try:
                with open("/proc/%d/status" % pid) as fh:
                    status = fh.read()
            except OSError:
                continue
            m = re.search(r"^NSpid:\s+(.*)$", status, re.M)
            comm = re.search(r"^Name:\s+(.*)$", status, re.M)
            state = re.search(r"^State:\s+(\S)", status, re.M)
            if state and state.group(1) in ("Z", "X"):
                continue
            if m:
                out.append((pid, int(m.group(1).split()[-1]), comm.group(1) if comm else "?"))
        return sorted(out, key=lambda t: t[1])

    def outer_pid(self, host, inner_pid):
        for proc in self.processes(host):
            if proc[1] == inner_pid:
                return proc[0]
        raise FleetError("no process %d in host %s" % (inner_pid, host))

    # ---- status
    def status(self):
        hosts = {}
        for h in self.hosts:
            st = self.state["hosts"][h]
            running = self._running(h)
            sshd = False
            if running:
                try:
                    with socket.create_connection((st["address"], 22), timeout=0.5):
                        sshd = True
                except OSError:
                    pass
            hosts[h] = {"address": st["address"], "running": running, "sshd": sshd,
                        "init_pid": st.get("init_pid") if running else None,
                        "processes": len(self.processes(h)) if running else 0,
                        "boots": st.get("boots", 0), "pid_base": st.get("pid_base"),
                        "disk": os.path.join(self.host_dir(h), "disk")}
        return {"state_dir": self.state_dir, "up": bool(hosts) and all(v["sshd"] for v in hosts.values()),
                "config": self.state.get("config"), "inventory": self.inventory_path,
                "ssh_config": self.ssh_config_path, "key": self.key_path,
                "bridge": self.bridge, "bridge_address": self.bridge_address, "hosts": hosts}

    # ---- context manager
    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()
        return False


def _default_pid_spacing(n):
    """Per-host PID offset so PIDs from different hosts do not collide on restore."""
    try:
        with open("/proc/sys/kernel/pid_max") as fh:
            pid_max = int(fh.read())
    except (OSError, ValueError):
        pid_max = 32768
    spacing = (pid_max - 1000) // (n + 1)
    spacing = min(10000, spacing - spacing % 1000 if spacing >= 1000 else spacing)
    return spacing if spacing >= 300 else 0


# --------------------------------------------------------------------------
# the init of each host (PID 1 of its PID namespace)


def init_main(config_path):
    """PID 1 of a host: set up its mounts, start sshd, reap every child, keep
    sshd alive. Runs inside fresh PID/mount/UTS/IPC namespaces."""
    with open(config_path) as fh:
        cfg = json.load(fh)
    out = sys.stdout

    def say(msg):
        out.write("%s init[%s]: %s\n" % (time.strftime("%H:%M:%S"), cfg["host"], msg))
        out.flush()

    stopping = []

    def on_term(signum, frame):
        stopping.append(signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    socket.sethostname(cfg["host"])
    for src, dst in cfg["mounts"]:
        subprocess.run(["mount", "--bind", src, dst], check=True)
    # Copies of the machine's mounts under /run (e.g. /run/netns, which pins
    # every host's network namespace) are detached, then a private /run
    # (sshd's privilege separation dir, pid files, locks) goes on top; it
    # hides a state dir under /run, and a state dir elsewhere is hidden too.
    with open("/proc/self/mountinfo") as fh:
        under_run = [ln.split()[4] for ln in fh if ln.split()[4].startswith("/run/")]
    for point in sorted(set(under_run), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False, stderr=subprocess.DEVNULL)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=64m,nosuid,nodev", "fleet-run", "/run"],
                   check=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    os.makedirs("/run/lock", exist_ok=True)
    os.chmod("/run/lock", 0o1777)
    if os.path.isdir(cfg["state_dir"]):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700,size=1m", "fleet-hidden", cfg["state_dir"]],
                       check=True)
    if cfg.get("pid_base"):
        with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
            fh.write(str(cfg["pid_base"]))
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    sshd_argv = [cfg["sshd"], "-D", "-e", "-f", "/etc/ssh/sshd_config"]

    def start_sshd():
        p = subprocess.Popen(sshd_argv, stdin=subprocess.DEVNULL, env=env, close_fds=True, cwd="/")
        say("sshd started, pid %d" % p.pid)
        p.returncode = 0        # reaped below by waitpid(-1)
        return p.pid

    say("up: pid %d, mounts %s" % (os.getpid(), ", ".join(m[1] for m in cfg["mounts"])))
    sshd, since = start_sshd(), time.time()
    failures = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.2)
            continue
        if pid == sshd and not stopping:
            failures = failures + 1 if time.time() - since < 5 else 1
            say("sshd exited (status %d); restarting" % status)
            time.sleep(min(2.0, 0.1 * failures))
            sshd, since = start_sshd(), time.time()


# --------------------------------------------------------------------------
# systemd hosts: a supervisor outside, systemd as PID 1 inside


def _cgroup_bases():
    """Hierarchies a systemd host gets a cgroup of its own in."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):       # cgroup2 only
        return ["/sys/fs/cgroup"]
    return [b for b in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified") if os.path.isdir(b)]


def _remove_cgroups(name, timeout=5.0):
    """Remove a host's cgroups (retrying while its last processes exit)."""
    deadline = time.time() + timeout
    for base in _cgroup_bases():
        top = os.path.join(base, name)
        while os.path.isdir(top):
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass
            if not os.path.isdir(top) or time.time() > deadline:
                break
            time.sleep(0.05)


def supervise_main(config_path):
    """Outside the host (in its network namespace): put this process in the
    host's own cgroups, then boot the host and boot it again each time its
    PID 1 ends with a reboot. Writes <host_dir>/boot.json after each boot."""
    with open(config_path) as fh:
        cfg = json.load(fh)
    hd = cfg["host_dir"]

    def say(msg):
        sys.stdout.write("%s supervisor[%s]: %s\n" % (time.strftime("%H:%M:%S"), cfg["host"], msg))
        sys.stdout.flush()

    _remove_cgroups(cfg["cgroup"])
    for base in _cgroup_bases():
        d = os.path.join(base, cfg["cgroup"])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
    boots = 0
    while True:
        argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--cgroup",
                "--propagation", "private", "--", cfg["python"], SELF, "_sdboot", config_path]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True, cwd="/")
        child = _pidns_child(p, 10)
        if child is None:
            say("no PID 1 appeared (unshare rc=%s)" % p.poll())
            return 1
        boots += 1
        _write(os.path.join(hd, "boot.json"), json.dumps({
            "supervisor_pid": os.getpid(), "init_pid": child, "init_start": _proc_start(child),
            "pidns": _ns_inode(child, "pid"), "mntns": _ns_inode(child, "mnt"),
            "boots": boots, "booted_at": time.time()}) + "\n", 0o600)
        say("boot %d: PID 1 is %d" % (boots, child))
        rc = p.wait()
        if rc in (-signal.SIGHUP, 128 + signal.SIGHUP):
            say("PID 1 ended with a reboot; booting again")
            continue
        say("PID 1 ended (rc=%s): host is down" % rc)
        return 0


def _mount(argv):
    subprocess.run(["mount"] + argv, check=True, stdin=subprocess.DEVNULL)


def systemd_boot_main(config_path):
    """PID 1 of a systemd host, before it becomes systemd: build the host's
    root (an overlay of / with a private upper layer, private /run, /dev and
    cgroups, the host's private directories), pivot into it, exec systemd."""
    with open(config_path) as fh:
        cfg = json.load(fh)
    hd = cfg["host_dir"]
    root = os.path.join(hd, "rootfs")
    socket.sethostname(cfg["host"])
    _mount(["-t", "overlay", "ckpt-fleet-root", "-o", "lowerdir=/,upperdir=%s,workdir=%s" % (
        os.path.join(hd, "upper"), os.path.join(hd, "work")), root])

    def at(path):
        return os.path.join(root, path.lstrip("/"))

    _mount(["-t", "proc", "-o", "nosuid,nodev,noexec", "proc", at("/proc")])
    _mount(["-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", at("/sys")])
    _mount(["-t", "tmpfs", "-o", "mode=0755,size=8m,nosuid", "ckpt-fleet-dev", at("/dev")])
    for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                               ("urandom", 1, 9), ("tty", 5, 0)):
        os.mknod(at("/dev/" + name), 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(at("/dev/" + name), 0o666)
    os.mkdir(at("/dev/pts"))
    _mount(["-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620,gid=5", "devpts", at("/dev/pts")])
    os.symlink("pts/ptmx", at("/dev/ptmx"))
    os.mkdir(at("/dev/shm"))
    _mount(["-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "shm", at("/dev/shm")])
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, at("/dev/" + name))
    _mount(["-t", "tmpfs", "-o", "mode=0755,size=64m,nosuid,nodev", "ckpt-fleet-run", at("/run")])
    # A private /tmp: systemd empties /tmp at boot (tmpfiles.d), so the
    # machine's /tmp, which the plain fleet shares, must not be visible here.
    _mount(["-t", "tmpfs", "-o", "mode=1777,size=256m,nosuid,nodev", "ckpt-fleet-tmp", at("/tmp")])
    bases = _cgroup_bases()
    if bases == ["/sys/fs/cgroup"]:
        _mount(["-t", "cgroup2", "-o", "nosuid,nodev,noexec", "cgroup2", at("/sys/fs/cgroup")])
    else:
        _mount(["-t", "tmpfs", "-o", "mode=0755,size=1m", "cgroup", at("/sys/fs/cgroup")])
        for base in bases:
            os.mkdir(at(base))
            if base.endswith("/systemd"):
                _mount(["-t", "cgroup", "-o", "none,name=systemd,nosuid,nodev,noexec", "cgroup", at(base)])
            else:
                _mount(["-t", "cgroup2", "-o", "nosuid,nodev,noexec", "cgroup2", at(base)])
    for src, dst in cfg["mounts"]:
        if not os.path.lexists(at(dst)):        # a target under the private /tmp (or /run)
            if os.path.isdir(src):
                os.makedirs(at(dst), mode=0o755)
            else:
                os.makedirs(os.path.dirname(at(dst)), mode=0o755, exist_ok=True)
                open(at(dst), "a").close()
        _mount(["--bind", src, at(dst)])
    if os.path.isdir(at(cfg["state_dir"])):     # the fleet's keys and the hosts' disks
        _mount(["-t", "tmpfs", "-o", "mode=0700,size=1m", "fleet-hidden", at(cfg["state_dir"])])
    marker = at("/etc/.ckpt-fleet-host")
    if not os.path.exists(marker):              # first boot: this host's identity and units
        with open(at("/etc/machine-id"), "w") as fh:
            fh.write(os.urandom(16).hex() + "\n")
        for verb, units in (("disable", SYSTEMD_DISABLED), ("mask", SYSTEMD_MASKED)):
            for unit in units:      # one by one: a unit this machine lacks fails alone
                subprocess.run(["systemctl", "--root=%s" % root, "--quiet", verb, unit], check=False,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(marker, "w") as fh:
            fh.write("ckpt.criu test fleet host %s\n" % cfg["host"])
    if cfg.get("pid_base"):
        with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
            fh.write(str(cfg["pid_base"]))
    os.chdir(root)
    os.makedirs(".ckpt-oldroot", exist_ok=True)
    subprocess.run(["pivot_root", ".", ".ckpt-oldroot"], check=True, stdin=subprocess.DEVNULL)
    os.chdir("/")
    subprocess.run(["umount", "--lazy", "/.ckpt-oldroot"], check=True, stdin=subprocess.DEVNULL)
    os.rmdir("/.ckpt-oldroot")
    os.execve(SYSTEMD, [SYSTEMD], {"container": "ckpt-fleet", "LANG": "C.UTF-8",
                                   "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})


# --------------------------------------------------------------------------
# CLI


def _parse_bind(text):
    m = re.match(r"^(node[1-9][0-9]*):(/[^=]+)=(/.+)$", text)
    if not m:
        raise argparse.ArgumentTypeError("expected HOST:SRC=DST, e.g. node3:/tmp/app-v2=/opt/app/app")
    return (m.group(1), m.group(2), m.group(3))


def build_parser():
    ap = argparse.ArgumentParser(
        prog="fleet.py",
        description="A fleet of test hosts on one machine (namespaces + sshd), reached over real SSH. "
                    "Needs root. See docs/test-fleet.md.")
    ap.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                    help="the fleet's state dir (default %(default)s; env CKPT_FLEET_STATE_DIR)")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("up", help="start (or converge) the fleet and wait until every sshd answers")
    p.add_argument("--hosts", type=int, default=None, help="number of hosts node1..nodeN (default 3)")
    p.add_argument("--name", default=None, help="fleet name, prefixes netns/interfaces (default %s)" % DEFAULT_NAME)
    p.add_argument("--subnet", default=None, help="IPv4 subnet of the bridge (default %s)" % DEFAULT_SUBNET)
    p.add_argument("--python", default=None,
                   help="interpreter for the hosts' init and the inventory (default %s)" % DEFAULT_PYTHON)
    p.add_argument("--pid-spacing", type=int, default=None,
                   help="host N allocates PIDs from N*SPACING (0: from 1 like a real host; "
                        "default: up to 10000, fitted to pid_max)")
    p.add_argument("--bind", type=_parse_bind, action="append", default=None, metavar="HOST:SRC=DST",
                   help="extra bind mount for one host (SRC on the controller over DST in HOST); repeatable")
    p.add_argument("--init", choices=INITS, default=None,
                   help="the hosts' PID 1: plain (a small init that runs sshd; default) or systemd "
                        "(systemd on an overlay of /, sshd as a unit, real reboots)")
    p.add_argument("--recreate", action="store_true", help="tear down (state included) and create afresh")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for sshd (default 30)")
    p.add_argument("--state-dir", dest="state_dir_sub", default=None, metavar="DIR", help="same as the global --state-dir")

    p = sub.add_parser("down", help="stop everything; remove netns, veths, bridge, mounts and state")
    p.add_argument("--keep-state", action="store_true", help="keep the state dir (keys, hosts' disks)")
    p.add_argument("--state-dir", dest="state_dir_sub", default=None, metavar="DIR", help="same as the global --state-dir")

    p = sub.add_parser("status", help="show the hosts, their addresses and whether sshd answers")
    p.add_argument("--json", action="store_true")
    p.add_argument("--state-dir", dest="state_dir_sub", default=None, metavar="DIR", help="same as the global --state-dir")

    p = sub.add_parser("reboot", help="kill every process of HOST, boot it again, wait for sshd")
    p.add_argument("host")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--state-dir", dest="state_dir_sub", default=None, metavar="DIR", help="same as the global --state-dir")

    p = sub.add_parser("exec", help="run a command inside HOST's namespaces (nsenter), exit with its status")
    p.add_argument("host")
    p.add_argument("--cwd", default="/", help="working directory inside the host (default /)")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    p.add_argument("--state-dir", dest="state_dir_sub", default=None, metavar="DIR", help="same as the global --state-dir")

    p = sub.add_parser("ssh", help="ssh to HOST over the fleet network (interactive without a command)")
    p.add_argument("host")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="[-- CMD [ARGS...]]")
    p.add_argument("--state-dir", dest="state_dir_sub", default=None, metavar="DIR", help="same as the global --state-dir")

    for name, hlp in (("inventory", "print the path of the Ansible inventory"),
                      ("ssh-config", "print the path of the fleet's ssh config (ssh -F PATH node1)")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("--state-dir", dest="state_dir_sub", default=None, metavar="DIR", help="same as the global --state-dir")

    p = sub.add_parser("path", help="print the controller-side path backing PATH (a private dir) in HOST")
    p.add_argument("host")
    p.add_argument("path")
    p.add_argument("--state-dir", dest="state_dir_sub", default=None, metavar="DIR", help="same as the global --state-dir")
    return ap


def _strip_dashdash(argv):
    return argv[1:] if argv and argv[0] == "--" else argv


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_init"]:
        init_main(argv[1])
        return 0
    if argv[:1] == ["_supervise"]:
        return supervise_main(argv[1])
    if argv[:1] == ["_sdboot"]:
        systemd_boot_main(argv[1])
        return 1
    args = build_parser().parse_args(argv)
    state_dir = args.state_dir_sub or args.state_dir
    try:
        if os.geteuid() != 0:
            raise FleetError("the test fleet needs root (namespaces, veths, sshd): run it as root")
        if args.cmd == "up":
            f = Fleet(state_dir, name=args.name, subnet=args.subnet, python=args.python,
                      pid_spacing=args.pid_spacing, binds=args.bind, init=args.init)
            f.up(hosts=args.hosts, recreate=args.recreate, timeout=args.timeout)
            print(f.inventory_path)
            return 0
        if args.cmd == "down":
            if not os.path.exists(os.path.join(os.path.abspath(state_dir), "state.json")):
                _log("no fleet at %s (nothing to do)" % state_dir)
                return 0
            Fleet(state_dir).down(keep_state=args.keep_state)
            return 0
        f = Fleet(state_dir)
        if not f.hosts:
            raise FleetError("no fleet at %s: run `fleet.py up` first" % f.state_dir)
        if args.cmd == "status":
            st = f.status()
            if args.json:
                print(json.dumps(st, indent=2, sort_keys=True))
            else:
                print("fleet %s (%s) at %s: %s" % (f.name, f.subnet, f.state_dir, "up" if st["up"] else "NOT up"))
                for h, v in st["hosts"].items():
                    print("  %-7s %-15s %-8s sshd=%-3s init_pid=%s processes=%d boots=%d" % (
                        h, v["address"], "running" if v["running"] else "down", "ok" if v["sshd"] else "no",
                        v["init_pid"], v["processes"], v["boots"]))
                print("  inventory  %s\n  ssh config %s" % (st["inventory"], st["ssh_config"]))
            return 0 if st["up"] else 1
        if args.cmd == "reboot":
            f.reboot(args.host, timeout=args.timeout)
            return 0
        if args.cmd == "exec":
            cmd, cwd = list(args.argv), args.cwd
            while cmd and cmd[0] != "--" and cmd[0].startswith("--cwd"):   # exec HOST --cwd DIR -- CMD
                if cmd[0] == "--cwd" and len(cmd) > 1:
                    cwd, cmd = cmd[1], cmd[2:]
                elif cmd[0].startswith("--cwd="):
                    cwd, cmd = cmd[0][len("--cwd="):], cmd[1:]
                else:
                    break
            cmd = _strip_dashdash(cmd)
            if not cmd:
                raise FleetError("exec: give a command after --")
            return f.exec(args.host, cmd, cwd=_check_path(cwd, "--cwd"), stdin=None).returncode
        if args.cmd == "ssh":
            cmd = _strip_dashdash(args.argv)
            os.execvp("ssh", f.ssh_argv(args.host, cmd or None))
        if args.cmd == "inventory":
            print(f.inventory_path)
            return 0
        if args.cmd == "ssh-config":
            print(f.ssh_config_path)
            return 0
        if args.cmd == "path":
            f._host(args.host)
            print(f.host_path(args.host, args.path))
            return 0
    except FleetError as e:
        _log("error: %s" % e)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
