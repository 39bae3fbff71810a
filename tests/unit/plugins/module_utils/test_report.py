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


class _HostVars(dict):
    """hostvars as the play passes them: a host the inventory lacks is no key."""


def test_fleet_report_rows_from_every_host_and_the_summary():
    row = _report.result_row({"pid": 7, "selector": "pid 7"}, "migrate", "node1", "migrated", True, changed=True,
                             destination="node2", frozen_s=0.5, image_bytes=1048576)
    bad = _report.result_row({"pid": 8, "selector": "pid 8"}, "migrate", "node1", "refused", False, causes=["x"])
    hv = _HostVars(node1={"ckpt_migrate_results": [row, bad]},
                   node3={"ckpt_report_seen": True, "ckpt_migrate_destination": "node4"},
                   node5={"ckpt_migrate_destination": "node6"})
    report = _report.fleet_report(hv, ["node1", "node3", "node5", "node9"], ["ckpt_migrate_results"], "migrate",
                                  "2026-01-01T00:00:00Z", False, {"job_id": 12, "user": "ops"})
    assert report["awx"] == {"job_id": 12, "launch_type": None, "schedule": None, "user": "ops"}
    assert [(r["host"], r["result"]) for r in report["processes"]] == [
        ("node1", "migrated"), ("node1", "refused"), ("node3", "host failed"), ("node5", "not run"),
        ("node9", "not run")]
    failed_host = report["processes"][2]
    assert failed_host["destination"] == "node4" and failed_host["pid"] is None
    assert failed_host["cause"].startswith("no result from this host: it failed or was unreachable")
    assert report["processes"][3]["cause"] == "the play stopped before this host's batch"
    assert report["summary"] == {"processes": 5, "ok": 1, "failed": 4,
                                 "by_result": {"migrated": 1, "refused": 1, "host failed": 1, "not run": 2},
                                 "frozen_max_s": 0.5, "image_bytes": 1048576}
    assert (report["schema"], report["action"], report["check_mode"]) == (1, "migrate", False)


def test_fleet_report_of_several_result_vars_and_no_frozen_time():
    hv = {"n1": {"ckpt_checkpoint_results": [{"result": "checkpointed", "ok": True, "frozen_s": None,
                                              "image_bytes": None}],
                 "ckpt_restore_results": [{"result": "restored", "ok": True, "frozen_s": None, "image_bytes": 5}]}}
    report = _report.fleet_report(hv, ["n1"], ["ckpt_checkpoint_results", "ckpt_restore_results"], "maintenance",
                                  "t", True)
    assert [r["result"] for r in report["processes"]] == ["checkpointed", "restored"]
    assert report["summary"]["frozen_max_s"] is None and report["summary"]["image_bytes"] == 5
    assert report["check_mode"] is True


def test_summary_lines_headline_and_one_line_per_process():
    report = {"action": "migrate", "check_mode": True,
              "summary": {"ok": 1, "processes": 3, "frozen_max_s": 0.5},
              "processes": [{"host": "node1", "destination": "node2", "pid": 7, "selector": "pid 7",
                             "result": "migrated", "ok": True, "frozen_s": 0.5, "raw_limit_s": 0.42,
                             "image_bytes": 3145728, "cause": ""},
                            {"host": "node1", "destination": "node2", "pid": 8, "selector": "pid 8",
                             "result": "refused", "ok": False, "frozen_s": None, "image_bytes": None,
                             "cause": "fd 1 is a pipe"},
                            {"host": "node5", "destination": None, "pid": None, "selector": "",
                             "result": "not run", "ok": False, "frozen_s": None, "image_bytes": None,
                             "cause": "the play stopped before this host's batch"}]}
    assert _report.summary_lines(report) == [
        "ckpt.criu migrate (check mode): 1 of 3 ok, longest frozen 0.5 s",
        "node1 -> node2 PID 7 (pid 7): migrated, frozen 0.5 s (raw limit 0.42 s), images 3.0 MiB",
        "node1 -> node2 PID 8 (pid 8): refused -- fd 1 is a pipe",
        "node5 -: not run -- the play stopped before this host's batch"]
    report["check_mode"], report["summary"]["frozen_max_s"] = False, None
    assert _report.summary_lines(report)[0] == "ckpt.criu migrate: 1 of 3 ok"


def test_report_basename_and_files():
    assert _report.report_basename("nightly", "migrate", 12, "r1", "t") == "nightly"
    assert _report.report_basename("", "migrate", 12, "r1", "t") == "migrate-12"
    assert _report.report_basename("", "checkpoint", None, "r1", "t") == "checkpoint-r1"
    assert _report.report_basename("", "restore", None, None, "2026-01-02T03:04:05.678901Z") == "restore-20260102T030405Z"
    assert _report.report_basename("", "restore") == "restore"
    assert _report.report_files("json, md,,", "/var/tmp/r", "migrate-12") == [
        "/var/tmp/r/migrate-12.json", "/var/tmp/r/migrate-12.md"]
    assert _report.report_files([], "/d", "b") == []


def test_report_filters_are_exposed():
    filters = FilterModule().filters()
    for name in ("fleet_report", "summary_lines", "report_basename", "report_files"):
        assert filters[name] is getattr(_report, name)


def test_outcome_line_per_action():
    mig = {"action": "migrate", "pid": 7, "selector": "pid 7", "destination": "node2", "result": "migrated",
           "ok": True, "frozen_s": 0.25, "cause": ""}
    assert _report.outcome_line(mig) == "PID 7 -> node2: migrated, frozen 0.25 s"
    assert _report.outcome_line(dict(mig, raw_limit_s=0.2)) == "PID 7 -> node2: migrated, frozen 0.25 s (raw limit 0.2 s)"
    assert _report.outcome_line(dict(mig, result="rolled back", ok=False, frozen_s=None, cause="boom")) == (
        "PID 7 -> node2: rolled back: boom")
    ckpt = {"action": "checkpoint", "pid": 0, "selector": "pidfile /run/a.pid", "result": "absent", "ok": False,
            "frozen_s": None, "image_bytes": None, "cause": "gone"}
    assert _report.outcome_line(ckpt) == "pidfile /run/a.pid: absent: gone"
    assert _report.outcome_line(dict(ckpt, pid=9, result="checkpointed", ok=True, frozen_s=0.1, image_bytes=4096,
                                     images_dir="/i/pid-9")) == "PID 9: checkpointed, frozen 0.1 s, 4096 bytes in /i/pid-9"
    rest = {"action": "restore", "pid": 321, "images_dir": "/i/pid-9", "result": "restored", "ok": True, "cause": ""}
    assert _report.outcome_line(rest) == "/i/pid-9: restored (PID 321)"
    assert _report.outcome_line(dict(rest, pid=None, result="failed", ok=False, cause="x")) == "/i/pid-9: failed: x"
