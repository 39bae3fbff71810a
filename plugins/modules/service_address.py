#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: service_address
short_description: Put a service address on this host or take it off, and announce it with gratuitous ARP
version_added: 0.1.0
description:
  - A service address is an IPv4 address that clients use to reach a process and that moves with it
    when it migrates. Inside the frozen window of a migration, M(ckpt.criu.dump) takes it off the source
    and M(ckpt.criu.restore) puts it on the destination (their O(ckpt.criu.dump#module:service_address)
    option). This module is the same step outside that window, for example to put it back on the source
    when a migration is rolled back.
  - O(state=present) adds O(address) to O(interface) (C(ip addr add)) unless it is there; O(announce)
    then sends gratuitous ARP (a request and a reply, twice, 0.2 s apart) from the interface, so that
    peers on the link update their neighbour entry at once. O(state=absent) removes it.
  - Only IPv4 (the announcement is ARP). Needs root and C(ip) (iproute2).
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.ACTION
attributes:
  check_mode:
    details:
      - Reads the addresses of the interface and predicts RV(ignore:changed); changes and sends nothing.
  idempotent:
    details:
      - The gratuitous ARP of O(announce) is sent on every run; it changes nothing on this host.
options:
  address:
    description: The address with its prefix length, for example V(192.0.2.50/24).
    type: str
    required: true
  interface:
    description: The interface it lives on, for example V(eth0).
    type: str
    required: true
  state:
    description: Whether the address is on this host.
    type: str
    choices: [present, absent]
    default: present
  announce:
    description:
      - With O(state=present), send gratuitous ARP for the address, even when it was there already.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Put the service address back on the source after a rolled-back migration
  ckpt.criu.service_address:
    address: 192.0.2.50/24
    interface: eth0

- name: Take it off a host
  ckpt.criu.service_address:
    address: 192.0.2.50/24
    interface: eth0
    state: absent
"""

RETURN = r"""
address:
  description: The address, normalised.
  returned: always
  type: str
  sample: 192.0.2.50/24
interface:
  description: The interface.
  returned: always
  type: str
  sample: eth0
announced:
  description: Gratuitous ARP frames sent (V(0) in check mode and with O(state=absent)).
  returned: always
  type: int
  sample: 4
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils import _netaddr
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError, fail


def main():
    module = AnsibleModule(
        argument_spec=dict(
            address=dict(type="str", required=True),
            interface=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            announce=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    present = p["state"] == "present"
    try:
        service, ifname = _netaddr.parse_service_address(p["address"], p["interface"])
        changed = _netaddr.ensure_address(service, ifname, present, check_mode=module.check_mode)
        announced = 0
        if present and p["announce"] and not module.check_mode:
            announced = _netaddr.announce(service, ifname)
    except CkptError as exc:
        fail(module, exc)
    module.exit_json(changed=changed, address=str(service), interface=ifname, announced=announced,
                     msg="%s %s %s %s" % (service, "is on" if present else "is not on", ifname,
                                          "(changed)" if changed else "(already)"))


if __name__ == "__main__":
    main()
