#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: read_commands
short_description: Run several commands that only read, in one module run
version_added: 0.2.0
description:
  - Runs each command of O(commands) in turn, without a shell, and returns each one's exit status and output
    in RV(reads), in the shape M(ansible.builtin.command) registers (C(rc), C(stdout), C(stderr),
    C(stdout_lines), C(cmd)).
  - For the roles' checks before a freeze (C(ps), C(df), C(stat) on one host), where one module run
    per command costs 0.3 to 0.7 s of wall time each.
  - A non-zero exit status is not a failure; the caller decides what each status means. The module fails
    only when a command cannot be run at all (no such program), naming it.
  - Only for commands that change nothing; the module runs them in check mode too and never reports a
    change.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.INFO_MODULE
options:
  commands:
    description:
      - Each item is a command's argument list (the program first), or V(null) (or an empty list) for a
        command not needed this time; its entry of RV(reads) then says C(skipped).
    type: list
    elements: raw
    required: true
  timeout:
    description:
      - Seconds each command may take before it is killed and the module fails.
    type: float
    default: 60
notes:
  - Commands run with C(LC_ALL=C), so their output does not depend on the host's locale.
seealso:
  - module: ansible.builtin.command
"""

EXAMPLES = r"""
- name: Read the PIDs taken and the free space on the destination, in one run
  ckpt.criu.read_commands:
    commands:
      - [ps, -o, "pid=,comm=", -p, "4242,4243"]
      - [df, -B1, --output=avail, /var/lib/ckpt-criu, /var/lib, /var, /]
  register: dest
  delegate_to: node2

- name: Use the free space read
  ansible.builtin.debug:
    msg: "{{ dest.reads[1].stdout_lines[1] | trim }} bytes free"
"""

RETURN = r"""
reads:
  description: One entry per command, in order.
  returned: always
  type: list
  elements: dict
  contains:
    cmd:
      description: The argument list.
      type: list
      elements: str
    rc:
      description: The exit status.
      type: int
    stdout:
      description: The standard output, without its last newline.
      type: str
    stderr:
      description: The standard error, without its last newline.
      type: str
    stdout_lines:
      description: RV(reads[].stdout) split into lines.
      type: list
      elements: str
    skipped:
      description: True for a V(null) or empty command, which did not run.
      type: bool
  sample:
    - cmd: [ps, -o, "pid=,comm=", -p, "4242"]
      rc: 1
      stdout: ""
      stderr: ""
      stdout_lines: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._errors import run_job
from ansible_collections.ckpt.criu.plugins.module_utils._commands import READ_COMMANDS_ARGS, read_commands


def main():
    run_job(AnsibleModule(supports_check_mode=True, **READ_COMMANDS_ARGS), read_commands)


if __name__ == "__main__":
    main()
