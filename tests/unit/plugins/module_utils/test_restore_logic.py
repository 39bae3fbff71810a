"""Pure-logic tests of _restore and _identity over fake /proc trees and fake
checkpoints: manifest checks, image/binary/stdio-file verification, PID
holders, restore arguments, the idempotence test, the death explanation and
process_state's decisions. No criu, no signals to real processes."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _identity
from ansible_collections.ckpt.criu.plugins.module_utils import _manifest
from ansible_collections.ckpt.criu.plugins.module_utils import _prefault
from ansible_collections.ckpt.criu.plugins.module_utils import _process_state
from ansible_collections.ckpt.criu.plugins.module_utils import _restore

BOOT = "11111111-2222-3333-4444-555555555555"
PID = 4242


def _sha(data):
    return hashlib.sha256(data).hexdigest()


class FakeProc(object):
    """A fake /proc: boot_id plus processes with stat, status, cmdline, exe, cwd."""

    def __init__(self, root):
        self.root = root
        (root / "sys/kernel/random").mkdir(parents=True)
        (root / "sys/kernel/random/boot_id").write_text(BOOT + "\n")

    def add(self, pid, start_time, state="S", comm="python3", cmdline=("python3", "app.py"),
            exe=None, ppid=1, uid=0):
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        fields = [state, str(ppid)] + ["0"] * 17 + [str(start_time)] + ["0"] * 30
        (d / "stat").write_text("%d (%s) %s\n" % (pid, comm, " ".join(fields)))
        (d / "status").write_text("Name:\t%s\nUid:\t%d\t%d\t%d\t%d\n" % (comm, uid, uid, uid, uid))
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in cmdline) + b"\0")
        for name, target in (("exe", exe), ("cwd", "/")):
            link = d / name
            if link.is_symlink():
                link.unlink()
            if target:
                link.symlink_to(target)
        return d

    def remove(self, pid):
        d = self.root / str(pid)
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


@pytest.fixture
def proc(tmp_path):
    return FakeProc(tmp_path / "proc")


@pytest.fixture
def exe(tmp_path):
    p = tmp_path / "bin" / "python3"
    p.parent.mkdir()
    p.write_bytes(b"\x7fELF" + b"x" * 4000)
    return p


def make_checkpoint(tmp_path, exe, **over):
    images = tmp_path / "img"
    images.mkdir()
    imgs = []
    for name, data in (("core-%d.img" % PID, b"core" * 100), ("pages-1.img", b"p" * 8192)):
        (images / name).write_bytes(data)
        imgs.append({"name": name, "size": len(data), "sha256": _sha(data)})
    rec = {"path": str(exe), "size": exe.stat().st_size, "sha256": _sha(exe.read_bytes())}
    manifest = {
        "schema": 1, "complete": True, "created": "2026-11-27T03:00:00Z",
        "host": {"hostname": "h", "boot_id": BOOT, "kernel": "6.18", "machine_id": "m"},
        "criu": {"path": "/usr/sbin/criu", "version": "4.1.1", "argv": ["criu", "dump"], "log": "dump.log"},
        "process": {"pid": PID, "ppid": 1, "start_time": 1000, "boot_id": BOOT, "uid": 0, "comm": "python3",
                    "cmdline": ["python3", "app.py"], "cwd": "/", "exe": str(exe), "sid": PID},
        "tree": [], "options": {"shell_job": False, "external": []}, "fds": {}, "stdio": {},
        "stdio_files": [], "binaries": {"exe": rec, "files": [rec]}, "images": imgs,
        "images_total_bytes": sum(i["size"] for i in imgs),
    }
    manifest.update(over)
    (images / _manifest.MANIFEST_NAME).write_text(json.dumps(manifest))
    return images, manifest


# ---------------------------------------------------------------- identity

def test_read_stat_handles_parentheses_in_comm(tmp_path):
    line = "77 (a) b (c)) T 1 77 77 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 98765 0 0"
    proc_dir = tmp_path / "proc" / "77"
    proc_dir.mkdir(parents=True)
    (proc_dir / "stat").write_text(line)
    st = _identity.read_stat(77, str(tmp_path / "proc"))
    assert (st["pid"], st["comm"], st["state"], st["ppid"], st["start_time"]) == (77, "a) b (c)", "T", 1, 98765)
    assert _identity.read_stat(78, str(tmp_path / "proc")) is None


def test_read_identity_and_states(proc, exe):
    proc.add(PID, 1000, state="T", exe=str(exe))
    ident = _identity.read_identity(PID, str(proc.root))
    assert ident["boot_id"] == BOOT and ident["start_time"] == 1000 and ident["exe"] == str(exe)
    assert ident["cmdline"] == ["python3", "app.py"] and ident["uid"] == 0
    assert _identity.process_state(PID, str(proc.root)) == "stopped"
    assert _identity.process_state(PID + 1, str(proc.root)) == "absent"
    assert [_identity.state_word(s) for s in ("R", "S", "D", "T", "t", "Z", "X", None)] == [
        "running", "running", "running", "stopped", "traced", "zombie", "zombie", "absent"]


def test_differences_compare_identity_and_exe():
    want = {"pid": 1, "start_time": 10, "boot_id": BOOT, "exe": "/usr/bin/python3"}
    same = dict(want, exe="/usr/bin/python3 (deleted)")
    assert _identity.differences(want, same) == []
    assert _identity.differences(want, dict(want, start_time=11)) == ["start_time"]
    assert _identity.differences(want, dict(want, boot_id="x", exe="/bin/sh")) == ["boot_id", "exe"]
    # A zombie has no exe: not counted as a difference.
    assert _identity.differences(want, dict(want, exe=None)) == []
    assert _identity.differences({"pid": "1", "start_time": "10"}, want) == []


def test_describe_names_pid_program_and_start_time_never_arguments():
    text = _identity.describe({"pid": 9, "cmdline": ["python3", "--db-password=s3cret"], "start_time": 5,
                               "exe": "/x"})
    assert "pid 9" in text and "python3 +1 args" in text and "start time 5" in text
    assert "s3cret" not in text


def test_private_identity_keeps_what_identity_checks_need():
    full = {"pid": 9, "cmdline": ["python3", "app.py", "--db-password=s3cret"]}
    priv = _identity.private(full)
    assert priv["cmdline"] == ["python3"] and priv["cmdline_args"] == 2 and "s3cret" not in json.dumps(priv)
    assert _identity.cmdline_matches(priv, full["cmdline"])
    assert not _identity.cmdline_matches(priv, ["python3", "app.py", "--db-password=other"])
    assert _identity.cmdline_matches(full, full["cmdline"])  # manifests written before keep the full form
    hidden = _identity.hide_cmdlines({"process": full, "tree": [full], "n": 1})
    assert "s3cret" not in json.dumps(hidden) and hidden["n"] == 1


# ---------------------------------------------------------------- manifest

def test_load_manifest_complete(tmp_path, exe):
    images, manifest = make_checkpoint(tmp_path, exe)
    got, sha = _restore.load_manifest(str(images))
    assert got == manifest
    assert sha == _sha((images / _manifest.MANIFEST_NAME).read_bytes())


@pytest.mark.parametrize("mutate,needle", [
    (lambda m: m.update(complete=False), "complete"),
    (lambda m: m.update(schema=2), "schema"),
    (lambda m: m["process"].pop("pid"), "process.pid"),
    (lambda m: m.update(images=[]), "no image"),
    (lambda m: m["images"].append({"name": "../etc/passwd", "size": 1, "sha256": "0" * 64}), "invalid name"),
    (lambda m: m["binaries"]["exe"].pop("sha256"), "binaries.exe.sha256"),
])
def test_incomplete_manifest_is_refused(tmp_path, exe, mutate, needle):
    images, manifest = make_checkpoint(tmp_path, exe)
    mutate(manifest)
    (images / _manifest.MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(_restore.RestoreError) as ei:
        _restore.load_manifest(str(images))
    assert str(ei.value).startswith("no complete checkpoint in %s: " % images)
    assert needle in str(ei.value)


def test_missing_manifest_and_dir(tmp_path, exe):
    images, _m = make_checkpoint(tmp_path, exe)
    (images / _manifest.MANIFEST_NAME).unlink()
    with pytest.raises(_restore.RestoreError, match="ckpt-manifest.json is missing"):
        _restore.load_manifest(str(images))
    with pytest.raises(_restore.RestoreError, match="does not exist"):
        _restore.load_manifest(str(tmp_path / "nope"))
    (images / _manifest.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(_restore.RestoreError, match="not valid JSON"):
        _restore.load_manifest(str(images))


# ----------------------------------------------------------- verifications

def test_images_verify_and_one_flipped_byte_is_named(tmp_path, exe):
    images, manifest = make_checkpoint(tmp_path, exe)
    assert _restore.image_problems(manifest, str(images)) == []
    data = bytearray((images / "pages-1.img").read_bytes())
    data[4096] ^= 0xFF
    (images / "pages-1.img").write_bytes(bytes(data))
    probs = _restore.image_problems(manifest, str(images))
    assert len(probs) == 1 and "pages-1.img" in probs[0] and "sha256" in probs[0]
    (images / ("core-%d.img" % PID)).unlink()
    probs = _restore.image_problems(manifest, str(images))
    assert any("core-%d.img is missing" % PID in p for p in probs)


def test_truncated_image_reports_sizes(tmp_path, exe):
    images, manifest = make_checkpoint(tmp_path, exe)
    (images / "pages-1.img").write_bytes(b"p" * 10)
    probs = _restore.image_problems(manifest, str(images))
    assert "pages-1.img" in probs[0] and "8192" in probs[0]


def test_remote_image_needs_only_to_exist(tmp_path, exe):
    images, manifest = make_checkpoint(tmp_path, exe)
    manifest["images"].append({"name": "pages-2.img", "remote": True})
    assert "pages-2.img is missing" in _restore.image_problems(manifest, str(images))[0]
    (images / "pages-2.img").write_bytes(b"anything")
    assert _restore.image_problems(manifest, str(images)) == []


def test_binary_same_size_other_content_is_named(tmp_path, exe):
    images, manifest = make_checkpoint(tmp_path, exe)
    assert _restore.binary_problems(manifest) == []
    data = bytearray(exe.read_bytes())
    data[len(data) // 2] ^= 0xFF
    exe.write_bytes(bytes(data))
    probs = _restore.binary_problems(manifest)
    assert len(probs) == 1 and str(exe) in probs[0] and "sha256" in probs[0]
    exe.unlink()
    probs = _restore.binary_problems(manifest)
    assert "missing on this host" in probs[0]


def test_deleted_binaries_are_not_looked_up_on_disk(tmp_path, exe):
    _images, manifest = make_checkpoint(tmp_path, exe)
    manifest["binaries"]["files"].append({"path": "/gone/lib.so", "size": 1, "sha256": "0" * 64, "deleted": True})
    manifest["binaries"]["files"].append({"path": "/gone/x.so (deleted)", "size": 1, "sha256": "0" * 64})
    assert _restore.binary_problems(manifest) == []


def test_stdio_file_size(tmp_path, exe):
    out = tmp_path / "out.log"
    out.write_bytes(b"x" * 100)
    _images, manifest = make_checkpoint(tmp_path, exe,
                                        stdio_files=[{"pid": PID, "fd": 1, "path": str(out), "size": 100}])
    assert _restore.stdio_file_problems(manifest) == []
    out.write_bytes(b"x" * 50)
    probs = _restore.stdio_file_problems(manifest)
    assert str(out) in probs[0] and "O_APPEND" in probs[0] and "50" in probs[0] and "100" in probs[0]
    out.unlink()
    assert "missing" in _restore.stdio_file_problems(manifest)[0]


def test_stdio_file_mode(tmp_path, exe):
    out = tmp_path / "out.log"
    out.write_bytes(b"x" * 10)
    os.chmod(str(out), 0o600)
    _images, manifest = make_checkpoint(tmp_path, exe, stdio_files=[
        {"pid": PID, "fd": 1, "path": str(out), "size": 10, "mode": 0o100600}])
    assert _restore.stdio_file_problems(manifest) == []
    os.chmod(str(out), 0o644)
    (prob,) = _restore.stdio_file_problems(manifest)
    assert str(out) in prob and "0100600" in prob and "0100644" in prob and "chmod" in prob


# --------------------------------------------------------------------- PID

def test_pid_free_zombie_and_live_holders(tmp_path, proc, exe):
    _images, manifest = make_checkpoint(tmp_path, exe)
    root = str(proc.root)
    assert _restore.pid_holder(manifest, 0, root) is None
    proc.add(PID, 1000, state="Z", exe=None)
    holder = _restore.pid_holder(manifest, 0.1, root)
    msg = _restore.pid_problem(manifest, holder, 0.1)
    assert "zombie" in msg and "pid_wait" in msg
    proc.add(PID, 1000, state="T", exe=str(exe))
    msg = _restore.pid_problem(manifest, _restore.pid_holder(manifest, 0, root), 0)
    assert "checkpointed process itself" in msg and "state=killed" in msg and "stopped" in msg
    proc.add(PID, 2000, state="S", comm="nginx", cmdline=("nginx", "-g", "daemon off;"), exe="/usr/sbin/nginx")
    msg = _restore.pid_problem(manifest, _restore.pid_holder(manifest, 0, root), 0)
    assert "another live process" in msg and "nginx +2 args" in msg and "pid %d" % PID in msg


# -------------------------------------------------------------------- args

def test_options_follow_manifest_unless_set(tmp_path, exe):
    _images, manifest = make_checkpoint(tmp_path, exe, options={"shell_job": True, "tcp_established": False,
                                                                "external": ["mnt[]:m"]})
    opts = _restore.effective_options(manifest, {"shell_job": None, "tcp_established": None,
                                                 "external": None, "leave_stopped": True})
    assert opts["shell_job"] is True and opts["tcp_established"] is False and opts["external"] == ["mnt[]:m"]
    assert opts["leave_stopped"] is True
    opts = _restore.effective_options(manifest, {"shell_job": False, "external": []})
    assert opts["shell_job"] is False and opts["external"] == [] and opts["leave_stopped"] is False


def test_restore_args_always_detached_with_own_workdir():
    args = _restore.restore_args("/img", "/w", "/w/pid", {"shell_job": True, "ext_unix_sk": True,
                                                          "external": ["a", "b"], "leave_stopped": True})
    assert args[:7] == ["-d", "-D", "/img", "-W", "/w", "--pidfile", "/w/pid"]
    assert "--shell-job" in args and "--ext-unix-sk" in args and "--tcp-established" not in args
    assert args.count("--external") == 2 and args[-1] == "--leave-stopped"


def test_restore_args_exact_order():
    opts = {"shell_job": True, "tcp_established": True, "ext_unix_sk": True, "ext_unix_sk_inodes": [77, 78],
            "file_locks": True, "external": ["mnt[/data]:data"], "leave_stopped": True}
    assert _restore.restore_args("/i", "/w", "/w/pid", opts, [(5, "pipe:[6]")]) == [
        "-d", "-D", "/i", "-W", "/w", "--pidfile", "/w/pid", "--shell-job", "--tcp-established",
        "--ext-unix-sk=77,78", "--file-locks", "--external", "mnt[/data]:data", "--inherit-fd", "fd[5]:pipe:[6]",
        "--leave-stopped"]


# ------------------------------------------------------------ idempotence

def test_already_restored_requires_the_recorded_identity(tmp_path, proc, exe):
    images, manifest = make_checkpoint(tmp_path, exe)
    _m, sha = _restore.load_manifest(str(images))
    root = str(proc.root)
    record = {"manifest_sha256": sha, "process": {"pid": PID, "start_time": 5000, "boot_id": BOOT}}
    assert _restore.already_restored(manifest, sha, None, root) == (False, None)
    assert _restore.already_restored(manifest, sha, record, root)[0] is False  # nothing on the PID
    proc.add(PID, 5000, exe=str(exe))
    assert _restore.already_restored(manifest, sha, record, root)[0] is True
    assert _restore.already_restored(manifest, "other", record, root)[0] is False
    proc.add(PID, 5001, exe=str(exe))  # same PID, another process
    assert _restore.already_restored(manifest, sha, record, root)[0] is False
    proc.add(PID, 5000, exe=str(exe), cmdline=("python3", "other.py"))
    assert _restore.already_restored(manifest, sha, record, root)[0] is False
    proc.add(PID, 5000, state="Z", exe=None)
    assert _restore.already_restored(manifest, sha, record, root)[0] is False


# ----------------------------------------------------------- verification

def test_verify_restored_catches_death_and_names_the_pipe(tmp_path, proc, exe):
    _images, manifest = make_checkpoint(tmp_path, exe, stdio={"1": {"kind": "pipe", "target": "pipe:[77]"}})
    root = str(proc.root)
    verified, _ident, problem = _restore.verify_restored(manifest, 0.1, False, root)
    assert verified["alive"] is False
    assert "exited 0" in problem and "died within" in problem and "stdout was a pipe" in problem


def test_verify_restored_ok_stopped_and_wrong_exe(tmp_path, proc, exe):
    _images, manifest = make_checkpoint(tmp_path, exe)
    root = str(proc.root)
    proc.add(PID, 7000, state="S", exe=str(exe))
    verified, ident, problem = _restore.verify_restored(manifest, 0.05, False, root)
    assert problem is None and verified["alive"] and verified["exe_matches"] and verified["cmdline_matches"]
    assert ident["start_time"] == 7000
    # leave_stopped expects T.
    _v, _i, problem = _restore.verify_restored(manifest, 0.05, True, root)
    assert "leave_stopped" in problem
    proc.add(PID, 7000, state="T", exe=str(exe))
    verified, _i, problem = _restore.verify_restored(manifest, 0.05, True, root)
    assert problem is None and verified["state"] == "stopped"
    other = tmp_path / "other"
    other.write_bytes(b"other")
    proc.add(PID, 7000, state="S", exe=str(other))
    _v, _i, problem = _restore.verify_restored(manifest, 0.05, False, root)
    assert "sha256" in problem


@pytest.mark.parametrize("stdio,needle", [
    ({"1": {"kind": "unix_socket_external"}}, "socket"),
    ({"0": {"kind": "tty"}}, "terminal"),
    ({}, "restore.log"),
])
def test_explain_death_other_causes(tmp_path, exe, stdio, needle):
    _images, manifest = make_checkpoint(tmp_path, exe, stdio=stdio)
    assert needle in _restore.explain_death(manifest)


def test_explain_death_reads_the_fd_table_too(tmp_path, exe):
    _images, manifest = make_checkpoint(tmp_path, exe, fds={str(PID): [{"fd": 2, "type": "FIFO/pipe"}]})
    assert "stderr was a pipe" in _restore.explain_death(manifest)


def test_record_is_written_atomically_0600(tmp_path, proc, exe):
    images, _m = make_checkpoint(tmp_path, exe)
    ident = {"pid": PID, "start_time": 1, "boot_id": BOOT, "exe": str(exe), "cmdline": ["a"]}
    rec = _restore.make_record("abc", ident, ["criu", "restore"], 0.1, {"x": 1}, {"alive": True}, str(proc.root))
    path = images / _manifest.RESTORE_RECORD_NAME
    _manifest.write_json_atomic(str(path), rec)
    assert oct(os.stat(str(path)).st_mode & 0o777) == "0o600"
    assert json.loads(path.read_text()) == rec and rec["criu"]["log"] == "restore.log"
    assert [f.name for f in images.iterdir() if f.name.startswith(".")] == []


# ----------------------------------------------------------- process_state

def _params(**kw):
    base = {"images_dir": None, "manifest": None, "identity": None, "instance": "source", "wait": 0.2}
    base.update(kw)
    return base


def test_expected_identity_sources(tmp_path, exe):
    images, manifest = make_checkpoint(tmp_path, exe)
    ident, source = _process_state.expected_identity(_params(images_dir=str(images)))
    assert (ident["pid"], ident["start_time"], ident["boot_id"]) == (PID, 1000, BOOT)
    assert "checkpointed in" in source
    ident2, _s = _process_state.expected_identity(_params(manifest=str(images / _manifest.MANIFEST_NAME)))
    assert ident2 == ident
    with pytest.raises(_restore.RestoreError, match="no restore record"):
        _process_state.expected_identity(_params(images_dir=str(images), instance="restored"))
    _m, sha = _restore.load_manifest(str(images))
    (images / _manifest.RESTORE_RECORD_NAME).write_text(json.dumps(
        {"manifest_sha256": sha, "process": {"pid": PID, "start_time": 9, "boot_id": BOOT}}))
    ident3, source3 = _process_state.expected_identity(_params(images_dir=str(images), instance="restored"))
    assert ident3["start_time"] == 9 and "restored from" in source3
    with pytest.raises(_restore.RestoreError, match="start_time"):
        _process_state.expected_identity(_params(identity={"pid": PID}))
    with pytest.raises(_restore.RestoreError, match="integers"):
        _process_state.expected_identity(_params(identity={"pid": "x", "start_time": 1}))


@pytest.mark.parametrize("present,want,changed,after", [
    ("S", "running", False, "S"),
    ("T", "running", True, "running"),
    ("S", "stopped", True, "stopped"),
    ("T", "stopped", False, "T"),
    ("S", "killed", True, "absent"),
    (None, "killed", False, None),
    ("Z", "killed", False, None),
])
def test_process_state_check_mode_predictions(tmp_path, proc, exe, present, want, changed, after):
    images, _m = make_checkpoint(tmp_path, exe)
    if present:
        proc.add(PID, 1000, state=present, exe=str(exe) if present != "Z" else None)
    res = _process_state.ensure_process_state(_params(images_dir=str(images), state=want), True, str(proc.root))
    assert res["changed"] is changed
    assert res["signal"] == ({"running": "SIGCONT", "stopped": "SIGSTOP", "killed": "SIGKILL"}[want] if changed else None)


@pytest.mark.parametrize("present,want,needle", [
    (None, "running", "not running"),
    ("Z", "stopped", "zombie"),
    ("t", "running", "tracer"),
])
def test_process_state_refusals(tmp_path, proc, exe, present, want, needle):
    images, _m = make_checkpoint(tmp_path, exe)
    if present:
        proc.add(PID, 1000, state=present, exe=str(exe) if present != "Z" else None)
    with pytest.raises(_restore.RestoreError, match=needle):
        _process_state.ensure_process_state(_params(images_dir=str(images), state=want), True, str(proc.root))


def test_process_state_refuses_another_process_on_the_pid(tmp_path, proc, exe):
    images, _m = make_checkpoint(tmp_path, exe)
    proc.add(PID, 1001, state="T", exe=str(exe))
    with pytest.raises(_restore.RestoreError) as ei:
        _process_state.ensure_process_state(_params(images_dir=str(images), state="killed"), False, str(proc.root))
    msg = str(ei.value)
    assert "different process" in msg and "start time 1000" in msg and "start time 1001" in msg
    assert "nothing was signalled" in msg
    assert ei.value.to_fail_kwargs()["differences"] == ["start_time"]


def _fd_tree(tmp_path, pid, links):
    d = tmp_path / "fdproc" / str(pid) / "fd"
    d.mkdir(parents=True)
    for fd, target in links.items():
        os.symlink(target, str(d / str(fd)))
    return str(tmp_path / "fdproc")


def _stdio_manifest(pid, targets):
    return {"process": {"pid": pid},
            "fds": {str(pid): [{"fd": fd, "target": t} for fd, t in targets.items()]}}


def test_stdio_after_restore_matches_paths_and_kinds(tmp_path):
    m = _stdio_manifest(42, {0: "/dev/null", 1: "pipe:[1111]", 2: "/var/log/app.log"})
    root = _fd_tree(tmp_path, 42, {0: "/dev/null", 1: "pipe:[2222]", 2: "/var/log/app.log"})
    assert _restore.stdio_problems(m, 42, root) == []


def test_stdio_after_restore_differs(tmp_path):
    m = _stdio_manifest(42, {0: "/dev/null", 1: "/var/log/app.log", 2: None})
    root = _fd_tree(tmp_path, 42, {0: "/dev/null", 1: "/dev/null", 2: "socket:[9]"})
    problems = _restore.stdio_problems(m, 42, root)
    assert len(problems) == 2
    assert "fd 1 (stdout) of restored process 42 is /dev/null, the checkpoint recorded /var/log/app.log" in problems
    assert "fd 2 (stderr) of restored process 42 is socket:[9], the checkpoint recorded closed" in problems


def test_stdio_closed_stays_closed_and_old_manifests_are_not_judged(tmp_path):
    m = _stdio_manifest(42, {0: None, 1: "/dev/null", 2: "/dev/null"})
    root = _fd_tree(tmp_path, 42, {1: "/dev/null", 2: "/dev/null"})
    assert _restore.stdio_problems(m, 42, root) == []
    assert _restore.stdio_problems({"process": {"pid": 42}}, 42, root) == []


def _meminfo(tmp_path, avail_kib):
    (tmp_path / "meminfo").write_text("MemTotal:       24684000 kB\nMemAvailable:   %d kB\n" % avail_kib)
    return str(tmp_path)


def test_prefault_touches_at_most_half_of_the_available_memory(tmp_path):
    pf = _prefault.Prefault(64 << 20, proc_root=_meminfo(tmp_path, 32 * 1024))   # 32 MiB available
    info = pf.release()
    assert info["requested_bytes"] == 64 << 20 and info["limit_bytes"] == 16 << 20
    assert 0 <= info["touched_bytes"] <= 16 << 20
    assert pf.release() is info                                                # idempotent


def test_prefault_touches_twice_the_request_when_given_time(tmp_path):
    # Once for the images' page cache as they arrive, once for the restored process.
    pf = _prefault.Prefault(24 << 20, proc_root=_meminfo(tmp_path, 1 << 20))     # 1 GiB available
    pf._thread.join(30)
    info = pf.release()
    assert info["touched_bytes"] == info["limit_bytes"] == 48 << 20 and info["freed_at_arrival_bytes"] == 0


@pytest.mark.parametrize("avail_mib,freed_mib", [(1024, 24), (64, 8), (32, 0)])
def test_prefault_arrival_keeps_what_the_restore_needs(tmp_path, avail_mib, freed_mib):
    done = []
    pf = _prefault.Prefault(24 << 20, proc_root=_meminfo(tmp_path, avail_mib << 10), on_done=done.append)
    pf._thread.join(30)
    assert done == [pf]
    pf.arrival()
    assert pf.freed_at_arrival == freed_mib << 20
    assert sum(len(c) for c in pf._chunks) == min(24, avail_mib // 2) << 20
    info = pf.release()
    assert info["freed_at_arrival_bytes"] == freed_mib << 20 and pf._chunks == []


def test_prefault_without_meminfo_touches_nothing(tmp_path):
    assert _prefault.Prefault(8 << 20, proc_root=str(tmp_path / "missing")).release()["touched_bytes"] == 0


# ------------------------------------------------------------------ trees

def _pstree(images, entries):
    """Write a pstree.img: two magics, then (u32 size, PstreeEntry) records."""
    def varint(n):
        out = b""
        while True:
            b = n & 0x7F
            n >>= 7
            if n:
                out += bytes([b | 0x80])
            else:
                return out + bytes([b])
    data = b"\x19\x43\x56\x54\x30\x30\x27\x50"
    for pid, ppid, threads in entries:
        msg = b"\x08" + varint(pid) + b"\x10" + varint(ppid) + b"\x18" + varint(pid) + b"\x20" + varint(pid)
        msg += b"".join(b"\x28" + varint(t) for t in threads)
        data += len(msg).to_bytes(4, "little") + msg
    (images / "pstree.img").write_bytes(data)


def test_dumped_tree_reads_every_pid_and_thread_from_the_images(tmp_path, exe):
    images, manifest = make_checkpoint(tmp_path, exe, tree=[
        {"pid": PID, "start_time": 1000, "comm": "nginx"}, {"pid": PID + 1, "start_time": 1001, "comm": "nginx"}])
    _pstree(images, [(PID, 1, [PID, PID + 5, PID + 6]), (PID + 1, PID, [PID + 1])])
    tree = _restore.dumped_tree(manifest, str(images))
    assert [t["pid"] for t in tree] == [PID, PID + 1]
    assert tree[0]["threads"] == [PID, PID + 5, PID + 6] and tree[1]["comm"] == "nginx"
    assert [i[0] for i in _restore.tree_ids(tree)] == [PID, PID + 5, PID + 6, PID + 1]
    # No pstree.img: the manifest's tree, then the root alone.
    (images / "pstree.img").unlink()
    assert [t["pid"] for t in _restore.dumped_tree(manifest, str(images))] == [PID, PID + 1]
    manifest["tree"] = []
    assert [t["pid"] for t in _restore.dumped_tree(manifest, str(images))] == [PID]


def _two_process_tree(tmp_path, exe, comms):
    """A checkpoint of PID (threads PID and PID+5) and its child PID+1, named ``comms``."""
    images, manifest = make_checkpoint(tmp_path, exe, tree=[
        {"pid": PID, "start_time": 1000, "comm": comms[0]}, {"pid": PID + 1, "start_time": 1001, "comm": comms[1]}])
    _pstree(images, [(PID, 1, [PID, PID + 5]), (PID + 1, PID, [PID + 1])])
    return manifest, _restore.dumped_tree(manifest, str(images))


def test_every_pid_and_thread_of_the_tree_must_be_free(tmp_path, proc, exe):
    manifest, tree = _two_process_tree(tmp_path, exe, ("nginx", "nginx"))
    root = str(proc.root)
    assert _restore.tree_pid_problems(manifest, tree, 0, root) == ([], [])
    proc.add(PID + 1, 3000, comm="sleep", cmdline=("sleep", "100"))
    proc.add(PID + 5, 3001, comm="bash", cmdline=("bash",))
    problems, holders = _restore.tree_pid_problems(manifest, tree, 0, root)
    assert len(problems) == 2 and [h["pid"] for h in holders] == [PID + 5, PID + 1]
    assert "PID %d that the checkpoint needs (thread %d of process %d (nginx) of the checkpointed tree)" % (
        PID + 5, PID + 5, PID) in problems[0]
    assert "PID %d that the checkpoint needs (process %d (nginx)" % (PID + 1, PID + 1) in problems[1]
    assert "[sleep +1 args]" in problems[1]     # named by its program, never its arguments
    # The tree's own child still running (a dump with leave_running): kill the whole tree.
    proc.remove(PID + 5)
    proc.add(PID + 1, 1001, comm="nginx", cmdline=("nginx",))
    problems, dummy = _restore.tree_pid_problems(manifest, tree, 0, root)
    assert len(problems) == 1
    assert problems[0].startswith("Process %d (nginx) of the checkpointed tree still runs here as pid %d"
                                  % (PID + 1, PID + 1))
    assert "kill the whole checkpointed tree first" in problems[0]


def test_verification_wants_the_whole_tree_back(tmp_path, proc, exe):
    manifest, tree = _two_process_tree(tmp_path, exe, ("python3", "worker"))
    root = str(proc.root)
    d = proc.add(PID, 7000, state="S", exe=str(exe))
    (d / "task" / str(PID)).mkdir(parents=True)
    (d / "task" / str(PID + 5)).mkdir()
    verified, dummy, problem = _restore.verify_restored(manifest, 0.05, False, root, tree=tree)
    assert "tree is not whole" in problem and "process %d (worker) is not running after the restore (gone)" % (
        PID + 1) in problem
    assert verified["tree_matches"] is False
    proc.add(PID + 1, 7001, comm="worker")
    (d / "task" / str(PID + 5)).rmdir()
    verified, dummy, problem = _restore.verify_restored(manifest, 0.05, False, root, tree=tree)
    assert "thread %d of process %d (python3) is not back" % (PID + 5, PID) in problem
    (d / "task" / str(PID + 5)).mkdir()
    verified, dummy, problem = _restore.verify_restored(manifest, 0.05, False, root, tree=tree)
    assert problem is None and verified["tree_matches"] is True
    assert verified["processes"] == 2 and verified["threads"] == 3
