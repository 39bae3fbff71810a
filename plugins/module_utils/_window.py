# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The playbooks' guards: the maintenance window a run must start in, and the
verdict after each batch of hosts.

Pure functions of their inputs (the clock is an input too); the filter plugin
``plugins/filter/window.py`` exposes them to ``playbooks/tasks/window_guard.yml``
and ``playbooks/tasks/batch_guard.yml``.
"""

from __future__ import annotations

import datetime
import json

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.ckpt.criu.plugins.module_utils import _report

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# The format of ckpt_window_now, the time a window is evaluated at in a test.
NOW_FORMAT = "%Y-%m-%d %H:%M"


def _text(value):
    return "" if value is None else str(value).strip()


def window_days(days):
    """The days of a window as ``mon`` ... ``sun``, from a list or a comma
    string; a day may be spelled out (``Monday``): its first three letters
    count. An empty value is every day ([])."""
    out = []
    for item in _report.as_list(days):
        day = item.lower()[:3]
        if day not in DAY_NAMES:
            raise ValueError(
                "ckpt_window_days: %r is not a day of the week; give days as %s (a list or a comma-separated "
                "string), or leave it empty for every day" % (item, ",".join(DAY_NAMES)))
        out.append(day)
    return out


def minutes(value, name):
    """Minutes since midnight of an ``HH:MM`` (or ``HH``) time of ``name``."""
    text = _text(value)
    parts = text.split(":")
    try:
        if len(parts) > 2 or not parts[0].strip():
            raise ValueError(text)
        hour = int(parts[0])
        minute = int(parts[1]) if len(parts) > 1 and parts[1].strip() else 0
    except ValueError:
        raise ValueError("%s: %r is not a time; give it as HH:MM (e.g. 02:30)" % (name, text)) from None
    if not (0 <= hour <= 23 and 0 <= minute <= 59) and (hour, minute) != (24, 0):
        raise ValueError("%s: %r is not a time of day; give it as HH:MM between 00:00 and 24:00" % (name, text))
    return hour * 60 + minute


def window_clock(at, clock):
    """The time a window is evaluated at: ``at`` (``YYYY-MM-DD HH:MM``, from
    ckpt_window_now) when given, else ``clock`` (the controller's time)."""
    text = _text(at)
    if not text:
        return clock
    try:
        return datetime.datetime.strptime(text, NOW_FORMAT)
    except ValueError:
        raise ValueError("ckpt_window_now: %r is not a time as YYYY-MM-DD HH:MM (e.g. 2026-03-01 02:30); "
                         "give it so, or leave it empty to use the controller's clock" % text) from None


def window_verdict(start, end="", days=None, utc=True, clock=None, at="", launch_type="", schedule=None,
                   forced=False):
    """Is ``clock`` (or ``at``) inside the maintenance window, and why, in words.

    ``start``/``end``: ``HH:MM``; an empty ``start`` means no window (any
    time will do, except for a scheduled AWX launch, which needs one); an
    ``end`` not after ``start`` spans midnight (``end`` == ``start``: the whole
    day), and its ``days`` are the days it starts on. ``utc`` only names the
    clock in the message: ``clock`` is already in UTC or local time.
    Returns ``inside``, ``why``, ``launch_type``, ``forced``, ``schedule`` and
    the messages the guard prints: ``msg`` (refusal) and ``ok_msg``.
    """
    start = _text(start)
    end = _text(end)
    day_list = window_days(days)
    utc = boolean(utc, strict=False)
    forced = boolean(forced, strict=False)
    launch = _text(launch_type)
    t = window_clock(at, clock)
    if not isinstance(t, datetime.datetime):
        raise ValueError("window_verdict: no clock to evaluate the window at (got %r); pass now()" % (t,))
    today = DAY_NAMES[t.weekday()]
    yesterday = DAY_NAMES[(t.weekday() + 6) % 7]
    now_m = t.hour * 60 + t.minute
    if not start:
        inside = launch != "scheduled"
        why = ("no maintenance window is defined (ckpt_window_start/ckpt_window_end): a scheduled AWX launch needs one"
               if launch == "scheduled" else "no maintenance window is defined: the play may run any time")
    else:
        s = minutes(start, "ckpt_window_start")
        e = minutes(end, "ckpt_window_end") if end else 0
        if s < e:
            inside = s <= now_m < e and (not day_list or today in day_list)
        else:
            inside = ((now_m >= s and (not day_list or today in day_list))
                      or (now_m < e and (not day_list or yesterday in day_list)))
        zone = "UTC" if utc else "local"
        why = "now is %s %s %s; the window is %s-%s %s on %s" % (
            today, t.strftime("%H:%M"), zone, start, end, zone, ",".join(day_list) if day_list else "every day")
    if schedule in ("", None):
        schedule = None
    awx = ""
    if launch:
        awx = " (AWX launch type %s%s)" % (launch, (", schedule %s" % schedule) if schedule else "")
    return {
        "inside": inside, "why": why, "launch_type": launch, "forced": forced, "schedule": schedule,
        "msg": ("Outside the maintenance window, nothing was touched: %s%s. Run inside the window, or set "
                "ckpt_force=true to bypass the guard." % (why, awx)),
        "ok_msg": ("Inside the maintenance window: " if inside
                   else "Outside the maintenance window, running anyway because ckpt_force is set: ") + why,
    }


def batch_verdict(batch, active, hosts_all, hostvars, max_fail_percentage=0, serial=None):
    """:func:`_report.batch_stop` over the play's hosts: the failure lines
    (``ckpt_host_failures``) of each host still in the batch, and the hosts
    that have not run yet (no ``ckpt_report_seen``). ``hostvars`` maps a host
    to its variables."""
    active = list(active or [])
    failures = {}
    not_run = []
    for host in hosts_all or []:
        facts = hostvars.get(host) or {}
        if host in active:
            failures[host] = list(facts.get("ckpt_host_failures") or [])
        if not facts.get("ckpt_report_seen", False):
            not_run.append(host)
    return _report.batch_stop(batch, active, failures, int(max_fail_percentage or 0),
                              serial=serial, not_run=not_run)


def reboot_argv(command, host):
    """The argv of ckpt_maintenance_reboot_command for ``host``: a list, or
    a string (a JSON list, or words); ``{host}`` becomes the host's name."""
    if isinstance(command, str):
        text = command.strip()
        if text.startswith("["):
            try:
                argv = json.loads(text)
            except ValueError as e:
                raise ValueError("ckpt_maintenance_reboot_command: %r is not a JSON list (%s); give a list, a JSON "
                                 "list of strings, or words separated by spaces" % (text, e)) from None
        else:
            argv = text.split()
    else:
        argv = command
    if not isinstance(argv, (list, tuple)) or not argv:
        raise ValueError("ckpt_maintenance_reboot_command: %r gives no command; set it to the argv that reboots "
                         "{host} (e.g. [ipmitool, ..., power, cycle])" % (command,))
    return [str(a).replace("{host}", str(host)) for a in argv]
