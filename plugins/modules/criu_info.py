#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: criu_info
short_description: Report the CRIU binary, its version, C(criu check) and kernel features on a host
version_added: 0.1.0
description:
  - Finds C(criu) (O(criu_path), then E(PATH), then V(/opt/ckpt-criu/bin/criu)), reads its version,
    runs C(criu check) and probes kernel features with C(criu check --feature NAME).
  - Derives what the other modules need to know before a checkpoint, for example whether
    iterative pre-dumps work (RV(pre_dump_supported), needs soft-dirty memory tracking) and which
    network lock backends are usable (RV(network_lock)).
  - Proves, rather than assumes, the two facts a feature check cannot answer (O(probes)). It dumps
    (C(--leave-running)) a throwaway process that holds a TCP listener on 127.0.0.1
    (RV(inet_dump_supported); CRIU before 4.2 cannot dump any TCP or UDP socket on kernel 6.16 and newer).
    It also runs a real lazy (post-copy) round trip on loopback (RV(lazy_pages_supported)). Each probe runs in a private
    temporary directory, takes tens to hundreds of milliseconds, and kills what it started.
  - Reports the effective capabilities of the module (the ones criu inherits) and names the missing
    ones that matter to CRIU.
  - A host without criu is a result, not a failure (RV(criu.found) is V(false)), unless O(required=true).
  - Read-only; never reports a change.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.INFO_MODULE
  - ckpt.criu.criu
options:
  required:
    description:
      - Fail unless criu is found, is version 4.1 or newer, and (with O(check=true)) C(criu check) passes.
    type: bool
    default: false
  features:
    description:
      - Names of the features to probe with C(criu check --feature NAME).
      - V(mem_dirty_track), V(uffd), V(uffd-noncoop) and V(network_lock_nftables) are always probed,
        because RV(pre_dump_supported), RV(uffd_supported) and RV(network_lock) derive from them.
      - Names CRIU 4.1.1 knows include V(mem_dirty_track), V(aio_remap), V(timerfd), V(tun_ns),
        V(userns), V(fdinfo_lock), V(seccomp_suspend), V(seccomp_filters), V(loginuid), V(cgroupns),
        V(autofs), V(tcp_half_closed), V(compat_cr), V(uffd), V(uffd-noncoop), V(can_map_vdso), V(sk_ns),
        V(sk_unix_file), V(net_diag_raw), V(nsid), V(link_nsid), V(kcmp_epoll), V(timens),
        V(external_net_ns), V(clone3_set_tid), V(newifindex), V(pidfd_store), V(ns_pid),
        V(apparmor_stacking), V(network_lock_nftables), V(sockopt_buf_lock), V(memfd_hugetlb),
        V(openat2), V(get_rseq_conf), V(ipv6_freebind), V(pagemap_scan), V(overlayfs_maps) and
        V(has_ipt_legacy). A name this criu does not know is reported as not supported, with
        RV(feature_details) saying so.
    type: list
    elements: str
    default:
      - mem_dirty_track
      - uffd
      - uffd-noncoop
      - pidfd_store
      - network_lock_nftables
      - has_ipt_legacy
      - timens
      - clone3_set_tid
      - ns_pid
      - tcp_half_closed
      - memfd_hugetlb
      - get_rseq_conf
      - pagemap_scan
  check:
    description:
      - Run C(criu check) (a few hundred milliseconds).
    type: bool
    default: true
  probes:
    description:
      - The real probes to run (see RV(probes)). A probe that does not run leaves its fact V(false),
        since nothing proved it.
      - V(inet_dump) dumps a throwaway TCP listener, leaving it running (about 0.1 s).
      - V(lazy_pages) dumps a throwaway process with C(--lazy-pages) and its page server on 127.0.0.1,
        and restores it with C(criu lazy-pages) and C(criu restore --lazy-pages) in a fresh PID and mount
        namespace (about 0.3 s; needs C(unshare) and C(nsenter) from util-linux). It runs only when the
        userfaultfd checks pass.
    type: list
    elements: str
    choices: [inet_dump, lazy_pages]
    default: [inet_dump, lazy_pages]
attributes:
  platform:
    platforms: posix
    support: full
    description: Linux only.
seealso:
  - module: ckpt.criu.binary_checksum
"""

EXAMPLES = r"""
- name: What can this host do?
  ckpt.criu.criu_info:
  register: criu

- name: Refuse pre-dumps where soft-dirty tracking is missing
  ansible.builtin.assert:
    that: criu.pre_dump_supported
    fail_msg: "{{ inventory_hostname }} cannot pre-dump: {{ criu.feature_details.mem_dirty_track.output }}"
  when: ckpt_checkpoint_pre_dump | bool

- name: Refuse TCP services where this criu cannot dump inet sockets (CRIU < 4.2 on kernel >= 6.16)
  ansible.builtin.assert:
    that: criu.inet_dump_supported
    fail_msg: "{{ inventory_hostname }}: {{ criu.probes.inet_dump.error }}; install CRIU 4.2 or newer"

- name: Fail early when criu is missing or broken
  ckpt.criu.criu_info:
    required: true
    features: [pidfd_store, network_lock_nftables]
"""

RETURN = r"""
criu:
  description: The criu binary.
  returned: always
  type: dict
  contains:
    found:
      description: Whether a usable criu executable was found.
      type: bool
      sample: true
    path:
      description: Path of the executable, V(null) when not found.
      type: str
      sample: /opt/ckpt-criu/bin/criu
    version:
      description: Version string, V(null) when unknown.
      type: str
      sample: 4.1.1
    major:
      description: Major version number.
      type: int
      sample: 4
    minor:
      description: Minor version number.
      type: int
      sample: 1
    sublevel:
      description: Sublevel version number.
      type: int
      sample: 1
    supported:
      description: Whether the version is 4.1 or newer, as this collection needs.
      type: bool
      sample: true
    msg:
      description: One sentence on why criu is not usable.
      type: str
      returned: when criu was not found or its version could not be read
      sample: criu was not found on PATH nor in /opt/ckpt-criu; install CRIU >= 4.1 or run scripts/install-criu.sh
check:
  description: Outcome of C(criu check).
  returned: always
  type: dict
  contains:
    ok:
      description: V(true) when criu said C(Looks good.).
      type: bool
      sample: true
    rc:
      description: Exit code of C(criu check), V(null) when it did not run.
      type: int
      sample: 0
    output:
      description: What C(criu check) printed (stdout and stderr).
      type: str
      sample: "Looks good."
    skipped:
      description: V(true) when C(criu check) did not run (O(check=false) or no criu).
      type: bool
      sample: false
features:
  description: Each probed feature and whether criu reports it supported here.
  returned: always
  type: dict
  sample: {mem_dirty_track: false, uffd: true, uffd-noncoop: true, pidfd_store: true}
feature_details:
  description: Per feature, C(supported), C(known) (V(false) when this criu does not know the name), C(rc) and
    C(output) of C(criu check --feature NAME).
  returned: always
  type: dict
  sample: {mem_dirty_track: {supported: false, known: true, rc: 1,
           output: "Warn (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work."}}
pre_dump_supported:
  description: Iterative pre-dumps (C(criu pre-dump --track-mem)) work here; needs soft-dirty memory tracking
    (V(mem_dirty_track)).
  returned: always
  type: bool
  sample: false
uffd_supported:
  description: The kernel's userfaultfd checks of C(criu check --feature) (V(uffd) and V(uffd-noncoop)) pass.
    Lazy pages need them, but they do not prove a lazy migration works (RV(lazy_pages_supported) does).
  returned: always
  type: bool
  sample: true
lazy_pages_supported:
  description: A real lazy (post-copy) round trip passed here (RV(probes.lazy_pages)); V(false) when it failed or
    did not run.
  returned: always
  type: bool
  sample: false
inet_dump_supported:
  description: This criu dumped a process holding a TCP listener on this kernel (RV(probes.inet_dump)); V(false)
    when it failed or did not run. Without it no TCP or UDP service can be checkpointed here.
  returned: always
  type: bool
  sample: true
probes:
  description: The outcome of each real probe.
  returned: always
  type: dict
  contains:
    inet_dump:
      description: The TCP listener dump, as C(ran), C(ok), C(error) (one sentence with criu's first real log
        error, V(null) when it passed), C(log_errors) and C(duration) in seconds.
      type: dict
      sample: {ran: true, ok: true, error: null, log_errors: [], duration: 0.11}
    lazy_pages:
      description: The lazy round trip, with the same keys as RV(probes.inet_dump).
      type: dict
      sample: {ran: true, ok: false, duration: 0.27,
               error: "criu dump exited 1, lazy exited 1, restore exited 1: page-pipe: tee: 65536: Operation not permitted",
               log_errors: ["(00.196549) Error (criu/page-pipe.c:418): page-pipe: tee: 65536: Operation not permitted"]}
root:
  description: Whether the module runs as root (effective UID 0).
  returned: always
  type: bool
  sample: true
capabilities:
  description: Effective capabilities of the module process, which criu inherits.
  returned: always
  type: dict
  contains:
    effective:
      description: Raw C(CapEff) mask from C(/proc/self/status), hex.
      type: str
      sample: 000001fffeffffff
    names:
      description: Names of the effective capabilities.
      type: list
      elements: str
      sample: [CAP_CHOWN, CAP_SYS_ADMIN]
    missing:
      description: Capabilities CRIU uses that are not effective.
      type: list
      elements: str
      sample: [CAP_SYS_RESOURCE]
    notes:
      description: One sentence per missing capability on what it costs.
      type: list
      elements: str
      sample: ["CAP_SYS_RESOURCE is missing: criu cannot raise its file descriptor limit (harmless log line)"]
network_lock:
  description: Network lock backends criu can use here (to freeze TCP connections during a dump).
  returned: always
  type: dict
  contains:
    iptables:
      description: An C(iptables-restore) executable is present (criu's default backend).
      type: bool
      sample: false
    nftables:
      description: criu was built with libnftables and the kernel supports it (V(network_lock_nftables)).
      type: bool
      sample: true
    available:
      description: Backends usable here, best first (V(nftables), V(iptables), and V(skip) which locks nothing).
      type: list
      elements: str
      sample: [nftables, skip]
    recommended:
      description: The backend to pass to criu (C(--network-lock)), V(null) when none locks anything.
      type: str
      sample: nftables
msg:
  description: One sentence summing up the host.
  returned: always
  type: str
  sample: "criu 4.2.1 at /opt/ckpt-criu/bin/criu; criu check passed; pre-dump not supported (no soft-dirty memory
    tracking); TCP/UDP sockets can be dumped; lazy pages NOT supported (criu dump exited 1, ...)"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._errors import run_job
from ansible_collections.ckpt.criu.plugins.module_utils._host_checks import CRIU_INFO_ARGS, criu_info


def main():
    run_job(AnsibleModule(supports_check_mode=True, **CRIU_INFO_ARGS), criu_info)


if __name__ == "__main__":
    main()
