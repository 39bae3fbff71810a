"""ckpt.criu.criu_info through real `ansible` against the real criu on this host."""
from __future__ import annotations

import glob
import json
import subprocess

import pytest

from ckpt_testlib import wait

pytestmark = pytest.mark.criu

STABLE_KEYS = ("criu", "check", "features", "feature_details", "pre_dump_supported", "lazy_pages_supported",
               "uffd_supported", "inet_dump_supported", "root", "capabilities", "network_lock")


def _own_missing_caps():
    with open("/proc/self/status") as fh:
        mask = int([ln for ln in fh if ln.startswith("CapEff:")][0].split()[1], 16)
    return mask


def test_real_criu(run_module, criu_bin):
    res = run_module("criu_info", {"criu_path": criu_bin})
    assert res.status == "ok", res
    assert res["changed"] is False
    crit = res["criu"]
    assert crit["found"] is True and crit["path"] == criu_bin
    assert (crit["major"], crit["minor"]) >= (4, 2), "make setup provides CRIU >= 4.2, got %s" % crit["version"]
    assert crit["supported"] is True
    assert res["check"]["ok"] is True and res["check"]["rc"] == 0 and "Looks good" in res["check"]["output"]
    # This host: no soft-dirty tracking, userfaultfd available.
    assert res["features"]["mem_dirty_track"] is False
    assert "Dirty tracking is OFF" in res["feature_details"]["mem_dirty_track"]["output"]
    assert res["pre_dump_supported"] is False
    assert res["features"]["uffd"] is True and res["features"]["uffd-noncoop"] is True
    assert res["uffd_supported"] is True
    # CRIU 4.2.1 dumps a TCP listener on this kernel: the probe proves it.
    inet = res["probes"]["inet_dump"]
    assert inet["ran"] is True and inet["ok"] is True and inet["error"] is None, inet
    assert res["inet_dump_supported"] is True
    assert "TCP/UDP sockets can be dumped" in res["msg"]
    # The uffd checks pass, but a real lazy round trip fails here on the source.
    lazy = res["probes"]["lazy_pages"]
    assert lazy["ran"] is True and lazy["ok"] is False, lazy
    assert "page-pipe: tee" in lazy["error"] and "Operation not permitted" in lazy["error"], lazy
    assert any("Lazy pages transfer FAILED" in line for line in lazy["log_errors"]), lazy
    assert res["lazy_pages_supported"] is False
    assert "lazy pages NOT supported (" in res["msg"]
    assert res["features"]["pidfd_store"] is True
    assert res["root"] is True
    assert "pre-dump not supported" in res["msg"]
    # Capabilities: whatever this machine lacks is named (CAP_SYS_RESOURCE here).
    mask = _own_missing_caps()
    assert res["capabilities"]["effective"].lstrip("0") == ("%x" % mask)
    if not mask >> 24 & 1:
        assert "CAP_SYS_RESOURCE" in res["capabilities"]["missing"]
    assert "CAP_SYS_ADMIN" not in res["capabilities"]["missing"]
    nl = res["network_lock"]
    assert nl["nftables"] is res["features"]["network_lock_nftables"]
    assert nl["available"][-1] == "skip"


def test_check_mode_identical(run_module, criu_bin):
    args = {"criu_path": criu_bin, "features": ["mem_dirty_track", "timens"]}
    normal = run_module("criu_info", args)
    check = run_module("criu_info", args, check=True)
    assert normal.status == check.status == "ok"
    assert normal["changed"] is False and check["changed"] is False
    for key in STABLE_KEYS:
        assert json.dumps(normal[key], sort_keys=True) == json.dumps(check[key], sort_keys=True), key


def _probe_leftovers():
    """Probe temp dirs and throwaway processes left on this host."""
    dirs = set(glob.glob("/tmp/ckpt-probe-*"))
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    procs = set(line.split()[0] for line in ps.splitlines()
                if "s.bind(('127.0.0.1', 0))" in line or "b = bytearray(4 << 20)" in line)
    return dirs, procs


def test_probes_leave_nothing_behind(run_module, criu_bin):
    before = _probe_leftovers()
    res = run_module("criu_info", {"criu_path": criu_bin, "features": [], "check": False})
    assert res.status == "ok", res
    assert res["probes"]["inet_dump"]["ran"] and res["probes"]["lazy_pages"]["ran"]
    # Machine-wide: a probe of another criu_info run (a fleet host shares /tmp) may be under way
    # meanwhile. Its directory and process go within its 30 s bound; a leftover of this run stays.
    wait(lambda: all(now <= then for now, then in zip(_probe_leftovers(), before)), timeout=45, step=0.5)
    after = _probe_leftovers()
    assert after[0] <= before[0], "probe directories left: %s" % (after[0] - before[0])
    assert after[1] <= before[1], "probe processes left: %s" % (after[1] - before[1])


def test_probes_can_be_skipped_and_then_prove_nothing(run_module, criu_bin):
    res = run_module("criu_info", {"criu_path": criu_bin, "features": [], "probes": []})
    assert res.status == "ok", res
    for name in ("inet_dump", "lazy_pages"):
        assert res["probes"][name]["ran"] is False
        assert res["probes"][name]["error"] == "not requested (probes)"
    assert res["inet_dump_supported"] is False and res["lazy_pages_supported"] is False
    assert "dumping TCP/UDP sockets not probed" in res["msg"]
    only = run_module("criu_info", {"criu_path": criu_bin, "features": [], "probes": ["inet_dump"]})
    assert only["inet_dump_supported"] is True and only["probes"]["lazy_pages"]["ran"] is False


def test_a_bad_probe_name_is_refused(run_module, criu_bin):
    res = run_module("criu_info", {"criu_path": criu_bin, "probes": ["tcp"]})
    assert res.status == "failed"
    assert "probes" in res["msg"] and "inet_dump" in res["msg"]


def test_unknown_feature_and_no_check(run_module, criu_bin):
    res = run_module("criu_info", {"criu_path": criu_bin, "check": False, "features": ["lazy_pages", "timens"]})
    assert res.status == "ok", res
    assert res["check"]["skipped"] is True and res["check"]["rc"] is None
    assert res["features"]["lazy_pages"] is False
    assert res["feature_details"]["lazy_pages"]["known"] is False
    assert "Unknown feature" in res["feature_details"]["lazy_pages"]["output"]
    assert res["features"]["timens"] is True
    # Always probed, because the derived facts need them.
    assert set(res["features"]) >= {"mem_dirty_track", "uffd", "uffd-noncoop", "network_lock_nftables"}


def test_missing_criu_is_reported_not_failed(run_module, tmp_path):
    for check in (False, True):
        res = run_module("criu_info", {"criu_path": str(tmp_path / "no-criu")}, check=check)
        assert res.status == "ok", res
        assert res["changed"] is False
        assert res["criu"]["found"] is False and res["criu"]["path"] is None
        assert "does not exist" in res["criu"]["msg"] and res["msg"] == res["criu"]["msg"]
        assert res["check"]["ok"] is False and res["check"]["skipped"] is True
        assert res["features"] == {} and res["pre_dump_supported"] is False


def test_missing_criu_with_required_fails_with_what_to_do(run_module, tmp_path):
    res = run_module("criu_info", {"criu_path": str(tmp_path / "no-criu"), "required": True})
    assert res.status == "failed", res
    assert "Traceback" not in (res.output or "")
    assert res["msg"].startswith("criu_path %s does not exist" % (tmp_path / "no-criu"))
    assert "run scripts/install-criu.sh or install criu >= 4.2" in res["msg"]
    assert res["criu"]["found"] is False


def test_not_criu_with_required_fails(run_module, tmp_path):
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\necho 'I am not criu'\nexit 3\n")
    fake.chmod(0o755)
    soft = run_module("criu_info", {"criu_path": str(fake)})
    assert soft.status == "ok" and soft["criu"]["found"] is False
    assert "does not run as criu" in soft["criu"]["msg"]
    hard = run_module("criu_info", {"criu_path": str(fake), "required": True})
    assert hard.status == "failed"
    assert "does not run as criu" in hard["msg"] and "install-criu.sh" in hard["msg"]


def test_required_passes_on_this_host(run_module, criu_bin):
    res = run_module("criu_info", {"criu_path": criu_bin, "required": True, "features": ["pidfd_store"]})
    assert res.status == "ok", res
    assert res["features"]["pidfd_store"] is True
