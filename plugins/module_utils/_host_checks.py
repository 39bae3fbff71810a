# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The read-only checks of one host, each a module of its own or several in one run.

A module run costs 0.3 to 0.5 s of wall time here whatever it does (Ansible's
worker, the transfer, a Python start, ansible-core's imports), and a
preflight made nine of them per migration, one per check and host. Each
check is therefore a *job*: its module arguments (``argument_spec`` and the
rules between options) and a function ``job(params, warn) -> result``. The
module of that name (criu_info, read_commands, fd_inspect, binary_checksum,
inet_sockets) runs one job; ``ckpt.criu.host_checks`` runs several, each
validated against the same arguments, in one run (:func:`run_jobs`).

A job returns the module's whole result. A failure the module reports with
its result (a refused PID, a mismatch) sets ``failed`` and ``msg`` in it; a
failure of the whole job raises :class:`CkptError`.
"""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.ckpt.criu.plugins.module_utils import _batch, _criu_info, _netaddr, _procfs, _stdio
from ansible_collections.ckpt.criu.plugins.module_utils._commands import READ_COMMANDS_ARGS, read_commands
from ansible_collections.ckpt.criu.plugins.module_utils._checksum import (
    DEFAULT_CACHE,
    ChecksumError,
    compare,
    file_record,
    load_expected,
    process_files,
    summarize_mismatches,
)
from ansible_collections.ckpt.criu.plugins.module_utils._criu import CriuError, criu_version, find_criu, parse_size
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError
from ansible_collections.ckpt.criu.plugins.module_utils._identity import shown_result
from ansible_collections.ckpt.criu.plugins.module_utils._procfs import ProcfsError

# ---------------------------------------------------------------- criu_info

CRIU_INFO_ARGS = dict(
    argument_spec=dict(
        criu_path=dict(type="path"),
        required=dict(type="bool", default=False),
        features=dict(type="list", elements="str", default=list(_criu_info.DEFAULT_FEATURES)),
        check=dict(type="bool", default=True),
        probes=dict(type="list", elements="str", choices=list(_criu_info.PROBES), default=list(_criu_info.PROBES)),
    ),
)


def criu_info(params, warn):
    """ckpt.criu.criu_info: what CRIU can do here; failed only with ``required`` and a problem."""
    result, problems = _criu_info.gather(params)
    if problems and params["required"]:
        result.update(failed=True, msg=problems[0])
    return result


# ---------------------------------------------------------------- fd_inspect

FD_INSPECT_ARGS = dict(
    argument_spec=dict(
        pid=dict(type="int"),
        pidfile=dict(type="path"),
        pids=dict(type="list", elements="int"),
        ext_unix_sk_pids=dict(type="list", elements="int", default=[]),
        tree=dict(type="bool", default=True),
        assert_stdio=dict(type="bool", default=False),
        shell_job=dict(type="bool", default=False),
        tcp_established=dict(type="bool", default=False),
        ext_unix_sk=dict(type="bool", default=False),
        inherit_fd=dict(type="bool", default=False),
        ghost_limit=dict(type="str"),
        criu_path=dict(type="path"),
        include_cmdline=dict(type="bool", default=False),
    ),
    mutually_exclusive=[("pid", "pidfile", "pids")],
    required_one_of=[("pid", "pidfile", "pids")],
)

LIFT_OPTIONS = ("shell_job", "tcp_established", "ext_unix_sk", "inherit_fd", "ghost_limit")


def inspect_fds(p, pid, version):
    """What fd_inspect returns for one process, and the refusal (a sentence,
    or None) that O(assert_stdio) turns into a failure."""
    identity = _procfs.validate_target_pid(pid)
    result = _stdio.classify(identity["pid"], tree=p["tree"], criu_version=version)
    processes = []
    for q in result["ctx"]["pids"]:
        try:
            processes.append(identity if q == identity["pid"] else _procfs.process_identity(q))
        except ProcfsError:
            continue
    plan = _stdio.plan(result["items"], dict((k, p[k]) for k in LIFT_OPTIONS))
    out = dict(changed=False, process=identity, processes=processes, criu_version=version,
               fds=[_stdio.public_item(i) for i in result["items"]],
               stdio=[_stdio.public_item(i) for i in result["stdio"]])
    for key in ("criu_options", "dump_options", "restore_options", "files_on_destination", "blockers",
                "restorable", "warnings"):
        out[key] = plan[key]
    refusal = None
    if p["assert_stdio"] and plan["blockers"]:
        refusal = "PID %d cannot be checkpointed and restored safely: %s" % (
            identity["pid"], " ".join(plan["blockers"]))
    return out, refusal


def criu_version_of(p):
    """The version of the criu the dump will use, None when there is none (an
    error only when O(criu_path) names one that does not work)."""
    try:
        return criu_version(find_criu(p["criu_path"]))["version"]
    except CriuError:
        if p["criu_path"]:
            raise
    return None


def fd_inspect(p, warn):
    """ckpt.criu.fd_inspect: every open file of a process (or of each of ``pids``) and the verdict."""
    p = dict(p, ghost_limit=parse_size(p["ghost_limit"], "ghost_limit"))
    version = criu_version_of(p)
    if p["pids"] is not None:
        ext = set(p["ext_unix_sk_pids"] or [])

        def one(pid):
            q = dict(p, ext_unix_sk=p["ext_unix_sk"] or pid in ext)
            out, refusal = inspect_fds(q, pid, version)
            out = shown_result(p, out)
            if refusal:
                out.update(failed=True, msg=refusal)
            return out

        per_pid = _batch.each(p["pids"], one)
        for entry in per_pid:
            for warning in entry.pop("warnings", None) or []:
                warn("PID %s: %s" % (entry["item"], warning))
        return dict(changed=False, criu_version=version, per_pid=per_pid)
    pid = p["pid"] if p["pid"] is not None else _procfs.read_pidfile(p["pidfile"])
    out, refusal = inspect_fds(p, pid, version)
    for warning in out.pop("warnings"):
        warn(warning)
    if refusal:
        out.update(failed=True, msg=refusal)
    return shown_result(p, out)


# ---------------------------------------------------------------- binary_checksum

BINARY_CHECKSUM_ARGS = dict(
    argument_spec=dict(
        pid=dict(type="int"),
        pidfile=dict(type="path"),
        paths=dict(type="list", elements="path"),
        pids=dict(type="list", elements="int"),
        expected_per_pid=dict(type="list", elements="dict"),
        exe_only=dict(type="bool", default=False),
        expected=dict(type="raw"),
        fail_on_mismatch=dict(type="bool", default=True),
    ),
    mutually_exclusive=[("pid", "pidfile", "paths", "pids", "expected_per_pid"),
                        ("expected", "pids"), ("expected", "expected_per_pid")],
    required_one_of=[("pid", "pidfile", "paths", "expected", "pids", "expected_per_pid")],
)


def check_binaries(p, pid=None, expected=None, warn=None):
    """What binary_checksum returns for one process (``pid``) or for the files
    of O(paths) or ``expected``, and the failure (a sentence, or None) that
    O(fail_on_mismatch) makes of a mismatch."""
    result = {"changed": False}
    only_paths = None
    if pid is not None:
        recs = process_files(pid, exe_only=p["exe_only"])
        result.update(pid=int(pid), exe=recs["exe"], files=recs["files"])
        if p["exe_only"]:
            only_paths = [recs["exe"]["path"]]
        for rec in recs["files"]:
            if rec.get("note") and warn:
                warn(rec["note"])
    else:
        if p["paths"] is not None and not p["paths"]:
            raise ChecksumError("paths is empty; list at least one file to check")
        paths = p["paths"] or [rec["path"] for rec in expected]
        if not paths:
            raise ChecksumError("expected lists no files, so there is nothing to check; give a manifest or "
                                "result that has binary records")
        files, seen = [], set()
        for path in paths:
            rec = file_record(path)
            if rec["path"] not in seen:
                seen.add(rec["path"])
                files.append(rec)
        result["files"] = files
        if p["paths"] is not None:
            only_paths = list(p["paths"])
    failure = None
    if expected is not None:
        matched, mismatches = compare(expected, result["files"], only_paths=only_paths)
        result.update(matches=not mismatches, matched=matched, mismatches=mismatches)
        if mismatches and p["fail_on_mismatch"]:
            failure = summarize_mismatches(mismatches, len(matched) + len(mismatches))
    return result, failure


def _checksum_batch_key(entry):
    """The C(item) of an O(expected_per_pid) entry (its PID)."""
    if not isinstance(entry, dict) or "item" not in entry:
        raise ChecksumError("each entry of expected_per_pid must be a result of this module with pids (an entry "
                            "of its per_pid, with item and files); got %r" % (entry,))
    return entry["item"]


def binary_checksum(p, warn):
    """ckpt.criu.binary_checksum: sha256 and build-id of binaries, compared when ``expected`` is given."""
    per_pid = None
    if p["pids"] is not None:
        def one(pid):
            res, dummy = check_binaries(p, pid=pid, warn=lambda note: warn("PID %s: %s" % (pid, note)))
            return res
        per_pid = _batch.each(p["pids"], one)
    elif p["expected_per_pid"] is not None:
        entries = dict((_checksum_batch_key(e), e) for e in p["expected_per_pid"])

        def one(key):
            res, failure = check_binaries(p, expected=load_expected(entries[key]))
            if failure:
                res.update(failed=True, msg=failure)
            return res
        per_pid = _batch.each(list(entries), one)
    if per_pid is not None:
        for entry in per_pid:
            entry.pop("changed", None)
        return {"changed": False, "per_pid": per_pid, "cache": DEFAULT_CACHE.stats()}
    expected = load_expected(p["expected"]) if p["expected"] is not None else None
    pid = None
    if p["pid"] is not None or p["pidfile"]:
        pid = p["pid"] if p["pid"] is not None else _procfs.read_pidfile(p["pidfile"])
    result, failure = check_binaries(p, pid=pid, expected=expected, warn=warn)
    result["cache"] = DEFAULT_CACHE.stats()
    if failure:
        result.update(failed=True, msg=failure)
    return result


# ---------------------------------------------------------------- inet_sockets

INET_SOCKETS_ARGS = dict(
    argument_spec=dict(
        pid=dict(type="int"),
        sockets=dict(type="list", elements="dict"),
        pids=dict(type="list", elements="int"),
        sockets_per_pid=dict(type="list", elements="dict"),
        service_address=dict(type="str", default=""),
        service_interface=dict(type="str", default=""),
        destination=dict(type="str", default="this host"),
    ),
    mutually_exclusive=[("pid", "sockets", "pids", "sockets_per_pid")],
    required_one_of=[("pid", "sockets", "pids", "sockets_per_pid")],
)


def inet_sockets(p, warn):
    """ckpt.criu.inet_sockets: a tree's TCP/UDP sockets and their problems here (the source), or the
    problems the given sockets would have here (the destination)."""
    service = None
    if p["service_address"]:
        service = _netaddr.parse_service_address(p["service_address"], p["service_interface"])[0]
    link_list = _netaddr.links()
    addresses = _netaddr.host_addresses(link_list)

    def on_source(pid):
        sockets = _netaddr.tree_sockets(pid)
        problems = _netaddr.source_problems(sockets, addresses, service, p["service_interface"], link_list)
        return dict(sockets=sockets, problems=problems)

    def on_destination(sockets):
        return dict(problems=_netaddr.destination_problems(
            sockets, addresses, _netaddr.listening(), service, p["destination"], p["service_interface"],
            link_list))

    if p["pids"] is not None:
        return dict(changed=False, addresses=addresses, per_pid=_batch.each(p["pids"], on_source))
    if p["sockets_per_pid"] is not None:
        entries = dict((e.get("item"), e.get("sockets") or []) for e in p["sockets_per_pid"])
        return dict(changed=False, addresses=addresses,
                    per_pid=_batch.each(list(entries), lambda pid: on_destination(entries[pid])))
    result = on_source(p["pid"]) if p["pid"] is not None else dict(on_destination(p["sockets"]), sockets=[])
    return dict(changed=False, addresses=addresses, **result)


# ---------------------------------------------------------------- several in one run

# The options of ckpt.criu.host_checks, in the order its jobs run.
JOBS = (
    ("criu", "criu_info", CRIU_INFO_ARGS, criu_info),
    ("reads", "read_commands", READ_COMMANDS_ARGS, read_commands),
    ("fds", "fd_inspect", FD_INSPECT_ARGS, fd_inspect),
    ("checksums", "binary_checksum", BINARY_CHECKSUM_ARGS, binary_checksum),
    ("sockets", "inet_sockets", INET_SOCKETS_ARGS, inet_sockets),
)


def validated(args, given, module_name):
    """``given`` checked against a module's arguments, defaults filled in, as
    AnsibleModule would; CkptError naming the module when it is not valid
    (the caller puts the option's name before it)."""
    if not isinstance(given, dict):
        raise CkptError("not a dictionary of the options of ckpt.criu.%s: %r" % (module_name, given))
    rules = dict((k, v) for k, v in args.items() if k != "argument_spec")
    res = ArgumentSpecValidator(args["argument_spec"], **rules).validate(given)
    if res.error_messages:
        raise CkptError("not valid options of ckpt.criu.%s: %s" % (module_name, "; ".join(res.error_messages)))
    return res.validated_parameters


def run_jobs(params, warn):
    """ckpt.criu.host_checks: each job given in ``params`` (by option name)
    run in turn, its result under its option; one that fails does not stop
    the others. ``failed`` names the jobs that failed; ``msg`` says what."""
    out = {"changed": False, "failed_jobs": []}
    ran = 0
    for option, module_name, args, job in JOBS:
        if params.get(option) is None:
            continue
        try:
            res = job(validated(args, params[option], module_name),
                      lambda msg, option=option: warn("%s: %s" % (option, msg)))
        except CkptError as exc:
            res = dict(exc.to_fail_kwargs(), failed=True)
        res.pop("changed", None)
        out[option] = res
        ran += 1
        if res.get("failed"):
            out["failed_jobs"].append(option)
    out["msg"] = "; ".join("%s: %s" % (option, out[option].get("msg", "failed")) for option in out["failed_jobs"]) \
        or "ran %d check%s" % (ran, "" if ran == 1 else "s")
    return out
