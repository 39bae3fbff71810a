#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: inet_sockets
short_description: The TCP and UDP sockets of a process tree, and whether they can be restored on a destination
version_added: 0.1.0
description:
  - A migration restores every socket at the address and port it had. This module answers, before
    anything is frozen, whether that can work.
  - With O(pid), on the source, it lists the TCP and UDP sockets of the process tree (RV(sockets)) and
    the addresses of this host (RV(addresses)). With O(service_address) it also checks that the service
    address is on this host (RV(problems)).
  - With O(sockets) (the RV(sockets) of the source), on the destination, it names every reason the
    sockets could not be restored here (RV(problems)), each a sentence saying what to do. A listener
    whose port is taken here (at its address or on the wildcard) is refused, naming the port. A socket
    bound to an address this host does not have is refused, naming the address, unless it is the
    O(service_address), which moves with the process. A service address already on this host, or whose
    O(service_interface) this host lacks, is refused.
    Loopback and wildcard addresses exist everywhere.
  - Read-only; never reports a change.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.INFO_MODULE
options:
  pid:
    description: Root of the process tree whose sockets to list (on the source).
    type: int
  sockets:
    description: The sockets to check on this host (the RV(sockets) returned on the source).
    type: list
    elements: dict
  pids:
    description:
      - Roots of several process trees, each listed as O(pid) would list it, in one run. The results are in
        RV(per_pid); a tree that cannot be read fails its own entry there, not the task.
    type: list
    elements: int
  sockets_per_pid:
    description:
      - The RV(per_pid) of a run with O(pids) on the source. The sockets of each entry are checked on this
        host, as O(sockets) would be, and the results are in RV(per_pid) under the same C(item).
    type: list
    elements: dict
  service_address:
    description:
      - The IPv4 address (with its prefix length) that moves with the process, or empty for none.
    type: str
    default: ""
  service_interface:
    description: The interface of O(service_address).
    type: str
    default: ""
  destination:
    description: How the problems name this host (its inventory name).
    type: str
    default: this host
"""

EXAMPLES = r"""
- name: List the sockets on the source
  ckpt.criu.inet_sockets:
    pid: 4242
    service_address: 192.0.2.50/24
    service_interface: eth0
  register: src

- name: Check them on the destination
  ckpt.criu.inet_sockets:
    sockets: "{{ src.sockets }}"
    service_address: 192.0.2.50/24
    service_interface: eth0
    destination: node2
  delegate_to: node2
  register: dst
"""

RETURN = r"""
sockets:
  description: With O(pid), the TCP and UDP sockets of the tree, one per socket.
  returned: success
  type: list
  elements: dict
  sample: [{"pid": 4242, "fd": 6, "proto": "tcp", "family": "inet", "state": "LISTEN",
            "local_address": "0.0.0.0", "local_port": 6379, "remote_address": "0.0.0.0", "remote_port": 0,
            "listening": true}]
addresses:
  description: The addresses of this host (its network namespace).
  returned: success
  type: list
  elements: str
  sample: ["127.0.0.1", "192.0.2.11"]
per_pid:
  description:
    - With O(pids) or O(sockets_per_pid), one entry per process tree, in the order given, with RV(sockets) (with
      O(pids)) and RV(problems) of that tree, and C(item), its PID. An entry that could not be checked has
      C(failed=true) and C(msg).
  returned: when O(pids) or O(sockets_per_pid) is given
  type: list
  elements: dict
  sample: [{item: 4242, sockets: [], problems: []}]
problems:
  description: Why the sockets cannot be restored here, or the service address is wrong, one sentence each; empty when fine.
  returned: success
  type: list
  elements: str
  sample: ["port tcp/6379 is already in use on node2 (a listener on 0.0.0.0:6379); ..."]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._errors import run_job
from ansible_collections.ckpt.criu.plugins.module_utils._host_checks import INET_SOCKETS_ARGS, inet_sockets


def main():
    run_job(AnsibleModule(supports_check_mode=True, **INET_SOCKETS_ARGS), inet_sockets)


if __name__ == "__main__":
    main()
