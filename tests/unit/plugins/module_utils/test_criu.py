"""Pure-logic tests of _criu: argv building, log reading, failure explanation,
stats decoding. Real criu runs are in tests/system/test_criu_runner.py."""
from __future__ import annotations

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _criu

RLIMIT = "(00.025597) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted"


def _result(tmp_path, log, rc=1, action="restore", stderr="", timed_out=False):
    path = tmp_path / "x.log"
    path.write_text(log)
    return _criu.CriuResult(["criu", action], rc, "", stderr, str(path), 0.1, action, timed_out)


def test_build_argv_always_logs_v4_to_absolute_path():
    argv = _criu.build_argv("/usr/sbin/criu", "dump", ["-t", 5, "-D", "/x"], "/x/dump.log")
    assert argv == ["/usr/sbin/criu", "dump", "-t", "5", "-D", "/x", "-o", "/x/dump.log", "-v4"]


def test_build_argv_refuses_relative_log():
    with pytest.raises(_criu.CriuError, match="absolute"):
        _criu.build_argv("criu", "dump", [], "dump.log")


@pytest.mark.parametrize("text,expected", [
    ("Version: 4.1.1\nGitID: v4.1.1\n", (4, 1, 1, "4.1.1")),
    ("Version: 3.17\n", (3, 17, 0, "3.17")),
    ("garbage", None),
])
def test_parse_version(text, expected):
    info = _criu.parse_version(text)
    if expected is None:
        assert info is None
    else:
        assert (info["major"], info["minor"], info["sublevel"], info["version"]) == expected


def test_rlimit_noise_is_not_an_error(tmp_path):
    r = _result(tmp_path, RLIMIT + "\n(00.05) Restore finished successfully. Tasks resumed.\n", rc=0)
    assert r.log_errors == []
    assert r.ok


def test_rc_zero_without_completion_line_is_not_success(tmp_path):
    r = _result(tmp_path, RLIMIT + "\n(00.01) something\n", rc=0)
    assert not r.ok
    assert "does not say" in r.cause()


def test_completion_line_with_nonzero_rc_is_not_success(tmp_path):
    r = _result(tmp_path, "(00.05) Restore finished successfully. Tasks resumed.\n", rc=1)
    assert not r.ok


def test_noise_never_becomes_the_cause(tmp_path):
    r = _result(tmp_path, RLIMIT + "\n", rc=1)
    # Only the noise line: the cause must not blame permissions.
    assert "privilege" not in r.cause()


def test_known_cause_pid_taken(tmp_path):
    r = _result(tmp_path, RLIMIT + "\n(00.04) Error (criu/cr-restore.c:1230): Can't fork for 5210: File exists\n"
                "(00.04) Error (criu/cr-restore.c:2320): Restoring FAILED.\n")
    assert "PID 5210" in r.cause()
    assert "taken" in r.cause()


def test_known_cause_not_session_leader(tmp_path):
    r = _result(tmp_path, "(00.05) Error (criu/pstree.c:300): The root process 77 is not a session leader. "
                "Consider using --shell-job option\n", action="dump")
    assert "session leader" in r.cause() and "77" in r.cause()


def test_known_cause_session_leader_outside_the_pid_namespace(tmp_path):
    # The line CRIU 4.1.1 printed when the workload was a child of a container's init (sid 0).
    r = _result(tmp_path, RLIMIT + "\n(00.034450) Error (criu/cr-dump.c:1664): A session leader of 2(2) is "
                "outside of its pid namespace\n(00.057055) Error (criu/cr-dump.c:2111): Dumping FAILED.\n", rc=1)
    assert "process 2" in r.cause() and "setsid" in r.cause() and "even with shell_job" in r.cause()


def test_unknown_error_is_quoted(tmp_path):
    r = _result(tmp_path, "(00.05) Error (criu/foo.c:1): frobnication exploded\n")
    assert r.cause() == "criu reported: frobnication exploded"


def test_no_log_at_all(tmp_path):
    r = _criu.CriuResult(["criu"], 1, "", "boom\n", str(tmp_path / "missing.log"), 0.1, "restore")
    assert r.cause() == "criu exited 1 and wrote no log: boom"


def test_timeout_is_explained(tmp_path):
    r = _result(tmp_path, "", rc=-9, timed_out=True)
    assert "timeout" in r.cause()


def test_raise_for_failure_carries_everything(tmp_path):
    r = _result(tmp_path, "(00.05) Error (criu/foo.c:1): broken\n")
    with pytest.raises(_criu.CriuError) as ei:
        r.raise_for_failure()
    kw = ei.value.to_fail_kwargs()
    assert kw["rc"] == 1 and kw["log_path"].endswith("x.log") and kw["cmd"] == ["criu", "restore"]
    assert kw["log_errors"] and "broken" in kw["msg"]


# stats-dump recorded from a real criu 4.1.1 dump of a 16 MiB counter.
STATS_DUMP = bytes.fromhex(
    "40591055063309572400000000" [:24] + "0a220859" "10e4a301" "18da53" "20ff3a" "28953030" "0038ae2f"
    "4000" "4800" "5008" "5808" "6000" "6800" "7000")
STATS_RESTORE = bytes.fromhex("40591055063309570f000000120d0800100018022085820128ae2f")


def test_read_stats_dump(tmp_path):
    (tmp_path / "stats-dump").write_bytes(STATS_DUMP)
    s = _criu.read_stats(str(tmp_path), "dump")
    assert s["freezing_time_us"] == 89
    assert s["frozen_time_us"] == 20964
    assert s["memdump_time_us"] == 10714
    assert s["pages_written"] == 6062


def test_read_stats_restore(tmp_path):
    (tmp_path / "stats-restore").write_bytes(STATS_RESTORE)
    s = _criu.read_stats(str(tmp_path), "restore")
    assert s["forking_time_us"] == 2 and s["restore_time_us"] == 16645 and s["pages_restored"] == 6062


def test_read_stats_absent_or_garbage(tmp_path):
    assert _criu.read_stats(str(tmp_path), "dump") == {}
    (tmp_path / "stats-dump").write_bytes(b"\x00" * 5)
    assert _criu.read_stats(str(tmp_path), "dump") == {}


def test_find_criu_option_must_exist(tmp_path):
    with pytest.raises(_criu.CriuError, match="does not exist"):
        _criu.find_criu(str(tmp_path / "nope"))
    f = tmp_path / "criu"
    f.write_text("#!/bin/sh\n")
    f.chmod(0o644)
    with pytest.raises(_criu.CriuError, match="not executable"):
        _criu.find_criu(str(f))


def test_run_criu_never_passes_stdio_fds(tmp_path):
    with pytest.raises(_criu.CriuError, match="above 2"):
        _criu.run_criu("/bin/true", "check", [], str(tmp_path / "x.log"), pass_fds=(1,))


@pytest.mark.parametrize("value,expected", [(None, None), (0, 0), (4096, 4096), ("4096", 4096),
                                            ("4M", 4194304), ("512K", 524288), ("2MiB", 2097152)])
def test_parse_size(value, expected):
    assert _criu.parse_size(value) == expected


@pytest.mark.parametrize("value", ["lots", "-1", -5, "1X"])
def test_parse_size_refuses_garbage_and_negative(value):
    with pytest.raises(_criu.CriuError, match="ghost_limit"):
        _criu.parse_size(value)


def test_tcp_cause_does_not_ask_for_tcp_established_when_it_was_passed(tmp_path):
    log = "(00.05) Error (criu/sk-tcp.c:100): tcp: Connected TCP socket, consider using --tcp-established option.\n"
    path = tmp_path / "d.log"
    path.write_text(log)
    without = _criu.CriuResult(["criu", "dump"], 1, "", "", str(path), 0.1, "dump")
    assert "pass tcp_established" in without.cause()
    passed = _criu.CriuResult(["criu", "dump", "--tcp-established"], 1, "", "", str(path), 0.1, "dump")
    assert "pass tcp_established" not in passed.cause()
    assert "although --tcp-established was passed" in passed.cause()
    assert "tcp: Connected TCP socket" in passed.cause()


def test_flag_args_follow_the_table_in_the_order_asked():
    opts = {"file_locks": True, "shell_job": True, "leave_stopped": True, "tcp_established": False}
    assert _criu.flag_args(opts, _criu.SHARED_OPTIONS) == ["--shell-job", "--file-locks"]
    assert _criu.flag_args(opts, ("leave_running", "leave_stopped")) == ["--leave-stopped"]
    assert _criu.flag_args({"ext_unix_sk": True}, ("ext_unix_sk",)) == ["--ext-unix-sk"]
    assert _criu.flag_args({"ext_unix_sk": True, "ext_unix_sk_inodes": [5, 6]}, ("ext_unix_sk",)) == [
        "--ext-unix-sk=5,6"]
    assert _criu.flag_args({"ext_unix_sk": False, "ext_unix_sk_inodes": [5]}, ("ext_unix_sk",)) == []


def test_shared_argv_pieces():
    assert _criu.dir_args("/i", "/w") == ["-D", "/i", "-W", "/w"]
    assert _criu.external_args(None) == [] and _criu.external_args(["a", "b"]) == [
        "--external", "a", "--external", "b"]
    assert _criu.inherit_fd_args([("7", "pipe:[1]"), (8, "k")]) == [
        "--inherit-fd", "fd[7]:pipe:[1]", "--inherit-fd", "fd[8]:k"]
    assert _criu.tls_args({"tls_key": "/k", "tls_cacert": "/ca"}) == ["--tls", "--tls-cacert", "/ca", "--tls-key", "/k"]


def test_find_executable_looks_first_then_path_then_system_dirs(tmp_path, monkeypatch):
    found = {}
    for where in ("opt", "path", "system"):
        (tmp_path / where).mkdir()
        (tmp_path / where / "tool").write_text("#!/bin/sh\n")
        (tmp_path / where / "tool").chmod(0o755)
        found[where] = str(tmp_path / where / "tool")
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    monkeypatch.setattr(_criu, "SEARCH_DIRS", (str(tmp_path / "system"),))
    assert _criu.find_executable("tool", first=(str(tmp_path / "opt"),)) == found["opt"]
    assert _criu.find_executable("tool") == found["path"]
    (tmp_path / "path" / "tool").unlink()
    assert _criu.find_executable("tool") == found["system"]
    (tmp_path / "system" / "tool").chmod(0o644)
    assert _criu.find_executable("tool") is None
    assert _criu.find_executable("ckpt-no-such-tool-anywhere") is None
