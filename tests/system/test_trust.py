"""Trust boundaries and faults, tried the way an attacker and an unlucky operator would.

Attacks run as the unprivileged local user ``ckpt-attacker`` (scripts/setup.sh
creates it), through ``setpriv``: it owns directories, plants symlinks and
wins races. Faults kill the module in the middle of its work and break a
checkpoint, against a live counter workload whose tick sequence must never
repeat or skip. Each test names the finding it proves fixed.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ckpt_testlib import REPO, VENV_BIN, find_criu, read_ticks, start_workload, still_ticking, wait, wait_gone

from ansible_collections.ckpt.criu.plugins.module_utils import _identity, _page_server, _process_state

pytestmark = pytest.mark.criu

ATTACKER = "ckpt-attacker"
VICTIM_TEXT = "root's own data, not to be touched\n"


# ------------------------------------------------------------------ fixtures

def attacker_ids():
    try:
        pw = pwd.getpwnam(ATTACKER)
    except KeyError:
        pytest.fail("the unprivileged user %s is missing: run `make setup` (scripts/setup.sh creates it)"
                    % ATTACKER)
    return pw.pw_uid, pw.pw_gid


def attacker_argv(argv):
    uid, gid = attacker_ids()
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups", "--"] + list(argv)


def as_attacker(*argv):
    p = subprocess.run(attacker_argv(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, check=False)
    assert p.returncode == 0, "the attacker's %s failed: %s" % (argv, p.stdout)
    return p.stdout


@pytest.fixture
def base():
    """A root-owned 0755 directory under /var/tmp: a trusted place the attacker can traverse."""
    d = Path(tempfile.mkdtemp(prefix="ckpt-trust-", dir="/var/tmp"))
    os.chmod(str(d), 0o755)
    yield d
    shutil.rmtree(str(d), ignore_errors=True)


@pytest.fixture
def attacker_home(base):
    """A directory the attacker owns (as a home directory would be)."""
    uid, gid = attacker_ids()
    d = base / "attacker"
    d.mkdir(mode=0o755)
    os.chown(str(d), uid, gid)
    return d


def victim(base, name):
    """A root-owned 0600 file the attacker wants to destroy."""
    path = base / name
    path.write_text(VICTIM_TEXT)
    os.chmod(str(path), 0o600)
    return path


def dump_ok(run_module, pid, images, **kw):
    args = {"pid": pid, "images_dir": str(images)}
    args.update(kw)
    res = run_module("dump", args)
    assert res.status == "ok", res.get("msg")
    return res


def copy_as_attackers(src, dest):
    """The attacker's own checkpoint: the files of src in dest, owned by the attacker (anyone who can
    write a directory can write a manifest whose hashes match the images next to it)."""
    uid, gid = attacker_ids()
    for f in Path(src).iterdir():
        if f.is_file():
            shutil.copy2(str(f), str(dest / f.name))
            os.chown(str(dest / f.name), uid, gid)


def attackers_checkpoint(run_module, workload, base, attacker_home):
    """(workload, root's checkpoint of it, the attacker's copy of that checkpoint); the workload is gone."""
    w = workload("devnull")
    w.wait_ticks(3)
    good = base / "good"
    dump_ok(run_module, w.pid, good)
    assert wait_gone(w.pid)
    evil = attacker_home / "evil"
    as_attacker("mkdir", "-m", "0755", str(evil))
    copy_as_attackers(good, evil)
    return w, good, evil


def assert_ticks_on(w):
    w.wait_ticks(5)
    ok, gap = w.continuity()
    assert ok, "the tick sequence repeated or skipped"
    return gap


# ------------------------------------------------- finding 2: restore's trust

def test_restore_refuses_a_checkpoint_in_a_directory_another_user_owns(
        run_module, workload, base, attacker_home):
    """Finding 2: root restored, as root, a checkpoint from a directory owned by nobody."""
    w, good, evil = attackers_checkpoint(run_module, workload, base, attacker_home)
    before = sorted(p.name for p in evil.iterdir())
    try:
        res = run_module("restore", {"images_dir": str(evil)})
        assert res.failed, "restored a checkpoint from a directory the attacker owns"
        assert "owned by uid %d" % attacker_ids()[0] in res["msg"], res["msg"]
        assert not w.alive(), "a process was restored from the attacker's directory"
        assert sorted(p.name for p in evil.iterdir()) == before, "root wrote into the attacker's directory"
    finally:
        w.kill()
    # The same checkpoint in root's own directory restores, ticking on.
    res = run_module("restore", {"images_dir": str(good)})
    assert res.status == "ok", res.get("msg")
    assert_ticks_on(w)


def test_restore_never_writes_its_log_through_a_planted_symlink(run_module, workload, base, attacker_home):
    """Finding 2: a restore.log that nobody planted as a symlink made criu overwrite a root 0600 file."""
    target = victim(base, "victim")
    w, dummy, evil = attackers_checkpoint(run_module, workload, base, attacker_home)
    as_attacker("ln", "-s", str(target), str(evil / "restore.log"))
    try:
        res = run_module("restore", {"images_dir": str(evil)})
        assert target.read_text() == VICTIM_TEXT, "criu's log overwrote a root-owned file through a symlink"
        assert res.failed and "not root" in res["msg"], res.get("msg")
    finally:
        w.kill()


def test_restore_refuses_a_writable_or_redirected_images_dir(run_module, workload, base):
    """Finding 2: the trust rule's other shapes: a root-owned 1777 directory, a path through a symlink."""
    w = workload("devnull")
    w.wait_ticks(3)
    good = base / "good"
    dump_ok(run_module, w.pid, good)
    assert wait_gone(w.pid)
    try:
        os.chmod(str(good), 0o1777)
        res = run_module("restore", {"images_dir": str(good)})
        assert res.failed and "writable by its group and others" in res["msg"], res.get("msg")
        assert stat.S_IMODE(good.stat().st_mode) == 0o1777, "the directory was changed"
        assert not w.alive()
        os.chmod(str(good), 0o700)
        (base / "link").symlink_to(str(base))
        res = run_module("restore", {"images_dir": str(base / "link" / "good")})
        assert res.failed and "symlink" in res["msg"], res.get("msg")
        assert not w.alive()
        assert not (good / "restore.log").exists(), "the refused restores wrote a log"
    finally:
        w.kill()
    res = run_module("restore", {"images_dir": str(good)})
    assert res.status == "ok", res.get("msg")
    assert_ticks_on(w)


# --------------------------------------------- finding 3: dump's check-then-use

RACE = r'''#!{python}
# criu wrapper for the race test: the attacker wins the race the moment the
# module asks criu for its version (after the module checked images_dir).
import os, subprocess, sys
if sys.argv[1:2] == ["--version"] and not os.path.exists({flag!r}):
    open({flag!r}, "w").close()
    subprocess.run({attack!r}, check=False)
os.execv({criu!r}, [{criu!r}] + sys.argv[1:])
'''


def test_dump_into_a_path_another_user_controls_is_refused_before_anything_is_created(
        run_module, workload, base, attacker_home, criu_bin):
    """Finding 3: nobody won the race between the check and the use of images_dir: root truncated one
    root file with its lock and overwrote another with the dump log."""
    lock_victim, log_victim = victim(base, "victim-lock"), victim(base, "victim-log")
    images = attacker_home / "ck"
    plant = ("import os; os.mkdir(%r, 0o755); os.symlink(%r, %r); os.symlink(%r, %r)"
             % (str(images), str(lock_victim), str(images / ".ckpt-lock"), str(log_victim),
                str(images / "dump.log")))
    wrapper = base / "criu-race"
    wrapper.write_text(RACE.format(python=sys.executable, flag=str(base / "raced"), criu=criu_bin,
                                   attack=attacker_argv([sys.executable, "-c", plant])))
    os.chmod(str(wrapper), 0o755)
    w = workload("devnull")
    w.wait_ticks(3)
    res = run_module("dump", {"pid": w.pid, "images_dir": str(images), "criu_path": str(wrapper)})
    assert lock_victim.read_text() == VICTIM_TEXT, "the dump's lock truncated a root file through a symlink"
    assert log_victim.read_text() == VICTIM_TEXT, "criu's dump log overwrote a root file through a symlink"
    assert res.failed, "dumped into a directory the attacker controls"
    assert "owned by uid %d" % attacker_ids()[0] in res["msg"], res["msg"]
    assert not images.exists(), "something was created in the attacker's directory"
    assert w.alive() and still_ticking(Path(w.ticks))
    assert_ticks_on(w)


def test_page_server_refuses_a_path_another_user_controls(run_module, base, attacker_home):
    """Finding 3: page_server had the same check-then-use pattern."""
    images = attacker_home / "ps"
    res = run_module("page_server", {"images_dir": str(images), "address": "127.0.0.1"})
    try:
        assert res.failed, "a page server was started into a directory the attacker controls"
        assert "owned by uid %d" % attacker_ids()[0] in res["msg"], res["msg"]
        assert not images.exists()
    finally:
        for pid in find_criu("page-server", str(images)):
            os.kill(pid, signal.SIGKILL)


# ----------------------------------------------- finding 6: the roles' chmod

PLAY = """
- name: Checkpoint into an images root others can write
  hosts: localhost
  gather_facts: false
  roles:
    - role: ckpt.criu.checkpoint
      vars:
        ckpt_checkpoint_pids: [{pid}]
        ckpt_checkpoint_images_root: {root}
        ckpt_checkpoint_criu_path: {criu}
"""


def test_checkpoint_role_refuses_a_world_writable_images_root_and_leaves_it_alone(
        ansible_env, workload, base, tmp_path, criu_bin):
    """Finding 6: a 1777 images_root became 0700 and owned by root before anything validated it."""
    root = base / "open"
    root.mkdir()
    os.chmod(str(root), 0o1777)
    w = workload("devnull")
    w.wait_ticks(3)
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(pid=w.pid, root=root, criu=criu_bin))
    env = dict(ansible_env)
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    p = subprocess.run([str(VENV_BIN / "ansible-playbook"), str(play)], env=env, cwd=str(REPO),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=600, check=False)
    assert stat.S_IMODE(root.stat().st_mode) == 0o1777, "the role changed the images root's mode"
    assert p.returncode != 0, p.stdout[-3000:]
    assert "writable by its group and others" in p.stdout, p.stdout[-3000:]
    assert list(root.iterdir()) == []
    assert w.alive()
    assert_ticks_on(w)


# ------------------------------------------------------ finding 7: secrets

SECRET = "--db-password=s3cret-of-the-test"


def test_command_lines_stay_out_of_results_and_manifests(run_module, workload, base):
    """Finding 7: a workload's --db-password=... came back twice in the fd_inspect and dump results."""
    w = workload("devnull", extra=["--label=" + SECRET])
    w.wait_ticks(3)
    assert SECRET in Path("/proc/%d/cmdline" % w.pid).read_bytes().decode()
    seen = {}
    seen["fd_inspect"] = run_module("fd_inspect", {"pid": w.pid})
    full = run_module("fd_inspect", {"pid": w.pid, "include_cmdline": True})
    assert SECRET in full["process"]["cmdline"][-1], "include_cmdline: true must return the command line"
    images = base / "ck"
    seen["dump"] = dump_ok(run_module, w.pid, images, leave_running=True)
    # The process still runs, so a restore is refused naming the holder: not its arguments.
    seen["restore refused"] = run_module("restore", {"images_dir": str(images)})
    assert seen["restore refused"].failed
    w.kill()
    assert wait_gone(w.pid)
    seen["restore"] = run_module("restore", {"images_dir": str(images)})
    assert seen["restore"].status == "ok", seen["restore"].get("msg")
    assert seen["restore"]["verified"]["cmdline_matches"] is True
    seen["process_state"] = run_module("process_state", {"images_dir": str(images), "instance": "restored",
                                                         "state": "stopped"})
    assert seen["process_state"].status == "ok", seen["process_state"].get("msg")
    for what, res in seen.items():
        assert "s3cret" not in json.dumps(res) + res.output, "%s returned the command line's secret" % what
    for name in ("ckpt-manifest.json", "ckpt-restore.json"):
        assert "s3cret" not in (images / name).read_text(), "%s keeps the secret" % name
    manifest = json.loads((images / "ckpt-manifest.json").read_text())
    assert manifest["process"]["cmdline_args"] > 0 and len(manifest["process"]["cmdline_sha256"]) == 64
    os.kill(w.pid, signal.SIGKILL)


# ------------------------------------------ finding 8: the module killed mid-dump

def _module_pid_from_lock(images):
    try:
        text = (images / ".ckpt-lock").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _wait_for(what, fn, timeout=60.0, pause=0.005, seen=None):
    """wait(), failing the test with what it waited for (and what ``seen`` says)."""
    value = wait(fn, timeout=timeout, step=pause)
    if not value:
        raise AssertionError("timed out waiting for %s%s" % (what, "; " + seen() if seen else ""))
    return value


def _criu_child(pid):
    """A child of PID that is already criu (its exec done), or None."""
    try:
        kids = Path("/proc/%d/task/%d/children" % (pid, pid)).read_text().split()
    except OSError:
        return None
    for kid in kids:
        try:
            argv = Path("/proc/%s/cmdline" % kid).read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"/criu") for a in argv) and b"dump" in argv:
            return int(kid)
    return None


def _ppid(pid):
    return int(Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[1])


def _point(point, images, w):
    """The PID of the module process at ``point`` of its dump."""
    if point == "before_freeze":
        return _wait_for("the dump's lock", lambda: _module_pid_from_lock(images))
    if point == "as_criu_starts":
        # The instant criu's exec shows, before the module can fork anything of its own.
        module = _wait_for("the dump's lock", lambda: _module_pid_from_lock(images))
        _wait_for("criu's exec", lambda: _criu_child(module), timeout=120, pause=0)
        return module
    if point == "during_dump":
        criu = _wait_for("criu dump", lambda: find_criu("dump", w.pid))[0]
        return _ppid(criu)
    # after criu's last write, before the manifest (the module hashes 256 MiB of images then)
    _wait_for("criu's success line", lambda: "Dumping finished successfully" in _read(images / "dump.log"))
    return _module_pid_from_lock(images)


def _read(path):
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _what_is_left(w, images):
    """What a failure of the kill test saw: every task's state, the guard's marker, criu's last lines."""
    tasks = {}
    for tid in os.listdir("/proc/%d/task" % w.pid) if os.path.isdir("/proc/%d/task" % w.pid) else []:
        tasks[tid] = _read(Path("/proc/%d/task/%s/stat" % (w.pid, tid))).rsplit(")", 1)[-1].split()[:1]
    status = [line for line in _read(Path("/proc/%d/status" % w.pid)).splitlines()
              if line.startswith(("State", "SigPnd", "ShdPnd", "TracerPid"))]
    return "tasks %s, %s, ckpt-failed.json: %s, dump.log ends: %s" % (
        tasks, status, _read(images / "ckpt-failed.json")[:400] or "none",
        _read(images / "dump.log").splitlines()[-5:])


def _state(pid):
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.mark.parametrize("point", ["before_freeze", "as_criu_starts", "during_dump", "after_criu"])
def test_killing_the_dump_module_loses_nothing(ansible_env, run_module, workload, base, tmp_path, point):
    """Finding 8: criu, in its own session, finished on its own after the module was killed and ended
    the process, and no manifest was written: the workload was gone."""
    w = workload("devnull", mem=256)
    w.wait_ticks(3)
    images = base / "ck"
    env = dict(ansible_env, CKPT_RESULT_FILE=str(tmp_path / "killed.jsonl"))
    with open(str(tmp_path / "ansible.out"), "w") as out:
        p = subprocess.Popen([str(VENV_BIN / "ansible"), "localhost", "-m", "ckpt.criu.dump", "-a",
                              json.dumps({"pid": w.pid, "images_dir": str(images)})],
                             env=env, cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT)
        try:
            module = _point(point, images, w)
            try:
                os.kill(module, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it finished first: then its checkpoint must be complete
        finally:
            p.wait(timeout=300)
    # Whatever criu was doing ends; the guard then resumes the workload or the checkpoint is whole.
    _wait_for("criu to end", lambda: not find_criu("dump", w.pid), timeout=120)
    manifest = images / "ckpt-manifest.json"
    _wait_for("the workload running or a manifest",
              lambda: manifest.exists() or (_state(w.pid) not in (None, "T", "t", "Z", "X")
                                            and still_ticking(Path(w.ticks), 0.2)), timeout=30,
              seen=lambda: _what_is_left(w, images))
    if manifest.exists():
        assert wait_gone(w.pid), "a complete checkpoint exists but the process still runs"
        res = run_module("restore", {"images_dir": str(images)})
        assert res.status == "ok", "the checkpoint left by the killed module does not restore: %s" % res.get("msg")
    else:
        assert w.alive(), "no manifest, and the workload is gone: it was lost"
        if point != "before_freeze":
            # criu had started: the guard outlived the module, resumed the tree and said so.
            assert (images / "ckpt-failed.json").exists(), "the guard left no ckpt-failed.json after the module died"
    assert_ticks_on(w)


# ------------------------------------------------ finding 9: a restore that hangs

def _criu_descendants(pid):
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for tid in os.listdir("/proc/%d/task" % parent) if os.path.isdir("/proc/%d/task" % parent) else []:
            try:
                kids = [int(x) for x in Path("/proc/%d/task/%s/children" % (parent, tid)).read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


MEASURE = "import resource, subprocess, sys; subprocess.run(sys.argv[1:]); " \
          "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"


def test_a_broken_restore_ends_kills_what_it_restored_and_reads_its_log_bounded(ansible_env, run_module,
                                                                                workload, base, tmp_path):
    """Finding 9: with verify_images=false and a truncated pages image, criu's restorer looped writing
    ~38 MB/s of log; there was no default timeout, a timeout left the half-restored task running, and
    the log was read whole into memory (2.5 GB RSS)."""
    w = workload("devnull", mem=64)
    w.wait_ticks(3)
    images = base / "ck"
    dump_ok(run_module, w.pid, images)
    assert wait_gone(w.pid)
    pages = max(images.glob("pages-*.img"), key=lambda f: f.stat().st_size)
    os.truncate(str(pages), pages.stat().st_size // 2)
    rfile = tmp_path / "restore.jsonl"
    env = dict(ansible_env, CKPT_RESULT_FILE=str(rfile))
    p = subprocess.Popen([sys.executable, "-c", MEASURE, str(VENV_BIN / "ansible"), "localhost", "-m",
                          "ckpt.criu.restore", "-a", json.dumps({"images_dir": str(images), "verify_images": False})],
                         env=env, cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    leftovers = []
    try:
        output = p.communicate(timeout=90)[0]
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # ansible and the module with it, before it reads the log
        p.wait()
        raise AssertionError("the restore of a broken checkpoint did not end within 90 s (no default timeout)")
    finally:
        # This test's own leftovers, whatever happened: the criu restores of this images dir and their tree
        # (none, when the module ended its restore as it must: asserted below, after the cleanup).
        leftovers = find_criu("restore", str(images))
        for pid in leftovers:
            os.kill(pid, signal.SIGSTOP)
            for kid in _criu_descendants(pid):
                os.kill(kid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, "the restore module ended but left criu restore running (PIDs %s)" % leftovers
    maxrss_kib = int(output.strip().splitlines()[-1])
    rec = json.loads(rfile.read_text().splitlines()[-1])
    res = rec["result"]
    try:
        assert rec["status"] != "ok", "a restore from truncated pages succeeded"
        assert "did not finish within" in res["msg"] and "the default for" in res["msg"], res["msg"]
        # Whatever it did, nothing of the broken restore is left running or writing.
        assert wait_gone(w.pid, 10), "the half-restored task survived the restore's end"
        log = images / "restore.log"
        size = log.stat().st_size
        time.sleep(1.0)
        assert log.stat().st_size == size, "something still writes the restore log"
        assert maxrss_kib < 400 * 1024, "the restore took %d MiB of memory" % (maxrss_kib // 1024)
    finally:
        os.kill(w.pid, signal.SIGKILL) if w.alive() else None
    print("broken restore: %s; log %d bytes; max RSS %d MiB" % (res.get("msg"), size, maxrss_kib // 1024))


# ----------------------------------------- finding 10: verification off, changed exe

def test_a_restored_process_running_another_executable_is_killed_and_the_message_says_so(
        run_module, base, tmp_path):
    """Finding 10: verify_binaries=false with a changed executable failed but left the process
    running the altered code, and the result did not say so."""
    py = base / "python3"
    shutil.copy2("/usr/bin/python3", str(py))
    pid, ticks = start_workload(tmp_path, py)
    try:
        _wait_for("ticks", lambda: read_ticks(ticks))
        images = base / "ck"
        dump_ok(run_module, pid, images)
        assert wait_gone(pid)
        # Same size, same build-id, other bytes: one character of a section name.
        data = bytearray(py.read_bytes())
        at = data.rfind(b".shstrtab") + 1
        data[at] ^= 0x20
        py.write_bytes(bytes(data))
        res = run_module("restore", {"images_dir": str(images), "verify_binaries": False})
        assert res.failed, "a process running another executable was reported restored"
        assert "not the checkpoint's" in res["msg"] and "killed" in res["msg"], res["msg"]
        assert wait_gone(pid, 10), "the process running the altered executable was left running"
        # With verification on, the same checkpoint is refused before criu runs.
        res = run_module("restore", {"images_dir": str(images)})
        assert res.failed and "python3" in res["msg"] and not os.path.exists("/proc/%d" % pid)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# -------------------------------------------------------- finding 11: pidfds

def test_process_state_and_page_server_signal_through_a_pidfd(monkeypatch, run_module, workload, base):
    """Finding 11: process_state and stop_page_server signalled by PID number after reading the identity."""
    w = workload("devnull")
    w.wait_ticks(3)
    start = int(Path("/proc/%d/stat" % w.pid).read_text().rsplit(")", 1)[1].split()[19])
    res = run_module("page_server", {"images_dir": str(base / "ps"), "address": "127.0.0.1"})
    assert res.status == "ok", res.get("msg")
    record = _page_server.read_ps_record(str(base / "ps"))

    def kill_by_number(pid, sig):
        raise AssertionError("os.kill(%d, %d): a signal by PID number, which may have been reused" % (pid, sig))

    real_kill = os.kill
    monkeypatch.setattr(os, "kill", kill_by_number)
    try:
        ident = {"pid": w.pid, "start_time": start}
        out = _process_state.ensure_process_state({"state": "stopped", "identity": ident, "wait": 5})
        assert out["after"] == "stopped"
        # A PID that now names another process (another start time) is never signalled.
        assert _identity.send_signal(w.pid, signal.SIGCONT, start_time=start + 1) is False
        assert _state(w.pid) == "T"
        out = _process_state.ensure_process_state({"state": "running", "identity": ident, "wait": 5})
        assert out["after"] == "running"
        _page_server.stop_page_server(record)
        assert wait_gone(record["pid"], 5)
    finally:
        monkeypatch.undo()
        for pid in (record["pid"], w.pid):
            if _state(pid) in ("T", "t"):
                real_kill(pid, signal.SIGCONT)
        if _state(record["pid"]) is not None:
            real_kill(record["pid"], signal.SIGKILL)
    assert_ticks_on(w)


# ------------------------------------------------- finding 12: argument ranges

def test_an_out_of_range_port_is_refused_with_its_name_before_anything_happens(run_module, workload, base):
    """Finding 12: dump accepted page_server.port=70000 and a misleading cause followed."""
    w = workload("devnull")
    w.wait_ticks(3)
    images = base / "ck"
    res = run_module("dump", {"pid": w.pid, "images_dir": str(images),
                              "page_server": {"address": "127.0.0.1", "port": 70000}})
    assert res.failed
    assert "page_server.port must be between 1 and 65535" in res["msg"], res["msg"]
    assert not images.exists()
    # Finding 4: the page server's address defaulted to 0.0.0.0 (every address of the host).
    res = run_module("page_server", {"images_dir": str(base / "ps")})
    assert res.failed and "address is required" in res["msg"], res.get("msg")
    assert not (base / "ps").exists()
    res = run_module("page_server", {"images_dir": str(base / "ps"), "address": "127.0.0.1", "port": 70000})
    assert res.failed and "port must be between 1 and 65535" in res["msg"], res["msg"]
    assert not (base / "ps").exists()
    assert_ticks_on(w)


def test_images_dir_fresh_refuses_a_parent_another_user_controls_and_removes_nothing(run_module, base,
                                                                                     attacker_home):
    """state=fresh empties a directory: under a parent the attacker owns it must touch nothing, not even
    what the attacker planted there (a symlink to root's data)."""
    target = victim(base, "precious")
    as_attacker("ln", "-s", str(target), str(attacker_home / "pid-1"))
    res = run_module("images_dir", {"path": str(attacker_home / "pid-1"), "state": "fresh"})
    assert res.failed and "nothing was changed" in res["msg"], res
    assert os.path.islink(attacker_home / "pid-1") and target.read_text() == VICTIM_TEXT


def test_images_dir_fresh_makes_an_empty_root_only_directory_and_never_follows_a_link(run_module, base):
    root = base / "root"
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.img").write_text("x")
    root.mkdir(mode=0o700)
    os.symlink(str(elsewhere), str(root / "pid-1"))
    check = run_module("images_dir", {"path": str(root / "pid-1"), "state": "fresh"}, check=True)
    assert check.status == "ok" and check["changed"] and os.path.islink(root / "pid-1"), check
    res = run_module("images_dir", {"path": str(root / "pid-1"), "state": "fresh"})
    assert res.status == "ok" and res["changed"], res
    assert os.listdir(elsewhere) == ["keep.img"]
    st = os.lstat(root / "pid-1")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and os.listdir(root / "pid-1") == []
    (root / "pid-1" / "old.img").write_text("leftover")
    again = run_module("images_dir", {"path": str(root / "pid-1"), "state": "fresh"})
    assert again.status == "ok" and os.listdir(root / "pid-1") == []


def test_images_dir_fresh_names_refuses_a_parent_another_user_controls_and_removes_nothing(run_module, base,
                                                                                           attacker_home):
    """fresh: [names] empties directories under PATH: under a PATH the attacker owns it touches nothing."""
    target = victim(base, "precious")
    as_attacker("ln", "-s", str(target), str(attacker_home / "pid-1"))
    as_attacker("mkdir", str(attacker_home / "pid-2"))
    as_attacker("touch", str(attacker_home / "pid-2" / "mine"))
    res = run_module("images_dir", {"path": str(attacker_home), "fresh": ["pid-1", "pid-2"]})
    assert res.failed and "nothing was changed" in res["msg"], res
    assert os.path.islink(attacker_home / "pid-1") and target.read_text() == VICTIM_TEXT
    assert os.listdir(attacker_home / "pid-2") == ["mine"]


def test_images_dir_fresh_names_makes_each_afresh_in_one_run(run_module, base):
    """One run empties the images directories of several processes: a leftover directory, a file and
    a symlink (never followed) each become an empty 0700 directory; a name that cannot be made afresh
    (a mount point) is named in fresh_failed and does not stop the others."""
    root = base / "root"
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.img").write_text("x")
    check = run_module("images_dir", {"path": str(root), "fresh": ["pid-1"]}, check=True)
    assert check.status == "ok" and check["changed"] and check["fresh"] == ["pid-1"], check
    assert not root.exists(), "check mode created the root"
    root.mkdir(mode=0o700)
    (root / "pid-1").mkdir()
    (root / "pid-1" / "pages-1.img").write_text("old")
    (root / "pid-2").write_text("a file")
    os.symlink(str(elsewhere), str(root / "pid-3"))
    (root / "other").mkdir()
    res = run_module("images_dir", {"path": str(root), "fresh": ["pid-1", "pid-2", "pid-3", "pid-4"]})
    assert res.status == "ok" and res["changed"] and res["fresh"] == ["pid-1", "pid-2", "pid-3", "pid-4"], res
    for name in ("pid-1", "pid-2", "pid-3", "pid-4"):
        st = os.lstat(root / name)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700, name
        assert os.listdir(root / name) == [], name
    assert os.listdir(elsewhere) == ["keep.img"] and (root / "other").is_dir()

    (root / "pid-2" / "old.img").write_text("leftover")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "ckpt-test", str(root / "pid-1")], check=True)
    try:
        res = run_module("images_dir", {"path": str(root), "fresh": ["pid-1", "pid-2"]})
        assert res.failed and list(res["fresh_failed"]) == ["pid-1"] and res["fresh"] == ["pid-2"], res
        assert "%s/pid-1 afresh" % root in res["msg"], res["msg"]
        assert os.listdir(root / "pid-2") == []
    finally:
        subprocess.run(["umount", str(root / "pid-1")], check=True)


def test_images_dir_subdirs_are_kept_and_made_before_the_fresh_ones(run_module, base):
    """subdirs: [names] are created (0700) when missing and never emptied, in the same run that makes
    the fresh ones; one that breaks the rule (a symlink, never followed) stops the run before any
    fresh directory is touched."""
    root = base / "root"
    check = run_module("images_dir", {"path": str(root), "subdirs": [".migrated"], "fresh": ["pid-1"]}, check=True)
    assert check.status == "ok" and check["changed"] and check["created"] == 2, check
    assert not root.exists(), "check mode created the root"
    res = run_module("images_dir", {"path": str(root), "subdirs": [".migrated"], "fresh": ["pid-1"]})
    assert res.status == "ok" and res["changed"] and res["fresh"] == ["pid-1"], res
    assert res["created"] == 2, res
    for name in (".migrated", "pid-1"):
        st = os.lstat(root / name)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700, name
    (root / ".migrated" / "pid-9.json").write_text("{}")
    (root / "pid-1" / "old.img").write_text("leftover")
    res = run_module("images_dir", {"path": str(root), "subdirs": [".migrated"], "fresh": ["pid-1"]})
    assert res.status == "ok" and res["created"] == 0, res
    assert os.listdir(root / ".migrated") == ["pid-9.json"] and os.listdir(root / "pid-1") == []

    elsewhere = base / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    os.symlink(str(elsewhere), str(root / ".kept"))
    (root / "pid-1" / "old.img").write_text("leftover")
    res = run_module("images_dir", {"path": str(root), "subdirs": [".kept"], "fresh": ["pid-1"]})
    assert res.failed and "nothing was changed" in res["msg"] and "symlink" in res["msg"], res
    assert os.listdir(root / "pid-1") == ["old.img"] and os.path.islink(root / ".kept")
    assert os.listdir(elsewhere) == []


def test_images_dir_subdirs_under_a_parent_another_user_controls_change_nothing(run_module, base, attacker_home):
    as_attacker("mkdir", str(attacker_home / "pid-1"))
    as_attacker("touch", str(attacker_home / "pid-1" / "mine"))
    res = run_module("images_dir", {"path": str(attacker_home), "subdirs": [".migrated"], "fresh": ["pid-1"]})
    assert res.failed and "nothing was changed" in res["msg"], res
    assert sorted(os.listdir(attacker_home)) == ["pid-1"] and os.listdir(attacker_home / "pid-1") == ["mine"]


@pytest.mark.parametrize("args,words", [
    ({"fresh": ["../escape"]}, "plain names"),
    ({"fresh": ["pid-1", "pid-1"]}, "distinct"),
    ({"fresh": ["pid-1"], "state": "fresh"}, "fresh needs state=present"),
    ({"subdirs": ["a/b"]}, "subdirs takes distinct plain names"),
    ({"subdirs": [".migrated"], "state": "checked"}, "subdirs needs state=present"),
    ({"subdirs": ["pid-1"], "fresh": ["pid-1"]}, "pid-1 cannot be both made afresh (fresh) and kept (subdirs)"),
])
def test_images_dir_fresh_names_refuses_bad_names_and_changes_nothing(run_module, base, args, words):
    root = base / "root"
    root.mkdir(mode=0o700)
    (root / "pid-1").mkdir()
    (root / "pid-1" / "keep").write_text("x")
    res = run_module("images_dir", dict(args, path=str(root)))
    assert res.failed and words in res["msg"], res
    assert os.listdir(root / "pid-1") == ["keep"] and sorted(os.listdir(base)) == ["root"]


# ------------------------------------------------ the fleet report, on the controller

REPORT_PLAY = """
- name: Write a fleet report
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write the report
      ansible.builtin.import_role:
        name: ckpt.criu.report
      vars:
        ckpt_report_action: preflight
        ckpt_report_hosts: []
        ckpt_report_dir: {dir}
        ckpt_report_name: trust
        ckpt_report_formats: {formats}
        ckpt_report_set_stats: false
"""


def _report_play(ansible_env, tmp_path, directory, formats="json,md,html"):
    play = tmp_path / "report.yml"
    play.write_text(REPORT_PLAY.format(dir=directory, formats=formats))
    env = dict(ansible_env)
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), str(play)], env=env, cwd=str(REPO),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300, check=False)


def test_the_report_is_never_written_into_a_directory_another_user_made(ansible_env, base, tmp_path):
    """The report directory's default is a fixed name in /var/tmp: another user who makes it first must
    not get the reports (the file action made it 0700, but it stayed theirs), nor redirect them."""
    shared = base / "shared"
    shared.mkdir()
    os.chmod(str(shared), 0o1777)   # as /var/tmp is
    target = victim(base, "precious")
    as_attacker("mkdir", "-m", "0777", str(shared / "ckpt-reports"))
    as_attacker("ln", "-s", str(target), str(shared / "ckpt-reports" / "trust.json"))
    p = _report_play(ansible_env, tmp_path, shared / "ckpt-reports")
    assert p.returncode != 0, p.stdout[-3000:]
    assert "report directory %s is owned by uid %d, not uid 0" % (shared / "ckpt-reports", attacker_ids()[0]) \
        in p.stdout, p.stdout[-3000:]
    assert sorted(os.listdir(shared / "ckpt-reports")) == ["trust.json"]
    assert target.read_text() == VICTIM_TEXT


def test_the_report_files_are_the_users_own_and_replace_a_planted_link(ansible_env, base, tmp_path):
    """Written 0600 in a 0700 directory; a symlink under a report's name is replaced, never followed;
    a second run replaces the files; an unknown format is refused before anything is written."""
    reports = base / "reports"
    reports.mkdir(mode=0o755)
    target = victim(base, "precious")
    os.symlink(str(target), str(reports / "trust.md"))
    p = _report_play(ansible_env, tmp_path, reports)
    assert p.returncode == 0, p.stdout[-3000:]
    assert sorted(os.listdir(reports)) == ["trust.html", "trust.json", "trust.md"]
    assert stat.S_IMODE(reports.stat().st_mode) == 0o700
    for name in os.listdir(reports):
        st = os.lstat(reports / name)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid(), name
    assert target.read_text() == VICTIM_TEXT
    assert json.loads((reports / "trust.json").read_text())["action"] == "preflight"
    assert (reports / "trust.md").read_text().startswith("# ckpt.criu preflight report")
    assert "<html" in (reports / "trust.html").read_text()
    first = (reports / "trust.json").stat().st_ino
    assert _report_play(ansible_env, tmp_path, reports).returncode == 0
    assert (reports / "trust.json").stat().st_ino != first, "the second report did not replace the first"
    bad = _report_play(ansible_env, tmp_path, base / "other", formats="json,pdf")
    assert bad.returncode != 0 and "ckpt_report_formats may name json, md and html, got pdf" in bad.stdout, \
        bad.stdout[-3000:]
    assert not (base / "other").exists()


HOLD_AS_USER = """
import os, sys
from ansible_collections.ckpt.criu.plugins.module_utils import _safedir
try:
    _safedir.hold(sys.argv[1], create=True, owner=os.geteuid(), what="report directory").close()
    print("held")
except _safedir.UntrustedDirError as exc:
    print("refused: " + exc.msg)
"""


def test_a_users_report_directory_may_sit_under_a_group_writable_parent_only(base, attacker_home):
    """The rule for a user's own directory (a controller not running as root, as in an execution
    environment whose /runner is group-writable): a parent another user can write is refused. (The
    system python: the test venv's lies under /root.)"""
    def hold(path):
        return as_attacker("env", "PYTHONPATH=%s" % (REPO / ".build" / "collections"), "/usr/bin/python3", "-c",
                           HOLD_AS_USER, str(path)).strip()

    group = attacker_home / "group"
    group.mkdir()
    os.chown(str(group), *attacker_ids())
    os.chmod(str(group), 0o775)
    assert hold(group / "reports") == "held"
    assert stat.S_IMODE((group / "reports").stat().st_mode) == 0o700
    open_ = base / "open"
    open_.mkdir()
    os.chmod(str(open_), 0o777)
    assert hold(open_ / "reports") == ("refused: %s (above the report directory) is writable by its group and others "
                                       "(mode 0777) without the sticky bit: others could swap the report directory; "
                                       "use a path whose directories only root or uid %d (the user this runs as) "
                                       "can write" % (open_, attacker_ids()[0]))
    assert not (open_ / "reports").exists()
