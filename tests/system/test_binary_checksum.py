"""ckpt.criu.binary_checksum through real `ansible`, against real processes.

The records must agree with `sha256sum` of the same files; a binary that
changes with the same size (in place, or replaced on disk) must be caught by
sha256; bad input must give one sentence and no traceback."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reading /proc/PID/map_files needs root")


def sha256sum(paths):
    out = subprocess.run(["sha256sum", "--"] + list(paths), check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    res = {}
    for line in out.splitlines():
        digest, path = line.split(None, 1)
        res[path.lstrip("*")] = digest
    return res


def no_traceback(res):
    text = json.dumps(res) + (res.output or "")
    assert "Traceback" not in text, text
    assert "module_stderr" not in res, res


def same_size_other_bytes(path, at_end=True):
    """Bytes of ``path`` with 64 bytes flipped (at the end: the ELF section header table)."""
    data = bytearray(open(path, "rb").read())
    start = len(data) - 64 if at_end else len(data) // 2
    for i in range(start, start + 64):
        data[i] ^= 0xFF
    return bytes(data)


class Proc:
    """A detached process started from a binary of our choice (own session)."""

    def __init__(self, argv, env=None):
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        self.pid = self.p.pid
        deadline = time.time() + 5
        # Wait until the exec happened and the dynamic loader mapped everything.
        while time.time() < deadline:
            try:
                if os.readlink("/proc/%d/exe" % self.pid) == os.path.realpath(argv[0]):
                    maps = open("/proc/%d/maps" % self.pid).read()
                    if "libc" in maps:
                        break
            except OSError:
                pass
            time.sleep(0.02)
        time.sleep(0.1)

    def kill(self):
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.p.wait()


@pytest.fixture
def procs():
    started = []

    def _start(argv, env=None):
        pr = Proc(argv, env)
        started.append(pr)
        return pr

    yield _start
    for pr in started:
        pr.kill()


# --------------------------------------------------------------- happy path

def test_workload_records_match_sha256sum(run_module, workload):
    w = workload()
    res = run_module("binary_checksum", {"pid": w.pid})
    assert res.status == "ok", res
    assert res["changed"] is False and res["pid"] == w.pid
    exe = res["exe"]
    assert exe["path"] == os.path.realpath("/proc/%d/exe" % w.pid) and exe["exe"] is True
    assert res["files"][0] == exe
    paths = [f["path"] for f in res["files"]]
    assert len(paths) == len(set(paths))
    assert any("libc" in p for p in paths), paths
    # Every mapped regular file, per /proc/PID/maps, is there.
    mapped = set()
    for line in open("/proc/%d/maps" % w.pid):
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].strip().startswith("/") and not parts[5].startswith("/memfd:"):
            mapped.add(parts[5].strip())
    assert mapped == set(paths), mapped.symmetric_difference(paths)
    want = sha256sum(paths)
    for f in res["files"]:
        assert f["sha256"] == want[f["path"]], f["path"]
        assert f["size"] == os.path.getsize(f["path"])
        assert f["deleted"] is False and f["replaced"] is False
    assert res["cache"]["misses"] == len(paths)
    assert "matches" not in res


def test_check_mode_identical_and_expected_from_previous_result(run_module, workload):
    w = workload()
    first = run_module("binary_checksum", {"pid": w.pid})
    again = run_module("binary_checksum", {"pid": w.pid}, check=True)
    assert again.status == "ok" and again["changed"] is False
    assert again["files"] == first["files"] and again["exe"] == first["exe"]

    for check in (True, False):
        cmp = run_module("binary_checksum", {"pidfile": w.pidfile, "expected": dict(first)}, check=check)
        assert cmp.status == "ok", cmp
        assert cmp["changed"] is False and cmp["matches"] is True and cmp["mismatches"] == []
        assert sorted(cmp["matched"]) == sorted(f["path"] for f in first["files"])

    # Only the files list, and only the exe.
    cmp = run_module("binary_checksum", {"pid": w.pid, "expected": first["files"], "exe_only": True})
    assert cmp.status == "ok" and cmp["matches"] is True and cmp["matched"] == [first["exe"]["path"]]
    assert [f["path"] for f in cmp["files"]] == [first["exe"]["path"]]


def test_several_pids_in_one_run_as_one_run_each(run_module, workload):
    """pids: one run answers for each process what a run per process answers; a PID that is
    gone fails its own entry only; expected_per_pid compares each entry on this host."""
    a, b = workload(name="a"), workload(name="b")
    gone = subprocess.Popen(["true"])
    gone.wait()
    res = run_module("binary_checksum", {"pids": [a.pid, gone.pid, b.pid]})
    assert res.status == "ok" and res["changed"] is False, res
    ea, eg, eb = res["per_pid"]
    assert [ea["item"], eg["item"], eb["item"]] == [a.pid, gone.pid, b.pid]
    for entry, w in ((ea, a), (eb, b)):
        alone = run_module("binary_checksum", {"pid": w.pid})
        assert entry["pid"] == w.pid and entry["exe"] == alone["exe"] and entry["files"] == alone["files"]
        assert not entry.get("failed")
    assert eg["failed"] is True and str(gone.pid) in eg["msg"], eg
    # The same interpreter and libraries: hashed once for both processes.
    assert res["cache"]["hits"] >= len(ea["files"]), res["cache"]

    cmp = run_module("binary_checksum", {"expected_per_pid": [ea, eb], "fail_on_mismatch": False})
    assert cmp.status == "ok", cmp
    assert [(e["item"], e["matches"], e["mismatches"]) for e in cmp["per_pid"]] == [(a.pid, True, []), (b.pid, True, [])]
    # A record that does not match: that entry lists it; with fail_on_mismatch it fails that entry, not the task.
    forged = dict(eb, files=[dict(eb["files"][0], sha256="0" * 64)] + eb["files"][1:])
    for fail_on in (False, True):
        cmp = run_module("binary_checksum", {"expected_per_pid": [ea, forged], "fail_on_mismatch": fail_on})
        assert cmp.status == "ok", cmp
        good, bad = cmp["per_pid"]
        assert good["matches"] is True and not good.get("failed")
        assert bad["matches"] is False and bad["mismatches"][0]["differs"] == ["sha256"]
        assert bool(bad.get("failed")) is fail_on and (not fail_on or "sha256" in bad["msg"])
    bad = run_module("binary_checksum", {"expected_per_pid": [{"files": []}]})
    assert bad.status == "failed" and "expected_per_pid" in bad["msg"], bad


def test_expected_from_manifest_dir_checks_files_on_disk(run_module, workload, tmp_path):
    w = workload()
    first = run_module("binary_checksum", {"pid": w.pid})
    images = tmp_path / "images"
    images.mkdir()
    (images / "ckpt-manifest.json").write_text(json.dumps(
        {"schema": 1, "complete": True, "binaries": {"exe": first["exe"], "files": first["files"]}}))
    # No pid: what a restore on this host would map, checked at the recorded paths.
    for expected in (str(images), str(images / "ckpt-manifest.json")):
        res = run_module("binary_checksum", {"expected": expected})
        assert res.status == "ok", res
        assert res["matches"] is True and len(res["files"]) == len(first["files"])
        assert "pid" not in res


def test_symlink_path_reports_realpath(run_module, tmp_path):
    link = tmp_path / "python-link"
    link.symlink_to("/bin/true")
    res = run_module("binary_checksum", {"paths": [str(link), "/usr/bin/true"]})
    assert res.status == "ok", res
    real = os.path.realpath("/bin/true")
    assert [f["path"] for f in res["files"]] == [real]
    assert res["files"][0]["requested"] == str(link)
    assert res["files"][0]["sha256"] == sha256sum([real])[real]


# ---------------------------------------------------- binaries that changed

def test_mapped_library_overwritten_in_place_same_size(run_module, procs, tmp_path):
    """A library the running process maps is rewritten in place, same size: sha256 catches it."""
    d = tmp_path / "app"
    d.mkdir()
    shutil.copy("/bin/sleep", str(d / "sleep"))
    lib = d / "libz.so.1"
    shutil.copy(os.path.realpath("/usr/lib/x86_64-linux-gnu/libz.so.1"), str(lib))
    env = dict(os.environ, LD_PRELOAD=str(lib))
    pr = procs([str(d / "sleep"), "300"], env=env)
    before = run_module("binary_checksum", {"pid": pr.pid})
    assert before.status == "ok", before
    assert str(lib) in [f["path"] for f in before["files"]]

    new = same_size_other_bytes(str(lib))
    with open(str(lib), "r+b") as fh:  # the same inode, as `cp` over it would do
        fh.write(new)
    assert os.path.getsize(str(lib)) == len(new)

    res = run_module("binary_checksum", {"pid": pr.pid, "expected": dict(before)})
    assert res.status == "failed", res
    no_traceback(res)
    assert res["msg"].startswith("1 of %d files do not match the expected binaries: %s differs"
                                 % (len(before["files"]), lib)), res["msg"]
    assert "same size and build-id" in res["msg"] and "put back the file" in res["msg"]
    (m,) = res["mismatches"]
    assert m["path"] == str(lib) and m["differs"] == ["sha256"]
    assert m["actual"]["sha256"] == sha256sum([str(lib)])[str(lib)]

    soft = run_module("binary_checksum", {"pid": pr.pid, "expected": dict(before), "fail_on_mismatch": False})
    assert soft.status == "ok" and soft["changed"] is False
    assert soft["matches"] is False and [x["path"] for x in soft["mismatches"]] == [str(lib)]
    assert pr.p.poll() is None, "the process should still run"


def _private_sleep(run_module, procs, tmp_path):
    """(exe, process, its binary_checksum result) of a private copy of /bin/sleep, running."""
    d = tmp_path / "app"
    d.mkdir()
    exe = d / "sleep"
    shutil.copy("/bin/sleep", str(exe))
    pr = procs([str(exe), "300"])
    return exe, pr, run_module("binary_checksum", {"pid": pr.pid})


def test_exe_replaced_on_disk_same_size(run_module, procs, tmp_path):
    """The executable of a running process cannot be rewritten in place (ETXTBSY); a deploy replaces it.

    The running process still maps the old inode: its records match what it was started with,
    the exe is flagged `replaced`, and checking the files on disk (what a restore maps) fails."""
    exe, pr, before = _private_sleep(run_module, procs, tmp_path)
    assert before.status == "ok", before
    assert before["exe"]["path"] == str(exe)

    new = same_size_other_bytes(str(exe))
    try:
        with open(str(exe), "r+b") as fh:
            fh.write(new)
        in_place = True
    except OSError as exc:
        assert exc.errno == 26  # ETXTBSY: the kernel refuses writes to a running executable
        in_place = False
    if not in_place:
        tmp = exe.parent / ".sleep.new"
        tmp.write_bytes(new)
        os.chmod(str(tmp), 0o755)
        os.replace(str(tmp), str(exe))

    live = run_module("binary_checksum", {"pid": pr.pid, "expected": dict(before)})
    if not in_place:
        assert live.status == "ok", live
        assert live["matches"] is True  # the process still runs the code it was started with
        rec = live["exe"]
        assert rec["replaced"] is True and rec["replaced_differs"] is True and rec["deleted"] is False
        assert rec["on_disk"]["sha256"] == sha256sum([str(exe)])[str(exe)] != rec["sha256"]
        assert rec["on_disk"]["size"] == rec["size"]
        assert "was replaced on disk" in rec["note"]
        assert "was replaced on disk" in live.output  # the warning

    # What a restore would map: the files at the recorded paths.
    disk = run_module("binary_checksum", {"expected": dict(before)})
    assert disk.status == "failed", disk
    no_traceback(disk)
    assert "%s differs from the expected file: sha256" % exe in disk["msg"]
    (m,) = disk["mismatches"]
    assert m["differs"] == ["sha256"] and m["expected"]["build_id"] == m["actual"]["build_id"]

    only = run_module("binary_checksum", {"paths": [str(exe)], "expected": before["files"],
                                          "fail_on_mismatch": False})
    assert only.status == "ok" and only["matches"] is False
    assert [x["path"] for x in only["mismatches"]] == [str(exe)]


def test_deleted_mapped_file_is_flagged(run_module, procs, tmp_path):
    exe, pr, before = _private_sleep(run_module, procs, tmp_path)
    os.unlink(str(exe))
    res = run_module("binary_checksum", {"pid": pr.pid, "expected": dict(before)})
    assert res.status == "ok", res
    assert res["exe"]["path"] == str(exe) and res["exe"]["deleted"] is True
    assert res["exe"]["sha256"] == before["exe"]["sha256"]
    assert res["matches"] is True
    assert "was deleted" in res["exe"]["note"]


# ----------------------------------------------------------------- bad input

def _zombie():
    """A parent that never reaps its child; returns (parent Popen, zombie pid)."""
    code = ("import os, sys, time\n"
            "pid = os.fork()\n"
            "if pid == 0:\n    os._exit(0)\n"
            "print(pid, flush=True)\n"
            "time.sleep(300)\n")
    import sys
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    zpid = int(parent.stdout.readline())
    for dummy in range(200):
        if open("/proc/%d/stat" % zpid).read().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    return parent, zpid


def _kernel_thread():
    for name in sorted(os.listdir("/proc"), key=lambda s: (len(s), s)):
        if name.isdigit() and name != "1":
            try:
                fields = open("/proc/%s/stat" % name).read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[6]) & 0x00200000:
                return int(name)
    return None


def test_bad_inputs_one_sentence_no_traceback(run_module, tmp_path):
    garbage = tmp_path / "garbage.pid"
    garbage.write_text("not a pid\n")
    empty = tmp_path / "empty.pid"
    empty.write_text("")
    parent, zpid = _zombie()
    kthread = _kernel_thread()
    cases = [
        ({"pid": 4194000}, "no process with PID 4194000 exists"),
        ({"pid": 1}, "PID 1 is the init process"),
        ({"pid": 0}, "is not valid"),
        ({"pid": zpid}, "is a zombie"),
        ({"pidfile": str(garbage)}, "does not hold a PID"),
        ({"pidfile": str(empty)}, "does not hold a PID"),
        ({"pidfile": str(tmp_path / "nope.pid")}, "does not exist"),
        ({"pidfile": str(tmp_path)}, "is a directory"),
        ({"paths": [str(tmp_path / "nope")]}, "does not exist"),
        ({"paths": [str(tmp_path)]}, "is a directory, not a regular file"),
        ({"paths": ["/dev/null"]}, "is a device, not a regular file"),
        ({"paths": []}, "paths is empty"),
        ({"pid": 1234, "paths": ["/bin/true"]}, "mutually exclusive"),
        ({"exe_only": False}, "one of the following is required"),
        ({"paths": ["/bin/true"], "expected": str(tmp_path / "no-manifest.json")}, "does not exist"),
        ({"paths": ["/bin/true"], "expected": str(tmp_path)}, "holds no ckpt-manifest.json"),
        ({"paths": ["/bin/true"], "expected": 7}, "must be a list of records"),
    ]
    if kthread:
        cases.append(({"pid": kthread}, "is a kernel thread"))
    try:
        for args, needle in cases:
            res = run_module("binary_checksum", args)
            assert res.status == "failed", (args, res)
            no_traceback(res)
            assert needle in res["msg"], (args, res["msg"])
            assert res.get("changed", False) is False
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_shared_writable_data_mapping_is_not_a_binary(run_module, procs, tmp_path):
    """A file the process maps MAP_SHARED read-write (a database) changes by design: left out."""
    import sys
    data = tmp_path / "db.dat"
    data.write_bytes(b"\0" * 8192)
    ro = tmp_path / "table.ro"
    ro.write_bytes(b"r" * 8192)
    code = ("import mmap, time\n"
            "f = open(%r, 'r+b'); m = mmap.mmap(f.fileno(), 8192, mmap.MAP_SHARED)\n"
            "g = open(%r, 'rb'); n = mmap.mmap(g.fileno(), 8192, mmap.MAP_PRIVATE, mmap.PROT_READ)\n"
            "while True:\n    m[0] = (m[0] + 1) %% 256; time.sleep(0.01)\n" % (str(data), str(ro)))
    pr = procs([os.path.realpath(sys.executable), "-c", code])
    for dummy in range(100):
        if str(data) in open("/proc/%d/maps" % pr.pid).read():
            break
        time.sleep(0.05)
    res = run_module("binary_checksum", {"pid": pr.pid})
    assert res.status == "ok", res
    paths = [f["path"] for f in res["files"]]
    assert str(data) not in paths
    assert str(ro) in paths
