# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The logic of ``ckpt.criu.process_state``: bring a named process (and the rest of its tree) to
running, stopped or killed, signalling it only when it is provably the process named: by an
identity, by the checkpoint of an images_dir, or by the record of its restore."""

from __future__ import annotations

import os
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _identity
from ansible_collections.ckpt.criu.plugins.module_utils import _manifest
from ansible_collections.ckpt.criu.plugins.module_utils import _netaddr
from ansible_collections.ckpt.criu.plugins.module_utils import _procfs
from ansible_collections.ckpt.criu.plugins.module_utils import _restore
from ansible_collections.ckpt.criu.plugins.module_utils import _unit
from ansible_collections.ckpt.criu.plugins.module_utils._restore import RestoreError


def expected_identity(params):
    """(identity dict, source description) of the process params name."""
    ident, source, dummy = expected_tree(params)
    return ident, source


def expected_tree(params):
    """(identity dict, source description, [{pid, start_time}] of the other members of
    its checkpointed tree, as the manifest recorded them; [] when unknown)."""
    if params.get("identity"):
        ident = dict(params["identity"])
        missing = [k for k in ("pid", "start_time") if ident.get(k) in (None, "")]
        if missing:
            raise RestoreError("identity must name at least pid and start_time (the PID alone may "
                               "have been reused); missing: %s" % ", ".join(missing))
        try:
            ident["pid"] = int(ident["pid"])
            ident["start_time"] = int(ident["start_time"])
        except (TypeError, ValueError):
            raise RestoreError("identity pid and start_time must be integers, got %r and %r"
                               % (ident.get("pid"), ident.get("start_time")))
        return ident, "the identity given", []
    if params.get("manifest"):
        images_dir = os.path.dirname(os.path.abspath(params["manifest"]))
        if os.path.basename(params["manifest"]) != _manifest.MANIFEST_NAME:
            raise RestoreError("manifest must be the path of a %s, got %s" % (_manifest.MANIFEST_NAME, params["manifest"]))
    else:
        images_dir = os.path.abspath(params["images_dir"])
    manifest, manifest_sha = _restore.load_manifest(images_dir)
    if params.get("instance") == "restored":
        record = _restore.read_record(images_dir)
        if not record or record.get("manifest_sha256") != manifest_sha:
            raise RestoreError("no restore record for the checkpoint in %s: the process was not restored "
                               "from it by ckpt.criu.restore (or the checkpoint changed since)" % images_dir)
        proc = record.get("process") or {}
        return ({k: proc.get(k) for k in ("pid", "start_time", "boot_id", "exe", "cmdline")},
                "the process restored from %s" % images_dir, [])
    proc = manifest["process"]
    ident = {k: proc.get(k) for k in ("pid", "start_time", "boot_id", "exe", "cmdline", "comm")}
    if ident.get("boot_id") is None:
        ident["boot_id"] = (manifest.get("host") or {}).get("boot_id")
    members = [{"pid": t.get("pid"), "start_time": t.get("start_time")} for t in manifest.get("tree") or []
               if isinstance(t, dict) and t.get("pid") != ident["pid"]]
    return ident, "the process checkpointed in %s" % images_dir, members


def process_unit(params):
    """The systemd unit whose process process_state acts on: ``unit``, or the
    unit a checkpoint (images_dir/manifest, source instance) was taken of."""
    if params.get("unit"):
        try:
            return _unit.unit_name(params["unit"])
        except _unit.UnitError as exc:
            raise RestoreError(exc.msg)
    if params.get("identity") or params.get("instance") == "restored":
        return None
    images_dir = os.path.dirname(os.path.abspath(params["manifest"])) if params.get("manifest") \
        else os.path.abspath(params["images_dir"])
    try:
        manifest, _sha = _restore.load_manifest(images_dir)
    except RestoreError:
        return None
    return (manifest.get("unit") or {}).get("name")


def ensure_process_state(params, check_mode=False, proc_root=_identity.PROC):
    """Bring the named process to params['state']; return the module result.

    For the process of a systemd unit, killing it first holds the unit (so
    systemd neither restarts it nor calls it failed), and once the process is
    killed or running again the collection's drop-ins are removed: the unit
    is itself again (inactive, or running that process)."""
    unit = process_unit(params) if params["state"] in ("running", "killed") else None
    if unit and not check_mode and not _unit.systemd_running():
        unit = None
    if unit and params["state"] == "killed" and not check_mode:
        # A unit running the process without our hold (say, restored under it) would restart it.
        if int(_unit.show(unit, ("MainPID",)).get("MainPID") or 0) > 0 and not _unit.our_drop_ins(unit):
            _unit.hold(unit, "(killed by ckpt.criu.process_state)", _manifest.utc_now())
    result = _ensure_process_state(params, check_mode, proc_root)
    if unit and not check_mode:
        released = _unit.release(unit)
        state = _unit.show(unit, ("ActiveState", "MainPID", "NRestarts"))
        result["unit"] = {"name": unit, "released": released, "active_state": state.get("ActiveState"),
                          "main_pid": int(state.get("MainPID") or 0),
                          "n_restarts": int(state.get("NRestarts") or 0)}
        result["changed"] = result["changed"] or bool(released)
    return result


def tree_members(pid, expected, recorded, proc_root=_identity.PROC):
    """[{pid, start_time, state}] of the other live processes of pid's tree.

    The live descendants of pid, and the members the checkpoint recorded
    (``recorded``, [{pid, start_time}]) that still run as themselves on the
    boot the checkpoint was taken on: a member outlives a root killed alone,
    reparented away from it. A frozen tree forks nothing, so for the
    checkpoint's own process the two agree."""
    found = {}

    def add(member, start_time=None):
        st = _identity.read_stat(member, proc_root)
        if st is None or (start_time is not None and st["start_time"] != int(start_time)):
            return
        found[member] = {"pid": member, "start_time": st["start_time"], "state": _identity.state_word(st["state"])}

    for member in _procfs.descendants(pid, proc_root):
        add(member)
    if recorded and expected.get("boot_id") in (None, _procfs.read_boot_id(proc_root)):
        for entry in recorded:
            if entry.get("pid") not in found and entry.get("pid") != pid and entry.get("start_time") is not None:
                add(int(entry["pid"]), entry["start_time"])
    return [found[k] for k in sorted(found)]


def _wait_members(pids, want, members, wait, proc_root):
    """Sentences for the signalled members that did not reach the wanted state in time."""
    starts = dict((m["pid"], m["start_time"]) for m in members)
    deadline = time.monotonic() + wait
    stuck = []
    for member in pids:
        left = max(0.0, deadline - time.monotonic())
        if want == "killed":
            # Dead is enough: an orphan stays a zombie until the host's init reaps it.
            now = _identity.wait_state(member, ("absent", "zombie"), left, proc_root)
            if now not in ("absent", "zombie") and not _identity.wait_gone(member, 0, proc_root,
                                                                           start_time=starts[member]):
                stuck.append("PID %d is still %s" % (member, now))
        else:
            now = _identity.wait_state(member, (want,), left, proc_root)
            if now not in (want, "absent"):
                stuck.append("PID %d is %s" % (member, now))
    return stuck


def _ensure_process_state(params, check_mode, proc_root):
    want = params["state"]
    wait = float(params.get("wait") if params.get("wait") is not None else 10.0)
    expected, source, recorded = expected_tree(params)
    pid = expected["pid"]
    live = _identity.read_identity(pid, proc_root)
    before = _identity.state_word(live["state"]) if live else "absent"
    result = {"changed": False, "pid": pid, "state": want, "before": before, "after": before,
              "expected": expected, "process": _identity.public(live), "signal": None, "tree_pids": []}

    if live is not None:
        diffs = _identity.differences(expected, live)
        if diffs:
            raise RestoreError(
                "PID %d now belongs to a different process than %s (%s differ): expected %s, found %s; "
                "nothing was signalled" % (pid, source, ", ".join(diffs), _identity.describe(expected),
                                           _identity.describe(live)),
                details={"pid": pid, "expected": expected, "process": _identity.public(live),
                         "differences": diffs, "before": before})
    # The rest of its tree goes with it: a checkpoint holds the whole tree, and the other
    # members of a frozen tree, left stopped, would outlive the commit or the rollback.
    members = tree_members(pid, expected, recorded, proc_root)
    pending = [m for m in members if _needs_signal(m["state"], want)]

    if want == "killed":
        root_done = before in ("absent", "zombie")
    else:
        if before in ("absent", "zombie"):
            raise RestoreError("process %d from %s is not running (%s); it cannot be made %s"
                               % (pid, source, "gone" if before == "absent" else "a zombie", want),
                               details={"pid": pid, "before": before, "expected": expected})
        if before == "traced":
            raise RestoreError("process %d from %s is stopped by a tracer (ptrace); a signal cannot make it %s "
                               "(is criu still running against it?)" % (pid, source, want),
                               details={"pid": pid, "before": before})
        root_done = before == want
    if root_done and not pending:
        result["msg"] = ("process %d from %s is not running (%s); nothing to kill" % (pid, source, before)
                         if want == "killed" else "process %d from %s is already %s" % (pid, source, want))
        return result

    result["changed"] = True
    result["signal"] = _identity.SIGNALS[want].name
    if check_mode:
        if not root_done:
            result["after"] = want if want != "killed" else "absent"
        result["tree_pids"] = [m["pid"] for m in pending]
        result["msg"] = "process %d from %s would be sent %s%s" % (pid, source, result["signal"],
                                                                   _tree_note(result["tree_pids"], root_done))
        return result

    if want == "running":
        # A process criu dumped with tcp_established and left stopped (a rolled-back
        # migration) has its connections in TCP repair mode: take them out first (the tree's).
        repaired, unrepaired = _netaddr.leave_repair(pid, proc_root)
        if repaired:
            result["tcp_repair_off"] = repaired
        if unrepaired:
            result.setdefault("warnings", []).append(
                "some TCP connections of process %d could not be taken out of repair mode, so they will not "
                "work: %s" % (pid, "; ".join(unrepaired)))
    if not root_done and not _identity.send_signal(pid, _identity.SIGNALS[want], start_time=live["start_time"],
                                                   proc_root=proc_root):
        raise RestoreError("process %d from %s exited or was replaced before it could be sent %s; nothing was "
                           "signalled" % (pid, source, result["signal"]), details={"pid": pid, "before": before})
    result["tree_pids"] = [m["pid"] for m in pending
                           if _identity.send_signal(m["pid"], _identity.SIGNALS[want], start_time=m["start_time"],
                                                    proc_root=proc_root)]
    if root_done:
        pass
    elif want == "killed":
        gone = _identity.wait_gone(pid, wait, proc_root, start_time=live["start_time"])
        now = _identity.read_stat(pid, proc_root)
        if gone or now is None or now["start_time"] != live["start_time"]:
            result["after"] = "absent"
        else:
            result["after"] = _identity.state_word(now["state"])
            if result["after"] != "zombie":
                raise RestoreError("process %d was sent SIGKILL but is still %s after %.1f s"
                                   % (pid, result["after"], wait), details=dict(result))
            result["warnings"] = ["process %d is dead but its parent (pid %d) has not reaped it after %.1f s; "
                                  "its PID stays taken until then" % (pid, now["ppid"], wait)]
    else:
        result["after"] = _identity.wait_state(pid, (want,), wait, proc_root)
        if result["after"] != want:
            raise RestoreError("process %d was sent %s but is %s after %.1f s"
                               % (pid, result["signal"], result["after"], wait), details=dict(result))
    stuck = _wait_members(result["tree_pids"], want, members, wait, proc_root)
    if stuck:
        raise RestoreError("process %d from %s is %s, but not all of its tree: %s after %s and %.1f s"
                           % (pid, source, result["after"], "; ".join(stuck), result["signal"], wait),
                           details=dict(result))
    result["process"] = _identity.public(_identity.read_identity(pid, proc_root))
    result["msg"] = "process %d from %s: %s -> %s%s" % (pid, source, before, result["after"],
                                                        _tree_note(result["tree_pids"], root_done))
    return result


def _needs_signal(state, want):
    """Whether a member in ``state`` still needs the signal of ``want``."""
    if want == "killed":
        return state not in ("absent", "zombie")
    return state == ("stopped" if want == "running" else "running")


def _tree_note(pids, root_done):
    if not pids:
        return ""
    return "; %s %d other process%s of its tree (%s)" % (
        "only" if root_done else "and", len(pids), "" if len(pids) == 1 else "es", ", ".join(str(p) for p in pids))
