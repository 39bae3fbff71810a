"""ckpt.criu.dump against real CRIU and real processes, through real `ansible`."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ckpt_testlib import (REPO, Tmpfs, find_criu, mode, read_manifest, sha256, start_child_in_new_pidns,
                          start_plain_child, state, still_ticking, ticks_after, wait_gone, wait_state)

pytestmark = pytest.mark.criu


def _dump(run_module, w, images_dir, check=False, **kw):
    args = {"pid": w.pid, "images_dir": str(images_dir)}
    args.update(kw)
    return run_module("dump", args, check=check)


def _assert_untouched(w, images_dir=None):
    assert w.alive(), "the workload died"
    assert state(w.pid) in ("S", "R"), "workload state %s" % state(w.pid)
    w.wait_ticks(3)
    assert w.continuity()[0], "tick sequence repeated or skipped"
    if images_dir is not None:
        assert not (Path(images_dir) / "ckpt-manifest.json").exists()


def test_dump_default_kills_and_writes_a_complete_manifest(run_module, workload, tmp_path):
    w = workload(mem=4)
    images = tmp_path / "imgs"
    r = _dump(run_module, w, images)
    assert r.status == "ok", r
    assert r["changed"] is True
    assert wait_gone(w.pid, 5) or state(w.pid) == "Z"
    assert mode(images) == 0o700
    names = sorted(os.listdir(images))
    assert "ckpt-manifest.json" in names and "dump.log" in names
    for n in names:
        if os.path.isfile(images / n):
            assert mode(images / n) == 0o600, n
    m = read_manifest(images)
    assert m == r["manifest"]
    assert m["schema"] == 1 and m["complete"] is True
    assert m["process"]["pid"] == w.pid and m["process"]["sid"] == w.pid
    assert m["process"]["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    # Only what the identity checks need: the program and a hash of its arguments (they may hold secrets).
    assert len(m["process"]["cmdline"]) == 1 and m["process"]["cmdline_args"] > 0
    assert len(m["process"]["cmdline_sha256"]) == 64
    assert m["tree"][0]["pid"] == w.pid
    assert m["options"]["leave_running"] is False and m["options"]["leave_stopped"] is False
    assert m["stdio"] == {"0": "ok", "1": "ok", "2": "ok"}
    assert m["binaries"]["exe"]["sha256"] == sha256(os.path.realpath(m["process"]["exe"]))
    listed = {i["name"]: i for i in m["images"]}
    on_disk = {n for n in names if n.endswith(".img") or n == "stats-dump"}
    assert set(listed) == on_disk
    for n, rec in listed.items():
        assert rec["sha256"] == sha256(images / n) and rec["size"] == os.path.getsize(images / n)
    assert m["images_total_bytes"] == r["image_bytes"] > 4 * 1024 * 1024
    assert m["criu"]["version"] and m["criu"]["argv"] == r["criu_cmd"]
    assert "--leave-running" not in r["criu_cmd"] and "-W" in r["criu_cmd"]
    assert m["criu"]["stats"]["frozen_time_us"] > 0
    t = r["timings"]
    assert t["frozen_time"] > 0 and t["criu_duration"] > 0 and t["total"] >= t["criu_duration"]
    assert r["pre_dump"]["used"] is False and "soft-dirty" in r["pre_dump"]["reason"]
    assert not [n for n in names if n.startswith(".ckpt-work")]


def test_leave_running_snapshot_keeps_ticking(run_module, workload, tmp_path):
    w = workload()
    r = _dump(run_module, w, tmp_path / "imgs", leave_running=True)
    assert r.status == "ok", r
    assert "--leave-running" in r["criu_cmd"]
    assert r["manifest"]["options"]["leave_running"] is True
    _assert_untouched(w)
    ok, gap = w.continuity()
    assert ok and gap < 2.0


def test_leave_stopped_then_sigcont_continues(run_module, workload, tmp_path):
    w = workload()
    r = _dump(run_module, w, tmp_path / "imgs", leave_stopped=True)
    assert r.status == "ok", r
    assert r["manifest"]["options"]["leave_stopped"] is True
    assert wait_state(w.pid, ("T",)) == "T"
    assert ticks_after(w, 0.3) == 0
    os.kill(w.pid, signal.SIGCONT)
    _assert_untouched(w)


def test_check_apply_check_apply(run_module, workload, tmp_path):
    w = workload()
    images = tmp_path / "imgs"
    r1 = _dump(run_module, w, images, check=True, leave_running=True)
    assert r1.status == "ok" and r1["changed"] is True, r1
    assert not images.exists(), "check mode created images_dir"
    r2 = _dump(run_module, w, images, leave_running=True)
    assert r2.status == "ok" and r2["changed"] is True, r2
    before = {n: os.stat(images / n).st_mtime_ns for n in os.listdir(images)}
    r3 = _dump(run_module, w, images, check=True, leave_running=True)
    assert r3.status == "ok" and r3["changed"] is False, r3
    r4 = _dump(run_module, w, images, leave_running=True)
    assert r4.status == "ok" and r4["changed"] is False, r4
    assert r4["manifest"] == r2["manifest"]
    after = {n: os.stat(images / n).st_mtime_ns for n in os.listdir(images)}
    assert {k: v for k, v in after.items() if k != ".ckpt-lock"} == \
        {k: v for k, v in before.items() if k != ".ckpt-lock"}
    _assert_untouched(w)


def test_second_run_after_default_dump_is_unchanged_and_new_process_on_pid_is_refused(
        run_module, workload, tmp_path):
    w = workload()
    images = tmp_path / "imgs"
    assert _dump(run_module, w, images).status == "ok"
    assert wait_gone(w.pid, 5)
    r = _dump(run_module, w, images)
    assert r.status == "ok" and r["changed"] is False, r
    assert "gone" in r["msg"]
    # Another process's checkpoint in the directory: refused without force.
    w2 = workload(name="w2")
    r = _dump(run_module, w2, images, leave_running=True)
    assert r.failed and "another process" in r["msg"], r
    _assert_untouched(w2, None)


def test_corrupted_checkpoint_is_not_taken_for_complete(run_module, workload, tmp_path):
    w = workload()
    images = tmp_path / "imgs"
    assert _dump(run_module, w, images, leave_running=True).status == "ok"
    core = images / ("core-%d.img" % w.pid)
    data = bytearray(core.read_bytes())
    data[len(data) // 2] ^= 0x01
    core.write_bytes(bytes(data))
    r = _dump(run_module, w, images, leave_running=True)
    assert r.failed and "do not verify" in r["msg"] and "sha256" in r["msg"], r
    _assert_untouched(w)


def test_foreign_content_refused_then_moved_aside_with_force(run_module, workload, tmp_path):
    w = workload()
    images = tmp_path / "imgs"
    images.mkdir(mode=0o700)
    (images / "precious.txt").write_text("someone's data\n")
    r = _dump(run_module, w, images, leave_running=True)
    assert r.failed and "not empty" in r["msg"] and "force" in r["msg"], r
    assert (images / "precious.txt").exists()
    _assert_untouched(w)
    r = _dump(run_module, w, images, leave_running=True, force=True)
    assert r.status == "ok" and r["changed"] is True, r
    moved = Path(r["replaced"]["moved_to"])
    assert moved.parent == tmp_path and moved.name.startswith("imgs.replaced-")
    assert (moved / "precious.txt").read_text() == "someone's data\n"
    assert not (images / "precious.txt").exists()
    assert (images / "ckpt-manifest.json").exists()
    _assert_untouched(w)


def test_pre_dump_always_fails_before_freezing(run_module, workload, tmp_path):
    w = workload()
    images = tmp_path / "imgs"
    r = _dump(run_module, w, images, pre_dump="always")
    assert r.failed and "pre_dump: always" in r["msg"] and "Nothing was frozen" in r["msg"], r
    assert not images.exists()
    assert not find_criu("dump", w.pid)
    _assert_untouched(w)


@pytest.mark.parametrize("stdio,needle", [("pipe", "is a pipe to process"), ("unix", "unix")])
def test_stdio_refused_before_freezing(run_module, workload, tmp_path, stdio, needle):
    w = workload(stdio=stdio, stdout=True)
    images = tmp_path / "imgs"
    r = _dump(run_module, w, images)
    assert r.failed and needle in r["msg"] and "Nothing was frozen" in r["msg"], r
    assert not images.exists()
    _assert_untouched(w)


def test_unix_stdout_dumps_with_ext_unix_sk(run_module, workload, tmp_path):
    w = workload(stdio="unix", stdout=True)
    r = _dump(run_module, w, tmp_path / "imgs", ext_unix_sk=True, leave_running=True)
    assert r.status == "ok", r
    assert "--ext-unix-sk" in r["criu_cmd"]
    assert r["manifest"]["options"]["ext_unix_sk"] is True
    _assert_untouched(w)


def test_not_a_session_leader_refused_then_shell_job(run_module, tmp_path):
    child, ticks = start_plain_child(tmp_path)
    try:
        images = tmp_path / "imgs"
        r = run_module("dump", {"pid": child.pid, "images_dir": str(images), "leave_running": True})
        assert r.failed and "not a session leader" in r["msg"] and "shell_job" in r["msg"], r
        assert not images.exists()
        r = run_module("dump", {"pid": child.pid, "images_dir": str(images), "leave_running": True,
                                "shell_job": True})
        assert r.status == "ok", r
        assert "--shell-job" in r["criu_cmd"]
        assert still_ticking(ticks)
    finally:
        child.kill()
        child.wait()


def test_session_leader_outside_the_pid_namespace_refused_before_any_freeze(run_module, tmp_path):
    """CRIU cannot dump a task whose session leader it cannot see (sid 0 in its own PID namespace),
    --shell-job or not; the collection says so before criu runs, and the workload runs on."""
    child, ticks = start_child_in_new_pidns(tmp_path)
    try:
        nssid = Path("/proc/%d/status" % child.pid).read_text().split("NSsid:")[1].split("\n")[0].split()
        assert nssid[-1] == "0", nssid
        r = run_module("fd_inspect", {"pid": child.pid})
        items = [i for i in r["fds"] if i["classification"] == "session_outside_pidns"]
        assert items and items[0]["verdict"] == "refuse" and r["restorable"] is False, r
        images = tmp_path / "imgs"
        for shell_job in (False, True):
            r = run_module("dump", {"pid": child.pid, "images_dir": str(images), "leave_running": True,
                                    "shell_job": shell_job})
            assert r.failed and "outside its PID namespace" in r["msg"] and "setsid" in r["msg"], r
            assert "Nothing was frozen" in r["msg"]
            assert not images.exists()
        assert not find_criu("dump", child.pid)
        assert still_ticking(ticks)
    finally:
        child.kill()
        child.wait()


def test_disk_full_fails_clearly_and_the_workload_runs_on(run_module, workload, tmp_path):
    w = workload(mem=16)
    fs = Tmpfs(tmp_path / "tiny", "2m")
    try:
        images = Path(fs.path) / "imgs"
        r = _dump(run_module, w, images)
        assert r.failed, r
        assert "ran out of space" in r["msg"], r
        assert "still running" in r["msg"]
        assert not (images / "ckpt-manifest.json").exists()
        _assert_untouched(w)
        marker = images / "ckpt-failed.json"
        if marker.exists():
            assert "space" in json.loads(marker.read_text())["cause"]
    finally:
        fs.unmount()


@pytest.mark.parametrize("when", ["early", "mid"])
def test_criu_sigkilled_mid_dump(run_module, workload, tmp_path, when):
    """SIGKILL criu right after it starts ("early": measured, it leaves a stopped
    helper holding its pipes) or once its parasite runs in the workload ("mid")."""
    w = workload(mem=512 if when == "mid" else 16, interval=0.01)
    images = tmp_path / "imgs"
    out = {}

    def run():
        t0 = time.time()
        out["r"] = _dump(run_module, w, images, timeout=90)
        out["took"] = time.time() - t0

    t = threading.Thread(target=run)
    t.start()
    killed = None
    deadline = time.time() + 60
    log = images / "dump.log"
    while time.time() < deadline and killed is None:
        pids = find_criu("dump", w.pid)
        ready = pids and (when == "early" or (log.exists() and "pie: " in log.read_text(errors="replace")))
        if ready:
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                    killed = p
                except OSError:
                    pass
        time.sleep(0.002)
    t.join(150)
    r = out["r"]
    assert killed, "never saw criu running"
    assert r.failed, r
    assert "killed by signal 9" in r["msg"], r
    assert out["took"] < 60, "the module hung on criu's leftovers"
    assert not (images / "ckpt-manifest.json").exists()
    print("\nSIGKILL %s: took %.1fs; %s; repaired=%s leftovers=%s state=%s" % (
        when, out["took"], r["msg"], r.get("repaired"), r.get("leftovers"), r.get("process_state")))
    _assert_untouched(w)
    if when == "mid":
        assert r.get("leftovers") and "CRIUMFD" in r["msg"], r
    # A later dump into the same directory works without force (our own failed attempt).
    r2 = _dump(run_module, w, images, leave_running=True)
    assert r2.status == "ok", r2
    assert "cleared_failed_attempt" in r2


def test_two_dumps_into_one_dir_one_wins(run_module, workload, tmp_path):
    w = workload(mem=64)
    images = tmp_path / "imgs"
    results = []

    def run():
        results.append(_dump(run_module, w, images, leave_running=True))

    threads = [threading.Thread(target=run) for dummy in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    ok = [r for r in results if r.status == "ok"]
    failed = [r for r in results if r.failed]
    assert len(ok) >= 1, results
    for r in failed:
        assert "another dump into" in r["msg"] and "is running (PID" in r["msg"], r
    # Either the loser hit the lock, or it came second and found the complete checkpoint.
    assert sum(1 for r in ok if r["changed"]) == 1, results
    assert len(failed) + sum(1 for r in ok if not r["changed"]) == 1
    _assert_untouched(w)


def _zombie(tmp_path):
    p = subprocess.Popen(["true"])
    deadline = time.time() + 5
    while state(p.pid) != "Z" and time.time() < deadline:
        time.sleep(0.01)
    return p


@pytest.mark.parametrize("case", ["nopid", "pid1", "kthread", "zombie", "garbage_pidfile", "relative",
                                  "proc", "root", "symlink"])
def test_bad_input_one_clear_message_nothing_created(run_module, tmp_path, case):
    images = tmp_path / "imgs"
    args = {"images_dir": str(images)}
    zombie = None
    expect = {"nopid": "no process with PID", "pid1": "PID 1", "kthread": "kernel thread",
              "zombie": "zombie", "garbage_pidfile": "does not hold a PID", "relative": "absolute path",
              "proc": "inside /proc", "root": "system directory", "symlink": "symlink"}[case]
    if case == "nopid":
        args["pid"] = 4194000
    elif case == "pid1":
        args["pid"] = 1
    elif case == "kthread":
        args["pid"] = 2
    elif case == "zombie":
        zombie = _zombie(tmp_path)
        args["pid"] = zombie.pid
    elif case == "garbage_pidfile":
        (tmp_path / "x.pid").write_text("hello\n")
        args["pidfile"] = str(tmp_path / "x.pid")
    else:
        args["pid"] = os.getpid()
        if case == "relative":
            args["images_dir"] = "imgs"
        elif case == "proc":
            args["images_dir"] = "/proc/imgs"
        elif case == "root":
            args["images_dir"] = "/"
        elif case == "symlink":
            (tmp_path / "real").mkdir()
            os.symlink(str(tmp_path / "real"), str(images))
    try:
        r = run_module("dump", args)
    finally:
        if zombie:
            zombie.wait()
    assert r.failed, r
    assert expect in r["msg"], r
    assert "Traceback" not in r.get("module_stderr", "") and "Traceback" not in r.get("exception", "")
    if case != "symlink":
        assert not images.exists()
    else:
        assert os.listdir(tmp_path / "real") == []


def test_non_root_gets_must_run_as_root(tmp_path, workload):
    w = workload()
    home = Path("/tmp") / ("ckpt-nobody-%d" % os.getpid())
    home.mkdir(mode=0o777, exist_ok=True)
    os.chmod(home, 0o777)
    try:
        env = {"HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_REMOTE_TEMP": str(home / "rtmp"),
               "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PATH": "%s:/usr/bin:/bin" % (REPO / ".venv" / "bin"),
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
               }
        # The venv's interpreter lives under /root; the module runs with the system python3.
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
               str(REPO / ".venv" / "bin" / "ansible"), "localhost", "-e",
               "ansible_python_interpreter=/usr/bin/python3", "-m", "ckpt.criu.dump", "-a",
               json.dumps({"pid": w.pid, "images_dir": str(home / "imgs")})]
        p = subprocess.run(cmd, env=env, cwd=str(home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120, check=False)
        assert p.returncode != 0
        assert "must run as root" in p.stdout, p.stdout[-3000:]
        assert "Traceback" not in p.stdout
        assert not (home / "imgs").exists()
        _assert_untouched(w)
    finally:
        shutil.rmtree(str(home), ignore_errors=True)
