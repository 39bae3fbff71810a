"""Pure-logic tests of _unit: names, Exec= quoting, drop-in texts, the
refusal rules, cgroup reading. Real systemd runs are in
tests/system/test_units.py (hosts that boot systemd)."""
from __future__ import annotations

import shlex

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _unit


@pytest.mark.parametrize("given,expected", [
    ("redis-server", "redis-server.service"),
    ("redis-server.service", "redis-server.service"),
    ("getty@tty1", "getty@tty1.service"),
    ("foo@bar.service", "foo@bar.service"),
    ("a:b_c-d", "a:b_c-d.service"),
])
def test_unit_name(given, expected):
    assert _unit.unit_name(given) == expected


@pytest.mark.parametrize("bad", ["", " ", "../etc/passwd", "a/b", "-rf", "x y", "redis;reboot", "a\nb"])
def test_unit_name_refuses_what_is_not_a_unit(bad):
    with pytest.raises(_unit.UnitError, match="not a systemd unit name"):
        _unit.unit_name(bad)


@pytest.mark.parametrize("other", ["sshd.socket", "timers.target", "fstrim.timer"])
def test_only_services_have_a_process(other):
    with pytest.raises(_unit.UnitError, match="only service units"):
        _unit.unit_name(other)


def test_exec_line_keeps_each_argument_one_word_and_expands_nothing():
    argv = ["/opt/ckpt-criu/bin/criu", "restore", "-D", "/var/lib/ckpt/my dir", "--inherit-fd",
            "fd[1]:socket:[42]", "50%", "$HOME", 'quo"te', "back\\slash"]
    line = _unit.exec_line(argv)
    assert line.startswith("+\"/opt/ckpt-criu/bin/criu\" ")
    assert "50%%" in line and "$$HOME" in line and '\\"' in line and "back\\\\slash" in line
    # systemd's word splitting of the quoted words gives the argv back (after %%/$$ unescaping)
    words = shlex.split(line[1:])
    assert [w.replace("%%", "%").replace("$$", "$") for w in words] == argv
    assert _unit.exec_line(["x"], privileged=False) == '"x"'


def test_exec_line_refuses_newlines():
    with pytest.raises(_unit.UnitError, match="newline"):
        _unit.exec_line(["criu", "a\nExecStartPost=/bin/evil"])


def test_drop_in_texts():
    hold = _unit.hold_text("/var/lib/ckpt/a", "2026-12-02T10:00:00Z")
    assert "Restart=no" in hold and "SuccessExitStatus=SIGKILL" in hold
    assert "X-CkptCriu-Checkpoint=/var/lib/ckpt/a at 2026-12-02T10:00:00Z" in hold
    boot = _unit.boot_hold_text("/var/lib/ckpt/a")
    assert "ConditionPathExists=!/var/lib/ckpt/a/ckpt-manifest.json" in boot
    text = _unit.restore_text(["/c", "restore", "-d"], "/run/ckpt-criu/u.service.pid", 12.5)
    lines = text.splitlines()
    for want in ("Type=forking", "PIDFile=/run/ckpt-criu/u.service.pid", "ExecStart=",
                 'ExecStart=+"/c" "restore" "-d"', "TimeoutStartSec=12", "ExecStartPre=", "ExecStartPost=",
                 "Restart=no", "GuessMainPID=no"):
        assert want in lines, (want, lines)
    # the reset of ExecStart= comes before the new one
    assert lines.index("ExecStart=") < lines.index('ExecStart=+"/c" "restore" "-d"')


def test_parse_show_and_usec():
    p = _unit.parse_show("MainPID=42\nActiveState=active\nDropInPaths=/a.conf /b.conf\nEmpty=\n")
    assert p == {"MainPID": "42", "ActiveState": "active", "DropInPaths": "/a.conf /b.conf", "Empty": ""}
    assert _unit._usec("infinity") == 0 and _unit._usec("") == 0 and _unit._usec("30000000") == 30000000  # pylint: disable=protected-access


def test_inherit_args_one_per_socket():
    assert _unit.inherit_args({"1": 77, "2": 77}) == ["--inherit-fd", "fd[1]:socket:[77]"]
    want = ["--inherit-fd", "fd[1]:socket:[5]", "--inherit-fd", "fd[2]:socket:[6]"]
    assert _unit.inherit_args({1: 5, 2: 6}) == want
    assert _unit.inherit_args({0: 9}) == [] and _unit.inherit_args(None) == []


def _info(**kw):
    base = {"name": "app.service", "active_state": "active", "sub_state": "running", "main_pid": 100,
            "triggered_by": [], "cgroup_pids": [100, 101]}
    base.update(kw)
    return base


def test_refusals():
    assert _unit.refusals(_info(), [100, 101], []) == []
    out = _unit.refusals(_info(active_state="inactive", sub_state="dead", main_pid=0), [], [])
    assert len(out) == 1 and "is not running" in out[0]
    out = _unit.refusals(_info(cgroup_pids=[100, 101, 205]), [100, 101], [], comm_of=lambda p: "sleep")
    assert len(out) == 1 and "205 (sleep)" in out[0] and "outside the tree" in out[0]
    out = _unit.refusals(_info(triggered_by=["app.socket"]), [100, 101], [])
    assert "socket-activated (app.socket)" in out[0]
    out = _unit.refusals(_info(), [100, 101], ["user", "mnt"])
    assert "PrivateUsers=" in out[0] and "ProtectSystem=" in out[0] and "user, mnt" in out[0]


def test_cgroup_pids_reads_the_unit_and_its_children(tmp_path):
    base = tmp_path / "systemd" / "system.slice" / "app.service"
    (base / "sub").mkdir(parents=True)
    (base / "cgroup.procs").write_text("100\n101\n")
    (base / "sub" / "cgroup.procs").write_text("300\n")
    assert _unit.cgroup_pids("/system.slice/app.service", str(tmp_path)) == {100, 101, 300}
    assert _unit.cgroup_pids("/system.slice/none.service", str(tmp_path)) == set()
    assert _unit.cgroup_dir("relative", str(tmp_path)) is None


def test_file_digest_ignores_our_drop_ins(tmp_path):
    unit = tmp_path / "app.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    ours = tmp_path / "50-ckpt-criu-hold.conf"
    ours.write_text("[Service]\nRestart=no\n")
    theirs = tmp_path / "override.conf"
    theirs.write_text("[Service]\nUser=root\n")
    d1, files = _unit.file_digest([str(unit), str(ours), str(theirs)])
    assert files == [str(unit), str(theirs)]
    assert _unit.file_digest([str(unit), str(theirs)])[0] == d1
    theirs.write_text("[Service]\nUser=nobody\n")
    assert _unit.file_digest([str(unit), str(theirs)])[0] != d1
    with pytest.raises(_unit.UnitError, match="cannot read unit file"):
        _unit.file_digest([str(tmp_path / "missing.service")])
