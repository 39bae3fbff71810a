"""The rows the checkpoint and restore roles record, from their modules' results."""
from __future__ import annotations

from ansible_collections.ckpt.criu.plugins.filter.outcome import FilterModule
from ansible_collections.ckpt.criu.plugins.module_utils import _outcome
from ansible_collections.ckpt.criu.plugins.module_utils._report import ROW_KEYS

PROC = {"pid": 77, "selector": "pid 77", "present": True, "refused": False}


def test_filters_expose_the_rules():
    assert FilterModule().filters()["checkpoint_row"] is _outcome.checkpoint_row
    assert FilterModule().filters()["restore_failed_row"] is _outcome.restore_failed_row


def test_checkpoint_skipped_rows():
    procs = [PROC, {"pid": 5, "selector": "pid 5", "present": True, "refused": True, "causes": ["fd 1 is a pipe."]},
             {"pid": 6, "selector": "pid 6", "present": False, "causes": ["no process 6."]},
             {"pid": 8, "selector": "pidfile /run/x.pid", "present": False, "causes": ["gone."]}]
    existing = [{"item": {"pid": 6}, "stat": {"exists": False}}, {"item": {"pid": 8}, "stat": {"exists": True}}]
    rows = _outcome.checkpoint_skipped_rows(procs, existing, "node1", "/var/lib/ckpt")
    assert [(r["pid"], r["result"], r["ok"], r["images_dir"]) for r in rows] == [
        (5, "refused", False, None), (6, "absent", False, None),
        (8, "checkpointed already", True, "/var/lib/ckpt/pid-8")]
    assert rows[0]["cause"] == "fd 1 is a pipe." and rows[2]["cause"] == "" and rows[2]["causes"] == []
    assert all(r["action"] == "checkpoint" and r["destination"] is None for r in rows)


def test_checkpoint_row_by_mode_and_check_mode():
    dump = {"changed": True, "timings": {"frozen_time": 0.12345}, "image_bytes": "2048",
            "images_dir": "/i/pid-77", "manifest_path": "/i/pid-77/ckpt-manifest.json"}
    row = _outcome.checkpoint_row(dump, PROC, "node1", "snapshot")
    assert list(row)[:len(ROW_KEYS)] == list(ROW_KEYS)
    assert (row["result"], row["ok"], row["changed"], row["frozen_s"], row["image_bytes"], row["mode"]) == (
        "checkpointed", True, True, 0.123, 2048, "snapshot")
    assert row["manifest_path"] == "/i/pid-77/ckpt-manifest.json" and row["images_dir"] == "/i/pid-77"
    assert _outcome.checkpoint_row(dict(dump, changed=False), PROC, "n", "stop")["result"] == "checkpointed already"
    assert _outcome.checkpoint_row({}, PROC, "n", "stop", True)["result"] == "would checkpoint"


def test_checkpoint_failed_row_names_a_process_left_stopped():
    row = _outcome.checkpoint_failed_row({"msg": " criu dump failed \n", "log_path": "/i/dump.log"}, PROC, "n",
                                         "stop", "/i", {"failed": True, "msg": "ESRCH"})
    assert row["cause"] == "criu dump failed; the process could not be made to run: ESRCH"
    assert row["causes"] == [row["cause"]] and row["result"] == "failed" and not row["ok"]
    assert row["images_dir"] == "/i/pid-77" and row["log_path"] == "/i/dump.log"
    assert _outcome.checkpoint_failed_row({}, PROC, "n", "stop", "/i", {"skipped": True})["cause"] == "unknown error"


def test_restore_dirs_given_or_found():
    assert _outcome.restore_dirs(" /a/pid-1, ,/b/pid-2 ", [{"path": "/x/pid-9/ckpt-manifest.json"}]) == [
        "/a/pid-1", "/b/pid-2"]
    found = [{"path": "/r/pid-9/ckpt-manifest.json"}, {"path": "/r/pid-10/ckpt-manifest.json"}]
    assert _outcome.restore_dirs("", found) == ["/r/pid-10", "/r/pid-9"]
    assert _outcome.restore_dirs([], None) == []


def test_images_bytes_counts_only_that_directory():
    files = [{"path": "/r/pid-1/pages-1.img", "size": 4096}, {"path": "/r/pid-1/core.img", "size": 100},
             {"path": "/r/pid-10/pages-1.img", "size": 9999}]
    assert _outcome.images_bytes(files, "/r/pid-1") == 4196
    assert _outcome.images_bytes([], "/r/pid-1") == 0


def test_restore_rows():
    run = {"changed": True, "pid": 321, "unit": {"name": "app.service"}, "timings": {"criu_duration": 0.33333}}
    row = _outcome.restore_row(run, "node1", "/r/pid-1", "4196")
    assert (row["result"], row["pid"], row["selector"], row["restore_s"], row["image_bytes"]) == (
        "restored under unit app.service", 321, "images /r/pid-1", 0.333, 4196)
    assert _outcome.restore_row(dict(run, unit=None), "n", "/r", 0)["result"] == "restored"
    assert _outcome.restore_row({"changed": False, "pid": 3}, "n", "/r", 0)["result"] == "running already"
    assert _outcome.restore_row({}, "n", "/r", 0, True)["result"] == "would restore"
    failed = _outcome.restore_failed_row({"msg": "pid taken", "problems": ["pid 321 is in use"], "pid": 9,
                                          "log_path": "/r/restore.log"}, "n", "/r", 10)
    assert (failed["result"], failed["cause"], failed["causes"], failed["log_path"]) == (
        "failed", "pid taken", ["pid taken", "pid 321 is in use"], "/r/restore.log")
    assert _outcome.restore_failed_row({"msg": "x", "fresh_copy": True}, "n", "/r", 0)["result"] == "fresh copy running"


def test_restore_failures_name_each_directory():
    rows = [{"images_dir": "/r/pid-1", "result": "restored", "ok": True, "cause": ""},
            {"images_dir": "/r/pid-2", "result": "failed", "ok": False, "cause": "pid taken"},
            {"images_dir": "/r/pid-3", "result": "fresh copy running", "ok": False, "cause": "unit restarted"}]
    assert _outcome.restore_failures(rows) == "/r/pid-2 failed: pid taken /r/pid-3 fresh copy running: unit restarted "
    assert _outcome.restore_failures([]) == ""
