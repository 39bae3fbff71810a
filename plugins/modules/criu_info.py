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
  - Reports the effective capabilities of the module (the ones criu inherits) and names the missing
    ones that matter to CRIU.
  - A host without criu is a result, not a failure (RV(criu.found) is V(false)), unless O(required=true).
  - Read-only; never reports a change.
author:
  - ckpt.criu contributors (@ckpt-criu)
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
        because RV(pre_dump_supported), RV(lazy_pages_supported) and RV(network_lock) derive from them.
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
lazy_pages_supported:
  description: Lazy (post-copy) restore works here; needs V(uffd) and V(uffd-noncoop).
  returned: always
  type: bool
  sample: true
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
  sample: criu 4.1.1 at /opt/ckpt-criu/bin/criu; criu check passed; pre-dump not supported (no soft-dirty tracking)
"""

import os
import re
import shutil

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils._criu import (
    CriuError,
    criu_check,
    criu_feature,
    criu_version,
    find_criu,
)

ALWAYS_PROBED = ("mem_dirty_track", "uffd", "uffd-noncoop", "network_lock_nftables")
FEATURE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
INSTALL_HINT = "run scripts/install-criu.sh or install criu >= 4.1 (or set criu_path)"

CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

# Capabilities criu uses, with what their absence costs.
CRIU_CAPS = (
    ("CAP_SYS_ADMIN", "criu cannot dump or restore most processes (namespaces, mounts, map_files)"),
    ("CAP_CHECKPOINT_RESTORE", "criu cannot set PIDs on restore nor read map_files without CAP_SYS_ADMIN"),
    ("CAP_SYS_PTRACE", "criu cannot seize the processes it dumps"),
    ("CAP_SYS_RESOURCE", "criu cannot raise its file descriptor limit (a harmless log line on small processes)"),
    ("CAP_NET_ADMIN", "criu cannot lock the network or dump TCP connections"),
    ("CAP_DAC_OVERRIDE", "criu cannot open files the dumped process owns"),
    ("CAP_DAC_READ_SEARCH", "criu cannot open files by handle (inotify, fanotify)"),
    ("CAP_SETUID", "criu cannot restore processes of other users"),
    ("CAP_SETGID", "criu cannot restore processes of other groups"),
    ("CAP_KILL", "criu cannot signal the processes it dumps"),
    ("CAP_SYS_CHROOT", "criu cannot restore a process's root directory"),
    ("CAP_FOWNER", "criu cannot restore file ownership details"),
)


def capabilities(status_path="/proc/self/status"):
    """Effective capabilities of this process and the criu-relevant missing ones."""
    mask = None
    try:
        with open(status_path) as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    mask = line.split(":", 1)[1].strip()
                    break
    except (IOError, OSError):
        pass
    if mask is None:
        return {"effective": None, "names": [], "missing": [],
                "notes": ["the effective capabilities could not be read from %s" % status_path]}
    value = int(mask, 16)
    names = [name for bit, name in enumerate(CAP_NAMES) if value >> bit & 1]
    missing, notes = [], []
    for name, cost in CRIU_CAPS:
        if name not in names:
            missing.append(name)
            notes.append("%s is missing: %s" % (name, cost))
    if "CAP_SYS_ADMIN" in names and "CAP_CHECKPOINT_RESTORE" in missing:
        # CAP_SYS_ADMIN covers everything CAP_CHECKPOINT_RESTORE grants.
        idx = missing.index("CAP_CHECKPOINT_RESTORE")
        missing.pop(idx)
        notes.pop(idx)
    return {"effective": mask, "names": names, "missing": missing, "notes": notes}


def _which(name):
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        cand = os.path.join(d, name)
        if os.access(cand, os.X_OK):
            return cand
    return None


def probe_features(criu, names):
    features, details = {}, {}
    for name in names:
        if name in features:
            continue
        if not FEATURE_NAME.match(name):
            features[name] = False
            details[name] = {"supported": False, "known": False, "rc": None,
                             "output": "not a feature name; use the names criu check --feature knows"}
            continue
        res = criu_feature(criu, name)
        known = "Unknown feature" not in res["output"]
        features[name] = bool(res["supported"]) and known
        details[name] = {"supported": features[name], "known": known, "rc": res.get("rc"),
                         "output": res["output"]}
    return features, details


def gather(params):
    result = {
        "changed": False,
        "criu": {"found": False, "path": None, "version": None, "major": None, "minor": None,
                 "sublevel": None, "supported": False},
        "check": {"ok": False, "rc": None, "output": "", "skipped": True},
        "features": {},
        "feature_details": {},
        "pre_dump_supported": False,
        "lazy_pages_supported": False,
        "root": os.geteuid() == 0,
        "capabilities": capabilities(),
        "network_lock": {"iptables": _which("iptables-restore") is not None, "nftables": False,
                         "available": [], "recommended": None},
    }
    problems = []
    try:
        criu = find_criu(params["criu_path"])
    except CriuError as exc:
        result["criu"]["msg"] = exc.msg
        result["msg"] = exc.msg
        _finish_network_lock(result)
        return result, ["%s; %s" % (exc.msg.split(";")[0], INSTALL_HINT)]
    result["criu"].update(found=True, path=criu)
    try:
        ver = criu_version(criu)
        result["criu"].update(version=ver["version"], major=ver["major"], minor=ver["minor"],
                              sublevel=ver["sublevel"], supported=bool(ver.get("supported")))
        if not result["criu"]["supported"]:
            problems.append("criu %s at %s is older than 4.1, which this collection needs; %s"
                            % (ver["version"], criu, INSTALL_HINT))
    except CriuError as exc:
        result["criu"]["found"] = False
        result["criu"]["msg"] = "%s exists but does not run as criu: %s" % (criu, exc.msg)
        result["msg"] = result["criu"]["msg"]
        _finish_network_lock(result)
        return result, ["%s; %s" % (result["criu"]["msg"], INSTALL_HINT)]

    if params["check"]:
        chk = criu_check(criu)
        result["check"] = {"ok": bool(chk["ok"]), "rc": chk.get("rc"), "output": chk["output"], "skipped": False}
        if not chk["ok"]:
            problems.append("criu check failed on this host (rc=%s): %s; fix what it reports (kernel "
                            "configuration, privileges) before checkpointing here" % (
                                chk.get("rc"), _last_line(chk["output"])))

    names = list(params["features"] or []) + [n for n in ALWAYS_PROBED if n not in (params["features"] or [])]
    feats, details = probe_features(criu, names)
    result["features"], result["feature_details"] = feats, details
    result["pre_dump_supported"] = feats.get("mem_dirty_track", False)
    result["lazy_pages_supported"] = feats.get("uffd", False) and feats.get("uffd-noncoop", False)
    result["network_lock"]["nftables"] = feats.get("network_lock_nftables", False)
    _finish_network_lock(result)

    summary = ["criu %s at %s" % (result["criu"]["version"], criu)]
    if params["check"]:
        summary.append("criu check %s" % ("passed" if result["check"]["ok"] else "FAILED"))
    summary.append("pre-dump %s" % ("supported" if result["pre_dump_supported"]
                                    else "not supported (no soft-dirty memory tracking)"))
    summary.append("lazy pages %s" % ("supported" if result["lazy_pages_supported"] else "not supported"))
    result["msg"] = "; ".join(summary)
    return result, problems


def _finish_network_lock(result):
    nl = result["network_lock"]
    available = []
    if nl["nftables"]:
        available.append("nftables")
    if nl["iptables"]:
        available.append("iptables")
    available.append("skip")
    nl["available"] = available
    nl["recommended"] = available[0] if available[0] != "skip" else None


def _last_line(text):
    lines = [ln for ln in (text or "").splitlines() if ln.strip() and "RLIMIT_NOFILE" not in ln]
    return lines[-1].strip() if lines else "no output"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            criu_path=dict(type="path"),
            required=dict(type="bool", default=False),
            features=dict(type="list", elements="str", default=[
                "mem_dirty_track", "uffd", "uffd-noncoop", "pidfd_store", "network_lock_nftables",
                "has_ipt_legacy", "timens", "clone3_set_tid", "ns_pid", "tcp_half_closed",
                "memfd_hugetlb", "get_rseq_conf", "pagemap_scan"]),
            check=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    try:
        result, problems = gather(module.params)
    except CriuError as exc:
        module.fail_json(changed=False, **exc.to_fail_kwargs())
    if problems and module.params["required"]:
        result["msg"] = problems[0]
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
