"""The preflight role provides CRIU on a managed node (ckpt_preflight_install_criu),
into a private prefix under that host's own /srv, from .deb files (the fleet's
hosts reach no mirror), idempotently; criu_info then inspects that criu."""
from __future__ import annotations

import glob
import os
import shutil

import pytest

from fleet_testlib import write_inventory

pytestmark = [pytest.mark.fleet, pytest.mark.criu]

MACHINE_CRIU_DEBS = "/opt/ckpt-criu/apt/debs"


def _stat(path):
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def test_preflight_provides_criu_in_a_private_prefix(fleet, clean_hosts, workload, playbook, tmp_path):
    debs = sorted(glob.glob(os.path.join(MACHINE_CRIU_DEBS, "*.deb")))
    assert debs, ("%s holds no .deb file: run `make setup` (scripts/install-criu.sh keeps the packages of the "
                  "criu it unpacked there)" % MACHINE_CRIU_DEBS)
    local = tmp_path / "debs"          # a copy: the machine's prefix is only read
    local.mkdir()
    for d in debs:
        shutil.copy2(d, local)
    machine = {p: _stat(p) for p in ("/opt/ckpt-criu/bin/criu", "/opt/ckpt-criu/root")}
    w = workload("node3")
    inv = write_inventory(fleet, tmp_path / "inv.ini", {}, others=["node3"])
    ev = {"ckpt_hosts": "node3", "ckpt_preflight_pids": str(w.pid), "ckpt_preflight_install_criu": "true",
          "ckpt_preflight_criu_prefix": "/srv/ckpt-criu", "ckpt_preflight_criu_debs": str(local)}

    check = playbook("preflight.yml", inv, ev, check=True)
    assert check.rc == 0, check.output[-4000:]
    assert "a criu would be installed in /srv/ckpt-criu" in check.output
    assert not os.path.exists(fleet.host_path("node3", "/srv/ckpt-criu/bin/criu"))

    first = playbook("preflight.yml", inv, ev)
    assert first.rc == 0, first.output[-4000:]
    assert first.changed("node3") >= 2          # the installer copied, criu unpacked
    assert "criu at /srv/ckpt-criu/bin/criu (installed now)" in first.output
    assert os.access(fleet.host_path("node3", "/srv/ckpt-criu/bin/criu"), os.X_OK)
    assert os.path.isdir(fleet.host_path("node3", "/srv/ckpt-criu/root/usr/sbin"))
    assert not os.path.exists(fleet.host_path("node2", "/srv/ckpt-criu"))     # only node3's /srv
    assert first.rows(host="node3")[0]["result"] == "ready"

    again = playbook("preflight.yml", inv, ev)
    assert again.rc == 0, again.output[-4000:]
    assert again.changed("node3") == 0
    assert "criu at /srv/ckpt-criu/bin/criu (already there)" in again.output
    assert {p: _stat(p) for p in machine} == machine, "the machine's /opt/ckpt-criu changed"
