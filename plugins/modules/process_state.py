#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: process_state
short_description: Resume, stop or kill a checkpointed process, only if it is still that process
version_added: 0.1.0
description:
  - The commit and rollback primitive of a two-phase migration. After M(ckpt.criu.dump)
    froze a process with C(leave_stopped), V(running) resumes it (rollback) and V(killed)
    ends it once the copy runs elsewhere (commit).
  - The process is named by a checkpoint (O(images_dir) or O(manifest)) or by an
    O(identity). A process identity is its PID, its start time and the boot id; a PID
    alone is not enough because PIDs are reused. When the PID now belongs to a different
    process, the module fails naming both and signals nothing.
  - O(state=running) sends C(SIGCONT) to a stopped process; O(state=stopped) sends
    C(SIGSTOP); O(state=killed) sends C(SIGKILL) and waits until the PID is gone from
    C(/proc) (at most O(wait) seconds).
  - A process that is gone satisfies O(state=killed); for O(state=running) or
    O(state=stopped) it is an error.
  - The signal goes to the whole process tree, as a checkpoint holds it, that is the process's
    live descendants, and, when the process is named by a checkpoint, every member its
    manifest recorded that still runs as itself (a member outlives a root killed alone).
    Each member is signalled through a pidfd pinned to its start time, and only when it
    is not in the wanted state yet (C(SIGCONT) goes to stopped members only). A commit
    thus leaves no frozen member behind, and a rollback resumes every member.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.ACTION
  - ckpt.criu.criu.CMDLINE
attributes:
  check_mode:
    details:
      - Reads the process and predicts RV(ignore:changed); sends no signal.
options:
  images_dir:
    description:
      - Checkpoint directory; the process is the one its C(ckpt-manifest.json) names
        (or, with O(instance=restored), the one its restore record names).
    type: path
  manifest:
    description:
      - Path of a C(ckpt-manifest.json), instead of O(images_dir).
    type: path
  identity:
    description:
      - The process identity, as returned by M(ckpt.criu.restore) in RV(ckpt.criu.restore#module:process)
        or recorded in a manifest. Needs at least C(pid) and C(start_time) (clock ticks since boot,
        field 22 of C(/proc/PID/stat)); C(boot_id) and C(exe) are checked when given.
    type: dict
  instance:
    description:
      - With O(images_dir) or O(manifest), which process of the checkpoint is meant.
      - V(source) is the process that was checkpointed (on the host where it was dumped).
      - V(restored) is the process M(ckpt.criu.restore) restored from it, per the restore record.
    type: str
    choices: [source, restored]
    default: source
  state:
    description:
      - The state the process should be in.
    type: str
    choices: [running, stopped, killed]
    required: true
  wait:
    description:
      - Seconds to wait for the process to reach O(state) after the signal.
    type: float
    default: 10.0
  unit:
    description:
      - The systemd service unit that runs the process. Defaults to the unit the checkpoint in
        O(images_dir) or O(manifest) was taken of (for O(instance=source)).
      - With O(state=killed), the unit is first held (runtime drop-in C(Restart=no),
        C(SuccessExitStatus=SIGKILL)) so that systemd neither restarts it nor marks it failed; with
        O(state=killed) or O(state=running), every drop-in of the collection on the unit is then
        removed, so the unit is itself again (inactive, or running that process, as the source of a
        migration that was rolled back).
    type: str
    version_added: 0.1.0
notes:
  - Must run as a user allowed to signal the process (root for a restored process).
  - A process killed while its parent does not reap it stays a zombie; the module then
    succeeds with a warning, since the PID stays taken until the parent reaps it.
seealso:
  - module: ckpt.criu.dump
  - module: ckpt.criu.restore
"""

EXAMPLES = r"""
- name: Roll back a migration by resuming the frozen source
  ckpt.criu.process_state:
    images_dir: /var/lib/ckpt/app
    state: running

- name: Commit a migration by killing the frozen source
  ckpt.criu.process_state:
    images_dir: /var/lib/ckpt/app
    state: killed

- name: Resume the process restored stopped on the destination
  ckpt.criu.process_state:
    images_dir: /var/lib/ckpt/app
    instance: restored
    state: running

- name: Stop a process named by the identity a restore returned
  ckpt.criu.process_state:
    identity: "{{ restored.process }}"
    state: stopped
"""

RETURN = r"""
unit:
  description: The systemd unit of the process, the drop-ins removed from it, and its state afterwards.
  returned: when the process belongs to a unit (O(unit), or the checkpoint's) and O(state) is C(running) or C(killed)
  type: dict
  sample: {"name": "redis-server.service", "released": ["50-ckpt-criu-hold"], "active_state": "inactive",
           "main_pid": 0, "n_restarts": 0}
pid:
  description: The PID of the process.
  returned: always
  type: int
  sample: 4242
before:
  description: State before the module ran, one of V(running), V(stopped), V(traced), V(zombie), V(absent).
  returned: always
  type: str
  sample: stopped
after:
  description: State after the module ran (predicted in check mode).
  returned: always
  type: str
  sample: running
signal:
  description: The signal sent (or that would be sent in check mode), null when none was needed.
  returned: always
  type: str
  sample: SIGCONT
tree_pids:
  description:
    - The other processes of the tree (see the description) that were sent the signal, or would be in check
      mode; empty when none needed it.
  returned: always
  type: list
  elements: int
  sample: [4243, 4244]
expected:
  description: The identity the process was required to have.
  returned: always
  type: dict
  sample: {"pid": 4242, "start_time": 1289474, "boot_id": "3f0c..."}
tcp_repair_off:
  description:
    - With O(state=running), the TCP connections (V(PID N fd M)) that were in TCP repair mode and were taken out
      of it before the process was resumed, as M(ckpt.criu.dump) with O(ckpt.criu.dump#module:tcp_established)
      and O(ckpt.criu.dump#module:leave_stopped) leaves them; resumed in repair mode they would neither send
      nor answer.
  returned: when such connections were found
  type: list
  elements: str
  sample: ["PID 4242 fd 9"]
process:
  description: The live identity of the process after the module ran, null when it is gone.
  returned: always
  type: dict
  sample: {"pid": 4242, "start_time": 1289474, "state": "running", "comm": "python3"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError, fail
from ansible_collections.ckpt.criu.plugins.module_utils._identity import shown_result
from ansible_collections.ckpt.criu.plugins.module_utils._process_state import ensure_process_state


def main():
    module = AnsibleModule(
        argument_spec=dict(
            images_dir=dict(type="path"),
            manifest=dict(type="path"),
            identity=dict(type="dict"),
            instance=dict(type="str", choices=["source", "restored"], default="source"),
            state=dict(type="str", choices=["running", "stopped", "killed"], required=True),
            wait=dict(type="float", default=10.0),
            unit=dict(type="str"),
            include_cmdline=dict(type="bool", default=False),
        ),
        mutually_exclusive=[("images_dir", "manifest", "identity")],
        required_one_of=[("images_dir", "manifest", "identity")],
        supports_check_mode=True,
    )
    try:
        result = ensure_process_state(module.params, check_mode=module.check_mode)
    except CkptError as exc:
        fail(module, exc, shown=lambda kw: shown_result(module.params, kw))
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**shown_result(module.params, result))


if __name__ == "__main__":
    main()
