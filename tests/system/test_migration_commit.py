"""ckpt.criu.migration_commit against real processes and real CRIU checkpoints: the commit of a
migration on its source (kill the frozen source, record, remove the images) in one module run;
what fails after the kill is returned, not raised; a wrong process is refused and nothing is done."""
from __future__ import annotations

import json
import os
import stat

import pytest

from ckpt_testlib import make_checkpoint, state, wait_gone, write_manifest

pytestmark = pytest.mark.criu


def _frozen(workload, tmp_path, criu_bin, run_module):
    w = workload("devnull")
    w.wait_ticks(3)
    images = tmp_path / "migrate" / ("pid-%d" % w.pid)
    make_checkpoint(criu_bin, w.pid, images, run_module, leave_stopped=True)
    assert state(w.pid) == "T"
    records = tmp_path / "migrate" / ".migrated"
    records.mkdir(mode=0o700)
    return w, images, records


def _commit(run_module, images, records, pid, check=False, **extra):
    args = {"images_dir": str(images), "records_dir": str(records),
            "record": {"pid": pid, "destination": "node2", "migrated_at": "2026-12-07T00:00:00Z"}}
    args.update(extra)
    return run_module("migration_commit", args, check=check)


def test_kills_records_and_removes_in_one_run_and_check_mode_does_nothing(run_module, workload, tmp_path,
                                                                          criu_bin):
    w, images, records = _frozen(workload, tmp_path, criu_bin, run_module)
    pre = _commit(run_module, images, records, w.pid, check=True)
    assert pre.status == "ok" and pre["changed"] and pre["cleanup_errors"] == [], pre
    assert (pre["before"], pre["after"], pre["images_removed"]) == ("stopped", "absent", True)
    assert state(w.pid) == "T" and images.is_dir() and os.listdir(records) == [], "check mode changed something"
    # Check mode tells of a records directory it could not write to, and makes none.
    missing = tmp_path / "migrate" / "no-records"
    pre = _commit(run_module, images, missing, w.pid, check=True)
    assert pre.status == "ok" and len(pre["cleanup_errors"]) == 1, pre
    assert pre["cleanup_errors"][0].startswith("cannot write the migration record %s/pid-%d.json: " % (missing, w.pid))
    assert not missing.exists() and state(w.pid) == "T"

    # Kept images first (remove_images false), then removed by a second run.
    r = _commit(run_module, images, records, w.pid, remove_images=False)
    assert r.status == "ok" and r["changed"] and r["cleanup_errors"] == [], r
    assert (r["before"], r["after"], r["signal"]) == ("stopped", "absent", "SIGKILL")
    assert wait_gone(w.pid, 5), "the frozen source is still there"
    assert images.is_dir() and not r["images_removed"]
    rec = records / ("pid-%d.json" % w.pid)
    assert r["record_path"] == str(rec)
    assert json.loads(rec.read_text()) == {"pid": w.pid, "destination": "node2",
                                           "migrated_at": "2026-12-07T00:00:00Z"}
    assert stat.S_IMODE(rec.stat().st_mode) == 0o600 and os.listdir(records) == [rec.name]

    # Again: the source is gone (the kill is satisfied), the record is written again, the images go.
    again = _commit(run_module, images, records, w.pid)
    assert again.status == "ok" and again["before"] == "absent" and again["signal"] is None, again
    assert again["cleanup_errors"] == [] and again["images_removed"] and not images.exists()

    # Once the images are gone nothing names the source: a clear error, and the record stays.
    last = _commit(run_module, images, records, w.pid)
    assert last.failed and "no complete checkpoint" in last["msg"], last
    assert os.listdir(records) == [rec.name]


def test_what_fails_after_the_kill_is_returned_and_a_planted_link_is_not_followed(run_module, workload, tmp_path,
                                                                                  criu_bin):
    w, images, records = _frozen(workload, tmp_path, criu_bin, run_module)
    # The record's name is taken by a directory (a full disk does the same): the source is killed all
    # the same, the images go, and the failure is returned for the caller to report.
    (records / ("pid-%d.json" % w.pid) / "taken").mkdir(parents=True)
    r = _commit(run_module, images, records, w.pid)
    assert r.status == "ok", r
    assert r["after"] == "absent" and wait_gone(w.pid, 5)
    assert r["cleanup_errors"] == ["cannot write the migration record %s/pid-%d.json: Is a directory"
                                   % (records, w.pid)], r["cleanup_errors"]
    assert not images.exists()
    assert os.listdir(records) == ["pid-%d.json" % w.pid], "the temporary record was left behind"

    # A symlink planted where the images were: the module fails, and nothing behind it is touched.
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    os.symlink(str(victim), str(images))
    r = _commit(run_module, images, records, w.pid)
    assert r.failed, r
    assert os.listdir(victim) == ["keep"] and os.path.islink(images)


def test_another_process_is_refused_and_nothing_is_done(run_module, workload, tmp_path, criu_bin):
    w, images, records = _frozen(workload, tmp_path, criu_bin, run_module)
    manifest = json.loads((images / "ckpt-manifest.json").read_text())
    manifest["process"]["start_time"] -= 1  # the process that held this PID before
    write_manifest(images, manifest)
    r = _commit(run_module, images, records, w.pid)
    assert r.failed and "different process" in r["msg"], r
    assert state(w.pid) == "T" and images.is_dir() and os.listdir(records) == []
    # A record without a PID names no file.
    r = _commit(run_module, images, records, 0)
    assert r.failed and "record.pid must be a positive integer" in r["msg"], r
    assert state(w.pid) == "T" and images.is_dir()
