#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: tls_credentials
short_description: Make TLS credentials for one page-server transfer, without moving a private key
version_added: 0.1.0
description:
  - Makes the credentials that authenticate both ends of one M(ckpt.criu.page_server) transfer, in three
    steps, one task each. No private key leaves the host that made it; only a certificate request and
    two certificates (public) pass through the controller.
  - V(request), on the source, makes the client key in a fresh O(path) and returns its certificate
    request.
  - V(issue), on the destination, makes a CA for this transfer only, the page server's key and
    certificate, and the client certificate signed from O(csr), in a fresh O(path). Then the CA key is
    removed, so that no further certificate can ever be signed by that CA. It returns the CA certificate
    and the client certificate.
  - V(install), on the source, puts both certificates beside the client key.
  - Both certificates name the destination's address (O(san)), because criu checks each peer's
    certificate against its own C(--address); the extended key usage tells them apart.
  - O(path) is made 0700 after the trust rule of M(ckpt.criu.images_dir) (checked on its parent);
    every file is 0600. A directory or file of that name from an earlier attempt is removed first,
    never through a symlink.
  - Runs the C(openssl) command (EC P-256 keys, certificates valid for one day).
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.ONE_USE
options:
  path:
    description:
      - Absolute path of the directory that holds this transfer's credentials on this host.
    type: path
    required: true
  state:
    description:
      - V(request), V(issue) or V(install), as described above.
    type: str
    choices: [request, issue, install]
    required: true
  san:
    description:
      - The subjectAltName both certificates carry, such as V(IP:10.0.0.2) or V(DNS:node2) (the
        C(ckpt.criu.migrate_tls_san) filter makes it from an address). Required with V(request) and V(issue).
    type: str
  csr:
    description:
      - With V(issue), the certificate request RV(csr) of the V(request) step.
    type: str
  ca_cn:
    description:
      - With V(issue), the common name of the one-transfer CA (it shows in logs).
    type: str
    default: ckpt.criu migration CA
  ca:
    description:
      - With V(install), the CA certificate RV(ca) of the V(issue) step.
    type: str
  cert:
    description:
      - With V(install), the client certificate RV(cert) of the V(issue) step.
    type: str
notes:
  - Must run as root on the managed node.
seealso:
  - module: ckpt.criu.page_server
  - module: ckpt.criu.dump
"""

EXAMPLES = r"""
- name: Make the client key on the source
  ckpt.criu.tls_credentials:
    path: /var/lib/ckpt/migrate/.tls-pid-4242
    state: request
    san: IP:10.0.0.2
  register: request

- name: Make the CA, the page server's credentials and the client certificate on the destination
  ckpt.criu.tls_credentials:
    path: /var/lib/ckpt/migrate/.tls-pid-4242
    state: issue
    san: IP:10.0.0.2
    csr: "{{ request.csr }}"
  delegate_to: node2
  register: issued

- name: Put the certificates beside the client key on the source
  ckpt.criu.tls_credentials:
    path: /var/lib/ckpt/migrate/.tls-pid-4242
    state: install
    ca: "{{ issued.ca }}"
    cert: "{{ issued.cert }}"
"""

RETURN = r"""
path:
  description: The normalised directory.
  returned: always
  type: str
  sample: /var/lib/ckpt/migrate/.tls-pid-4242
csr:
  description: With V(request), the client's certificate request (PEM).
  returned: success and O(state=request), not in check mode
  type: str
ca:
  description: With V(issue), the one-transfer CA certificate (PEM).
  returned: success and O(state=issue), not in check mode
  type: str
cert:
  description: With V(issue), the client certificate (PEM).
  returned: success and O(state=issue), not in check mode
  type: str
files:
  description: The files now in O(path).
  returned: success, not in check mode
  type: list
  elements: str
  sample: [ca.pem, server.key, server.pem]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils import _safedir, _tls
from ansible_collections.ckpt.criu.plugins.module_utils._errors import fail


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["request", "issue", "install"], required=True),
            san=dict(type="str"),
            csr=dict(type="str"),
            ca_cn=dict(type="str", default="ckpt.criu migration CA"),
            ca=dict(type="str"),
            cert=dict(type="str"),
        ),
        required_if=[("state", "request", ["san"]), ("state", "issue", ["san"]),
                     ("state", "install", ["ca", "cert"])],
        supports_check_mode=True,
    )
    p = module.params
    path = _safedir.root_module_path(module, "tls_credentials")
    openssl = module.get_bin_path("openssl") or "openssl"
    result = {"changed": True, "path": path}
    try:
        if module.check_mode:
            _tls.check(path)
            module.exit_json(**result)
        if p["state"] == "request":
            result["csr"] = _tls.request(path, p["san"], openssl)
        elif p["state"] == "issue":
            if not p["csr"]:
                module.fail_json(msg="state=issue needs csr, the certificate request of the request step", path=path)
            result["ca"], result["cert"] = _tls.issue(path, p["san"], p["csr"], p["ca_cn"], openssl)
        else:
            _tls.install(path, p["ca"], p["cert"])
        result["files"] = sorted(os.listdir(path))
    except _tls.TlsError as exc:
        fail(module, _tls.TlsError("cannot make the TLS credentials in %s: %s" % (path, exc.msg), **exc.details),
             path=path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
