#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: dump
short_description: Checkpoint a running process tree with CRIU, with a verifiable manifest
version_added: 0.1.0
description:
  - Checkpoints the process tree rooted at O(pid) (or the PID in O(pidfile)) into O(images_dir)
    with C(criu dump), and writes the checkpoint manifest C(ckpt-manifest.json) last,
    atomically, mode 0600. Its presence means "this dump completed"; M(ckpt.criu.restore)
    verifies images and binaries against it.
  - B(By default the process is gone after a successful dump:) the module kills the dumped tree
    once its manifest is written (criu itself always leaves it stopped, so a module killed halfway
    never loses the workload; a guard process resumes it). Set O(leave_running=true) to take
    a snapshot and let the process carry on, or O(leave_stopped=true) to keep it frozen (state C(T))
    until you resume it with C(SIGCONT) or kill it (the two-phase migration).
  - Before anything is frozen, the module validates the target (no such PID, PID 1, kernel
    threads, zombies and its own ancestors are refused), runs the stdio preflight over every file
    descriptor of the tree (a pipe or socket to a process outside the tree, a terminal, and so on
    are refused with a sentence saying what to do, unless the options given make them safe),
    refuses a root task that is not a session leader unless O(shell_job=true), and gates
    O(pre_dump).
  - O(images_dir) is created with mode 0700 and criu runs under umask 077, so every image
    (process memory) is 0600. criu gets its own work directory and logs with C(-v4) to
    C(dump.log) in O(images_dir).
  - What the manifest records is documented in the collection (C(docs/dev/manifest.md)); it holds the host
    identity, criu version and argv, the process identity taken before the dump, the process
    tree, the fd table with its stdio verdicts, the sha256 and build-id of the executable and
    every mapped file, every image file with its size and sha256, and criu's own timings.
  - Two dumps into one O(images_dir) at once cannot both run; the second fails at once with
    "another dump into DIR is running" (an C(flock) on C(.ckpt-lock) in O(images_dir)).
  - B(On failure) no manifest is written, and the module makes sure the process runs again. CRIU
    resumes the tree when a dump fails; a task left stopped (for example when criu itself was
    killed) is sent C(SIGCONT) and the result says so. The partial images stay in O(images_dir)
    for diagnosis, next to C(ckpt-failed.json) (the cause and the files of that attempt); when the
    disk is full they are removed instead. A later dump into the same directory clears such a
    failed attempt of this module by itself; nothing else is removed without O(force).
  - Idempotent. When O(images_dir) holds a complete manifest of the same process (boot id, PID
    and start time) whose images verify, nothing is done, even when the process is gone since
    (the desired state "a complete checkpoint of P exists in DIR" holds). When the PID now belongs
    to another process, the directory holds another process's checkpoint, a damaged one, or
    anything without a manifest, the module fails unless O(force=true).
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.ACTION
  - ckpt.criu.criu
attributes:
  check_mode:
    details:
      - Runs every read-only check (target, directory, stdio preflight, pre-dump gate) and fails
        on them; predicts RV(ignore:changed) and writes nothing, not even O(images_dir).
options:
  pid:
    description:
      - PID of the root of the process tree to checkpoint.
      - Exactly one of O(pid), O(pidfile) and O(unit) is required.
    type: int
  unit:
    description:
      - A systemd service unit (V(redis-server) or V(redis-server.service)); its C(MainPID) is the
        root of the tree to checkpoint.
      - Refused, before anything changes, when the unit is not running, when its cgroup holds
        processes outside the tree of its main process, when it is socket-activated, or when it
        runs in namespaces of its own (C(PrivateUsers=), C(PrivateTmp=), C(ProtectSystem=) and
        the like; CRIU cannot dump such a process alone).
      - Unless O(leave_running=true), a runtime drop-in (C(/run/systemd/system/UNIT.d/50-ckpt-criu-hold.conf))
        sets C(Restart=no) and C(SuccessExitStatus=SIGKILL) before the dump, so systemd does not
        start a fresh copy and the unit ends C(inactive), not C(failed); the drop-in names the
        checkpoint. It stays until the restore (M(ckpt.criu.restore) puts the process back under
        its unit) and is removed if the dump fails.
      - The unit's journal stream on stdout/stderr is dumped as an external socket and recorded in
        the manifest with the unit file's sha256.
    type: str
    version_added: 0.1.0
  unit_boot_hold:
    description:
      - With O(unit), also write a persistent drop-in
        (C(/etc/systemd/system/UNIT.d/50-ckpt-criu-boot-hold.conf)) whose
        C(ConditionPathExists=!IMAGES_DIR/ckpt-manifest.json) keeps an enabled unit from starting a
        fresh copy at boot while its checkpoint waits; for a checkpoint, reboot, restore window.
      - The restore removes it; deleting the checkpoint lets the unit start normally at the next boot.
    type: bool
    default: false
    version_added: 0.1.0
  pidfile:
    description:
      - File holding the PID of the root of the tree (a daemon's pidfile).
      - Exactly one of O(pid), O(pidfile) and O(unit) is required.
    type: path
  images_dir:
    description:
      - Directory for the images and the manifest. Created with mode 0700 when missing.
      - Must be an absolute path owned by root, must not be or pass through a symlink, must not be
        a system directory such as V(/), V(/tmp) or V(/var), nor lie under V(/proc), V(/sys) or V(/dev).
    type: path
    required: true
  leave_running:
    description:
      - Let the process run on after the dump (C(--leave-running)), a snapshot.
      - Mutually exclusive with O(leave_stopped). With neither, the process is killed after a
        successful dump.
    type: bool
    default: false
  leave_stopped:
    description:
      - Leave the process stopped after the dump (C(--leave-stopped)), for a migration that
        restores elsewhere first and only then kills (or resumes, with C(SIGCONT)) the source.
    type: bool
    default: false
  shell_job:
    description:
      - Allow a root task that is not a session leader, or that uses a terminal (C(--shell-job)).
    type: bool
    default: false
  tcp_established:
    description:
      - Checkpoint established TCP connections (C(--tcp-established)). Needs a network lock
        backend; the nftables one is used when C(iptables) is absent and criu supports it.
    type: bool
    default: false
  ext_unix_sk:
    description:
      - Allow unix sockets whose peer is outside the dumped tree (C(--ext-unix-sk)), such as a
        journald-style stdout. The restore then needs that peer on the destination.
    type: bool
    default: false
  inherit_fd:
    description:
      - Let through pipes to or from a process outside the dumped tree (refused otherwise, since after a
        plain restore the process dies of SIGPIPE or reads end-of-file). The manifest records them,
        and M(ckpt.criu.restore) hands the restored process a replacement for each with
        C(--inherit-fd) (its O(ckpt.criu.restore#module:inherit_fd_file)).
    type: bool
    default: false
  external:
    description:
      - External resources, each passed as C(--external VALUE) (for example V(mnt[/data]:data)).
    type: list
    elements: str
    default: []
  file_locks:
    description:
      - Checkpoint file locks (C(--file-locks)).
    type: bool
    default: false
  ghost_limit:
    description:
      - Largest deleted-but-open file whose content criu copies into the images
        (C(--ghost-limit)); bytes, or a size such as V(1M) or V(512K).
    type: str
  page_server:
    description:
      - Send the memory pages to a CRIU page server on the destination (C(--page-server)), started
        there before with M(ckpt.criu.page_server). The other images stay in O(images_dir); the
        manifest lists the pages as remote.
    type: dict
    suboptions:
      address:
        description: Address of the page server.
        type: str
        required: true
      port:
        description: Port of the page server.
        type: int
        required: true
      tls:
        description: Use TLS (C(--tls)); implied by any of the TLS files.
        type: bool
        default: false
      tls_cacert:
        description: CA certificate to trust (C(--tls-cacert)).
        type: path
      tls_cert:
        description: Client certificate (C(--tls-cert)).
        type: path
      tls_key:
        description: Key of the client certificate (C(--tls-key)).
        type: path
  transfer:
    description:
      - After a successful dump, send the checkpoint to another host with C(rsync) over C(ssh), inside
        this task. Each file is renamed into place by rsync once whole.
      - Up to 64 MiB of images on this host (always so with O(page_server), whose pages are sent already)
        are hashed first and sent with the manifest in one rsync. Larger images leave at once, while they
        are hashed here, and the manifest follows alone. The result's C(timings.transfer.passes) says which.
      - This keeps a migration's frozen path in one task. Start the destination's restore first, as an
        C(async) task with O(ckpt.criu.restore#module:wait_for_manifest); it begins the moment the
        manifest arrives.
      - A failed transfer fails the task; the complete checkpoint stays in O(images_dir) and the
        process stays as the dump left it (stopped with O(leave_stopped)), for the caller to roll back.
      - Only a dump that ran sends anything; a checkpoint that already existed (the task reports no change) is not sent.
    type: dict
    suboptions:
      destination:
        description: V(HOST) or V(USER@HOST) to send to.
        type: str
        required: true
      path:
        description: Absolute directory on the destination (created by rsync when missing; its parent must exist).
        type: str
        required: true
      rsh:
        description:
          - The remote shell command as a list of single words (rsync's C(--rsh)), for example
            V(["ssh", "-o", "ControlMaster=auto", "-o", "ControlPath=/run/ckpt-criu-ssh/%C"]) to reuse a
            connection warmed before the freeze.
        type: list
        elements: str
        default: [ssh]
  service_address:
    description:
      - An IPv4 address that moves with the process (see M(ckpt.criu.service_address)). Right after criu
        dumped the frozen process, and before the manifest is sent with O(transfer), it is removed from
        O(service_address.interface) on this host, inside this task; the destination's
        M(ckpt.criu.restore) with the same O(ckpt.criu.restore#module:service_address) adds it there once
        the manifest arrived. Requires O(leave_stopped) (the process must not answer from here without it).
      - It is checked before criu runs; a bad value fails the task with nothing frozen. When the removal
        fails, the task fails with the checkpoint complete and the process stopped, for the caller to roll
        back (M(ckpt.criu.service_address) puts the address back).
    type: dict
    suboptions:
      address:
        description: The address with its prefix length, for example V(192.0.2.50/24).
        type: str
        required: true
      interface:
        description: The interface it is on, for example V(eth0).
        type: str
        required: true
  pre_dump:
    description:
      - Whether to pre-dump memory while the process runs, to shorten the frozen time.
      - V(auto) pre-dumps only when C(criu check --feature mem_dirty_track) passes (soft-dirty
        memory tracking), and otherwise skips it; RV(pre_dump) says why.
      - V(always) fails before anything is frozen when pre-dump is impossible on this host.
    type: str
    choices: [auto, never, always]
    default: auto
  force:
    description:
      - Dump even though O(images_dir) holds something else (another process's checkpoint, a damaged
        one, files without a manifest, or a checkpoint of an earlier process with this PID). The old
        content is never deleted; it is moved aside to C(<images_dir>.replaced-<time>), and
        RV(replaced) says where.
      - Does not redo a complete checkpoint of the same process.
    type: bool
    default: false
  timeout:
    description:
      - Seconds criu may take before it is killed (the process is then resumed). V(0) means no limit.
    type: float
    default: 0
"""

EXAMPLES = r"""
- name: Checkpoint a daemon for migration (it is killed after a successful dump)
  ckpt.criu.dump:
    pidfile: /run/myapp.pid
    images_dir: /var/lib/ckpt/myapp
  become: true

- name: Snapshot a process and let it run on
  ckpt.criu.dump:
    pid: "{{ app_pid | int }}"
    images_dir: /var/lib/ckpt/snapshot-1
    leave_running: true
  become: true

- name: Freeze the source and send its pages to the destination's page server
  ckpt.criu.dump:
    pid: "{{ app_pid | int }}"
    images_dir: /var/lib/ckpt/myapp
    leave_stopped: true
    page_server:
      address: 192.0.2.10
      port: 27027
  become: true
  register: ckpt

- name: Show how long the process was frozen
  ansible.builtin.debug:
    msg: "frozen for {{ ckpt.timings.frozen_time }} s, {{ ckpt.image_bytes }} bytes of images"
"""

RETURN = r"""
service_address:
  description: The service address taken off this host after the dump (O(service_address)).
  returned: when O(service_address) was given and criu dumped the process
  type: dict
  sample: {"address": "192.0.2.50/24", "interface": "eth0", "changed": true, "seconds": 0.004}
network_lock_tables:
  description:
    - With O(tcp_established) and O(leave_stopped), the nftables tables (V(FAMILY NAME)) criu's network lock
      left on this host; the dumped connections stay dropped there while the process is stopped. Delete them
      once the process is killed (or resumed); the C(migrate) role does. Empty when C(nft) is missing.
  returned: when O(tcp_established) and O(leave_stopped) and criu dumped the process
  type: list
  elements: str
  sample: ["inet CRIU-ecdc463f-eaa0-4abe-8c"]
images_dir:
  description: The images directory, normalised.
  returned: always
  type: str
  sample: /var/lib/ckpt/myapp
manifest_path:
  description: Path of the checkpoint manifest.
  returned: always
  type: str
  sample: /var/lib/ckpt/myapp/ckpt-manifest.json
manifest:
  description:
    - The checkpoint manifest (schema 1, see C(docs/dev/manifest.md)). V(null) in check mode when a dump would run.
  returned: always
  type: dict
  sample: {"schema": 1, "complete": true, "process": {"pid": 4242, "start_time": 123456}}
log_path:
  description: criu's log of the dump.
  returned: always
  type: str
  sample: /var/lib/ckpt/myapp/dump.log
criu_cmd:
  description: The criu argv that ran (or ran before, when nothing changed; V(null) in check mode).
  returned: always
  type: list
  elements: str
  sample: ["/usr/sbin/criu", "dump", "-t", "4242", "-D", "/var/lib/ckpt/myapp"]
image_bytes:
  description:
    - Total size of the checkpoint in bytes, the image files in O(images_dir) and, with O(page_server),
      the pages sent to the page server (criu's C(pages_written) times the page size), which are not in O(images_dir).
  returned: when a checkpoint exists
  type: int
  sample: 12345678
timings:
  description:
    - Seconds. C(freezing_time), C(frozen_time), C(memdump_time), C(memwrite_time) are criu's own
      (from C(stats-dump)); C(criu_duration) is the wall time of C(criu dump); C(total) the module's.
    - C(frozen_at) is the wall-clock time (seconds since the epoch) just before C(criu dump) started,
      the start of the downtime; C(transfer) holds the seconds O(transfer) took (C(images), C(manifest),
      C(total)) and its C(destination).
  returned: when a checkpoint exists
  type: dict
  sample: {"freezing_time": 0.0003, "frozen_time": 0.041, "memdump_time": 0.01, "memwrite_time": 0.02,
           "criu_duration": 0.3, "total": 0.9, "frozen_at": 1795749000.012345}
pre_dump:
  description: Whether a pre-dump ran (C(used)) and why (C(reason)).
  returned: always
  type: dict
  sample: {"used": false, "reason": "this kernel has no soft-dirty memory tracking"}
pid:
  description: The PID that was (or would be) checkpointed.
  returned: always
  type: int
  sample: 4242
replaced:
  description: With O(force), where the old content of O(images_dir) was moved (C(moved_to)) and why.
  returned: when old content was moved aside
  type: dict
  sample: {"moved_to": "/var/lib/ckpt/myapp.replaced-20261127T030000.000000Z", "reason": "it held content without a manifest"}
cleared_failed_attempt:
  description: Set when the leftovers of an earlier failed dump of this module were removed first.
  returned: when it happened
  type: str
  sample: cleared the leftovers of an earlier failed dump (the images directory ran out of space)
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._dump import dump
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError, fail


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pid=dict(type="int"),
            pidfile=dict(type="path"),
            unit=dict(type="str"),
            unit_boot_hold=dict(type="bool", default=False),
            images_dir=dict(type="path", required=True),
            leave_running=dict(type="bool", default=False),
            leave_stopped=dict(type="bool", default=False),
            shell_job=dict(type="bool", default=False),
            tcp_established=dict(type="bool", default=False),
            ext_unix_sk=dict(type="bool", default=False),
            inherit_fd=dict(type="bool", default=False),
            external=dict(type="list", elements="str", default=[]),
            file_locks=dict(type="bool", default=False),
            ghost_limit=dict(type="str"),
            page_server=dict(type="dict", options=dict(
                address=dict(type="str", required=True),
                port=dict(type="int", required=True),
                tls=dict(type="bool", default=False),
                tls_cacert=dict(type="path"),
                tls_cert=dict(type="path"),
                tls_key=dict(type="path"),
            )),
            transfer=dict(type="dict", options=dict(
                destination=dict(type="str", required=True),
                path=dict(type="str", required=True),
                rsh=dict(type="list", elements="str", default=["ssh"]),
            )),
            service_address=dict(type="dict", options=dict(
                address=dict(type="str", required=True),
                interface=dict(type="str", required=True),
            )),
            pre_dump=dict(type="str", default="auto", choices=["auto", "never", "always"]),
            force=dict(type="bool", default=False),
            timeout=dict(type="float", default=0),
            criu_path=dict(type="path"),
        ),
        required_one_of=[("pid", "pidfile", "unit")],
        mutually_exclusive=[("pid", "pidfile", "unit"), ("leave_running", "leave_stopped")],
        supports_check_mode=True,
    )
    if module.params["service_address"] and not module.params["leave_stopped"]:
        module.fail_json(msg="service_address moves the address away with the process, so it needs "
                             "leave_stopped: true (the process must not run here without its address)")
    if module.params["timeout"] < 0:
        module.fail_json(msg="timeout must not be negative (0 means no limit)")
    try:
        result = dump(module.params, check_mode=module.check_mode, warn=module.warn)
    except CkptError as exc:
        fail(module, exc)
    except (IOError, OSError) as exc:
        module.fail_json(msg="dump into %s failed: %s" % (module.params["images_dir"], exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
