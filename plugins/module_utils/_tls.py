# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""TLS credentials made for one page-server transfer, with the openssl command.

Three steps, each one task, and no private key ever leaves the host that
made it:

1. ``request`` on the source: a fresh root-only directory, the client key in
   it, and a certificate request (public) for the caller to carry over.
2. ``issue`` on the destination: a fresh root-only directory, a CA that
   lives for this one transfer, the page server's key and certificate, and
   the client certificate signed from that request; then the CA key is
   removed, so that no other certificate can ever be signed by that CA.
   Returns the CA certificate and the client certificate (both public).
3. ``install`` on the source: both certificates beside the client key.

criu (criu/tls.c) checks the peer's certificate against its own --address on
both sides unless --tls-no-cn-verify: both certificates name the
destination's address (``san``); the extended key usage tells them apart.
Every file is 0600 in a 0700 directory that passes the trust rule
(:mod:`_safedir`); an earlier directory of the same name is removed first,
without following symlinks.
"""

from __future__ import annotations

import os
import subprocess

from ansible_collections.ckpt.criu.plugins.module_utils import _safedir
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

CLIENT_KEY = "client.key"
CLIENT_CSR = "client.csr"
CLIENT_CERT = "client.pem"
SERVER_KEY = "server.key"
SERVER_CERT = "server.pem"
CA_KEY = "ca.key"
CA_CERT = "ca.pem"
DAYS = "1"


class TlsError(CkptError):
    """Credentials that could not be made; the openssl command and its output go with it."""


def _openssl(argv, cwd, openssl="openssl"):
    """Run openssl in cwd; what it writes is private from the start (umask 077)."""
    old = os.umask(0o077)
    try:
        return _run_openssl(argv, cwd, openssl)
    finally:
        os.umask(old)


def _run_openssl(argv, cwd, openssl):
    try:
        p = subprocess.run([openssl] + argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, check=False, timeout=60)
    except OSError as exc:
        raise TlsError("cannot run openssl (%s); install it (Debian: apt install openssl)" % exc)
    except subprocess.TimeoutExpired:
        raise TlsError("openssl %s did not finish within 60 s" % argv[0], cmd=[openssl] + argv)
    if p.returncode != 0:
        lines = (p.stderr or p.stdout or "").strip().splitlines()
        raise TlsError("openssl %s failed (rc=%d): %s" % (argv[0], p.returncode, lines[-1] if lines else "no output"),
                       rc=p.returncode, stderr=p.stderr, cmd=[openssl] + argv)
    return p.stdout


def fresh_dir(path):
    """PATH made again, empty and 0700, after the trust rule; the held directory."""
    try:
        return _safedir.fresh_dir(path)
    except _safedir.UntrustedDirError as exc:
        raise TlsError(exc.msg)
    except OSError as exc:
        raise TlsError("cannot make %s: %s" % (path, exc.strerror or exc))


def check(path):
    """The trust rule for PATH's parent (check mode): TlsError on a broken rule."""
    try:
        _safedir.check(os.path.dirname(os.path.normpath(path)))
    except _safedir.UntrustedDirError as exc:
        raise TlsError(exc.msg)


def _private(held):
    """Every file in the held directory 0600 (opened without following a symlink)."""
    for name in os.listdir(held.fd):
        fd = held.open(name, os.O_RDONLY)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)


def _genkey(name, cwd, openssl):
    _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name], cwd, openssl)


def _extensions(san, eku):
    return ["-addext", "subjectAltName=%s" % san, "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "extendedKeyUsage=%s" % eku]


def request(path, san, openssl="openssl"):
    """Step 1: the client key in a fresh PATH; returns the certificate request (PEM)."""
    with fresh_dir(path) as held:
        _genkey(CLIENT_KEY, held.path, openssl)
        _openssl(["req", "-new", "-key", CLIENT_KEY, "-subj", "/CN=%s" % san.split(":", 1)[-1],
                  "-out", CLIENT_CSR], held.path, openssl)
        csr = held.read_text(CLIENT_CSR)
        os.unlink(CLIENT_CSR, dir_fd=held.fd)
        _private(held)
    return csr


def issue(path, san, csr, ca_cn, openssl="openssl"):
    """Step 2: a one-transfer CA, the page server's credentials and the client
    certificate from ``csr``, in a fresh PATH; the CA key removed. Returns
    (CA certificate, client certificate), both PEM."""
    if "-----BEGIN CERTIFICATE REQUEST-----" not in (csr or ""):
        raise TlsError("the client's certificate request is not a PEM certificate request")
    with fresh_dir(path) as held:
        cwd = held.path
        _genkey(CA_KEY, cwd, openssl)
        _openssl(["req", "-x509", "-new", "-key", CA_KEY, "-days", DAYS, "-subj", "/CN=%s" % ca_cn,
                  "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
                  "-addext", "keyUsage=critical,keyCertSign", "-out", CA_CERT], cwd, openssl)
        _genkey(SERVER_KEY, cwd, openssl)
        _openssl(["req", "-x509", "-new", "-key", SERVER_KEY, "-CA", CA_CERT, "-CAkey", CA_KEY, "-days", DAYS,
                  "-subj", "/CN=%s" % san.split(":", 1)[-1]] + _extensions(san, "serverAuth")
                 + ["-out", SERVER_CERT], cwd, openssl)
        held.write_new(CLIENT_CSR, csr)
        # The request's own extensions are dropped (x509 -req copies none): the CA decides them.
        held.write_new("client.ext", "subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\n"
                       "extendedKeyUsage=clientAuth\n" % san)
        _openssl(["x509", "-req", "-in", CLIENT_CSR, "-CA", CA_CERT, "-CAkey", CA_KEY, "-CAcreateserial",
                  "-days", DAYS, "-extfile", "client.ext", "-out", CLIENT_CERT], cwd, openssl)
        for name in (CA_KEY, CLIENT_CSR, "client.ext", "ca.srl"):
            try:
                os.unlink(name, dir_fd=held.fd)
            except FileNotFoundError:
                pass
        client = held.read_text(CLIENT_CERT)
        os.unlink(CLIENT_CERT, dir_fd=held.fd)
        _private(held)
        return held.read_text(CA_CERT), client


def install(path, ca, cert):
    """Step 3: the CA certificate and the client certificate beside the client key in PATH."""
    for what, pem in (("ca", ca), ("cert", cert)):
        if "-----BEGIN CERTIFICATE-----" not in (pem or ""):
            raise TlsError("%s is not a PEM certificate" % what)
    try:
        with _safedir.hold(path) as held:
            try:
                os.lstat(CLIENT_KEY, dir_fd=held.fd)
            except FileNotFoundError:
                raise TlsError("%s has no %s: request the credentials (state=request) in it first"
                               % (path, CLIENT_KEY))
            for name, pem in ((CA_CERT, ca), (CLIENT_CERT, cert)):
                try:
                    os.unlink(name, dir_fd=held.fd)
                except FileNotFoundError:
                    pass
                held.write_new(name, pem)
    except _safedir.UntrustedDirError as exc:
        raise TlsError(exc.msg)
    except FileNotFoundError:
        raise TlsError("%s does not exist: request the credentials (state=request) first" % path)
