"""ckpt.criu.read_commands: several read-only commands in one module run,
each registered as ansible.builtin.command would register it."""
from __future__ import annotations

import os


def test_each_command_is_registered_in_order_and_a_status_is_not_a_failure(tmp_path, run_module):
    (tmp_path / "there").write_text("12345")
    r = run_module("read_commands", {"commands": [
        ["stat", "--printf", "%s\t%n\\0", "--", str(tmp_path / "there"), str(tmp_path / "missing")],
        None,
        ["ps", "-o", "pid=", "-p", str(os.getpid())],
        [],
        ["sh", "-c", "echo out; echo err >&2; exit 3"],
    ]})
    assert r.status == "ok" and not r["changed"], r
    stat_, none, ps, empty, sh = r["reads"]
    assert stat_["rc"] == 1 and stat_["stdout"] == "5\t%s\0" % (tmp_path / "there"), stat_
    assert "missing" in stat_["stderr"] and stat_["cmd"][0] == "stat"
    assert none["skipped"] and empty["skipped"] and none["stdout_lines"] == [] and none["rc"] == 0
    assert ps["rc"] == 0 and ps["stdout_lines"] == [str(os.getpid()).rjust(len(ps["stdout"]))], ps
    assert (sh["rc"], sh["stdout"], sh["stderr"], sh["stdout_lines"]) == (3, "out", "err", ["out"]), sh


def test_runs_in_check_mode_and_names_what_cannot_run(tmp_path, run_module):
    r = run_module("read_commands", {"commands": [["df", "-B1", "--output=avail", "/"]]}, check=True)
    assert r.status == "ok" and not r["changed"] and r["reads"][0]["stdout_lines"][1].strip().isdigit(), r
    r = run_module("read_commands", {"commands": [["true"], ["/nonexistent/prog", "x"], ["true"]]})
    assert r.failed and "cannot run /nonexistent/prog" in r["msg"], r
    assert len(r["reads"]) == 1, r
    r = run_module("read_commands", {"commands": ["ps -e"]})
    assert r.failed and "commands[0] must be a list of strings" in r["msg"], r
    r = run_module("read_commands", {"commands": [["sleep", "5"]], "timeout": 0.2})
    assert r.failed and "sleep 5 took longer than 0.2 s and was killed" in r["msg"], r
