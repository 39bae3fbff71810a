# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The preflight role's decisions: which processes are selected, which run,
what the destination already holds, and whether each process is ready,
absent or refused, with every cause in words.

Pure functions of what the role's tasks read on the hosts (registered
results of slurp, command, fd_inspect, binary_checksum, unit_info, stat,
inet_sockets); the filter plugin ``plugins/filter/preflight.py`` exposes them.
"""

from __future__ import annotations

import base64

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.ckpt.criu.plugins.module_utils import _report


def _int(value, default=0):
    """An int as Jinja's ``int`` filter reads one (``"12"``, ``"12.0"``), else ``default``."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        try:
            return int(float(str(value).strip()))
        except (TypeError, ValueError, OverflowError):
            return default


def _results(registered):
    """The ``results`` of a registered loop, or the ``per_pid`` of a module
    run for several PIDs (module_utils/_batch.py); [] when the task was
    skipped or not run."""
    if not isinstance(registered, dict):
        return []
    return [r for r in registered.get("results") or registered.get("per_pid") or [] if isinstance(r, dict)]


def _item_pid(r):
    """The PID a destination's result is about: its ``item`` (per_pid), or
    the ``item`` of the source's result it looped over."""
    item = r.get("item")
    return item.get("item") if isinstance(item, dict) else item


def _run_failure(registered):
    """The failure of a module run for several PIDs as a whole (say criu
    cannot be run), as the entry of each of its PIDs: ``{failed, msg}``;
    ``{}`` when it ran, was skipped or was a loop."""
    if not isinstance(registered, dict) or "msg" not in registered or registered.get("skipped"):
        return {}
    if "per_pid" in registered or "results" in registered:
        return {}
    return {"failed": True, "msg": registered["msg"]}


def _by_pid(registered, key=lambda r: r.get("item")):
    return {_int(key(r)): r for r in _results(registered)}


def _int_keys(mapping):
    return {_int(k): v for k, v in (mapping or {}).items()}


def selection(pids=None, pidfiles=None, units=None, cmdline_regex=None):
    """The process selection as the role's variables give it (lists or
    comma-separated strings): ``pids`` (as given, text), ``pidfiles``,
    ``units``, ``regex`` and ``selected`` (is anything selected at all)."""
    sel = {
        "pids": _report.as_list(pids),
        "pidfiles": _report.as_list(pidfiles),
        "units": _report.as_list(units),
        "regex": "" if cmdline_regex is None else str(cmdline_regex).strip(),
    }
    sel["selected"] = bool(sel["pids"] or sel["pidfiles"] or sel["units"] or sel["regex"])
    return sel


def candidates(sel, pidfile_reads=None, unit_reads=None, regex_read=None):
    """The selected processes, one dict each: ``selector`` (what selected
    it), ``pid`` (0 when none could be found), ``unit`` (for a systemd unit)
    and ``why`` (when there is no PID). A PID selected twice is kept once,
    under its first selector.

    ``sel`` is :func:`selection`'s result; ``pidfile_reads`` the registered
    slurp of each pidfile; ``unit_reads`` the registered ``systemctl show
    --property=MainPID --value`` of each unit; ``regex_read`` the registered
    ``pgrep -f``.
    """
    raw = []
    for p in sel.get("pids") or []:
        pid = _int(p, None)
        if pid is None or pid <= 0:
            raw.append({"selector": "pid %s" % p, "pid": 0,
                        "why": "%r is not a PID; give process IDs as positive numbers" % str(p)})
        else:
            raw.append({"selector": "pid %d" % pid, "pid": pid})
    for r in _results(pidfile_reads):
        path = r.get("item")
        selector = "pidfile %s" % path
        if "content" in r:
            text = base64.b64decode(r["content"]).decode("utf-8", errors="replace")
            words = text.split()
            pid = _int(words[0]) if words else 0
            if pid > 0:
                raw.append({"selector": selector, "pid": pid})
            else:
                raw.append({"selector": selector, "pid": 0, "why": "pidfile %s holds no PID" % path})
        else:
            raw.append({"selector": selector, "pid": 0,
                        "why": "pidfile %s cannot be read: %s" % (path, r.get("msg", "unknown error"))})
    for r in _results(unit_reads):
        unit = r.get("item")
        pid = _int(str(r.get("stdout") or "0").strip())
        if pid > 0:
            raw.append({"selector": "unit %s" % unit, "pid": pid, "unit": unit})
        else:
            raw.append({"selector": "unit %s" % unit, "pid": 0,
                        "why": "systemd unit %s has no main process (not running, or unknown: %s)"
                               % (unit, str(r.get("stderr") or "").strip())})
    regex = sel.get("regex") or ""
    if regex:
        lines = (regex_read or {}).get("stdout_lines") or []
        for line in lines:
            raw.append({"selector": "cmdline %s" % regex, "pid": _int(line)})
        if not lines:
            raw.append({"selector": "cmdline %s" % regex, "pid": 0,
                        "why": "no process command line matches %s" % regex})
    out = []
    seen = set()
    for c in raw:
        if c["pid"] == 0 or c["pid"] not in seen:
            out.append(c)
            seen.add(c["pid"])
    return out


def candidate_pids(cands):
    """The PIDs to look for: those of the candidates that have one."""
    return [c["pid"] for c in cands or [] if _int(c.get("pid")) > 0]


def unit_candidates(cands):
    """The candidates selected through a systemd unit."""
    return [c for c in cands or [] if c.get("unit") is not None]


def ps_state(stdout_lines):
    """From ``ps -o pid=,stat=,rss=``: ``present`` (the PIDs that run, not
    zombies) and ``rss`` (PID -> resident memory in bytes)."""
    present = []
    rss = {}
    for line in stdout_lines or []:
        w = str(line).split()
        if len(w) < 3:
            continue
        if not w[1].startswith("Z"):
            present.append(_int(w[0]))
        rss[_int(w[0])] = _int(w[2]) * 1024
    return {"present": present, "rss": rss}


def taken_pids(stdout_lines):
    """From ``ps -o pid=,comm=`` on the destination: PID -> its command."""
    out = {}
    for line in stdout_lines or []:
        w = str(line).split(None, 1)
        if w:
            out[_int(w[0])] = w[1] if len(w) > 1 else "?"
    return out


def tree_pids(present, fds):
    """Every PID of the selected process trees: the running roots and the
    ``processes`` each fd_inspect result lists, once each."""
    out = []
    for pid in list(present or []) + [p.get("pid") for r in _results(fds) for p in r.get("processes") or []]:
        pid = _int(pid)
        if pid not in out:
            out.append(pid)
    return out


def destination_files(fds):
    """The files the processes reopen by path (fd_inspect's
    ``files_on_destination``), each with ``owner_pid``, the root's PID."""
    out = []
    for r in _results(fds):
        for f in r.get("files_on_destination") or []:
            out.append(dict(f, owner_pid=_int(r.get("item"))))
    return out


def destination_stats(registered, fds):
    """The files the processes reopen by path (:func:`destination_files`),
    each as ``{"item": file, "stat": {"exists", "size", "st_mode"}}``, from
    one ``stat --printf '%f\\t%s\\t%n\\0' -- PATH...`` run on the
    destination (``registered``: its command result: raw mode in hex, size,
    path; a path it could not stat is missing from its output), or from a
    loop of ansible.builtin.stat over them (no ``st_mode`` then)."""
    if isinstance(registered, dict) and "results" in registered:
        return _results(registered)
    if not isinstance(registered, dict) or "stdout" not in registered:
        return []
    seen = {}
    for entry in str(registered.get("stdout") or "").split("\0"):
        fields = entry.split("\t", 2)
        if len(fields) == 3 and fields[1].isdigit():
            try:
                seen[fields[2]] = (int(fields[0], 16), int(fields[1]))
            except ValueError:
                continue
    out = []
    for f in destination_files(fds):
        mode, size = seen.get(f.get("path"), (None, None))
        out.append({"item": f, "stat": {"exists": f.get("path") in seen, "size": size, "st_mode": mode}})
    return out


def space_paths(root):
    """The images root and its parents up to ``/``, nearest first: the free
    space is read on the first that exists."""
    parts = [p for p in str(root or "").strip("/").split("/") if p]
    return ["/" + "/".join(parts[:i]) for i in range(len(parts), 0, -1)] + ["/"]


def space_need(present, rss, factor):
    """Bytes the images of the running processes need: their resident
    memory times ``factor``."""
    rss = _int_keys(rss)
    return int(sum(rss.get(_int(p), 0) for p in present or []) * float(factor))


def net_problems(src, dest=None, destination="", pids=None):
    """PID -> the socket and address problems inet_sockets found on this
    host (``src``, one result per PID) and on the destination (``dest``, one
    result per source result). A run for several PIDs that failed as a whole
    is a problem of each of ``pids``."""
    out = {}
    for registered, where, pid_of in ((src, None, lambda r: r.get("item")), (dest, destination, _item_pid)):
        whole = _run_failure(registered)
        for pid in (pids or []) if whole else []:
            out.setdefault(_int(pid), []).append("inet_sockets failed on %s: %s" % (
                where or "PID %s" % pid, whole["msg"]))
        for r in _results(registered):
            pid = pid_of(r)
            p = out.setdefault(_int(pid), [])
            if r.get("failed"):
                p.append("inet_sockets failed on %s: %s" % (where or "PID %s" % pid, r.get("msg", "no result")))
            p.extend(r.get("problems") or [])
    return out


def _first_by_item(registered, item):
    for r in _results(registered):
        if r.get("item") == item:
            return r
    return {}


def _blocker(b):
    if isinstance(b, str):
        return b
    if isinstance(b, dict):
        return b.get("msg", b.get("reason", str(b)))
    return str(b)


def _unit_causes(unit, ui, du, destination):
    if not du.get("exists"):
        return ["unit %s does not exist on %s (%s); install the same unit file there first"
                % (unit, destination, du.get("msg", "not inspected"))]
    if du.get("files_sha256") != ui.get("files_sha256"):
        return ["unit %s on %s is defined otherwise (%s there, %s here); install the same unit file and drop-ins"
                % (unit, destination, ", ".join(du.get("files") or []), ", ".join(ui.get("files") or []))]
    if du.get("running"):
        return ["unit %s already runs on %s (MainPID %d); the restore would meet a second copy"
                % (unit, destination, _int(du.get("main_pid")))]
    return []


def _mode(st_mode):
    """An st_mode as ls shows the type and 0NNN the permissions: 'file 0600'."""
    st_mode = _int(st_mode)
    kind = {0o100000: "file", 0o040000: "directory", 0o010000: "fifo", 0o020000: "character device",
            0o060000: "block device", 0o140000: "socket", 0o120000: "symlink"}.get(st_mode & 0o170000, "?")
    return "%s 0%03o" % (kind, st_mode & 0o7777)


def _destination_causes(pid, fd, ds, files, taken, problems, destination):
    causes = []
    if pid in taken:
        causes.append("PID %d is already in use on %s (%s); the restore needs the same PID free"
                      % (pid, destination, taken[pid]))
    for p in fd.get("processes") or []:
        ppid = _int(p.get("pid"))
        if ppid != pid and ppid in taken:
            causes.append("PID %d, a process of the tree of PID %d, is already in use on %s (%s); the restore "
                          "needs every PID of the tree free" % (ppid, pid, destination, taken[ppid]))
    if ds.get("failed"):
        causes.append("binary comparison on %s failed: %s" % (destination, ds.get("msg", "no result")))
    for f in files:
        item = f.get("item") or {}
        if _int(item.get("owner_pid")) != pid:
            continue
        stat = f.get("stat") or {}
        if not stat.get("exists"):
            causes.append("%s, open as fd %s of PID %s, does not exist on %s; the restore reopens it by path: "
                          "create it there first" % (item.get("path"), item.get("fd"), item.get("pid"), destination))
        elif item.get("same_size") and stat.get("size") != item.get("size"):
            causes.append("%s is %s bytes on %s, %s here; opened without O_APPEND, the restore needs the same size"
                          % (item.get("path"), stat.get("size"), destination, item.get("size")))
        elif None not in (stat.get("st_mode"), item.get("mode")) and _int(stat["st_mode"]) != _int(item["mode"]):
            causes.append("%s has mode %s on %s, %s here; the restore reopens it only with the same mode (type "
                          "and permissions): chmod it there"
                          % (item.get("path"), _mode(stat["st_mode"]), destination, _mode(item["mode"])))
    for m in ds.get("mismatches") or []:
        causes.append("on %s: %s" % (destination, m.get("msg", "%s differs" % m.get("path"))))
    causes.extend(problems.get(pid, []))
    return causes


def processes(cands, present=None, rss=None, fds=None, sums=None, unit_infos=None, dest_units=None,
              dest_sums=None, dest_files=None, dest_taken=None, net=None, destination="",
              assert_stdio=True, checksums=True, allow_absent=False):
    """The verdict on each candidate: ``selector``, ``pid``, ``present``,
    ``unit``, ``refused``, ``causes`` (in words), and what the checkpoint
    needs of it: ``identity``, ``criu_options``, ``rss_bytes``, ``exe``,
    ``binaries``.

    A candidate is refused when it has a cause, unless it is merely absent
    and ``allow_absent``. The registered results are the role's: ``fds``
    (fd_inspect per PID), ``sums`` (binary_checksum per PID), ``unit_infos``
    (unit_info per unit) and, with a ``destination``, ``dest_units``,
    ``dest_sums`` (binary_checksum per ``sums`` result), ``dest_files`` (one
    stat run over the :func:`destination_files`, see :func:`destination_stats`), ``dest_taken``
    (:func:`taken_pids`) and ``net`` (:func:`net_problems`).
    """
    present = [_int(p) for p in present or []]
    rss = _int_keys(rss)
    fd_by_pid = _by_pid(fds)
    sum_by_pid = _by_pid(sums)
    dsum_by_pid = _by_pid(dest_sums, key=_item_pid)
    fd_whole, sum_whole, dsum_whole = (_run_failure(r) for r in (fds, sums, dest_sums))
    files = destination_stats(dest_files, fds)
    taken = _int_keys(dest_taken)
    problems = _int_keys(net)
    destination = "" if destination is None else str(destination)
    assert_stdio, checksums, allow_absent = (boolean(v, strict=False) for v in (assert_stdio, checksums, allow_absent))
    out = []
    for c in cands or []:
        pid = _int(c.get("pid"))
        unit = c.get("unit")
        causes = []
        is_present = pid in present
        fd = fd_by_pid.get(pid, fd_whole)
        sm = sum_by_pid.get(pid, sum_whole)
        if not is_present:
            causes.append(c.get("why") or "no running process with PID %d (selected by %s)" % (pid, c.get("selector")))
        else:
            if fd.get("failed") or "process" not in fd:
                causes.append("fd_inspect failed on PID %d: %s" % (pid, fd.get("msg", "no result")))
            if assert_stdio:
                causes.extend(_blocker(b) for b in fd.get("blockers") or [])
            if unit is not None:
                ui = _first_by_item(unit_infos, unit)
                causes.extend(ui.get("refusals") or [])
                if destination:
                    causes.extend(_unit_causes(unit, ui, _first_by_item(dest_units, unit), destination))
            if checksums and (sm.get("failed") or "files" not in sm):
                causes.append("binary_checksum failed on PID %d: %s" % (pid, sm.get("msg", "no result")))
            if destination:
                causes.extend(_destination_causes(pid, fd, dsum_by_pid.get(pid, dsum_whole), files, taken, problems,
                                                  destination))
        out.append({
            "selector": c.get("selector"), "pid": pid, "present": is_present, "unit": unit,
            "refused": bool(causes) and (is_present or not allow_absent),
            "causes": causes,
            "identity": fd.get("process"),
            "criu_options": fd.get("criu_options") or {},
            "rss_bytes": rss.get(pid, 0),
            "exe": sm.get("exe"),
            "binaries": sm.get("files") or [],
        })
    return out


def result_rows(procs, host, destination=None):
    """The report's rows of the preflight (one per process, through
    :func:`_report.result_row`): ``ready``, ``absent`` or ``refused``."""
    rows = []
    for p in procs or []:
        result = "refused" if p.get("refused") else ("ready" if p.get("present") else "absent")
        rows.append(_report.result_row(p, "preflight", host, result, not p.get("refused"), destination=destination,
                                       causes=p.get("causes"), rss_bytes=p.get("rss_bytes")))
    return rows


def installed_criu(stdout_lines):
    """The criu the installer provided: its last line when that is a path, else ""."""
    last = str((list(stdout_lines or []) or [""])[-1])
    return last if last.startswith("/") else ""
