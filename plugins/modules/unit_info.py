#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: unit_info
short_description: Whether a systemd unit can be checkpointed here, and the sha256 of its files
version_added: 0.1.0
description:
  - Reads a systemd service unit, changing nothing. Says whether it exists and runs, its main PID,
    the sha256 over its unit file and drop-ins (the drop-ins of this collection excluded), and why
    M(ckpt.criu.dump) with O(ckpt.criu.dump#module:unit) would refuse it (not running, processes in
    its cgroup outside its main process's tree, socket activation, namespaces of its own).
  - A migration's preflight compares RV(files_sha256) on the source and the destination, so that a
    unit the destination defines otherwise is refused before anything is frozen.
  - A unit that does not exist, or a host where systemd is not the init, is no failure here;
    RV(exists) is V(false) and RV(msg) says why.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.ACTION
attributes:
  check_mode:
    details:
      - Read-only; runs the same in check mode.
options:
  name:
    description:
      - The unit, with or without C(.service).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Can redis-server be checkpointed here?
  ckpt.criu.unit_info:
    name: redis-server
  register: redis_unit

- name: Stop when it cannot
  ansible.builtin.assert:
    that: redis_unit.refusals | length == 0
    fail_msg: "{{ redis_unit.refusals | join(' ') }}"
"""

RETURN = r"""
name:
  description: The unit's full name.
  returned: always
  type: str
  sample: redis-server.service
exists:
  description: Whether systemd has the unit loaded here.
  returned: always
  type: bool
  sample: true
running:
  description: Whether the unit is active with a main process.
  returned: always
  type: bool
  sample: true
main_pid:
  description: The unit's C(MainPID) (0 when it runs nothing).
  returned: always
  type: int
  sample: 4242
files:
  description: The unit file and drop-ins the digest covers, in order.
  returned: always
  type: list
  elements: str
  sample: ["/lib/systemd/system/redis-server.service", "/etc/systemd/system/redis-server.service.d/local.conf"]
files_sha256:
  description: sha256 over RV(files) (paths and contents); V(null) when the unit does not exist.
  returned: always
  type: str
  sample: 9f2c1e0b8a7d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b
refusals:
  description: Why a checkpoint of the unit would be refused, one sentence each (empty when it would not).
  returned: always
  type: list
  elements: str
  sample: []
unit:
  description: What systemd says of the unit (states, type, control group, restart policy, ...).
  returned: when RV(exists)
  type: dict
  sample: {"active_state": "active", "type": "notify", "n_restarts": 0, "unit_file_state": "enabled"}
msg:
  description: One sentence on the unit.
  returned: always
  type: str
  sample: "unit redis-server.service: can be checkpointed"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._unit import describe
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError, fail


def main():
    module = AnsibleModule(
        argument_spec=dict(name=dict(type="str", required=True)),
        supports_check_mode=True,
    )
    try:
        result = describe(module.params["name"])
    except CkptError as exc:
        fail(module, exc, changed=False)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
