"""ckpt.criu.host_checks: several of the read-only checks of one host in one
module run, each validated and answered as its own module would."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ckpt_testlib import kill_and_wait

LISTENER = ("import os, socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); "
            "print('listening', flush=True); os.close(1); os.open(os.devnull, os.O_WRONLY); time.sleep(600)")

# What differs between two runs of the same check: the checksum cache's
# counters and timings (the second run hits the cache).
VOLATILE = ("cache",)


def _stable(result):
    return dict((k, v) for k, v in result.items()
                if k not in VOLATILE + ("changed", "invocation", "warnings", "deprecations", "_ansible_no_log"))


def _differ(x, y, path=""):
    """Where two results differ, as (path, left, right)."""
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            yield from _differ(x.get(k, "<missing>"), y.get(k, "<missing>"), "%s/%s" % (path, k))
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y)):
            yield from _differ(u, v, "%s[%d]" % (path, i))
    elif x != y:
        yield (path, x, y)


@pytest.fixture
def workload():
    """A process whose files do not change while it is inspected: a TCP listener on loopback that sleeps."""
    proc = subprocess.Popen([sys.executable, "-c", LISTENER], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True, text=True)
    assert proc.stdout.readline().strip() == "listening"
    proc.stdout.close()
    yield proc.pid
    kill_and_wait(proc.pid)


def test_each_check_answers_as_its_own_module_in_one_run(run_module, workload):
    options = {
        "criu": {"features": [], "probes": []},
        "reads": {"commands": [["ps", "-o", "pid=,stat=", "-p", str(workload)], None]},
        "fds": {"pids": [workload, 999999999]},
        "checksums": {"pids": [workload]},
        "sockets": {"pids": [workload]},
    }
    r = run_module("host_checks", options)
    assert r.status == "ok" and not r["changed"], r
    assert r["failed_jobs"] == [] and r["msg"] == "ran 5 checks", r
    alone = {"criu": "criu_info", "reads": "read_commands", "fds": "fd_inspect",
             "checksums": "binary_checksum", "sockets": "inet_sockets"}
    for option, module in alone.items():
        own = run_module(module, options[option])
        assert own.status == "ok", own
        assert _stable(r[option]) == _stable(own), (option, list(_differ(_stable(r[option]), _stable(own))))
    # A PID that does not run fails its own entry only.
    entries = dict((e["item"], e) for e in r["fds"]["per_pid"])
    assert entries[999999999]["failed"] and "no process with PID 999999999" in entries[999999999]["msg"]
    assert entries[workload]["process"]["pid"] == workload and not entries[workload].get("failed")
    assert r["reads"]["reads"][1]["skipped"] and r["reads"]["reads"][0]["stdout"].split()[0] == str(workload)
    assert r["checksums"]["per_pid"][0]["exe"]["sha256"], r["checksums"]
    assert [s["local_port"] > 0 for s in r["sockets"]["per_pid"][0]["sockets"]] == [True], r["sockets"]


def test_a_check_that_fails_is_named_and_the_others_still_run(run_module, workload):
    r = run_module("host_checks", {
        "reads": {"commands": [["true"], ["/nonexistent/prog"]]},
        "fds": {"pids": [workload], "no_such_option": 1},
        "checksums": {"pid": workload, "pids": [workload]},
        "sockets": {"pids": "not-a-pid"},
        "criu": {"features": [], "probes": ["no_such_probe"]},
    })
    # The module itself does not fail: the caller says which checks must not (failed_when).
    assert r.status == "ok", r
    assert r["failed_jobs"] == ["criu", "reads", "fds", "checksums", "sockets"], r
    assert r["reads"]["failed"] and "cannot run /nonexistent/prog" in r["reads"]["msg"], r["reads"]
    assert len(r["reads"]["reads"]) == 1 and r["reads"]["reads"][0]["rc"] == 0, r["reads"]
    assert "not valid options of ckpt.criu.fd_inspect" in r["fds"]["msg"] and "no_such_option" in r["fds"]["msg"]
    assert "mutually exclusive" in r["checksums"]["msg"] and "pid" in r["checksums"]["msg"], r["checksums"]
    assert "not valid options of ckpt.criu.inet_sockets" in r["sockets"]["msg"], r["sockets"]
    assert "; sockets: not valid options of ckpt.criu.inet_sockets" in r["msg"], r["msg"]
    assert "no_such_probe" in r["criu"]["msg"], r["criu"]
    assert r["msg"].startswith("criu: ") and "; reads: cannot run /nonexistent/prog" in r["msg"], r["msg"]

    r = run_module("host_checks", {"reads": {"commands": [["true"]]}}, check=True)
    assert r.status == "ok" and r["failed_jobs"] == [] and r["msg"] == "ran 1 check", r
    assert set(r) >= {"reads"} and not set(r) & {"criu", "fds", "checksums", "sockets"}, r


def test_a_check_that_its_module_fails_fails_inside_the_run(run_module, workload):
    # fd_inspect with assert_stdio refuses a process whose stdio it would not keep; binary_checksum
    # fails on a mismatch. Inside host_checks each is that check's failure, with the module's words.
    own = run_module("binary_checksum", {"paths": [sys.executable], "expected": [
        {"path": sys.executable, "sha256": "0" * 64, "size": 1}]})
    assert own.failed, own
    r = run_module("host_checks", {"checksums": {"paths": [sys.executable], "expected": [
        {"path": sys.executable, "sha256": "0" * 64, "size": 1}]}})
    assert r["failed_jobs"] == ["checksums"] and r["checksums"]["failed"], r
    assert r["checksums"]["msg"] == own["msg"] and r["checksums"]["mismatches"] == own["mismatches"], (r, own)
