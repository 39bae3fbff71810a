#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: page_server
short_description: Start or stop a CRIU page server that receives a dump's memory pages
version_added: 0.1.0
description:
  - Starts C(criu page-server) on the destination host before the source is frozen, so that
    M(ckpt.criu.dump) with its O(ckpt.criu.dump#module:page_server) option sends the memory pages
    straight into O(images_dir) here. The restore then needs the pages and the rest of the images
    (copied from the source) in that one directory.
  - The page server runs as a daemon (C(criu page-server -d)) with its stdio on C(/dev/null), so
    the task returns at once and never waits on it. It exits by itself after one dump session.
  - The module records the daemon in C(.ckpt-page-server.json) in O(images_dir) (PID, start time,
    boot id, address, port). O(state=stopped) stops the page server that record names, and only
    when the process with that PID is still that page server.
  - O(images_dir) is created with mode 0700; criu runs under umask 077, so the pages are 0600.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.ACTION
  - ckpt.criu.criu
attributes:
  check_mode:
    details:
      - Predicts RV(ignore:changed) and starts or stops nothing.
  idempotent:
    details:
      - A page server of O(images_dir) that still runs on the same address (and port, when one is
        given) is left alone. Once it has received a dump it has exited, and the directory holds the
        pages; starting again then needs an empty directory or O(force=true).
options:
  images_dir:
    description:
      - Directory the received pages are written to. Created with mode 0700 when missing.
      - The same rules as for M(ckpt.criu.dump) apply (absolute, owned by root, no symlink, not a
        system directory).
    type: path
    required: true
  state:
    description:
      - V(started) makes sure a page server of O(images_dir) is listening; V(stopped) stops it.
    type: str
    choices: [started, stopped]
    default: started
  address:
    description:
      - Address to listen on, the destination's own address on the network the source uses.
        Required with O(state=started); there is no default, so a page server never listens on
        every address of the host unless asked (V(0.0.0.0) does that, and lets anyone who reaches
        the host connect first).
    type: str
  port:
    description:
      - TCP port to listen on. V(0) picks a free port (criu itself refuses port 0); RV(port) returns it.
    type: int
    default: 0
  tls:
    description: Require TLS (C(--tls)); implied by any of the TLS files.
    type: bool
    default: false
  tls_cacert:
    description: CA certificate to trust (C(--tls-cacert)).
    type: path
  tls_cert:
    description: Server certificate (C(--tls-cert)).
    type: path
  tls_key:
    description: Key of the server certificate (C(--tls-key)).
    type: path
  force:
    description:
      - Start even though O(images_dir) is not empty; its old content is moved aside to
        C(<images_dir>.replaced-<time>), never deleted.
    type: bool
    default: false
  timeout:
    description: Seconds criu may take to start the daemon.
    type: float
    default: 30
"""

EXAMPLES = r"""
- name: Start a page server on the destination, on a free port
  ckpt.criu.page_server:
    images_dir: /var/lib/ckpt/incoming
    address: 192.0.2.10
  become: true
  register: ps

- name: Dump on the source, sending the pages to the destination
  ckpt.criu.dump:
    pid: "{{ app_pid | int }}"
    images_dir: /var/lib/ckpt/outgoing
    leave_stopped: true
    page_server:
      address: 192.0.2.10
      port: "{{ ps.port }}"
  delegate_to: source.example.com
  become: true

- name: Stop a page server that was left behind
  ckpt.criu.page_server:
    images_dir: /var/lib/ckpt/incoming
    state: stopped
  become: true
"""

RETURN = r"""
pid:
  description: PID of the page server daemon (V(null) when none runs, or in check mode when one would start).
  returned: always
  type: int
  sample: 31337
port:
  description: The TCP port it listens on.
  returned: always
  type: int
  sample: 27027
address:
  description: The address it listens on.
  returned: always
  type: str
  sample: 0.0.0.0
images_dir:
  description: The images directory, normalised.
  returned: always
  type: str
  sample: /var/lib/ckpt/incoming
log_path:
  description: criu's log of the page server.
  returned: always
  type: str
  sample: /var/lib/ckpt/incoming/page-server.log
criu_cmd:
  description: The criu argv that started the page server.
  returned: always
  type: list
  elements: str
  sample: ["/usr/sbin/criu", "page-server", "-D", "/var/lib/ckpt/incoming", "--port", "27027", "-d"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._page_server import page_server
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError, fail


def main():
    module = AnsibleModule(
        argument_spec=dict(
            images_dir=dict(type="path", required=True),
            state=dict(type="str", default="started", choices=["started", "stopped"]),
            address=dict(type="str"),
            port=dict(type="int", default=0),
            tls=dict(type="bool", default=False),
            tls_cacert=dict(type="path"),
            tls_cert=dict(type="path"),
            tls_key=dict(type="path"),
            force=dict(type="bool", default=False),
            timeout=dict(type="float", default=30),
            criu_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    try:
        result = page_server(module.params, check_mode=module.check_mode)
    except CkptError as exc:
        fail(module, exc)
    except (IOError, OSError) as exc:
        module.fail_json(msg="page server for %s: %s" % (module.params["images_dir"], exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
