"""ckpt.criu.service_address and ckpt.criu.inet_sockets against the real kernel, in a
network namespace of the test's own (a veth pair inside it), never the machine's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.criu]

ADDRESS = "192.0.2.50/24"


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.fail("these tests need root (a network namespace and a veth pair)")
    name = "ckpt-sa-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for argv in (["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"],
                     ["ip", "link", "set", "d0", "up"], ["ip", "link", "set", "d1", "up"],
                     ["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", "192.0.2.11/24", "dev", "d0"]):
            subprocess.run(["ip", "netns", "exec", name] + argv, check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


# On d1, from "ready" (printed once the socket is bound) until 1 s after its stdin closes: the
# ARP opcodes of the gratuitous ARP frames for 192.0.2.50 (sender == target). The test closes
# stdin once the module has returned, so a slow module start cannot outlast the capture.
CAPTURE = """
import json, select, socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("d1", 0x0806))
print("ready", flush=True)
ops, end, limit = [], None, time.time() + 120
while time.time() < (end or limit):
    r = select.select([s] if end else [s, sys.stdin], [], [], 0.2)[0]
    if sys.stdin in r and not sys.stdin.readline():
        end = time.time() + 1.0
    if s in r:
        f = s.recv(100)
        op, spa, tpa = struct.unpack("!H", f[20:22])[0], f[28:32], f[38:42]
        if spa == tpa == socket.inet_aton("192.0.2.50"):
            ops.append(op)
print(json.dumps(ops))
"""


def addresses(ns):
    out = subprocess.run(["ip", "netns", "exec", ns, "ip", "-j", "-4", "addr", "show", "dev", "d0"],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    return [a["local"] for link in json.loads(out) for a in link["addr_info"]]


def test_service_address_present_absent_idempotent(run_module, netns):
    ns = ["ip", "netns", "exec", netns]
    args = {"address": ADDRESS, "interface": "d0"}
    check = run_module("service_address", args, check=True, prefix=ns)
    assert check.status == "ok" and check["changed"] and check["announced"] == 0
    assert "192.0.2.50" not in addresses(netns)

    # The peer end of the veth hears the announcement: gratuitous ARP for the address.
    capture = subprocess.Popen(ns + [sys.executable, "-c", CAPTURE], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert capture.stdout.readline() == "ready\n", "the ARP capture on d1 did not start"
        first = run_module("service_address", args, prefix=ns)
    finally:
        capture.stdin.close()
    assert first.status == "ok" and first["changed"], first.output
    assert first["announced"] == 4          # a request and a reply, twice
    capture.wait(timeout=30)
    heard = json.loads(capture.stdout.read())
    assert sorted(heard) == [1, 1, 2, 2], heard
    assert "192.0.2.50" in addresses(netns)
    again = run_module("service_address", args, prefix=ns)
    assert again.status == "ok" and not again["changed"]

    gone = dict(args, state="absent")
    assert run_module("service_address", gone, check=True, prefix=ns)["changed"]
    assert "192.0.2.50" in addresses(netns)
    assert run_module("service_address", gone, prefix=ns)["changed"]
    assert addresses(netns) == ["192.0.2.11"]
    assert not run_module("service_address", gone, prefix=ns)["changed"]


@pytest.mark.parametrize("args,words", [
    ({"address": "192.0.2.50", "interface": "d0"}, "prefix length"),
    ({"address": "2001:db8::5/64", "interface": "d0"}, "IPv6"),
    ({"address": "192.0.2.50/24", "interface": "nope0"}, "no interface nope0"),
])
def test_service_address_bad_input_changes_nothing(run_module, netns, args, words):
    res = run_module("service_address", args, prefix=["ip", "netns", "exec", netns])
    assert res.status == "failed" and words in res["msg"], res.get("msg")
    assert addresses(netns) == ["192.0.2.11"]


def test_inet_sockets_lists_a_listener_and_names_its_port_taken(run_module, netns, tmp_path):
    ns = ["ip", "netns", "exec", netns]
    code = ("import socket, sys, time\ns = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(1)\n"
            "open(sys.argv[1], 'w').write(str(s.getsockname()[1])); time.sleep(120)")
    portfile = tmp_path / "port"
    p = subprocess.Popen(ns + [sys.executable, "-c", code, str(portfile)])
    try:
        deadline = time.time() + 20
        while not (portfile.exists() and portfile.read_text()):
            assert time.time() < deadline and p.poll() is None, "the listener did not start"
            time.sleep(0.05)
        port = int(portfile.read_text())
        src = run_module("inet_sockets", {"pid": p.pid}, prefix=ns)
        assert src.status == "ok" and not src["changed"], src.output
        assert [(s["proto"], s["local_address"], s["local_port"], s["listening"]) for s in src["sockets"]] == \
            [("tcp", "0.0.0.0", port, True)]
        assert "192.0.2.11" in src["addresses"] and src["problems"] == []
        # The same sockets checked where that port is taken (here), with a service address.
        dst = run_module("inet_sockets", {"sockets": src["sockets"], "destination": "node2",
                                          "service_address": ADDRESS, "service_interface": "d0"}, prefix=ns)
        assert dst.status == "ok"
        assert len(dst["problems"]) == 1 and "port tcp/%d is already in use on node2" % port in dst["problems"][0]
        # Several trees in one run: each entry as a run of its own; one that is gone fails only itself.
        gone = subprocess.Popen(["true"])
        gone.wait()
        many = run_module("inet_sockets", {"pids": [p.pid, gone.pid]}, prefix=ns)
        assert many.status == "ok", many.output
        mine, other = many["per_pid"]
        assert (mine["item"], mine["sockets"], mine["problems"]) == (p.pid, src["sockets"], [])
        assert other["item"] == gone.pid and other["failed"] is True and other["msg"], other
        dsts = run_module("inet_sockets", {"sockets_per_pid": [mine], "destination": "node2"}, prefix=ns)
        assert dsts.status == "ok"
        assert [e["item"] for e in dsts["per_pid"]] == [p.pid]
        assert "port tcp/%d is already in use on node2" % port in dsts["per_pid"][0]["problems"][0]
        # The service address must be on the source.
        src2 = run_module("inet_sockets", {"pid": p.pid, "service_address": ADDRESS, "service_interface": "d0"},
                          prefix=ns)
        assert "192.0.2.50/24 is not on this host" in src2["problems"][0]
    finally:
        p.kill()
        p.wait()
