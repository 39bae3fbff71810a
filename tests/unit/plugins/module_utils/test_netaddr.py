"""Pure logic of the service address and the socket checks (no address is changed here)."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _netaddr


def sock(local, port, listening=True, proto="tcp", remote="0.0.0.0", rport=0, pid=7, fd=5):
    return {"pid": pid, "fd": fd, "proto": proto, "family": "inet", "state": "LISTEN" if listening else "ESTABLISHED",
            "local_address": local, "local_port": port, "remote_address": remote, "remote_port": rport,
            "listening": listening}


SERVICE = ipaddress.ip_interface("10.0.0.200/24")


@pytest.mark.parametrize("text,iface,word", [
    ("10.0.0.200", "eth0", "prefix length"),
    ("10.0.0.x/24", "eth0", "IPv4 address"),
    ("fd00::5/64", "eth0", "IPv6"),
    ("127.0.0.2/8", "eth0", "loopback"),
    ("10.0.0.200/24", "", "interface"),
    ("10.0.0.200/24", "../eth0", "interface"),
])
def test_bad_service_addresses(text, iface, word):
    with pytest.raises(_netaddr.AddressError, match=word):
        _netaddr.parse_service_address(text, iface)


def test_good_service_address():
    service, iface = _netaddr.parse_service_address(" 10.0.0.200/24", "eth0")
    assert str(service) == "10.0.0.200/24" and iface == "eth0"


def test_wildcard_listener_with_free_port_passes():
    assert _netaddr.destination_problems([sock("0.0.0.0", 6379)], ["10.0.0.12"], [], None, "node2") == []


def test_port_taken_on_destination_is_named():
    problems = _netaddr.destination_problems(
        [sock("0.0.0.0", 6379)], ["10.0.0.12"],
        [{"proto": "tcp", "local_address": "127.0.0.1", "local_port": 6379}], None, "node2")
    assert len(problems) == 1 and "port tcp/6379 is already in use on node2" in problems[0]


def test_same_port_other_proto_or_other_address_is_free():
    dest = [{"proto": "udp", "local_address": "0.0.0.0", "local_port": 6379},
            {"proto": "tcp", "local_address": "10.0.0.12", "local_port": 80}]
    sockets = [sock("0.0.0.0", 6379), sock("10.0.0.200", 80)]
    assert _netaddr.destination_problems(sockets, ["10.0.0.12"], dest, SERVICE, "node2") == []


def test_address_only_on_source_is_named_unless_it_is_the_service_address():
    sockets = [sock("10.0.0.11", 6379), sock("10.0.0.11", 6379, listening=False, remote="10.0.0.1", rport=4242, fd=8)]
    problems = _netaddr.destination_problems(sockets, ["10.0.0.12"], [], None, "node2")
    assert len(problems) == 1 and "bound to 10.0.0.11, an address only this host has" in problems[0]
    assert "PID 7 fd 8 (TCP connection 10.0.0.11:6379 -> 10.0.0.1:4242)" in problems[0]
    covered = [sock("10.0.0.200", 6379), sock("::ffff:10.0.0.200", 6380, fd=9)]
    assert _netaddr.destination_problems(covered, ["10.0.0.12"], [], SERVICE, "node2") == []


def test_loopback_and_addresses_the_destination_has_pass():
    sockets = [sock("127.0.0.1", 5000), sock("::1", 5001), sock("10.0.0.12", 5002)]
    assert _netaddr.destination_problems(sockets, ["10.0.0.12"], [], None, "node2") == []


def test_service_address_already_on_destination_is_refused():
    problems = _netaddr.destination_problems([], ["10.0.0.12", "10.0.0.200"], [], SERVICE, "node2")
    assert problems and "already on node2" in problems[0]


def test_source_must_hold_the_service_address_on_its_interface():
    links = [{"ifname": "eth0", "mac": "02:00:00:00:00:01", "addresses": [{"address": "10.0.0.11", "prefixlen": 24}]},
             {"ifname": "eth1", "mac": "02:00:00:00:00:02", "addresses": []}]
    assert "is not on this host" in _netaddr.source_problems([], ["10.0.0.11"], SERVICE, "eth0", links)[0]
    assert "does not have" in _netaddr.source_problems([], ["10.0.0.11"], SERVICE, "eth9", links)[0]
    held = [dict(links[0], addresses=links[0]["addresses"] + [{"address": "10.0.0.200", "prefixlen": 24}]), links[1]]
    assert _netaddr.source_problems([], ["10.0.0.11", "10.0.0.200"], SERVICE, "eth0", held) == []
    other = _netaddr.source_problems([], ["10.0.0.11", "10.0.0.200"], SERVICE, "eth1", held)
    assert "not on interface eth1" in other[0]


def test_destination_needs_the_service_interface():
    links = [{"ifname": "ens3", "mac": "02:00:00:00:00:03", "addresses": [{"address": "10.0.0.12", "prefixlen": 24}]}]
    problems = _netaddr.destination_problems([], ["10.0.0.12"], [], SERVICE, "node2", "eth0", links)
    assert len(problems) == 1 and "interface eth0, which node2 does not have (it has ens3)" in problems[0]
    assert _netaddr.destination_problems([], ["10.0.0.12"], [], SERVICE, "node2", "ens3", links) == []
    assert _netaddr.source_problems([], [], None, "", links) == []


def test_socket_entry_from_proc_net():
    e = _netaddr.socket_entry(3, 4, {"proto": "udp", "family": "inet", "state": "UNCONNECTED",
                                     "local": "0.0.0.0:53", "remote": "0.0.0.0:0"})
    assert e["listening"] and e["local_port"] == 53
    e = _netaddr.socket_entry(3, 4, {"proto": "tcp", "family": "inet6", "state": "ESTABLISHED",
                                     "local": "[::ffff:10.0.0.5]:80", "remote": "[::ffff:10.0.0.1]:999"})
    assert not e["listening"] and e["local_address"] == "::ffff:10.0.0.5" and e["remote_port"] == 999


def test_gratuitous_arp_frames():
    req, rep = _netaddr.arp_frames("02:00:00:00:00:01", "10.0.0.200")
    assert len(req) == 60 and req[:6] == b"\xff" * 6 and req[12:14] == b"\x08\x06"
    for frame, op in ((req, 1), (rep, 2)):
        fields = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
        o, sha, spa, tha, tpa = fields[4:]
        assert o == op and spa == tpa == bytes([10, 0, 0, 200]) and sha == bytes.fromhex("020000000001")
        assert tha == (b"\0" * 6 if op == 1 else sha)     # a reply is gratuitous when tha == sha
