#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: binary_checksum
short_description: Checksum a process's executable and mapped files, and compare them with a checkpoint
version_added: 0.1.0
description:
  - Computes the sha256 (streamed) and the GNU build-id of the executable of a running process and of
    every distinct regular file it maps (shared libraries, locale files), or of a list of files.
  - A live process's files are read through C(/proc/PID/exe) and C(/proc/PID/map_files), that is the
    inode really mapped. When the file now at the same path is another one (the binary was replaced
    on disk after the process started) or is gone, the record says so (RV(files[].replaced),
    RV(files[].deleted)) and the module warns.
  - With O(expected), compares the records with a previous result of this module, a list of records, or
    the C(binaries) section of a checkpoint manifest written by M(ckpt.criu.dump). CRIU restores a
    binary that changed on disk with the same size silently and runs the new code; a sha256 comparison
    is what catches it.
  - Files shared by many processes are hashed once per module run (cache keyed by device, inode, size
    and modification time).
  - Read-only; never reports a change.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.INFO_MODULE
options:
  pid:
    description:
      - ID of the running process whose executable and mapped files to checksum.
      - Exactly one of O(pid), O(pidfile), O(pids), O(paths) and O(expected_per_pid) may be given. When none
        is given, O(expected) is required and the files it lists are checked at their paths on this host
        (what a restore will map).
    type: int
  pidfile:
    description:
      - File holding the ID of the process to checksum (as written by most daemons).
    type: path
  paths:
    description:
      - Files to checksum. Symbolic links are resolved; the records carry the real path and the path
        as given (RV(files[].requested)).
      - With O(expected), only the expected records for these paths are compared.
    type: list
    elements: path
  pids:
    description:
      - IDs of several running processes to checksum in one run, each as O(pid) would (one module run instead
        of one per process; a file several of them map is hashed once). The results are in RV(per_pid); a
        process that cannot be checksummed fails its own entry there, not the task.
    type: list
    elements: int
  expected_per_pid:
    description:
      - The RV(per_pid) of a run with O(pids) on another host. The files of each entry are checked here, as
        O(expected) would check them, and the results are in RV(per_pid) under the same C(item).
      - With O(fail_on_mismatch), an entry that does not match fails itself, not the task.
    type: list
    elements: dict
  exe_only:
    description:
      - Only checksum the executable of the process, not its mapped files.
      - Ignored with O(paths).
    type: bool
    default: false
  expected:
    description:
      - What the files must match. One of
      - a previous result of this module (registered), or its RV(files) list;
      - a checkpoint manifest (a dict with C(binaries)), or the path of a C(ckpt-manifest.json) file,
        or of the images directory that holds it.
      - When not given, nothing is compared and RV(matches) is not returned.
    type: raw
  fail_on_mismatch:
    description:
      - Fail when a file does not match O(expected). When V(false), the module succeeds and lists the
        differences in RV(mismatches).
    type: bool
    default: true
attributes:
  platform:
    platforms: posix
    support: full
    description: Linux only (reads C(/proc)).
notes:
  - Reading C(/proc/PID/map_files) needs root; use C(become=true).
seealso:
  - module: ckpt.criu.criu_info
"""

EXAMPLES = r"""
- name: Record the binaries of the running service
  ckpt.criu.binary_checksum:
    pidfile: /run/myapp.pid
  register: before

- name: Fail if the process now runs something else than what was recorded
  ckpt.criu.binary_checksum:
    pidfile: /run/myapp.pid
    expected: "{{ before }}"

- name: Before restoring, check this host has the binaries the checkpoint was taken with
  ckpt.criu.binary_checksum:
    expected: /var/lib/ckpt/myapp

- name: Report differences without failing
  ckpt.criu.binary_checksum:
    paths:
      - /usr/local/bin/myapp
    expected: /var/lib/ckpt/myapp/ckpt-manifest.json
    fail_on_mismatch: false
  register: check

- name: Show what differs
  ansible.builtin.debug:
    msg: "{{ check.mismatches | map(attribute='msg') | list }}"
  when: not check.matches
"""

RETURN = r"""
pid:
  description: ID of the process checked (from O(pid) or O(pidfile)).
  returned: when O(pid) or O(pidfile) is given
  type: int
  sample: 4242
exe:
  description: Record of the executable of the process (same keys as RV(files)).
  returned: when O(pid) or O(pidfile) is given
  type: dict
  sample: {path: /usr/bin/python3.11, size: 6831736, sha256: 4b1d0c..., build_id: 8a3d9e..., exe: true}
files:
  description:
    - One record per distinct file, the executable first.
  returned: unless O(pids) or O(expected_per_pid) is given
  type: list
  elements: dict
  contains:
    path:
      description: Real path of the file (for a process, the path it was mapped from).
      type: str
      sample: /usr/lib/x86_64-linux-gnu/libc.so.6
    size:
      description: Size in bytes.
      type: int
      sample: 1926232
    sha256:
      description: sha256 of the content, hex.
      type: str
      sample: 6b4a45352fd0c7e0b2d3a1f1d6a6e1c2f9f0a2b3c4d5e6f708192a3b4c5d6e7f
    build_id:
      description: GNU build-id (hex), or V(null) when the file is not ELF or carries none.
      type: str
      sample: 93ac61ec5a8eb1396f9fbd350e3169a558528a40
    mtime_ns:
      description: Modification time in nanoseconds since the epoch.
      type: int
      sample: 1732675200000000000
    requested:
      description: The path as given in O(paths), when it differs from RV(files[].path) (a symbolic link).
      type: str
      returned: when a given path was a symbolic link or not canonical
      sample: /usr/bin/python3
    exe:
      description: V(true) on the record of the executable.
      type: bool
      returned: for the executable of a process
      sample: true
    deleted:
      description: The file the process maps no longer exists on disk; the record describes the mapped copy.
      type: bool
      returned: for files of a process
      sample: false
    replaced:
      description: Another file now stands at the path (a redeploy after the process started).
      type: bool
      returned: for files of a process
      sample: false
    replaced_differs:
      description: The replacement has other content than the mapped file.
      type: bool
      returned: when RV(files[].replaced) is V(true)
      sample: true
    on_disk:
      description: Record (path, size, sha256, build_id, mtime_ns) of the file now at the path.
      type: dict
      returned: when RV(files[].replaced) is V(true)
      sample: {path: /usr/local/bin/myapp, size: 17584, sha256: 9f2c..., build_id: null}
    note:
      description: One sentence on a deleted or replaced file.
      type: str
      returned: when RV(files[].deleted) or RV(files[].replaced) is V(true)
      sample: /usr/local/bin/myapp was replaced on disk after PID 4242 mapped it
matches:
  description: V(true) when every expected file matches (and no unexpected file was checked).
  returned: when O(expected) is given
  type: bool
  sample: true
matched:
  description: Paths that match their expected record.
  returned: when O(expected) is given
  type: list
  elements: str
  sample: [/usr/bin/python3.11, /usr/lib/x86_64-linux-gnu/libc.so.6]
mismatches:
  description: One entry per file that does not match.
  returned: when O(expected) is given
  type: list
  elements: dict
  contains:
    path:
      description: Path of the file.
      type: str
      sample: /usr/local/bin/myapp
    differs:
      description:
        - What differs. V(missing) (expected but not checked or not mapped), V(unexpected) (checked but
          not expected), or the fields V(size), V(sha256), V(build_id).
      type: list
      elements: str
      sample: [sha256]
    expected:
      description: Expected size, sha256 and build_id (V(null) for V(unexpected)).
      type: dict
      sample: {size: 17584, sha256: f1ee18..., build_id: a7516a...}
    actual:
      description: Actual size, sha256 and build_id (V(null) for V(missing)).
      type: dict
      sample: {size: 17584, sha256: 0c3d9a..., build_id: a7516a...}
    msg:
      description: One sentence on the difference and what to do.
      type: str
      sample: "/usr/local/bin/myapp differs from the expected file: sha256 f1ee188b790e... expected, 0c3d9a11aa2b... found
        (same size and build-id); put back the file the checkpoint was taken with"
  sample: []
per_pid:
  description:
    - With O(pids) or O(expected_per_pid), one entry per process, in the order given. Each holds what the
      module returns for that process alone (RV(pid), RV(exe), RV(files); with O(expected_per_pid) RV(files),
      RV(matches), RV(matched), RV(mismatches)) and C(item), its PID. An entry that could not be checked has
      C(failed=true) and C(msg).
  returned: when O(pids) or O(expected_per_pid) is given
  type: list
  elements: dict
  sample: [{item: 4242, matches: true, matched: [/usr/bin/python3.11], mismatches: []}]
cache:
  description: Checksum cache use in this run (files shared by several records are hashed once).
  returned: always
  type: dict
  contains:
    hits:
      description: Records served from the cache.
      type: int
      sample: 3
    misses:
      description: Files hashed.
      type: int
      sample: 8
    entries:
      description: Distinct file contents in the cache.
      type: int
      sample: 8
    bytes_hashed:
      description: Bytes read and hashed.
      type: int
      sample: 26754260
    seconds:
      description: Time spent hashing.
      type: float
      sample: 0.017
  sample: {hits: 0, misses: 8, entries: 8, bytes_hashed: 26754260, seconds: 0.017}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._errors import run_job
from ansible_collections.ckpt.criu.plugins.module_utils._host_checks import BINARY_CHECKSUM_ARGS, binary_checksum


def main():
    run_job(AnsibleModule(supports_check_mode=True, **BINARY_CHECKSUM_ARGS), binary_checksum)


if __name__ == "__main__":
    main()
