# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How results read to an operator: durations, process names, failure lines,
and why a run stops after a batch.

The roles build one result row per process (``action``, ``host``, ``pid``,
``selector``, ``result``, ``ok``, ``cause``, durations in seconds ...). These
functions turn rows into what the play prints; the filter plugin
``plugins/filter/report.py`` exposes them to the roles and playbooks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Every duration in a result row is in seconds, rounded to milliseconds.
SECONDS_DIGITS = 3


def seconds(value, digits=SECONDS_DIGITS):
    """A duration rounded to ``digits`` decimals; None (or "") stays None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return round(float(value), int(digits))


def as_list(value, sep=","):
    """A list from a list or a ``sep``-separated string, as operators pass
    them with ``-e`` or an AWX survey: items become trimmed strings and empty
    ones are dropped; None, "" and [] all give []."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split(sep)
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        items = [value]
    out = []
    for item in items:
        if item is None:
            continue
        text = str(item).strip()
        if text:
            out.append(text)
    return out


# The keys every result row has, in the order the JSON report writes them.
ROW_KEYS = ("action", "host", "destination", "pid", "selector", "result", "ok", "changed",
            "frozen_s", "image_bytes", "cause", "causes")


def result_row(proc, action, host, result, ok, changed=False, destination=None, causes=None, cause=None,
               frozen_s=None, image_bytes=None, **extra):
    """One result row of the report, the only place a row is built.

    ``proc`` is the process the row is about (a dict with ``pid`` and
    ``selector``, as preflight selects them) or None for a host-level row.
    ``cause`` defaults to the ``causes`` joined; ``frozen_s`` is rounded like
    every duration; ``extra`` keys (``dump_s``, ``mode`` ...) follow the
    common ones and may not replace them.
    """
    proc = proc or {}
    causes = [str(c) for c in (causes or []) if str(c).strip()]
    if cause is None:
        cause = " ".join(causes)
    pid = proc.get("pid")
    row = {
        "action": action, "host": host,
        "destination": destination if destination not in ("", None) else None,
        "pid": int(pid) if pid not in (None, "") else None,
        "selector": str(proc.get("selector") or ""),
        "result": result, "ok": bool(ok), "changed": bool(changed),
        "frozen_s": seconds(frozen_s),
        "image_bytes": int(image_bytes) if image_bytes not in (None, "") else None,
        "cause": str(cause or ""), "causes": causes,
    }
    clash = sorted(set(extra) & set(row))
    if clash:
        raise ValueError("result_row: extra keys %s replace common ones; pass them by name" % ", ".join(clash))
    row.update(extra)
    return row


def _pid(row):
    try:
        pid = int(row.get("pid") or 0)
    except (TypeError, ValueError):
        return 0
    return pid if pid > 0 else 0


def process_label(row, selector=False):
    """``PID 1234`` for a row with a PID, else what selected it (``pidfile
    /run/app.pid``): a pidfile that could not be read has no PID, and "PID 0"
    names nothing. With ``selector``, a PID is followed by its selector."""
    pid = _pid(row)
    sel = str(row.get("selector") or "").strip()
    if not pid:
        return sel or "no process"
    if selector and sel:
        return "PID %d (%s)" % (pid, sel)
    return "PID %d" % pid


def failures(rows, action=False):
    """One line per row that is not ok: ``PID 1234 (pidfile /run/a.pid)
    refused: <cause>``; with ``action``, the row's action first."""
    out = []
    for row in rows or []:
        if row.get("ok"):
            continue
        line = "%s %s" % (process_label(row, selector=True), row.get("result") or "failed")
        if action and row.get("action"):
            line = "%s %s" % (row["action"], line)
        cause = str(row.get("cause") or "").strip()
        out.append("%s: %s" % (line, cause) if cause else line)
    return out


def batch_stop(batch, active, host_failures, max_fail_percentage=0, serial=None, not_run=None):
    """Does the run stop after this batch, and why, in words.

    ``batch``: the hosts the batch started with; ``active``: those still in it
    (a host that failed a task or became unreachable has left);
    ``host_failures``: host -> the failure lines of its processes (a host with
    lines is about to fail); ``not_run``: hosts of later batches. The rule is
    ansible-core's max_fail_percentage, counting unreachable hosts too: stop
    when more than ``max_fail_percentage`` % of the batch failed.
    """
    batch = list(batch or [])
    active = set(active or [])
    host_failures = host_failures or {}
    pct = int(max_fail_percentage or 0)
    lost = [h for h in batch if h not in active]
    failing = [h for h in batch if h in active and host_failures.get(h)]
    bad = lost + failing
    stop = bool(batch) and len(bad) * 100 > pct * len(batch)
    result = {"stop": stop, "failed_hosts": failing, "lost_hosts": lost, "not_run": list(not_run or []),
              "msg": ""}
    if not stop:
        return result
    details = []
    for h in failing:
        details.append("%s: %s" % (h, "; ".join(line.rstrip(". ") for line in host_failures[h])))
    for h in lost:
        details.append("%s: failed or unreachable before its processes were handled (see the task output above)" % h)
    later = (" Not run: %s." % ", ".join(result["not_run"])) if result["not_run"] else ""
    result["msg"] = (
        "The run stops after this batch because of max_fail_percentage: %d of %d hosts in the batch (%s) failed, "
        "more than ckpt_max_fail_percentage=%d%% allows (batches of ckpt_serial=%s), so no further batch starts. %s.%s "
        "Fix the cause and run again (what is done already is skipped), or set ckpt_max_fail_percentage higher "
        "(e.g. -e ckpt_max_fail_percentage=100) to let later batches run past failed hosts."
        % (len(bad), len(batch), ", ".join(bad), pct, serial if serial not in (None, "") else len(batch),
           " ".join(d.rstrip(".") + "." for d in details).rstrip("."), later))
    return result


def _host_row(hostvars, host, action):
    """The row of a host without results: ``host failed`` when its play
    reached it (``ckpt_report_seen``), else ``not run`` (a later batch)."""
    seen = hostvars.get("ckpt_report_seen", False)
    seen = seen.strip().lower() in ("1", "yes", "y", "true", "on") if isinstance(seen, str) else bool(seen)
    if seen:
        result = "host failed"
        cause = ("no result from this host: it failed or was unreachable before its processes were handled "
                 "(see the play output)")
    else:
        result, cause = "not run", "the play stopped before this host's batch"
    return result_row(None, action, host, result, False, destination=hostvars.get("ckpt_migrate_destination"),
                      cause=cause)


def _vars_of(hostvars, host):
    """The variables of ``host`` ({} for a host the inventory lacks)."""
    if host not in hostvars:
        return {}
    found = hostvars[host]
    return found if isinstance(found, Mapping) else {}


def fleet_report(hostvars, hosts, result_vars, action, generated, check_mode=False, awx=None):
    """The report of a run (``ckpt_report``): every row the ``hosts`` hold in
    their ``result_vars``, a ``host failed`` or ``not run`` row for a host
    without any, and the summary (counts, counts by result, the longest
    frozen time, the bytes of all images). ``generated`` (the time) and
    ``awx`` (job_id, launch_type, schedule, user) come from the play."""
    rows = []
    for host in hosts or []:
        hv = _vars_of(hostvars, host)
        mine = [row for var in result_vars or [] for row in (hv.get(var) or [])]
        rows.extend(mine or [_host_row(hv, host, action)])
    frozen = [row.get("frozen_s") for row in rows if row.get("frozen_s") is not None]
    by_result = {}
    for row in rows:
        by_result[row.get("result")] = by_result.get(row.get("result"), 0) + 1
    awx = awx or {}
    return {
        "schema": 1,
        "action": action,
        "generated": generated,
        "check_mode": bool(check_mode),
        "awx": {key: awx.get(key) for key in ("job_id", "launch_type", "schedule", "user")},
        "summary": {"processes": len(rows), "ok": len([r for r in rows if r.get("ok")]),
                    "failed": len([r for r in rows if not r.get("ok")]), "by_result": by_result,
                    "frozen_max_s": max(frozen) if frozen else None,
                    "image_bytes": sum(int(r["image_bytes"]) for r in rows if r.get("image_bytes") is not None)},
        "processes": rows,
    }


def summary_lines(report):
    """The fleet summary as the play prints it: a headline, then one line per
    process (host, destination, process, result, frozen time and, for a
    migration, the raw limit of that checkpoint (criu and rsync alone), images,
    and the cause of a failure)."""
    summary = report["summary"]
    lines = ["ckpt.criu %s%s: %d of %d ok%s" % (
        report["action"], " (check mode)" if report.get("check_mode") else "", summary["ok"], summary["processes"],
        (", longest frozen %s s" % summary["frozen_max_s"]) if summary.get("frozen_max_s") is not None else "")]
    for row in report["processes"]:
        lines.append("%s%s %s: %s%s%s%s%s" % (
            row.get("host"), (" -> %s" % row["destination"]) if row.get("destination") else "",
            process_label(row, selector=True) if (row.get("pid") or row.get("selector")) else "-", row.get("result"),
            (", frozen %s s" % row["frozen_s"]) if row.get("frozen_s") is not None else "",
            (" (raw limit %s s)" % row["raw_limit_s"]) if row.get("raw_limit_s") is not None else "",
            (", images %.1f MiB" % (int(row["image_bytes"]) / 1048576)) if row.get("image_bytes") else "",
            (" -- %s" % row["cause"]) if (not row.get("ok") and row.get("cause")) else ""))
    return lines


def report_basename(name, action, job_id=None, run_id=None, generated=None):
    """The report files' name without extension: ``ckpt_report_name`` when
    set, else ``<action>-<AWX job id, else the run id, else the time the
    report was generated>``; that time (ISO 8601, as the report has it)
    becomes a stamp like ``20260101T120000Z``."""
    if name not in (None, "") and str(name):
        return str(name)
    for part in (job_id, run_id):
        if part is not None:
            return "%s-%s" % (action, part)
    if generated:
        return "%s-%sZ" % (action, re.sub(r"[-:]", "", str(generated)[:19]))
    return str(action)


def report_files(formats, directory, basename):
    """The paths of the report files of ``formats`` (a list or a
    comma-separated string)."""
    return ["%s/%s.%s" % (directory, basename, fmt) for fmt in as_list(formats)]


def outcome_line(row):
    """The line a role prints for one of its rows on the host: the process
    (a restore: its images directory and PID), the result, the frozen time
    and a checkpoint's images, and the cause of a failure."""
    cause = (": %s" % row.get("cause")) if not row.get("ok") else ""
    frozen = (", frozen %s s" % row["frozen_s"]) if row.get("frozen_s") is not None else ""
    if row.get("raw_limit_s") is not None:
        frozen += " (raw limit %s s)" % row["raw_limit_s"]
    if row.get("action") == "restore":
        return "%s: %s%s%s" % (row.get("images_dir"), row.get("result"),
                               (" (PID %s)" % row["pid"]) if row.get("pid") else "", cause)
    if row.get("action") == "checkpoint":
        images = ((", %s bytes in %s" % (row["image_bytes"], row.get("images_dir")))
                  if row.get("image_bytes") is not None else "")
        return "%s: %s%s%s%s" % (process_label(row), row.get("result"), frozen, images, cause)
    return "%s -> %s: %s%s%s" % (process_label(row), row.get("destination"), row.get("result"), frozen, cause)
