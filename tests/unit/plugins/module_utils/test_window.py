"""The maintenance-window guard and the batch verdict of the playbooks, as
pure rules: days, midnight-spanning windows, UTC or local clocks, AWX
scheduled launches, bad input; and the reboot command's argv."""
from __future__ import annotations

import datetime

import pytest

from ansible_collections.ckpt.criu.plugins.filter.window import FilterModule
from ansible_collections.ckpt.criu.plugins.module_utils import _window

# 2026-12-06 is a Sunday.
SUN = datetime.date(2026, 12, 6)


def at(day_offset, hhmm):
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime.datetime.combine(SUN + datetime.timedelta(days=day_offset), datetime.time(h, m))


def inside(start, end, days, clock, **kw):
    return _window.window_verdict(start, end, days=days, clock=clock, **kw)["inside"]


@pytest.mark.parametrize("clock, expected", [
    (at(0, "01:59"), False), (at(0, "02:00"), True), (at(0, "03:59"), True), (at(0, "04:00"), False),
])
def test_a_window_includes_its_start_and_excludes_its_end(clock, expected):
    assert inside("02:00", "04:00", "", clock) is expected


@pytest.mark.parametrize("days, clock, expected", [
    ("sun", at(0, "03:00"), True),
    ("sat", at(0, "03:00"), False),
    ("sat,sun", at(0, "03:00"), True),
    (["Mon", " tue "], at(1, "03:00"), True),
    ("", at(3, "03:00"), True),                  # no days: every day
    ([], at(3, "03:00"), True),
    (None, at(3, "03:00"), True),
])
def test_days_restrict_a_window(days, clock, expected):
    assert inside("02:00", "04:00", days, clock) is expected


@pytest.mark.parametrize("spelled", ["Sunday", "sunday", "SUN", " sun "])
def test_a_day_spelled_out_counts_by_its_first_three_letters(spelled):
    v = _window.window_verdict("02:00", "04:00", days=spelled, clock=at(0, "03:00"))
    assert v["inside"] is True and v["why"].endswith("on sun")


@pytest.mark.parametrize("clock, expected", [
    (at(-1, "22:59"), False),   # Saturday before the window
    (at(-1, "23:00"), False),   # Saturday 23:00: the window starts on Sundays only
    (at(0, "23:00"), True),     # Sunday 23:00: starts
    (at(0, "23:59"), True),
    (at(1, "00:30"), True),     # Monday 00:30: still Sunday's window
    (at(1, "01:00"), False),    # its end
    (at(0, "00:30"), False),    # Sunday 00:30 is Saturday's window, not in days
])
def test_a_window_spanning_midnight_belongs_to_the_day_it_starts(clock, expected):
    assert inside("23:00", "01:00", "sun", clock) is expected


@pytest.mark.parametrize("clock", [at(0, "00:00"), at(0, "05:00"), at(0, "23:59")])
def test_start_equal_to_end_is_the_whole_day(clock):
    assert inside("05:00", "05:00", "", clock) is True


def test_start_equal_to_end_with_days_runs_from_start_to_start_next_day():
    assert inside("05:00", "05:00", "sun", at(0, "05:00")) is True
    assert inside("05:00", "05:00", "sun", at(1, "04:59")) is True
    assert inside("05:00", "05:00", "sun", at(1, "05:00")) is False
    assert inside("05:00", "05:00", "sun", at(0, "04:59")) is False


def test_an_empty_end_runs_until_midnight():
    assert inside("22:00", "", "", at(0, "23:59")) is True
    assert inside("22:00", "", "", at(1, "00:00")) is False
    assert inside("22:00", "", "", at(0, "21:59")) is False


def test_an_hour_alone_is_on_the_hour():
    assert inside("2", "4", "", at(0, "02:00")) is True
    assert inside("2", "4", "", at(0, "04:00")) is False


def test_24_00_ends_a_window_at_midnight():
    assert inside("22:00", "24:00", "", at(0, "23:59")) is True
    assert inside("22:00", "24:00", "", at(1, "00:00")) is False


def test_why_names_the_clock_utc_or_local():
    v = _window.window_verdict("02:00", "04:00", days="sat,sun", utc=True, clock=at(0, "05:07"))
    assert v["why"] == "now is sun 05:07 UTC; the window is 02:00-04:00 UTC on sat,sun"
    v = _window.window_verdict("02:00", "04:00", utc="false", clock=at(0, "05:07"))
    assert v["why"] == "now is sun 05:07 local; the window is 02:00-04:00 local on every day"


def test_the_clock_is_the_one_given_utc_only_names_it():
    """The caller passes now(utc=...): a verdict depends on the clock it gets, not on utc."""
    assert inside("02:00", "04:00", "", at(0, "03:00"), utc=False) is True
    assert inside("02:00", "04:00", "", at(0, "05:00"), utc=True) is False


def test_ckpt_window_now_replaces_the_clock():
    v = _window.window_verdict("02:00", "04:00", clock=at(0, "12:00"), at="2026-12-07 03:15")
    assert v["inside"] is True and v["why"].startswith("now is mon 03:15 ")
    v = _window.window_verdict("02:00", "04:00", clock=at(0, "03:00"), at="  ")
    assert v["inside"] is True and v["why"].startswith("now is sun 03:00 ")


def test_no_window_allows_any_time_but_not_a_scheduled_launch():
    v = _window.window_verdict("", "", clock=at(0, "12:00"))
    assert v["inside"] is True and v["why"] == "no maintenance window is defined: the play may run any time"
    v = _window.window_verdict(None, None, clock=at(0, "12:00"), launch_type="manual")
    assert v["inside"] is True
    v = _window.window_verdict("", "", clock=at(0, "12:00"), launch_type="scheduled", schedule="nightly")
    assert v["inside"] is False and "a scheduled AWX launch needs one" in v["why"]
    assert v["msg"] == ("Outside the maintenance window, nothing was touched: no maintenance window is defined "
                        "(ckpt_window_start/ckpt_window_end): a scheduled AWX launch needs one (AWX launch type "
                        "scheduled, schedule nightly). Run inside the window, or set ckpt_force=true to bypass "
                        "the guard.")


def test_a_scheduled_launch_that_fires_late_is_refused_and_named():
    v = _window.window_verdict("02:00", "04:00", clock=at(0, "04:10"), launch_type="scheduled", schedule="")
    assert v["inside"] is False and v["schedule"] is None
    assert "(AWX launch type scheduled). Run inside the window" in v["msg"]


def test_messages_without_awx_and_when_forced():
    v = _window.window_verdict("02:00", "04:00", clock=at(0, "05:00"), forced="true")
    assert v["forced"] is True and v["inside"] is False
    assert v["msg"].startswith("Outside the maintenance window, nothing was touched: now is sun 05:00 UTC;")
    assert "AWX" not in v["msg"]
    assert v["ok_msg"] == ("Outside the maintenance window, running anyway because ckpt_force is set: "
                           + v["why"])
    v = _window.window_verdict("02:00", "04:00", clock=at(0, "03:00"))
    assert v["forced"] is False and v["ok_msg"] == "Inside the maintenance window: " + v["why"]


@pytest.mark.parametrize("start, end, name", [
    ("2:xx", "04:00", "ckpt_window_start"), ("25:00", "04:00", "ckpt_window_start"),
    ("02:00", "04:60", "ckpt_window_end"), ("02:00", "1:2:3", "ckpt_window_end"), ("02:00", "-1", "ckpt_window_end"),
    (":30", "04:00", "ckpt_window_start"),
])
def test_a_bad_time_is_refused_with_its_name(start, end, name):
    with pytest.raises(ValueError, match="%s: .* HH:MM" % name):
        _window.window_verdict(start, end, clock=at(0, "03:00"))


def test_a_bad_day_is_refused_with_the_day_names():
    with pytest.raises(ValueError, match=r"ckpt_window_days: 'sonday' is not a day of the week; give days as "
                                         r"mon,tue,wed,thu,fri,sat,sun"):
        _window.window_verdict("02:00", "04:00", days="sun,sonday", clock=at(0, "03:00"))


def test_a_bad_ckpt_window_now_is_refused_with_the_format():
    with pytest.raises(ValueError, match="ckpt_window_now: '2026-12-06T03:00' is not a time as YYYY-MM-DD HH:MM"):
        _window.window_verdict("02:00", "04:00", clock=at(0, "03:00"), at="2026-12-06T03:00")


def test_no_clock_at_all_is_refused():
    with pytest.raises(ValueError, match="no clock"):
        _window.window_verdict("02:00", "04:00")


def test_batch_verdict_reads_each_hosts_failures_and_who_has_not_run():
    hostvars = {
        "n1": {"ckpt_report_seen": True, "ckpt_host_failures": ["PID 7 refused: fd 1 is a pipe"]},
        "n2": {"ckpt_report_seen": True, "ckpt_host_failures": []},
        "n3": {"ckpt_report_seen": True},
        "n4": {},
    }
    v = _window.batch_verdict(["n1", "n2", "n3"], ["n1", "n2"], ["n1", "n2", "n3", "n4"], hostvars,
                              max_fail_percentage="0", serial="3")
    assert v["stop"] is True and v["failed_hosts"] == ["n1"] and v["lost_hosts"] == ["n3"]
    assert v["not_run"] == ["n4"]
    assert "n1: PID 7 refused: fd 1 is a pipe" in v["msg"] and "Not run: n4." in v["msg"]
    v = _window.batch_verdict(["n2"], ["n2"], ["n1", "n2"], hostvars, 0)
    assert v["stop"] is False and v["msg"] == ""


def test_batch_verdict_allows_up_to_max_fail_percentage():
    hostvars = {"a": {"ckpt_report_seen": True, "ckpt_host_failures": ["x"]}, "b": {"ckpt_report_seen": True}}
    assert _window.batch_verdict(["a", "b"], ["a", "b"], ["a", "b"], hostvars, 50)["stop"] is False
    assert _window.batch_verdict(["a", "b"], ["a", "b"], ["a", "b"], hostvars, 49)["stop"] is True


@pytest.mark.parametrize("command, argv", [
    (["fleet.py", "reboot", "{host}"], ["fleet.py", "reboot", "node1"]),
    ('["fleet.py", "--state-dir", "/run/x y", "reboot", "{host}"]',
     ["fleet.py", "--state-dir", "/run/x y", "reboot", "node1"]),
    ("ipmitool -H {host}-bmc power cycle", ["ipmitool", "-H", "node1-bmc", "power", "cycle"]),
])
def test_reboot_argv_takes_a_list_a_json_list_or_words(command, argv):
    assert _window.reboot_argv(command, "node1") == argv


@pytest.mark.parametrize("command, match", [
    ("", "gives no command"), ([], "gives no command"), ("[not json", "is not a JSON list"),
    ("[]", "gives no command"), ("  ", "gives no command"),
])
def test_reboot_argv_refuses_no_command(command, match):
    with pytest.raises(ValueError, match=match):
        _window.reboot_argv(command, "node1")


def test_filters_are_the_functions():
    f = FilterModule().filters()
    assert f == {"window_verdict": _window.window_verdict, "batch_verdict": _window.batch_verdict,
                 "reboot_argv": _window.reboot_argv}
