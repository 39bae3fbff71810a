# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Where a process tree's TCP/UDP sockets are bound, and the service address that moves with it.

A migration restores every socket at the address and port it had. So before
anything is frozen:

* a listener (TCP LISTEN, or a bound UDP socket) needs its port free on the
  destination, at its address or on the wildcard;
* a socket bound to a specific address needs that address on the destination:
  an address only the source has is refused, unless it is the *service
  address*, which moves with the process.

The service address (IPv4 ``address/prefix`` on an interface) is removed from
the source right after criu dumped the frozen process, and added on the
destination right before criu restores it (:func:`place`); the destination
then announces it with a gratuitous ARP, so that peers on the link send to its
MAC address at once instead of waiting for their neighbour entry to expire.
The order is guaranteed by the checkpoint itself: the source releases before
it sends the manifest, the destination claims after the manifest arrived.

Public API: :func:`tree_sockets`, :func:`host_addresses`, :func:`listening`,
:func:`parse_service_address`, :func:`source_problems`,
:func:`destination_problems`, :func:`ensure_address`, :func:`announce`,
:func:`place`, :func:`criu_lock_tables`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _criu
from ansible_collections.ckpt.criu.plugins.module_utils import _procfs

WILDCARDS = ("0.0.0.0", "::")
ETH_P_ARP = 0x0806
# How the destination announces the address: one gratuitous ARP request and one
# reply at once, then again after these seconds (a peer that missed the first).
ANNOUNCE_REPEATS = (0.0, 0.2)


class AddressError(_criu.CriuError):
    """A service address that cannot be used, moved or announced."""


# ------------------------------------------------------------------ sockets

def split_endpoint(text):
    """'10.0.0.1:80' or '[::1]:80' -> ('10.0.0.1', 80)."""
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


def tree_sockets(pid, proc_root=_procfs.PROC):
    """TCP and UDP sockets held by the tree rooted at ``pid``.

    [{pid, fd, proto, family, state, local_address, local_port, remote_address,
    remote_port, listening}], one entry per socket (the first fd holding it).
    """
    table = {}
    seen = set()
    out = []
    for p in _procfs.process_tree(pid, proc_root):
        fd_dir = os.path.join(proc_root, str(p), "fd")
        try:
            names = sorted((n for n in os.listdir(fd_dir) if n.isdigit()), key=int)
        except OSError:
            continue  # exited meanwhile
        if not table:
            table = _procfs.read_sockets(p, proc_root)
        for name in names:
            try:
                target = os.readlink(os.path.join(fd_dir, name))
            except OSError:
                continue
            if not target.startswith("socket:["):
                continue
            inode = int(target[8:-1])
            sk = table.get(inode)
            if sk is None or sk["family"] == "unix" or inode in seen:
                continue
            seen.add(inode)
            out.append(socket_entry(p, int(name), sk))
    return out


def socket_entry(pid, fd, sk):
    laddr, lport = split_endpoint(sk["local"])
    raddr, rport = split_endpoint(sk["remote"])
    listening = (sk["proto"] == "tcp" and sk["state"] == "LISTEN") or (
        sk["proto"] == "udp" and sk["state"] == "UNCONNECTED" and lport != 0)
    return {"pid": pid, "fd": fd, "proto": sk["proto"], "family": sk["family"], "state": sk["state"],
            "local_address": laddr, "local_port": lport, "remote_address": raddr, "remote_port": rport,
            "listening": listening}


def listening(proc_root=_procfs.PROC):
    """The listeners of this network namespace: [{proto, local_address, local_port}]."""
    out = []
    for sk in _procfs.read_sockets("self", proc_root).values():
        if sk["family"] == "unix":
            continue
        e = socket_entry(0, -1, sk)
        if e["listening"]:
            out.append({"proto": e["proto"], "local_address": e["local_address"], "local_port": e["local_port"]})
    return out


def describe(sk):
    """'PID 12 fd 5 (TCP listener on 10.0.0.5:6379)'."""
    proto = sk["proto"].upper()
    local = "%s:%d" % (sk["local_address"], sk["local_port"])
    if sk["listening"]:
        what = "%s listener on %s" % (proto, local)
    elif sk["proto"] == "tcp":
        what = "TCP connection %s -> %s:%d" % (local, sk["remote_address"], sk["remote_port"])
    else:
        what = "%s socket on %s" % (proto, local)
    return "PID %s fd %s (%s)" % (sk["pid"], sk["fd"], what)


# ---------------------------------------------------------------- addresses

def _run(argv, what):
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=30, check=False)
    except OSError as exc:
        raise AddressError("cannot %s: %s (%s); install iproute2" % (what, exc.strerror or exc, argv[0]),
                           argv=argv)
    if p.returncode != 0:
        raise AddressError("cannot %s: %s" % (what, (p.stderr or p.stdout).strip() or "rc %d" % p.returncode),
                           rc=p.returncode, argv=argv, stdout=p.stdout, stderr=p.stderr)
    return p.stdout


def links():
    """This network namespace's interfaces: [{ifname, mac, addresses: [{address, prefixlen}]}] (ip -j addr)."""
    data = json.loads(_run(["ip", "-j", "addr", "show"], "list the addresses of this host") or "[]")
    out = []
    for link in data:
        out.append({"ifname": link.get("ifname"), "mac": link.get("address"),
                    "addresses": [{"address": a.get("local"), "prefixlen": a.get("prefixlen")}
                                  for a in link.get("addr_info", []) if a.get("local")]})
    return out


def host_addresses(link_list=None):
    """Every address of this network namespace, as strings."""
    return sorted(set(a["address"] for link in (links() if link_list is None else link_list)
                      for a in link["addresses"]))


def parse_service_address(text, interface):
    """(IPv4Interface, interface) from 'A.B.C.D/len'; AddressError saying what is wrong."""
    if not interface or "/" in interface or interface in (".", ".."):
        raise AddressError("the service address %s needs the interface it lives on (e.g. eth0), got %r"
                           % (text, interface))
    try:
        iface = ipaddress.ip_interface(str(text).strip())
    except ValueError:
        raise AddressError("the service address must be an IPv4 address with its prefix length, like "
                           "192.0.2.50/24; got %r" % (text,))
    if "/" not in str(text):
        raise AddressError("the service address %s has no prefix length; write it as %s/NN, the prefix of "
                           "the network it serves" % (text, text))
    if iface.version != 4:
        raise AddressError("the service address %s is IPv6; only IPv4 service addresses can move (they are "
                           "announced with ARP)" % text)
    if iface.ip.is_loopback or iface.ip.is_multicast or iface.ip.is_unspecified:
        raise AddressError("the service address %s cannot move: it is a loopback, multicast or "
                           "unspecified address" % text)
    return iface, interface


def _covered(address, service):
    return service is not None and address == str(service.ip)


def _is_local_everywhere(address):
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or address in WILDCARDS or (
        ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def _v4(address):
    """'::ffff:10.0.0.5' -> '10.0.0.5' (a v6 socket bound to a mapped v4 address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return address


def source_problems(sockets, addresses, service, interface, link_list=None):
    """Sentences that refuse a migration, seen from the source: the service address must be here."""
    problems = []
    if service is None:
        return problems
    names = [link["ifname"] for link in link_list or []]
    on_iface = [a["address"] for link in link_list or [] if link["ifname"] == interface for a in link["addresses"]]
    if link_list is not None and interface not in names:
        problems.append("the service address %s is to move on interface %s, which this host does not have "
                        "(it has %s); set ckpt_migrate_service_interface to the right one"
                        % (service, interface, ", ".join(names) or "none"))
    elif str(service.ip) not in addresses:
        problems.append("the service address %s is not on this host (the process must be reached at it "
                        "before it moves); add it here first (ip addr add %s dev %s)"
                        % (service, service, interface))
    elif link_list is not None and str(service.ip) not in on_iface:
        problems.append("the service address %s is on this host, but not on interface %s; set "
                        "ckpt_migrate_service_interface to the interface that holds it" % (service.ip, interface))
    return problems


def destination_problems(sockets, dest_addresses, dest_listeners, service, destination, interface=None,
                         dest_links=None):
    """Sentences that refuse a migration of ``sockets`` to ``destination``.

    ``dest_addresses``: the destination's addresses; ``dest_listeners``: its
    listeners [{proto, local_address, local_port}]; ``service``: the
    IPv4Interface that moves with the process, or None.
    """
    problems = []
    names = [link["ifname"] for link in dest_links or []]
    if service is not None and dest_links is not None and interface not in names:
        problems.append("the service address %s is to move to interface %s, which %s does not have (it has %s); "
                        "the interface must have the same name on both hosts"
                        % (service, interface, destination, ", ".join(names) or "none"))
    if service is not None and str(service.ip) in dest_addresses:
        problems.append("the service address %s is already on %s; it must move with the process, so remove it "
                        "there first" % (service.ip, destination))
    missing = {}
    for sk in sockets:
        addr = _v4(sk["local_address"])
        if _is_local_everywhere(addr) or _covered(addr, service) or addr in dest_addresses:
            continue
        missing.setdefault(addr, []).append(describe(sk))
    for addr, holders in sorted(missing.items()):
        problems.append("%s %s bound to %s, an address only this host has: after the move nothing would "
                        "reach it there; give the process a service address that moves with it "
                        "(ckpt_migrate_service_address=%s/PREFIX and ckpt_migrate_service_interface), or "
                        "bind it to 0.0.0.0" % ("; ".join(holders[:3]), "is" if len(holders) == 1 else "are",
                                                addr, addr))
    ports = {}
    for sk in sockets:
        if not sk["listening"]:
            continue
        for other in dest_listeners:
            if other["proto"] != sk["proto"] or other["local_port"] != sk["local_port"]:
                continue
            a, b = _v4(sk["local_address"]), _v4(other["local_address"])
            if a in WILDCARDS or b in WILDCARDS or a == b:
                ports.setdefault((sk["proto"], sk["local_port"]), (sk, other))
                break
    for (proto, port), (sk, other) in sorted(ports.items()):
        problems.append("port %s/%d is already in use on %s (a listener on %s:%d); %s needs it free there: stop "
                        "what listens on it, or migrate to another host"
                        % (proto, port, destination, other["local_address"], other["local_port"], describe(sk)))
    return problems


# --------------------------------------------------------- criu's network lock

def criu_lock_tables():
    """The nftables tables criu's network lock made here (names like 'inet CRIU-1a2b...'), or None without nft.

    A dump with tcp_established that leaves the process stopped keeps its connections
    locked (dropped) in such a table; criu removes it only when the process runs on.
    """
    nft = shutil.which("nft")
    if nft is None:
        return None
    try:
        p = subprocess.run([nft, "-j", "list", "tables"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=30, check=False)
        items = json.loads(p.stdout or "{}").get("nftables", []) if p.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return sorted("%s %s" % (t["table"].get("family"), t["table"].get("name")) for t in items
                  if "table" in t and str(t["table"].get("name", "")).startswith("CRIU"))


TCP_REPAIR = 19          # linux/tcp.h
SYS_PIDFD_GETFD = 438    # the same number on every architecture


def _pidfd_getfd(pidfd, fd):
    import ctypes  # pylint: disable=import-outside-toplevel
    libc = ctypes.CDLL(None, use_errno=True)
    dup = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if dup < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return dup


def leave_repair(pid, proc_root=_procfs.PROC):
    """Take the TCP connections of the tree rooted at ``pid`` out of repair mode.

    criu dump with --tcp-established leaves a process it leaves stopped with its
    connections in TCP repair mode (and locked); resumed like that, they neither
    send nor answer. Turning repair off (as criu does for a process it lets run on)
    sends a window probe and the connection goes on. Returns the sockets changed as
    'PID fd N', and the sentences of those that could not be.
    """
    changed, problems = [], []
    for sk in tree_sockets(pid, proc_root):
        if sk["proto"] != "tcp" or sk["listening"]:
            continue
        try:
            pidfd = os.pidfd_open(sk["pid"])
        except (AttributeError, OSError) as exc:
            problems.append("PID %s fd %s: %s" % (sk["pid"], sk["fd"], exc))
            continue
        try:
            dup = _pidfd_getfd(pidfd, sk["fd"])
            with socket.socket(fileno=dup) as s:
                if s.getsockopt(socket.IPPROTO_TCP, TCP_REPAIR):
                    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)
                    changed.append("PID %s fd %s" % (sk["pid"], sk["fd"]))
        except OSError as exc:
            problems.append("PID %s fd %s: %s" % (sk["pid"], sk["fd"], exc.strerror or exc))
        finally:
            os.close(pidfd)
    return changed, problems


# ------------------------------------------------------------- move, announce

def _link(ifname, link_list):
    for link in link_list:
        if link["ifname"] == ifname:
            return link
    raise AddressError("this host has no interface %s (it has %s); the service address cannot be placed there"
                       % (ifname, ", ".join(x["ifname"] for x in link_list) or "none"))


def ensure_address(service, ifname, present, check_mode=False):
    """Put ``service`` on ``ifname`` (present) or take it off; True when that changed something."""
    link = _link(ifname, links())
    here = [a for a in link["addresses"] if a["address"] == str(service.ip)]
    if present and here:
        return False
    if not present and not here:
        return False
    if check_mode:
        return True
    if present:
        _run(["ip", "addr", "add", str(service), "dev", ifname], "add %s to %s" % (service, ifname))
    else:
        prefix = here[0]["prefixlen"]
        _run(["ip", "addr", "del", "%s/%s" % (service.ip, prefix), "dev", ifname],
             "remove %s from %s" % (service.ip, ifname))
    return True


def arp_frames(mac, ip):
    """A gratuitous ARP request and reply (sender = target = ip), as Ethernet frames."""
    hw = bytes.fromhex(mac.replace(":", ""))
    pa = socket.inet_aton(ip)
    bcast = b"\xff" * 6
    out = []
    for op, tha in ((1, b"\0" * 6), (2, hw)):
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, hw, pa, tha, pa)
        frame = bcast + hw + struct.pack("!H", ETH_P_ARP) + arp
        out.append(frame + b"\0" * max(0, 60 - len(frame)))
    return out


def announce(service, ifname, repeats=ANNOUNCE_REPEATS):
    """Send gratuitous ARP for ``service`` on ``ifname``; returns the number of frames sent."""
    link = _link(ifname, links())
    if not link["mac"] or link["mac"] == "00:00:00:00:00:00":
        raise AddressError("interface %s has no MAC address; the service address cannot be announced with ARP"
                           % ifname)
    frames = arp_frames(link["mac"], str(service.ip))
    sent = 0
    try:
        sk = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    except OSError as exc:
        raise AddressError("cannot open a packet socket to announce %s: %s" % (service.ip, exc.strerror or exc))
    try:
        sk.bind((ifname, ETH_P_ARP))
        t0 = time.monotonic()
        for at in repeats:
            delay = at - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
            for frame in frames:
                sk.send(frame)
                sent += 1
    except OSError as exc:
        raise AddressError("cannot announce %s on %s: %s" % (service.ip, ifname, exc.strerror or exc))
    finally:
        sk.close()
    return sent


def place(spec, present):
    """Inside the frozen window: take the service address off the source (present=False, after
    criu dumped) or put it on the destination (present=True, before criu restores).
    spec: {address, interface}."""
    service, ifname = parse_service_address(spec.get("address"), spec.get("interface"))
    t0 = time.monotonic()
    changed = ensure_address(service, ifname, present=present)
    return {"address": str(service), "interface": ifname, "changed": changed,
            "seconds": round(time.monotonic() - t0, 4)}
