"""Result rows as an operator reads them: durations, process names, failure
lines, and the max_fail_percentage verdict of a batch."""
from __future__ import annotations

import pytest

from ansible_collections.ckpt.criu.plugins.filter.report import FilterModule
from ansible_collections.ckpt.criu.plugins.module_utils import _report


def test_seconds_rounds_every_duration_to_milliseconds():
    assert _report.seconds(0.123456789) == 0.123
    assert _report.seconds("1.23456") == 1.235
    assert _report.seconds(2) == 2.0
    assert _report.seconds(None) is None and _report.seconds("") is None
    assert _report.seconds(0.98765, 1) == 1.0


def test_process_label_names_a_missing_pidfile_not_pid_0():
    missing = {"pid": 0, "selector": "pidfile /srv/gone.pid"}
    assert _report.process_label(missing) == "pidfile /srv/gone.pid"
    assert _report.process_label(missing, selector=True) == "pidfile /srv/gone.pid"
    row = {"pid": 1234, "selector": "pidfile /srv/a.pid"}
    assert _report.process_label(row) == "PID 1234"
    assert _report.process_label(row, selector=True) == "PID 1234 (pidfile /srv/a.pid)"
    assert _report.process_label({"pid": None, "selector": ""}) == "no process"


def test_failures_one_line_per_row_not_ok():
    rows = [{"action": "migrate", "pid": 7, "selector": "pid 7", "result": "migrated", "ok": True, "cause": ""},
            {"action": "migrate", "pid": 0, "selector": "pidfile /srv/gone.pid", "result": "absent", "ok": False,
             "cause": "pidfile /srv/gone.pid cannot be read: file not found"},
            {"action": "migrate", "pid": 9, "selector": "pidfile /srv/b.pid", "result": "refused", "ok": False,
             "cause": "fd 1 is a pipe"}]
    assert _report.failures(rows) == [
        "pidfile /srv/gone.pid absent: pidfile /srv/gone.pid cannot be read: file not found",
        "PID 9 (pidfile /srv/b.pid) refused: fd 1 is a pipe"]
    assert _report.failures(rows, action=True)[1].startswith("migrate PID 9 ")
    assert _report.failures([]) == [] and _report.failures(None) == []
    assert "PID 0" not in " ".join(_report.failures(rows))


def test_batch_stop_names_hosts_processes_reason_and_variable():
    v = _report.batch_stop(["node1"], ["node1"], {"node1": ["PID 9 (pidfile /srv/b.pid) refused: fd 1 is a pipe"]},
                           0, serial="1", not_run=["node3", "node5"])
    assert v["stop"] and v["failed_hosts"] == ["node1"] and v["lost_hosts"] == []
    msg = v["msg"]
    for part in ("max_fail_percentage", "node1: PID 9 (pidfile /srv/b.pid) refused: fd 1 is a pipe",
                 "ckpt_max_fail_percentage=0", "more than ckpt_max_fail_percentage", "ckpt_serial=1",
                 "Not run: node3, node5", "-e ckpt_max_fail_percentage=100"):
        assert part in msg, (part, msg)


@pytest.mark.parametrize("batch,active,failures,pct,stop", [
    (["a", "b"], ["a", "b"], {"a": ["x"]}, 50, False),      # 1 of 2 = 50 %: allowed, as ansible-core counts
    (["a", "b"], ["a", "b"], {"a": ["x"]}, 49, True),
    (["a", "b"], ["a"], {}, 0, True),                       # b unreachable: counted too
    (["a", "b"], ["a", "b"], {"a": [], "b": []}, 0, False),
    (["a", "b", "c"], ["a"], {"a": ["x"]}, 100, False),
])
def test_batch_stop_follows_max_fail_percentage(batch, active, failures, pct, stop):
    v = _report.batch_stop(batch, active, failures, pct)
    assert v["stop"] is stop
    assert (v["msg"] != "") is stop
    if stop and len(active) < len(batch):
        assert "failed or unreachable before its processes were handled" in v["msg"]


def test_filters_are_the_functions():
    f = FilterModule().filters()
    assert f["seconds"] is _report.seconds and f["process_label"] is _report.process_label
    assert f["failures"] is _report.failures and f["batch_stop"] is _report.batch_stop


@pytest.mark.parametrize("value, expected", [
    (None, []), ("", []), ([], []),
    ("1, 2,,3 ", ["1", "2", "3"]),
    ([1, " a ", None, ""], ["1", "a"]),
    (7, ["7"]),
])
def test_as_list_takes_lists_and_comma_strings(value, expected):
    assert _report.as_list(value) == expected


def test_result_row_has_every_key_and_keeps_extras_after_them():
    row = _report.result_row({"pid": "42", "selector": "pid 42"}, "migrate", "node1", "migrated", True,
                             changed=True, destination="node2", frozen_s=0.12345, image_bytes="4096",
                             dump_s=1.5)
    assert tuple(row)[:len(_report.ROW_KEYS)] == _report.ROW_KEYS
    assert row["pid"] == 42 and row["frozen_s"] == 0.123 and row["image_bytes"] == 4096
    assert row["dump_s"] == 1.5 and row["cause"] == "" and row["causes"] == []


def test_result_row_joins_causes_and_names_a_host_level_row():
    row = _report.result_row(None, "preflight", "node1", "refused", False, causes=["a.", "", "b."])
    assert row["pid"] is None and row["selector"] == "" and row["destination"] is None
    assert row["cause"] == "a. b." and row["causes"] == ["a.", "b."]
    with pytest.raises(ValueError, match="replace common ones"):
        _report.result_row(None, "x", "h", "r", True, pid=3)
