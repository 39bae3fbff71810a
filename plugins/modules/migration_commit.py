#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_commit
short_description: Commit a migration on its source - kill the frozen source, record the migration, remove its images
version_added: 0.1.0
description:
  - The commit of a two-phase migration on the source host, in one module run. The copy runs on the
    destination and was verified; this ends the source.
  - First the frozen source, named by the checkpoint in O(images_dir), is killed exactly as
    M(ckpt.criu.process_state) with O(ckpt.criu.process_state#module:state=killed) does it (the
    identity checked, the whole tree, a systemd unit held and released). A failure there fails the
    module and nothing else is done; the caller rolls back.
  - Then the migration is recorded in O(records_dir), as C(pid-<PID>.json) (0600, JSON), written to
    a new file relative to the directory held after the trust rule of M(ckpt.criu.images_dir),
    then renamed over the old record; never through a symlink.
  - Then, with O(remove_images), the checkpoint in O(images_dir) is removed (a symlink is never followed).
  - Once the source is killed the migration is done, so what fails after that (the record, the
    removal) does not fail the module. It is returned in RV(cleanup_errors), one sentence each, for the
    caller to report; nothing is rolled back for it.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.ACTION
attributes:
  check_mode:
    details:
      - Reads the process and checks O(records_dir); kills, writes and removes nothing.
  idempotent:
    details:
      - With O(remove_images=false), a second run finds the source gone (that satisfies the kill) and
        writes the record again. Once the images are removed nothing names the source any more, and a
        second run fails (no complete checkpoint) without changing anything.
options:
  images_dir:
    description:
      - The checkpoint of the source, taken by M(ckpt.criu.dump) with
        O(ckpt.criu.dump#module:leave_stopped); its C(ckpt-manifest.json) names the process.
    type: path
    required: true
  records_dir:
    description:
      - The directory of the migration records; it must exist and pass the trust rule.
    type: path
    required: true
  record:
    description:
      - What the record says, written as JSON. Its C(pid) (a positive integer) names the file.
    type: dict
    required: true
  remove_images:
    description:
      - Remove O(images_dir) once the source is killed and the migration recorded.
    type: bool
    default: true
  wait:
    description:
      - Seconds to wait for the killed process to be gone.
    type: float
    default: 10.0
notes:
  - Must run as root on the source host.
seealso:
  - module: ckpt.criu.process_state
  - module: ckpt.criu.dump
"""

EXAMPLES = r"""
- name: Kill the frozen source, record the migration and remove its images
  ckpt.criu.migration_commit:
    images_dir: /var/lib/ckpt/migrate/pid-4242
    records_dir: /var/lib/ckpt/migrate/.migrated
    record:
      pid: 4242
      destination: node2
      migrated_at: "{{ now(utc=true).isoformat() }}Z"
  register: committed

- name: Report what of the cleanup failed
  ansible.builtin.fail:
    msg: "{{ committed.cleanup_errors | join('; ') }}"
  when: committed.cleanup_errors | length > 0
"""

RETURN = r"""
pid:
  description: The PID of the source process.
  returned: always
  type: int
  sample: 4242
before:
  description: State of the source before the module ran (see M(ckpt.criu.process_state)).
  returned: always
  type: str
  sample: stopped
after:
  description: State of the source after the module ran (predicted in check mode).
  returned: always
  type: str
  sample: absent
signal:
  description: The signal sent (or that would be), null when the source was gone already.
  returned: always
  type: str
  sample: SIGKILL
tree_pids:
  description: The other processes of the source's tree that were killed.
  returned: always
  type: list
  elements: int
  sample: [4243]
unit:
  description: The systemd unit of the source, as M(ckpt.criu.process_state) returns it.
  returned: when the checkpoint was taken of a unit
  type: dict
record_path:
  description: The record written (or that would be).
  returned: success
  type: str
  sample: /var/lib/ckpt/migrate/.migrated/pid-4242.json
images_removed:
  description: Whether O(images_dir) was removed (or would be).
  returned: success
  type: bool
cleanup_errors:
  description: What failed once the source was killed (the record, the removal), one sentence each.
  returned: success
  type: list
  elements: str
  sample: ["cannot write the migration record /var/lib/ckpt/migrate/.migrated/pid-4242.json: Is a directory"]
"""

import json
import os
import shutil
import uuid

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils import _safedir
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError, fail
from ansible_collections.ckpt.criu.plugins.module_utils._identity import shown_result
from ansible_collections.ckpt.criu.plugins.module_utils._process_state import ensure_process_state


def _record_name(record):
    try:
        pid = int(record.get("pid"))
    except (TypeError, ValueError):
        pid = 0
    return "pid-%d.json" % pid if pid > 0 else None


def write_record(records_dir, name, record, check_mode=False):
    """Write RECORD as NAME in RECORDS_DIR: a new file (O_EXCL, never through a symlink) in the
    directory held after the trust rule, renamed over NAME; in check mode only hold the directory.
    Returns an error sentence, or None."""
    path = os.path.join(records_dir, name)
    try:
        with _safedir.hold(records_dir) as held:
            if check_mode:
                return None
            tmp = ".%s.%s.tmp" % (name, uuid.uuid4().hex[:12])
            held.write_new(tmp, json.dumps(record, indent=2, sort_keys=True) + "\n")
            try:
                held.check_path()
                os.rename(tmp, name, src_dir_fd=held.fd, dst_dir_fd=held.fd)
            except BaseException:
                os.unlink(tmp, dir_fd=held.fd)
                raise
    except _safedir.UntrustedDirError as exc:
        return "cannot write the migration record %s: %s" % (path, exc.msg)
    except OSError as exc:
        return "cannot write the migration record %s: %s" % (path, exc.strerror or exc)
    return None


def remove_images(images_dir):
    """Remove IMAGES_DIR (never following a symlink, in it or at it). Returns an error sentence, or None."""
    try:
        shutil.rmtree(images_dir)  # fd-based on Linux: refuses a symlink, follows none inside
    except FileNotFoundError:
        return None
    except OSError as exc:
        return "cannot remove the images %s on the source: %s" % (images_dir, exc.strerror or exc)
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            images_dir=dict(type="path", required=True),
            records_dir=dict(type="path", required=True),
            record=dict(type="dict", required=True),
            remove_images=dict(type="bool", default=True),
            wait=dict(type="float", default=10.0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    images_dir = os.path.normpath(p["images_dir"])
    records_dir = os.path.normpath(p["records_dir"])
    name = _record_name(p["record"])
    if name is None:
        module.fail_json(msg="record.pid must be a positive integer, got %r; nothing was done"
                         % (p["record"].get("pid"),))
    if os.geteuid() != 0:
        module.fail_json(msg="ckpt.criu.migration_commit must run as root (become: true); running as uid %d; "
                         "nothing was done" % os.geteuid())
    kill = {"images_dir": images_dir, "manifest": None, "identity": None, "instance": "source",
            "state": "killed", "wait": p["wait"], "unit": None, "include_cmdline": False}
    try:
        result = ensure_process_state(kill, check_mode=module.check_mode)
    except CkptError as exc:
        fail(module, exc, shown=lambda kw: shown_result(kill, kw))
    for warning in result.pop("warnings", []):
        module.warn(warning)
    error = write_record(records_dir, name, p["record"], module.check_mode)
    errors = [error] if error else []
    removed = False
    if p["remove_images"] and os.path.lexists(images_dir):
        error = None if module.check_mode else remove_images(images_dir)
        errors.extend([error] if error else [])
        removed = error is None
    result.update(changed=True, record_path=os.path.join(records_dir, name), images_removed=removed,
                  cleanup_errors=errors)
    module.exit_json(**shown_result(kill, result))


if __name__ == "__main__":
    main()
