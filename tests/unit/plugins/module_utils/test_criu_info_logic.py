"""Pure-logic tests of _criu_info: capabilities, derived facts, probe results and the summary.
The probes themselves run against real criu in tests/system/test_criu_info.py."""
from __future__ import annotations

import time

from ansible_collections.ckpt.criu.plugins.module_utils import _criu_info

TEE = "(00.196549) Error (criu/page-pipe.c:418): page-pipe: tee: 65536: Operation not permitted"
RLIMIT = "(00.000500) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted"


def _status(tmp_path, mask):
    p = tmp_path / "status"
    p.write_text("Name:\tx\nCapEff:\t%s\n" % mask)
    return str(p)


def test_capabilities_names_what_is_missing(tmp_path):
    full = (1 << 41) - 1
    without_resource = full & ~(1 << 24)
    caps = _criu_info.capabilities(_status(tmp_path, "%016x" % without_resource))
    assert caps["missing"] == ["CAP_SYS_RESOURCE"]
    assert "another uid" in caps["notes"][0] and "www-data" in caps["notes"][0]
    assert _criu_info.has_capability("CAP_SYS_RESOURCE", _status(tmp_path, "%016x" % without_resource)) is False
    assert _criu_info.has_capability("CAP_SYS_RESOURCE", _status(tmp_path, "%016x" % full)) is True
    assert _criu_info.has_capability("CAP_SYS_RESOURCE", str(tmp_path / "none")) is None


def test_sys_admin_covers_checkpoint_restore(tmp_path):
    mask = ((1 << 40) - 1)  # everything but CAP_CHECKPOINT_RESTORE (bit 40)
    caps = _criu_info.capabilities(_status(tmp_path, "%016x" % mask))
    assert "CAP_CHECKPOINT_RESTORE" not in caps["missing"]


def test_feature_names_adds_the_always_probed_once():
    assert _criu_info.feature_names(["timens", "uffd"]) == [
        "timens", "uffd", "mem_dirty_track", "uffd-noncoop", "network_lock_nftables"]
    assert _criu_info.feature_names(None)[:1] == ["mem_dirty_track"]


def test_log_cause_skips_noise_and_strips_the_prefix():
    cause, errors = _criu_info.log_cause([RLIMIT + "\n(00.1) Debug\n" + TEE + "\n", ""])
    assert cause == "page-pipe: tee: 65536: Operation not permitted"
    assert errors == [TEE]
    assert _criu_info.log_cause([RLIMIT]) == (None, [])


def test_probe_result_names_the_log_cause_when_it_failed():
    r = _criu_info.probe_result(False, time.monotonic(), "criu dump exited 1", [TEE])
    assert r["ran"] and not r["ok"]
    assert r["error"] == "criu dump exited 1: page-pipe: tee: 65536: Operation not permitted"
    assert r["log_errors"] == [TEE]
    ok = _criu_info.probe_result(True, time.monotonic(), "criu dump exited 0", [TEE])
    assert ok["ok"] and ok["error"] is None and ok["log_errors"] == []
    # A sentence of our own is kept as it is; no log at all still gives a cause.
    own = _criu_info.probe_result(False, time.monotonic(), "could not create a PID namespace", [TEE])
    assert own["error"] == "could not create a PID namespace"
    assert _criu_info.probe_result(False, time.monotonic())["error"] == "the probe failed"


def _result(features, inet, lazy):
    r = _criu_info.empty_result()
    r["criu"].update(found=True, path="/opt/ckpt-criu/bin/criu", version="4.2.1")
    r["check"] = {"ok": True, "rc": 0, "output": "Looks good.", "skipped": False}
    r["features"] = features
    r["probes"] = {"inet_dump": inet, "lazy_pages": lazy}
    r["network_lock"]["iptables"] = False
    return _criu_info.derive(r)


def _ok():
    return {"ran": True, "ok": True, "error": None, "log_errors": [], "duration": 0.1}


def _failed(error):
    return {"ran": True, "ok": False, "error": error, "log_errors": [], "duration": 0.2}


def test_uffd_checks_alone_do_not_make_lazy_pages_supported():
    feats = {"uffd": True, "uffd-noncoop": True, "mem_dirty_track": False, "network_lock_nftables": True}
    r = _result(feats, _ok(), _failed("criu dump exited 1: page-pipe: tee: 65536: Operation not permitted"))
    assert r["uffd_supported"] is True
    assert r["lazy_pages_supported"] is False
    assert r["inet_dump_supported"] is True
    assert r["network_lock"]["available"] == ["nftables", "skip"]
    assert r["network_lock"]["recommended"] == "nftables"
    msg = _criu_info.summary(r, True)
    assert "TCP/UDP sockets can be dumped" in msg
    assert "lazy pages NOT supported (criu dump exited 1: page-pipe: tee" in msg
    assert "pre-dump not supported" in msg


def test_a_passing_round_trip_needs_the_uffd_checks_too():
    r = _result({"uffd": True, "uffd-noncoop": True}, _ok(), _ok())
    assert r["lazy_pages_supported"] is True
    assert "lazy pages supported (round trip passed)" in _criu_info.summary(r, True)
    r = _result({"uffd": False, "uffd-noncoop": True}, _ok(), _ok())
    assert r["lazy_pages_supported"] is False


def test_not_probed_is_not_supported_and_says_so():
    r = _result({}, _criu_info.not_run("not requested (probes)"), _criu_info.not_run("not requested (probes)"))
    assert r["inet_dump_supported"] is False and r["lazy_pages_supported"] is False
    assert "dumping TCP/UDP sockets not probed (not requested (probes))" in _criu_info.summary(r, False)
    assert "criu check" not in _criu_info.summary(r, False)


def test_old_criu_on_new_kernel_is_reported_by_the_probe():
    r = _result({}, _failed("criu dump exited 1: Can't get 1:16 opt: Operation not supported"), _ok())
    assert r["inet_dump_supported"] is False
    assert "dumping TCP/UDP sockets NOT supported (criu dump exited 1: Can't get 1:16 opt" in _criu_info.summary(r, True)


def test_run_probes_explains_every_probe_it_skips():
    out = _criu_info.run_probes("/nonexistent/criu", [], {}, True, True)
    assert out["inet_dump"]["error"] == out["lazy_pages"]["error"] == "not requested (probes)"
    out = _criu_info.run_probes("/nonexistent/criu", _criu_info.PROBES, {}, False, True)
    assert "need root" in out["inet_dump"]["error"]
    out = _criu_info.run_probes("/nonexistent/criu", _criu_info.PROBES, {}, True, False)
    assert "criu check" in out["lazy_pages"]["error"]
    out = _criu_info.run_probes("/nonexistent/criu", ["lazy_pages"], {"uffd": True}, True, True)
    assert "userfaultfd" in out["lazy_pages"]["error"] and not out["lazy_pages"]["ran"]
