#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: restore
short_description: Restore a CRIU checkpoint and verify the process really runs
version_added: 0.1.0
description:
  - Restores the process tree checkpointed by M(ckpt.criu.dump) in O(images_dir) with
    C(criu restore), after verifying that nothing it depends on has changed, and
    verifies afterwards that the process really runs.
  - Before criu runs, and without touching anything, the module checks that the checkpoint
    manifest is complete, that every image file has its recorded size and sha256, that the
    executable and every mapped file on this host have the sha256 recorded at dump time
    (a binary of the same size and build-id but other content would otherwise be restored
    silently, running the new code), that regular stdio files opened without C(O_APPEND)
    have their recorded size, and that every PID and thread ID of the dumped tree (read from its
    C(pstree.img)) is free. A zombie or exiting holder is waited for up to O(pid_wait) seconds; a
    live holder is named, with the member of the tree that needs its PID, and refused.
  - criu always runs detached (C(-d)) in its own work directory, with C(-v4) and a log
    C(restore.log) in O(images_dir). The restored process must still be alive after
    O(settle) seconds, running the recorded executable (sha256) with the recorded command
    line, and every process and thread of the tree must be back; a process that criu restored
    with exit code 0 but that died a moment later (for example because its stdout was a pipe
    to a reader outside the checkpoint) fails the task with the likely cause.
  - After a verified restore the module writes the restore record C(ckpt-restore.json)
    (mode 0600, atomically) into O(images_dir).
  - Idempotent. When the restore record names a process that runs here with the same
    identity (PID, start time and boot id), executable sha256 and command line, nothing is
    done.
  - The restored process never inherits the module's stdout or stderr, so the task always
    returns.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.ACTION
  - ckpt.criu.criu
  - ckpt.criu.criu.CMDLINE
attributes:
  check_mode:
    details:
      - Runs every read-only verification (manifest, images, binaries, stdio files, PID)
        and fails on them; predicts RV(ignore:changed) and restores nothing.
options:
  images_dir:
    description:
      - Directory holding the checkpoint images and C(ckpt-manifest.json) written by
        M(ckpt.criu.dump).
    type: path
    required: true
  leave_stopped:
    description:
      - Restore the process stopped (C(--leave-stopped)), for a two-phase migration that
        resumes it later with M(ckpt.criu.process_state) O(ckpt.criu.process_state#module:state=running).
      - The verification then requires the process to be stopped instead of running.
    type: bool
    default: false
  settle:
    description:
      - Seconds the restored process must stay alive before the restore counts as verified.
    type: float
    default: 1.5
  pid_wait:
    description:
      - Seconds to wait for a zombie or exiting process that still holds the checkpoint's PID.
    type: float
    default: 5.0
  wait_for_manifest:
    description:
      - Seconds to wait for the checkpoint to arrive in O(images_dir) before restoring; V(0) does not wait.
      - A migration starts the destination's restore (as an C(async) task) before it freezes the source,
        so the restore starts the moment the source's M(ckpt.criu.dump) has sent its manifest with
        O(ckpt.criu.dump#module:transfer); no task boundary lies between the freeze and the restore.
      - A manifest sent in the same rsync as the images may land before them; the restore then waits,
        within the same time, for every image the manifest lists to arrive whole. Images that arrive are
        hashed while it waits.
      - The wait ends with a clear error when O(images_dir) is removed or the file C(.ckpt-abort) appears
        in it (the migration was rolled back), or nothing arrives in time. C(.ckpt-abort) is looked at
        once more just before C(criu restore) starts, and not after; a restore that has begun is carried
        to its verdict, which the rollback waits for. Check mode does not wait.
      - While it waits, the file C(.ckpt-restore-ready) in O(images_dir) says that the restore is ready.
        It appears at once, or with O(prefault) when the touching is done, and is removed when the
        module ends. The C(migrate) role freezes the source only once it appears, so that the touching
        does not compete with the dump.
    type: float
    default: 0
  prefault:
    description:
      - With O(wait_for_manifest), the memory the restored process needs (bytes, or a size such as V(1G)
        or V(512M)). Twice this is touched in the background while waiting, once for the page cache of the
        images as they arrive and once for the process. All but this much is freed as the first image
        arrives (just after the source froze), the rest just before criu runs, so that the arriving
        images and criu's restore of the pages reuse memory that is already backed.
      - On a virtual machine whose balloon reports free pages to the hypervisor, memory that is new to
        the guest costs a second fault in the hypervisor; a migration keeps its source frozen until the
        restore is verified, so its restore cannot reuse the source's pages. The C(migrate) role passes
        the process's RSS here.
      - At most half of the memory available when the restore starts is touched; the touching stops the
        moment the first image arrives. Ignored without O(wait_for_manifest) and in check mode.
    type: raw
  service_address:
    description:
      - An IPv4 address that moves with the process (see M(ckpt.criu.service_address)). After every check
        passed (and, with O(wait_for_manifest), after the manifest arrived, so after the source's
        M(ckpt.criu.dump) with the same O(ckpt.criu.dump#module:service_address) took it off the source),
        it is added on O(service_address.interface) right before criu restores, so that criu can bind the
        restored sockets to it. Once criu has restored the process, it is announced with gratuitous ARP
        (a request and a reply, twice, 0.2 s apart), so that peers on the link send to this host at once.
      - A bad value fails the task before anything is touched. When the restore fails after the address
        was added, it stays here; the caller removes it (M(ckpt.criu.service_address) with V(absent)).
    type: dict
    suboptions:
      address:
        description: The address with its prefix length, for example V(192.0.2.50/24).
        type: str
        required: true
      interface:
        description: The interface to put it on, for example V(eth0).
        type: str
        required: true
  verify_images:
    description:
      - Verify the size and sha256 of every image file against the manifest before restoring.
    type: bool
    default: true
  verify_binaries:
    description:
      - Verify the sha256 of the executable and of every mapped file against the manifest
        before restoring.
    type: bool
    default: true
  as_unit:
    description:
      - When the checkpoint is of a systemd unit (M(ckpt.criu.dump) with O(ckpt.criu.dump#module:unit)),
        restore the process under that unit. A runtime drop-in makes C(criu restore) the unit's start
        (C(Type=forking), C(PIDFile=), C(ExecStart=+criu restore ...)), C(systemctl start) runs it in
        the unit's cgroup and adopts the restored PID as C(MainPID), its stdout/stderr become the
        unit's journal stream again; then every drop-in of the collection is removed and systemd
        reloaded, so C(systemctl stop) and C(restart) behave as for a unit started normally.
      - Refused before anything changes when the unit does not exist here, when its unit file or
        drop-ins differ from the checkpointed host's (sha256), or when the unit already runs a
        process of its own (a fresh copy, for example started at boot).
      - V(false) restores the process outside systemd, as a plain process.
    type: bool
    default: true
    version_added: 0.1.0
  shell_job:
    description:
      - Pass C(--shell-job). When not set, follows the dump's option recorded in the manifest.
    type: bool
  tcp_established:
    description:
      - Pass C(--tcp-established). When not set, follows the dump's option recorded in the manifest.
    type: bool
  ext_unix_sk:
    description:
      - Pass C(--ext-unix-sk). When not set, follows the dump's option recorded in the manifest.
    type: bool
  file_locks:
    description:
      - Pass C(--file-locks). When not set, follows the dump's option recorded in the manifest.
    type: bool
  external:
    description:
      - Values for C(--external), one per item. When not set, the manifest's list is used.
    type: list
    elements: str
  inherit_fd_file:
    description:
      - The file that replaces, in the restored process, each pipe to or from a process outside the
        checkpoint that the dump let through with O(ckpt.criu.dump#module:inherit_fd=true) (recorded in the
        manifest). It is opened by the restore (O_APPEND, created 0600, for a pipe the process wrote to;
        read-only for one it read from) and handed to criu with C(--inherit-fd fd[N]:pipe:[INODE]).
      - Required when the checkpoint has such pipes; the restore refuses before criu runs without it.
      - Unix sockets the dump let through with O(ckpt.criu.dump#module:ext_unix_sk=true) need nothing here; the
        restore passes C(--ext-unix-sk=INODE) for the inodes the manifest records, and the peer must be listening
        at the same address.
    type: path
  timeout:
    description:
      - Seconds after which criu is killed, together with every process it restored so far, and the
        restore fails.
      - When not set, 30 seconds plus one second per 16 MiB of images, so a restore never hangs.
    type: float
  remove_images:
    description:
      - Once the process is restored and verified (or found already restored), remove O(images_dir)
        with all in it, through its parent held after the same trust rule, never through a symlink;
        the checkpoint is used up. The restore record goes with it, so a second run fails for want of
        a checkpoint.
      - The process runs either way, so a removal that fails does not fail the task;
        RV(images_removed) is then false and RV(images_remove_error) says why.
      - The C(migrate) role sets it (unless C(ckpt_migrate_keep_images)), so that the removal
        happens on the destination during the restore's own run, not in a run of its own.
    type: bool
    default: false
notes:
  - Must run as root on the managed node.
  - criu writes C(stats-restore) into its work directory; the module returns those
    timings in RV(timings.stats).
seealso:
  - module: ckpt.criu.dump
  - module: ckpt.criu.process_state
"""

EXAMPLES = r"""
- name: Restore the checkpoint and verify the process runs
  ckpt.criu.restore:
    images_dir: /var/lib/ckpt/app

- name: Restore stopped, as the second phase of a migration
  ckpt.criu.restore:
    images_dir: /var/lib/ckpt/app
    leave_stopped: true
    settle: 0.5
  register: restored

- name: Resume it once everything else is ready
  ckpt.criu.process_state:
    images_dir: /var/lib/ckpt/app
    instance: restored
    state: running
"""

RETURN = r"""
images_removed:
  description: Whether O(images_dir) was removed after the verified restore.
  returned: success, with O(remove_images)
  type: bool
  sample: true
images_remove_error:
  description: Why O(images_dir) could not be removed (the restore itself succeeded).
  returned: success, with O(remove_images), when the removal failed
  type: str
  sample: "cannot remove /var/lib/ckpt/app: Device or resource busy"
service_address:
  description:
    - The service address put on this host before criu ran (O(service_address)), with the time it took
      and C(announced), the number of gratuitous ARP frames sent after the restore (or, when they could
      not be sent, the sentence saying why; the restore still succeeds).
  returned: when O(service_address) was given and criu ran
  type: dict
  sample: {"address": "192.0.2.50/24", "interface": "eth0", "changed": true, "seconds": 0.004, "announced": 4}
pid:
  description: PID of the restored root process.
  returned: always
  type: int
  sample: 4242
unit:
  description: The systemd unit the process was restored under, and its state afterwards.
  returned: when the checkpoint was of a unit and O(as_unit=true)
  type: dict
  sample: {"name": "redis-server.service", "active_state": "active", "main_pid": 4242, "n_restarts": 0,
           "type": "notify", "start_seconds": 0.41}
process:
  description: Identity of the restored process after the restore (null in check mode).
  returned: always
  type: dict
  sample: {"pid": 4242, "start_time": 1289474, "boot_id": "3f0c...", "ppid": 1, "uid": 0,
           "comm": "python3", "state": "running", "cmdline": ["python3", "app.py"],
           "exe": "/usr/bin/python3.11", "cwd": "/srv/app"}
restore_record:
  description: The restore record written to C(ckpt-restore.json) (null in check mode).
  returned: always
  type: dict
  sample: {"schema": 1, "manifest_sha256": "9a1f...", "process": {"pid": 4242, "start_time": 1289474}}
verified:
  description:
    - What the post-restore verification observed. C(stdio_matches) says fds 0-2 point at what the
      checkpoint recorded (the same file, or the same kind of pipe or socket, or closed).
    - C(processes) and C(threads) count the processes and threads of the dumped tree (read from its
      C(pstree.img)); C(tree_matches) says every one of them is back (threads at the first look,
      processes after the settle time, each with its recorded command name).
  returned: always
  type: dict
  sample: {"settle": 1.5, "alive": true, "state": "running", "exe_sha256": "0b7c...",
           "exe_matches": true, "cmdline_matches": true, "stdio_matches": true,
           "processes": 4, "threads": 4, "tree_matches": true}
timings:
  description: Where the time went.
  returned: always
  type: dict
  contains:
    criu_duration:
      description: Wall time of C(criu restore), seconds (null when criu did not run).
      type: float
      returned: always
      sample: 0.12
    checks:
      description: Seconds spent in the verifications before criu (images, binaries, stdio files, PID).
      type: float
      returned: when the checks ran
      sample: 0.08
    verify:
      description: Seconds spent verifying the restored process (at least O(settle)).
      type: float
      returned: always
      sample: 1.5
    total:
      description: Seconds for the whole module run.
      type: float
      returned: always
      sample: 1.72
    resumed_at:
      description:
        - Wall-clock time (seconds since the epoch) at which C(criu restore -d) returned, that is when
          the process runs again. With the C(timings.frozen_at) of M(ckpt.criu.dump) it gives
          the downtime of a migration (both hosts' clocks assumed in sync).
      type: float
      returned: when criu ran
      sample: 1795749000.123456
    waited_for_manifest:
      description: Seconds spent waiting for the checkpoint to arrive (O(wait_for_manifest)); null when not waiting.
      type: float
      returned: when criu ran
      sample: 0.84
    hashed_while_waiting:
      description:
        - How many images were hashed while they arrived, during O(wait_for_manifest), instead of after the manifest
          came. The verification before criu runs hashes only the rest, and any image that changed since.
      type: int
      returned: when criu ran
      sample: 9
    prefault:
      description:
        - What O(prefault) did, freed just before criu ran; null without it.
        - C(requested_bytes), C(limit_bytes) (twice the request, or half of the available memory if less),
          C(touched_bytes) (less when the checkpoint arrived first), C(freed_at_arrival_bytes) (freed as the
          first image arrived) and C(seconds) from the start of the touching to its release.
      type: dict
      returned: when criu ran
      sample: {"requested_bytes": 1090519040, "limit_bytes": 2181038080, "touched_bytes": 2181038080,
               "freed_at_arrival_bytes": 1090519040, "seconds": 2.1}
    stats:
      description: criu's own statistics from C(stats-restore) (microseconds and pages).
      type: dict
      returned: always
      sample: {"forking_time_us": 1200, "restore_time_us": 52000, "pages_restored": 3700}
log_path:
  description: Absolute path of criu's C(-v4) restore log.
  returned: always
  type: str
  sample: /var/lib/ckpt/app/restore.log
criu_cmd:
  description: The exact criu command line that ran (null when criu did not run).
  returned: always
  type: list
  elements: str
  sample: ["/usr/sbin/criu", "restore", "-d", "-D", "/var/lib/ckpt/app"]
options:
  description: The restore options in effect (module options over the manifest's dump options).
  returned: when criu ran or would run
  type: dict
  sample: {"shell_job": false, "tcp_established": false, "ext_unix_sk": false,
           "file_locks": false, "external": [], "leave_stopped": false}
aborted:
  description:
    - True when the restore ended on the rollback of its migration (O(images_dir) removed, or C(.ckpt-abort) in it) before
      criu ran, so nothing was restored.
  returned: failure, with O(wait_for_manifest)
  type: bool
  sample: true
problems:
  description: Every verification that failed before criu ran.
  returned: failure
  type: list
  elements: str
  sample: ["image pages-1.img does not match its recorded sha256 (corrupted or altered)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._criu import parse_size
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError, fail
from ansible_collections.ckpt.criu.plugins.module_utils._identity import shown_result
from ansible_collections.ckpt.criu.plugins.module_utils._restore import restore


def main():
    module = AnsibleModule(
        argument_spec=dict(
            images_dir=dict(type="path", required=True),
            leave_stopped=dict(type="bool", default=False),
            settle=dict(type="float", default=1.5),
            pid_wait=dict(type="float", default=5.0),
            wait_for_manifest=dict(type="float", default=0.0),
            prefault=dict(type="raw"),
            service_address=dict(type="dict", options=dict(
                address=dict(type="str", required=True),
                interface=dict(type="str", required=True),
            )),
            verify_images=dict(type="bool", default=True),
            verify_binaries=dict(type="bool", default=True),
            as_unit=dict(type="bool", default=True),
            shell_job=dict(type="bool"),
            tcp_established=dict(type="bool"),
            ext_unix_sk=dict(type="bool"),
            file_locks=dict(type="bool"),
            external=dict(type="list", elements="str"),
            inherit_fd_file=dict(type="path"),
            timeout=dict(type="float"),
            criu_path=dict(type="path"),
            include_cmdline=dict(type="bool", default=False),
            remove_images=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    if module.params["settle"] < 0 or module.params["pid_wait"] < 0 or module.params["wait_for_manifest"] < 0:
        module.fail_json(msg="settle, pid_wait and wait_for_manifest must not be negative")
    params = dict(module.params)
    try:
        params["prefault"] = parse_size(params["prefault"], "prefault") if params["prefault"] not in (None, "") else None
        result = restore(params, check_mode=module.check_mode)
    except CkptError as exc:
        fail(module, exc, shown=lambda kw: shown_result(module.params, kw))
    module.exit_json(**shown_result(module.params, result))


if __name__ == "__main__":
    main()
