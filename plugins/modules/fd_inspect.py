#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: fd_inspect
short_description: Classify the open files of a process and say whether CRIU can checkpoint and restore it
version_added: 0.1.0
description:
  - Reads C(/proc) for a process (and by default all its descendants) and classifies every open file
    descriptor the way CRIU will meet it, then gives each one a verdict (RV(fds[].verdict)) and a sentence
    that says why and what to do.
  - Verdicts are V(ok); V(needs_option) (the dump fails unless a CRIU option is passed, for example
    C(--tcp-established) for an established TCP connection or C(--ghost-limit) for a deleted file over 1 MiB);
    V(needs_file_on_destination) (a regular file written without C(O_APPEND), so the restore needs the same
    file at the same size); and V(refuse) (the dump fails, or it succeeds and the restored process breaks).
  - Refused are a pipe whose other end is held outside the dumped tree (the restored process dies of SIGPIPE
    about 1.5 s after a restore that exits 0), a unix stream socket connected outside the tree (journald
    style, the dump fails), a terminal (the dump fails without C(--shell-job) and a headless restore fails),
    an fd on a mount the process's mount namespace cannot see (C(Can't lookup mount=N for fd=M)), and on
    kernel 6.16 and later with CRIU up to 4.1.1 every TCP or UDP socket (checkpoint-restore/criu#2705).
  - O(shell_job), O(tcp_established), O(ext_unix_sk), O(ghost_limit) and O(inherit_fd) say which options
    the dump and restore will use; they lift the matching refusals and RV(criu_options) lists the CRIU
    options needed.
  - A closed fd 0, 1 or 2 gets the verdict V(ok) with a warning. CRIU dumps and restores it fine, but it is
    dangerous (the incident this collection exists for, criu started with fds 1 and 2 closed printed and
    logged nothing), because the next file the process opens lands on that fd and receives everything the
    process writes to stdout or stderr. It is a warning, not a refusal, because checkpointing does not make
    it any worse.
  - The CRIU version (C(criu --version), CRIU found as O(criu_path) says) decides whether TCP and UDP sockets
    can be dumped on this kernel. When CRIU cannot be found, the version is unknown and the module warns
    about such sockets instead of refusing them.
  - Read-only; never reports a change.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.INFO_MODULE
  - ckpt.criu.criu
  - ckpt.criu.criu.CMDLINE
options:
  pid:
    description:
      - ID of the process to inspect. Exactly one of O(pid), O(pidfile) and O(pids) is required.
      - PID 1, kernel threads, zombies and the process running this task or its ancestors are refused.
    type: int
  pidfile:
    description:
      - File holding the ID of the process to inspect (its first word).
    type: path
  pids:
    description:
      - IDs of several processes to inspect in one run, each as O(pid) would (one module run instead of one
        per process). The results are in RV(per_pid); a process that cannot be inspected, or that
        O(assert_stdio) refuses, fails its own entry there, not the task.
    type: list
    elements: int
  ext_unix_sk_pids:
    description:
      - With O(pids), the processes for which O(ext_unix_sk) holds although it is V(false) (for example
        the main processes of systemd units, whose stdout is their journal's unix socket).
    type: list
    elements: int
    default: []
  tree:
    description:
      - Inspect the process and all its descendants, the tree C(criu dump -t PID) checkpoints.
      - When V(false), only the process itself; pipes and sockets to its children then count as outside.
    type: bool
    default: true
  assert_stdio:
    description:
      - Fail the task when any fd has the verdict V(refuse) or needs an option that is not given, with the
        blocker sentences as RV(blockers) and in C(msg).
    type: bool
    default: false
  shell_job:
    description:
      - The dump and restore will use C(--shell-job). Lifts the refusal of a terminal and of a session or
        process group leader outside the tree.
    type: bool
    default: false
  tcp_established:
    description:
      - The dump and restore will use C(--tcp-established). Lifts established TCP connections.
    type: bool
    default: false
  ext_unix_sk:
    description:
      - The dump and restore will treat unix sockets connected outside the tree as external
        (C(--ext-unix-sk=INODE,...)). The peer must listen at the same address where the process is restored.
    type: bool
    default: false
  inherit_fd:
    description:
      - The restore will hand the process a new other end of each pipe that leads outside the tree with
        C(--inherit-fd). Lifts the refusal of external pipes, as O(ckpt.criu.dump#module:inherit_fd) does;
        M(ckpt.criu.restore) then needs O(ckpt.criu.restore#module:inherit_fd_file).
    type: bool
    default: false
  ghost_limit:
    description:
      - The C(--ghost-limit) the dump will use, in bytes or as a size such as V(1M) or V(512K) (as for
        M(ckpt.criu.dump)). Deleted files larger than this are refused; CRIU's default is 1 MiB.
    type: str
attributes:
  platform:
    platforms: posix
    support: full
    description: Linux only (reads C(/proc) and asks the kernel through sock_diag netlink).
notes:
  - Reading another user's C(/proc/PID/fd) needs root; use C(become=true).
  - The peer of a unix socket is found through sock_diag in the network namespace of the task; for a process
    in another network namespace the peer cannot be seen and a connected unix socket counts as external.
seealso:
  - module: ckpt.criu.binary_checksum
"""

EXAMPLES = r"""
- name: Inspect the service before a checkpoint
  ckpt.criu.fd_inspect:
    pidfile: /run/myapp.pid
  register: fds

- name: Show what stands in the way
  ansible.builtin.debug:
    msg: "{{ fds.blockers }}"
  when: not fds.restorable

- name: Fail early when stdio cannot survive a restore, given the options the dump will use
  ckpt.criu.fd_inspect:
    pid: 4242
    assert_stdio: true
    tcp_established: true
    ghost_limit: 16777216
  register: preflight

- name: Pass exactly the CRIU options the inspection asked for
  ansible.builtin.debug:
    msg: "criu dump {{ preflight.criu_options | join(' ') }}"
"""

RETURN = r"""
process:
  description: Identity of the inspected process.
  returned: when O(pid) or O(pidfile) is given
  type: dict
  sample: {boot_id: 8e29d41d-d99a-4122-95dd-5fdb87223015, pid: 4242, start_time: 364971, ppid: 1, uid: 0,
           comm: python3, state: S, cmdline: [python3, /srv/app.py], exe: /usr/bin/python3.11, cwd: /srv}
  contains:
    boot_id:
      description: Boot id of the host.
      type: str
      sample: 8e29d41d-d99a-4122-95dd-5fdb87223015
    pid:
      description: Process ID.
      type: int
      sample: 4242
    start_time:
      description: Start time in clock ticks since boot (field 22 of C(/proc/PID/stat)).
      type: int
      sample: 364971
    ppid:
      description: Parent process ID.
      type: int
      sample: 1
    uid:
      description: Real user ID.
      type: int
      sample: 0
    comm:
      description: Command name.
      type: str
      sample: python3
    state:
      description: State letter from C(/proc/PID/stat).
      type: str
      sample: S
    cmdline:
      description: Arguments.
      type: list
      elements: str
      sample: [python3, /srv/app.py]
    exe:
      description: Executable path.
      type: str
      sample: /usr/bin/python3.11
    cwd:
      description: Working directory.
      type: str
      sample: /srv
processes:
  description: Identities of every process inspected (the tree, parents first), same keys as RV(process).
  returned: when O(pid) or O(pidfile) is given
  type: list
  elements: dict
  sample: [{pid: 4242, comm: python3, ppid: 1, start_time: 364971}]
fds:
  description: Classified fds of every inspected process, with a V(closed) entry for each missing fd 0, 1 or 2.
  returned: when O(pid) or O(pidfile) is given
  type: list
  elements: dict
  sample: [{pid: 4242, fd: 1, stdio: stdout, target: "pipe:[51728]", classification: pipe_external,
            verdict: refuse, reason: "fd 1 (stdout) is a pipe to process 4240 (logger)..."}]
  contains:
    pid:
      description: Process holding the fd.
      type: int
      sample: 4242
    fd:
      description: File descriptor number (V(null) for a process-level item such as a session leader outside).
      type: int
      sample: 1
    stdio:
      description: V(stdin), V(stdout) or V(stderr) for fds 0-2, else V(null).
      type: str
      sample: stdout
    target:
      description: What C(/proc/PID/fd/N) points to.
      type: str
      sample: "pipe:[51728]"
    flags:
      description: Open flags, decoded.
      type: list
      elements: str
      sample: [O_WRONLY, O_APPEND]
    classification:
      description:
        - What the fd is, for example V(closed), V(devnull), V(file_append), V(file), V(file_readonly),
          V(deleted_file), V(memfd), V(pipe_internal), V(pipe_external), V(unix_internal), V(unix_external),
          V(unix_listen), V(unix_unconnected), V(tcp_listen), V(tcp_established), V(udp), V(tty),
          V(pty_internal), V(anon_inode), V(device), V(foreign_mount).
      type: str
      sample: pipe_external
    verdict:
      description: V(ok), V(needs_option), V(needs_file_on_destination) or V(refuse).
      type: str
      sample: refuse
    reason:
      description: One sentence on what the fd is, what CRIU does with it and what to do.
      type: str
      sample: fd 1 (stdout) is a pipe to process 4240 (logger), which reads it and is outside the dumped tree...
    lifted_by:
      description: The option of this module that lifts the verdict, or V(null).
      type: str
      sample: inherit_fd
    criu_option:
      description: The CRIU option that lifting needs, or V(null).
      type: str
      sample: --tcp-established
    warning:
      description: A warning sentence, or V(null).
      type: str
      sample: null
    file:
      description:
        - For files, C(path), C(size) and whether the restore needs the same size (C(same_size)), and C(mode), the
          file's C(st_mode) (type and permissions), which criu needs the same where it reopens the file.
      type: dict
      sample: {path: /var/log/app.log, size: 4096, same_size: false}
stdio:
  description: The items of RV(fds) for fds 0, 1 and 2 of the inspected process.
  returned: when O(pid) or O(pidfile) is given
  type: list
  elements: dict
  sample: [{fd: 0, classification: devnull, verdict: ok}, {fd: 1, classification: file_append, verdict: ok},
           {fd: 2, classification: file_append, verdict: ok}]
criu_options:
  description: CRIU options the dump and restore need, given the options passed (one argv element each).
  returned: when O(pid) or O(pidfile) is given
  type: list
  elements: str
  sample: [--tcp-established, --ghost-limit=16777216]
dump_options:
  description: The part of RV(criu_options) for C(criu dump).
  returned: when O(pid) or O(pidfile) is given
  type: list
  elements: str
  sample: [--tcp-established]
restore_options:
  description: The part of RV(criu_options) for C(criu restore).
  returned: when O(pid) or O(pidfile) is given
  type: list
  elements: str
  sample: [--tcp-established]
files_on_destination:
  description:
    - Files the restore reopens by path (C(path), C(size), C(same_size), C(mode), C(pid), C(fd)). criu reopens each
      only if it is there with the same C(st_mode) (C(mode), type and permissions) and, with C(same_size), the same size.
  returned: when O(pid) or O(pidfile) is given
  type: list
  elements: dict
  sample: [{path: /var/log/app.log, size: 4096, same_size: false, pid: 4242, fd: 1}]
blockers:
  description: One sentence per fd (or process) that prevents a working checkpoint and restore.
  returned: when O(pid) or O(pidfile) is given
  type: list
  elements: str
  sample: ["fd 0 (stdin) is the terminal /dev/pts/0, whose other side is outside the dumped tree: ..."]
restorable:
  description: V(true) when nothing blocks a checkpoint and restore with the given options.
  returned: when O(pid) or O(pidfile) is given
  type: bool
  sample: true
criu_version:
  description: Version of the CRIU found (used for the TCP/UDP check), or V(null) when none was found.
  returned: always
  type: str
  sample: 4.1.1
per_pid:
  description:
    - With O(pids), one entry per process, in the order given. Each holds what the module returns for that
      process alone (RV(process), RV(fds), RV(blockers), RV(criu_options) and the others) and C(item), its
      PID. An entry whose process could not be inspected, or that O(assert_stdio) refuses, has
      C(failed=true) and C(msg).
  returned: when O(pids) is given
  type: list
  elements: dict
  sample: [{item: 4242, restorable: true, blockers: [], criu_options: [--tcp-established]}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._errors import run_job
from ansible_collections.ckpt.criu.plugins.module_utils._host_checks import FD_INSPECT_ARGS, fd_inspect


def main():
    run_job(AnsibleModule(supports_check_mode=True, **FD_INSPECT_ARGS), fd_inspect)


if __name__ == "__main__":
    main()
