#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: host_checks
short_description: Run several of the read-only checks of one host in one module run
version_added: 0.2.0
description:
  - Runs, in one module run, the checks of M(ckpt.criu.criu_info), M(ckpt.criu.read_commands),
    M(ckpt.criu.fd_inspect), M(ckpt.criu.binary_checksum) and M(ckpt.criu.inet_sockets) that are given,
    each with that module's own options, in that order. Each check's result is what its module returns,
    under the option's name.
  - For the roles' checks before a freeze. A module run costs 0.3 to 0.5 s of wall time whatever it does
    (Ansible's worker, the transfer, a Python start, ansible-core's imports), so a preflight that runs every
    check of a host in one run saves that for each check.
  - Each check's options are validated as its module validates them (types, defaults, choices, options that
    exclude each other). A check given options it does not know fails, naming them, and the others still run.
  - A check that fails does not stop the others and does not fail the module. Its result carries
    C(failed) and C(msg), as its module's result would, and RV(failed_jobs) names it. Use C(failed_when)
    on RV(failed_jobs) for the checks that must not fail.
  - Read-only; never reports a change.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.INFO_MODULE
options:
  criu:
    description:
      - The options of M(ckpt.criu.criu_info); its result is RV(criu).
    type: dict
  reads:
    description:
      - The options of M(ckpt.criu.read_commands) (C(commands), C(timeout)); its result is RV(reads).
    type: dict
  fds:
    description:
      - The options of M(ckpt.criu.fd_inspect); its result is RV(fds).
    type: dict
  checksums:
    description:
      - The options of M(ckpt.criu.binary_checksum); its result is RV(checksums).
    type: dict
  sockets:
    description:
      - The options of M(ckpt.criu.inet_sockets); its result is RV(sockets).
    type: dict
seealso:
  - module: ckpt.criu.criu_info
  - module: ckpt.criu.read_commands
  - module: ckpt.criu.fd_inspect
  - module: ckpt.criu.binary_checksum
  - module: ckpt.criu.inet_sockets
"""

EXAMPLES = r"""
- name: Check criu, the selected processes' files and binaries and read ps, in one run
  ckpt.criu.host_checks:
    criu:
      features: []
      probes: []
    reads:
      commands:
        - [ps, -o, "pid=,stat=,rss=", -p, "4242"]
    fds:
      pids: [4242]
    checksums:
      pids: [4242]
  register: checks
  failed_when: "'reads' in checks.failed_jobs"

- name: Use what fd_inspect found
  ansible.builtin.debug:
    msg: "{{ checks.fds.per_pid[0].criu_options }}"
"""

RETURN = r"""
criu:
  description: What M(ckpt.criu.criu_info) returns for O(criu).
  returned: when O(criu) is given
  type: dict
reads:
  description: What M(ckpt.criu.read_commands) returns for O(reads) (its C(reads) list under C(reads)).
  returned: when O(reads) is given
  type: dict
fds:
  description: What M(ckpt.criu.fd_inspect) returns for O(fds).
  returned: when O(fds) is given
  type: dict
checksums:
  description: What M(ckpt.criu.binary_checksum) returns for O(checksums).
  returned: when O(checksums) is given
  type: dict
sockets:
  description: What M(ckpt.criu.inet_sockets) returns for O(sockets).
  returned: when O(sockets) is given
  type: dict
failed_jobs:
  description: The options whose check failed (their results say why), in the order they ran.
  returned: always
  type: list
  elements: str
  sample: [reads]
msg:
  description: The failed checks, each with its reason, or how many checks ran.
  returned: always
  type: str
  sample: "ran 4 checks"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._errors import run_job
from ansible_collections.ckpt.criu.plugins.module_utils._host_checks import run_jobs


def main():
    run_job(AnsibleModule(argument_spec=dict(criu=dict(type="dict"), reads=dict(type="dict"), fds=dict(type="dict"),
                                             checksums=dict(type="dict"), sockets=dict(type="dict")),
                          supports_check_mode=True), run_jobs)


if __name__ == "__main__":
    main()
