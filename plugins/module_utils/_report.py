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
