"""ckpt.criu.tls_credentials against the real openssl: the three steps make a
chain that openssl verifies, with the right names and usages; every file is
root-only; bad input and an untrusted directory change nothing."""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

SAN = "IP:10.9.8.7"


def _modes(d):
    return {n: stat.S_IMODE(os.lstat(d / n).st_mode) for n in os.listdir(d)}


def _openssl(*argv):
    return subprocess.run(["openssl"] + list(argv), check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True).stdout


def _three_steps(run_module, src, dst):
    req = run_module("tls_credentials", {"path": str(src), "state": "request", "san": SAN})
    assert req.status == "ok" and req["changed"], req
    assert "BEGIN CERTIFICATE REQUEST" in req["csr"] and req["files"] == ["client.key"]
    issued = run_module("tls_credentials", {"path": str(dst), "state": "issue", "san": SAN, "csr": req["csr"],
                                            "ca_cn": "test CA"})
    assert issued.status == "ok", issued
    inst = run_module("tls_credentials", {"path": str(src), "state": "install", "ca": issued["ca"],
                                          "cert": issued["cert"]})
    assert inst.status == "ok", inst
    return req, issued, inst


def test_three_steps_make_a_one_transfer_chain_without_moving_a_key(tmp_path, run_module):
    src, dst = tmp_path / "src" / ".tls-pid-1", tmp_path / "dst" / ".tls-pid-1"
    req, issued, inst = _three_steps(run_module, src, dst)
    # The destination keeps what the page server needs and no CA key; the source, the client's three.
    assert sorted(os.listdir(dst)) == ["ca.pem", "server.key", "server.pem"]
    assert sorted(os.listdir(src)) == inst["files"] == ["ca.pem", "client.key", "client.pem"]
    for d in (src, dst):
        assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700
        assert set(_modes(d).values()) == {0o600}, _modes(d)
    for result in (req, issued, inst):
        assert "PRIVATE KEY" not in str(dict(result))
    ca = str(dst / "ca.pem")
    assert (src / "ca.pem").read_text() == (dst / "ca.pem").read_text()
    for cert, usage in ((dst / "server.pem", "TLS Web Server Authentication"),
                        (src / "client.pem", "TLS Web Client Authentication")):
        assert ": OK" in _openssl("verify", "-CAfile", ca, str(cert))
        text = _openssl("x509", "-in", str(cert), "-noout", "-text")
        assert "IP Address:10.9.8.7" in text and usage in text and "CA:FALSE" in text, text
    # The client certificate is for the source's own key.
    assert _openssl("x509", "-in", str(src / "client.pem"), "-noout", "-pubkey") == \
        _openssl("pkey", "-in", str(src / "client.key"), "-pubout")
    # A second run makes new credentials: one CA per transfer.
    _three_steps(run_module, src, dst)
    assert (dst / "ca.pem").read_text() != issued["ca"]


def test_check_mode_makes_nothing(tmp_path, run_module):
    r = run_module("tls_credentials", {"path": str(tmp_path / "src" / ".tls"), "state": "request", "san": SAN},
                   check=True)
    assert r.status == "ok" and r["changed"] and "csr" not in r, r
    assert not (tmp_path / "src").exists()


def test_bad_input_changes_nothing(tmp_path, run_module):
    src, dst = tmp_path / "src" / ".tls", tmp_path / "dst" / ".tls"
    r = run_module("tls_credentials", {"path": str(dst), "state": "issue", "san": SAN, "csr": "not a request"})
    assert r.failed and "is not a PEM certificate request" in r["msg"], r
    assert not dst.exists()
    r = run_module("tls_credentials", {"path": str(src), "state": "install", "ca": "x", "cert": "y"})
    assert r.failed and "ca is not a PEM certificate" in r["msg"], r
    req = run_module("tls_credentials", {"path": str(src), "state": "request", "san": SAN})
    r = run_module("tls_credentials", {"path": str(tmp_path / "nowhere"), "state": "install",
                                       "ca": "-----BEGIN CERTIFICATE-----", "cert": "-----BEGIN CERTIFICATE-----"})
    assert r.failed and "does not exist" in r["msg"], r
    assert req["files"] == ["client.key"]


@pytest.fixture
def open_dir():
    """A root-owned 0755 directory under /var/tmp that an unprivileged user can reach."""
    d = tempfile.mkdtemp(prefix="ckpt-tls-test-", dir="/var/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _as_nobody(*argv):
    nobody = pwd.getpwnam("nobody")
    return subprocess.run(["setpriv", "--reuid", str(nobody.pw_uid), "--regid", str(nobody.pw_gid),
                           "--clear-groups"] + list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, check=False)


def test_a_link_planted_by_another_user_in_a_shared_directory_is_refused(open_dir, run_module):
    shared = open_dir / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    victim = open_dir / "victim"
    victim.mkdir(mode=0o755)
    assert _as_nobody("ln", "-s", str(victim), str(shared / ".tls")).returncode == 0
    r = run_module("tls_credentials", {"path": str(shared / ".tls"), "state": "request", "san": SAN})
    assert r.failed and "writable" in r["msg"], r
    assert os.listdir(shared) == [".tls"] and os.path.islink(shared / ".tls") and os.listdir(victim) == []


def test_an_earlier_link_is_removed_not_followed_and_nobody_reads_the_key(open_dir, run_module):
    parent = open_dir / "root-only"
    parent.mkdir(mode=0o755)
    victim = open_dir / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    os.symlink(str(victim), str(parent / ".tls"))
    r = run_module("tls_credentials", {"path": str(parent / ".tls"), "state": "request", "san": SAN})
    assert r.status == "ok", r
    assert os.listdir(victim) == ["keep"] and not os.path.islink(parent / ".tls")
    p = _as_nobody("cat", str(parent / ".tls" / "client.key"))
    assert p.returncode != 0 and "Permission denied" in p.stderr and not p.stdout


@pytest.mark.parametrize("missing", ["san", "csr"])
def test_issue_names_what_is_missing(tmp_path, run_module, missing):
    args = {"path": str(tmp_path / "d"), "state": "issue", "san": SAN, "csr": ""}
    if missing == "san":
        del args["san"]
    r = run_module("tls_credentials", args)
    assert r.failed and missing in r["msg"], r
    assert not (tmp_path / "d").exists()
