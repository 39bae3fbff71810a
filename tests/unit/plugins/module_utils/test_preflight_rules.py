"""The preflight role's decisions as pure rules over what its tasks read:
the selection, the candidates, the processes that run, the destination's
taken PIDs, files and units, the free space needed, and every cause that
refuses a process."""
from __future__ import annotations

import base64

import pytest

from ansible_collections.ckpt.criu.plugins.filter.preflight import FilterModule
from ansible_collections.ckpt.criu.plugins.module_utils import _preflight, _report


def b64(text):
    return base64.b64encode(text.encode()).decode()


def loop(*results):
    """A registered loop result, as ansible-core registers one."""
    return {"results": list(results), "changed": False, "msg": "All items completed"}


# --- selection -----------------------------------------------------------

def test_selection_takes_lists_and_comma_strings():
    sel = _preflight.selection("12, 13,,", ["/run/a.pid", " "], "app.service", "  ^python .*worker  ")
    assert sel == {"pids": ["12", "13"], "pidfiles": ["/run/a.pid"], "units": ["app.service"],
                   "regex": "^python .*worker", "selected": True}


@pytest.mark.parametrize("args", [(None, None, None, None), ("", [], "", ""), ([], " , ", [""], "   ")])
def test_an_empty_selection_selects_nothing(args):
    assert _preflight.selection(*args)["selected"] is False


@pytest.mark.parametrize("kw", [{"pids": 1}, {"pidfiles": "/run/a.pid"}, {"units": ["a"]}, {"cmdline_regex": "x"}])
def test_any_one_selector_is_a_selection(kw):
    assert _preflight.selection(**kw)["selected"] is True


# --- candidates ----------------------------------------------------------

def sel(**kw):
    return _preflight.selection(**kw)


def test_pids_are_candidates_and_a_bad_pid_says_so():
    c = _preflight.candidates(sel(pids=[12, "13", "x1", "-4", "0"]))
    assert c[:2] == [{"selector": "pid 12", "pid": 12}, {"selector": "pid 13", "pid": 13}]
    assert [x["pid"] for x in c[2:]] == [0, 0, 0]
    assert c[2] == {"selector": "pid x1", "pid": 0, "why": "'x1' is not a PID; give process IDs as positive numbers"}


def test_pidfiles_read_empty_garbage_and_unreadable():
    reads = loop({"item": "/run/a.pid", "content": b64("4242\n")},
                 {"item": "/run/b.pid", "content": b64("  \n")},
                 {"item": "/run/c.pid", "content": b64("abc 7\n")},
                 {"item": "/run/d.pid", "failed": True, "msg": "file not found: /run/d.pid"},
                 {"item": "/run/e.pid", "failed": True})
    c = _preflight.candidates(sel(pidfiles="/run/a.pid"), pidfile_reads=reads)
    assert c == [
        {"selector": "pidfile /run/a.pid", "pid": 4242},
        {"selector": "pidfile /run/b.pid", "pid": 0, "why": "pidfile /run/b.pid holds no PID"},
        {"selector": "pidfile /run/c.pid", "pid": 0, "why": "pidfile /run/c.pid holds no PID"},
        {"selector": "pidfile /run/d.pid", "pid": 0,
         "why": "pidfile /run/d.pid cannot be read: file not found: /run/d.pid"},
        {"selector": "pidfile /run/e.pid", "pid": 0, "why": "pidfile /run/e.pid cannot be read: unknown error"},
    ]


def test_units_with_and_without_a_main_process():
    reads = loop({"item": "app.service", "stdout": "321\n", "stderr": ""},
                 {"item": "gone.service", "stdout": "0", "stderr": ""},
                 {"item": "bad.service", "stdout": "", "stderr": " Unit bad.service not found. \n"})
    c = _preflight.candidates(sel(units="app.service"), unit_reads=reads)
    assert c[0] == {"selector": "unit app.service", "pid": 321, "unit": "app.service"}
    assert c[1]["pid"] == 0 and "unit" not in c[1]
    assert c[1]["why"] == "systemd unit gone.service has no main process (not running, or unknown: )"
    assert c[2]["why"] == ("systemd unit bad.service has no main process (not running, or unknown: "
                           "Unit bad.service not found.)")


def test_a_regex_matches_processes_or_says_it_matched_none():
    c = _preflight.candidates(sel(cmdline_regex="worker"), regex_read={"rc": 0, "stdout_lines": ["5", "6"]})
    assert c == [{"selector": "cmdline worker", "pid": 5}, {"selector": "cmdline worker", "pid": 6}]
    c = _preflight.candidates(sel(cmdline_regex="worker"), regex_read={"rc": 1, "stdout_lines": []})
    assert c == [{"selector": "cmdline worker", "pid": 0, "why": "no process command line matches worker"}]


def test_no_regex_reads_no_pgrep_even_when_its_task_left_a_result():
    assert _preflight.candidates(sel(pids="5"), regex_read={"skipped": True}) == [{"selector": "pid 5", "pid": 5}]


def test_a_pid_selected_twice_keeps_its_first_selector_and_every_missing_one_stays():
    c = _preflight.candidates(
        sel(pids="5", cmdline_regex="w"),
        pidfile_reads=loop({"item": "/run/a.pid", "content": b64("5")}, {"item": "/run/b.pid", "failed": True},
                           {"item": "/run/c.pid", "failed": True}),
        unit_reads=loop({"item": "a.service", "stdout": "6"}),
        regex_read={"stdout_lines": ["6", "7"]})
    assert [(x["selector"], x["pid"]) for x in c] == [
        ("pid 5", 5), ("pidfile /run/b.pid", 0), ("pidfile /run/c.pid", 0), ("unit a.service", 6),
        ("cmdline w", 7)]


def test_candidate_pids_and_unit_candidates():
    c = [{"selector": "pid 5", "pid": 5}, {"selector": "pidfile /x", "pid": 0, "why": "w"},
         {"selector": "unit a", "pid": 6, "unit": "a"}, {"selector": "unit b", "pid": 0, "why": "w"}]
    assert _preflight.candidate_pids(c) == [5, 6]
    assert _preflight.unit_candidates(c) == [c[2]]


# --- what runs, what the destination holds --------------------------------

def test_ps_state_keeps_running_pids_and_counts_rss_of_every_line():
    st = _preflight.ps_state(["   5 Ss    1000", "6 Z 0", "7 R+ 12", "garbage", ""])
    assert st["present"] == [5, 7]
    assert st["rss"] == {5: 1024000, 6: 0, 7: 12288}
    assert _preflight.ps_state(None) == {"present": [], "rss": {}}


def test_taken_pids_keep_the_command_with_its_spaces():
    assert _preflight.taken_pids([" 5 sleep", "6 my worker", "7"]) == {5: "sleep", 6: "my worker", 7: "?"}
    assert _preflight.taken_pids([]) == {}


def test_tree_pids_are_the_roots_and_every_process_once():
    fds = loop({"item": 5, "processes": [{"pid": 5}, {"pid": 8}]}, {"item": 6, "failed": True},
               {"item": 7, "processes": [{"pid": 8}, {"pid": 9}]})
    assert _preflight.tree_pids([5, 6, 7], fds) == [5, 6, 7, 8, 9]


def test_destination_files_name_their_root_process():
    fds = loop({"item": "5", "files_on_destination": [{"path": "/a", "fd": 3, "pid": 8}]},
               {"item": 6, "failed": True})
    assert _preflight.destination_files(fds) == [{"path": "/a", "fd": 3, "pid": 8, "owner_pid": 5}]


@pytest.mark.parametrize("root, paths", [
    ("/var/lib/ckpt", ["/var/lib/ckpt", "/var/lib", "/var", "/"]),
    ("/var//lib/", ["/var/lib", "/var", "/"]),
    ("/", ["/"]),
    ("", ["/"]),
])
def test_space_paths_go_from_the_root_up_to_slash(root, paths):
    assert _preflight.space_paths(root) == paths


def test_space_need_is_the_running_processes_rss_times_the_factor():
    assert _preflight.space_need([5, 7], {5: 1000, "7": 3000, 9: 10 ** 9}, "1.5") == 6000
    assert _preflight.space_need([], {5: 1000}, 2) == 0
    assert _preflight.space_need([8], {5: 1000}, 2) == 0


def test_net_problems_gather_source_and_destination_findings_per_pid():
    src = loop({"item": 5, "sockets": [], "problems": ["port 80 is taken"]},
               {"item": 6, "failed": True, "msg": "no such process"})
    dest = loop({"item": {"item": 5}, "problems": ["10.0.0.1 is not on node2"]},
                {"item": {"item": 6}, "failed": True})
    assert _preflight.net_problems(src, dest, "node2") == {
        5: ["port 80 is taken", "10.0.0.1 is not on node2"],
        6: ["inet_sockets failed on PID 6: no such process", "inet_sockets failed on node2: no result"]}
    assert _preflight.net_problems({"skipped": True}, None, "") == {}


def test_net_problems_read_runs_for_several_pids_and_name_a_run_that_failed_as_a_whole():
    src = {"per_pid": [{"item": 5, "sockets": [], "problems": ["port 80 is taken"]},
                       {"item": 6, "failed": True, "msg": "no such process"}]}
    dest = {"per_pid": [{"item": 5, "problems": ["10.0.0.1 is not on node2"]}]}
    assert _preflight.net_problems(src, dest, "node2", [5, 6]) == {
        5: ["port 80 is taken", "10.0.0.1 is not on node2"],
        6: ["inet_sockets failed on PID 6: no such process"]}
    bad = {"failed": False, "msg": "192.0.2.300/24 is not an IPv4 address"}
    assert _preflight.net_problems(bad, None, "node2", [5, 6]) == {
        5: ["inet_sockets failed on PID 5: 192.0.2.300/24 is not an IPv4 address"],
        6: ["inet_sockets failed on PID 6: 192.0.2.300/24 is not an IPv4 address"]}
    assert _preflight.net_problems(src, {"msg": "timed out"}, "node2", [5])[5][-1] == \
        "inet_sockets failed on node2: timed out"
    assert _preflight.net_problems({"skipped": True, "msg": "skipped"}, None, "", [5]) == {}


# --- the verdict on each process --------------------------------------------

FD_OK = {"item": 5, "process": {"pid": 5, "starttime": 1}, "criu_options": {"shell_job": False},
         "blockers": [], "processes": [{"pid": 5}]}
SUM_OK = {"item": 5, "exe": "/usr/bin/sleep", "files": [{"path": "/usr/bin/sleep", "sha256": "ab"}]}
CAND = {"selector": "pid 5", "pid": 5}


def decide(cands=None, **kw):
    args = dict(present=[5], rss={5: 4096}, fds=loop(FD_OK), sums=loop(SUM_OK), unit_infos=loop())
    args.update(kw)
    return _preflight.processes([CAND] if cands is None else cands, **args)


def test_a_process_that_passes_is_ready_with_what_the_checkpoint_needs():
    (p,) = decide()
    assert p == {"selector": "pid 5", "pid": 5, "present": True, "unit": None, "refused": False, "causes": [],
                 "identity": {"pid": 5, "starttime": 1}, "criu_options": {"shell_job": False},
                 "rss_bytes": 4096, "exe": "/usr/bin/sleep", "binaries": SUM_OK["files"]}


def test_an_absent_process_is_refused_unless_absent_ones_are_allowed():
    cands = [{"selector": "pid 9", "pid": 9}, {"selector": "pidfile /x", "pid": 0, "why": "pidfile /x holds no PID"}]
    p9, px = decide(cands)
    assert p9["present"] is False and p9["refused"] is True
    assert p9["causes"] == ["no running process with PID 9 (selected by pid 9)"]
    assert px["causes"] == ["pidfile /x holds no PID"] and px["refused"] is True
    assert px["identity"] is None and px["binaries"] == [] and px["rss_bytes"] == 0
    assert [p["refused"] for p in decide(cands, allow_absent="true")] == [False, False]


def test_allow_absent_does_not_excuse_a_running_process():
    (p,) = decide(fds=loop(dict(FD_OK, blockers=["fd 1 is a pipe"])), allow_absent=True)
    assert p["refused"] is True


@pytest.mark.parametrize("fd, cause", [
    ({"item": 5, "failed": True, "msg": "permission denied"}, "fd_inspect failed on PID 5: permission denied"),
    ({"item": 5, "failed": False}, "fd_inspect failed on PID 5: no result"),
    (None, "fd_inspect failed on PID 5: no result"),
])
def test_fd_inspect_failing_refuses(fd, cause):
    (p,) = decide(fds=loop(fd) if fd else loop())
    assert p["refused"] is True and p["causes"] == [cause]


def test_blockers_refuse_in_their_words_unless_stdio_is_not_asserted():
    blockers = ["fd 1 is a pipe", {"msg": "fd 2 is a tty"}, {"reason": "fd 4 is a socket"}, {"fd": 9}, 17]
    (p,) = decide(fds=loop(dict(FD_OK, blockers=blockers)))
    assert p["causes"] == ["fd 1 is a pipe", "fd 2 is a tty", "fd 4 is a socket", "{'fd': 9}", "17"]
    (p,) = decide(fds=loop(dict(FD_OK, blockers=blockers)), assert_stdio="false")
    assert p["causes"] == [] and p["refused"] is False


@pytest.mark.parametrize("sm, cause", [
    ({"item": 5, "failed": True, "msg": "no such file"}, "binary_checksum failed on PID 5: no such file"),
    (None, "binary_checksum failed on PID 5: no result"),
])
def test_binary_checksum_failing_refuses_unless_checksums_are_off(sm, cause):
    (p,) = decide(sums=loop(sm) if sm else loop())
    assert p["causes"] == [cause]
    (p,) = decide(sums=loop(sm) if sm else loop(), checksums=False)
    assert p["causes"] == [] and p["exe"] is None


def test_runs_for_several_pids_decide_as_loops_do():
    fds = {"per_pid": [FD_OK, {"item": 6, "failed": True, "msg": "PID 6 is a zombie"}]}
    sums = {"per_pid": [SUM_OK, {"item": 6, "failed": True, "msg": "no such process"}]}
    cands = [CAND, {"selector": "pid 6", "pid": 6}]
    p5, p6 = decide(cands, present=[5, 6], fds=fds, sums=sums)
    assert p5["refused"] is False and p5["identity"] == {"pid": 5, "starttime": 1}
    assert p6["causes"] == ["fd_inspect failed on PID 6: PID 6 is a zombie",
                            "binary_checksum failed on PID 6: no such process"]
    ds = {"per_pid": [{"item": 5, "matches": False, "mismatches": [{"msg": "/usr/bin/sleep differs"}]}]}
    (p,) = decide(dest_sums=ds, destination="node2")
    assert p["causes"] == ["on node2: /usr/bin/sleep differs"]


def test_a_run_for_several_pids_that_failed_as_a_whole_refuses_each_with_its_message():
    whole = {"failed": False, "failed_when_result": False, "msg": "criu_path /opt/criu does not run"}
    p5, p6 = decide([CAND, {"selector": "pid 6", "pid": 6}], present=[5, 6], fds=whole, sums=whole)
    for p in (p5, p6):
        assert p["refused"] is True
        assert p["causes"] == ["fd_inspect failed on PID %d: criu_path /opt/criu does not run" % p["pid"],
                               "binary_checksum failed on PID %d: criu_path /opt/criu does not run" % p["pid"]]
    (p,) = decide(dest_sums={"msg": "timed out"}, destination="node2")
    assert p["causes"] == ["binary comparison on node2 failed: timed out"]
    (p,) = decide(dest_sums={"skipped": True, "msg": "skipped"}, destination="node2")
    assert p["causes"] == []


UNIT = {"selector": "unit app.service", "pid": 5, "unit": "app.service"}
UI = {"item": "app.service", "refusals": [], "files": ["/etc/systemd/system/app.service"], "files_sha256": "aa"}


def test_a_units_own_refusals_refuse_it():
    (p,) = decide([UNIT], unit_infos=loop(dict(UI, refusals=["Restart=always would start a second copy"])))
    assert p["unit"] == "app.service" and p["causes"] == ["Restart=always would start a second copy"]


@pytest.mark.parametrize("du, cause", [
    (None, "unit app.service does not exist on node2 (not inspected); install the same unit file there first"),
    ({"item": "app.service", "exists": False, "msg": "no such unit"},
     "unit app.service does not exist on node2 (no such unit); install the same unit file there first"),
    ({"item": "app.service", "exists": True, "files": ["/lib/systemd/system/app.service"], "files_sha256": "bb"},
     "unit app.service on node2 is defined otherwise (/lib/systemd/system/app.service there, "
     "/etc/systemd/system/app.service here); install the same unit file and drop-ins"),
    ({"item": "app.service", "exists": True, "files_sha256": "aa", "running": True, "main_pid": 77},
     "unit app.service already runs on node2 (MainPID 77); the restore would meet a second copy"),
])
def test_a_unit_on_the_destination_must_exist_match_and_be_stopped(du, cause):
    (p,) = decide([UNIT], unit_infos=loop(UI), dest_units=loop(du) if du else loop(), destination="node2")
    assert p["causes"] == [cause]


def test_a_unit_like_the_sources_and_stopped_on_the_destination_passes():
    du = {"item": "app.service", "exists": True, "files_sha256": "aa", "running": False}
    (p,) = decide([UNIT], unit_infos=loop(UI), dest_units=loop(du), destination="node2")
    assert p["causes"] == [] and p["refused"] is False


def test_the_destination_is_not_checked_without_one():
    (p,) = decide([UNIT], unit_infos=loop(UI), dest_taken={5: "sleep"}, net={5: ["x"]}, destination="")
    assert p["causes"] == []


def test_pids_taken_on_the_destination_refuse_root_and_tree():
    fd = dict(FD_OK, processes=[{"pid": 5}, {"pid": 8}, {"pid": 9}])
    (p,) = decide(fds=loop(fd), dest_taken={"5": "bash", 8: "sshd"}, destination="node2")
    assert p["causes"] == [
        "PID 5 is already in use on node2 (bash); the restore needs the same PID free",
        "PID 8, a process of the tree of PID 5, is already in use on node2 (sshd); the restore needs every PID "
        "of the tree free"]


def test_binaries_on_the_destination_that_differ_or_cannot_be_compared():
    ds = {"item": {"item": 5}, "mismatches": [{"msg": "/usr/bin/sleep differs (sha256 cd, ab expected)"},
                                              {"path": "/lib/libc.so.6"}]}
    (p,) = decide(dest_sums=loop(ds), destination="node2")
    assert p["causes"] == ["on node2: /usr/bin/sleep differs (sha256 cd, ab expected)",
                           "on node2: /lib/libc.so.6 differs"]
    (p,) = decide(dest_sums=loop({"item": {"item": "5"}, "failed": True, "msg": "timeout"}), destination="node2")
    assert p["causes"] == ["binary comparison on node2 failed: timeout"]


def test_files_reopened_by_path_must_exist_and_keep_their_size():
    files = loop(
        {"item": {"path": "/srv/in.txt", "fd": 3, "pid": 8, "owner_pid": 5}, "stat": {"exists": False}},
        {"item": {"path": "/srv/log", "fd": 4, "pid": 5, "owner_pid": 5, "same_size": True, "size": 10},
         "stat": {"exists": True, "size": 12}},
        {"item": {"path": "/srv/ok", "fd": 5, "pid": 5, "owner_pid": 5, "same_size": True, "size": 10},
         "stat": {"exists": True, "size": 10}},
        {"item": {"path": "/srv/app", "fd": 6, "pid": 5, "owner_pid": 5, "size": 10},
         "stat": {"exists": True, "size": 99}},
        {"item": {"path": "/srv/failed", "fd": 7, "pid": 5, "owner_pid": 5}, "failed": True},
        {"item": {"path": "/srv/other", "fd": 3, "pid": 6, "owner_pid": 6}, "stat": {"exists": False}})
    (p,) = decide(dest_files=files, destination="node2")
    assert p["causes"] == [
        "/srv/in.txt, open as fd 3 of PID 8, does not exist on node2; the restore reopens it by path: create it "
        "there first",
        "/srv/log is 12 bytes on node2, 10 here; opened without O_APPEND, the restore needs the same size",
        "/srv/failed, open as fd 7 of PID 5, does not exist on node2; the restore reopens it by path: create it "
        "there first"]


def test_socket_problems_refuse_in_their_words():
    (p,) = decide(net={"5": ["port 80 is in use on node2"]}, destination="node2")
    assert p["causes"] == ["port 80 is in use on node2"]


def test_causes_come_in_the_order_the_checks_run():
    fd = dict(FD_OK, blockers=["fd 1 is a pipe"])
    (p,) = decide([UNIT], fds=loop(fd), sums=loop(), unit_infos=loop(dict(UI, refusals=["unit refusal"])),
                  dest_units=loop(), dest_taken={5: "x"}, net={5: ["net"]}, destination="node2")
    assert [c.split(" ")[0] for c in p["causes"]] == ["fd", "unit", "unit", "binary_checksum", "PID", "net"]


def test_an_absent_process_gets_no_other_cause():
    (p,) = decide([{"selector": "pid 9", "pid": 9}], dest_taken={9: "x"}, net={9: ["net"]}, destination="node2")
    assert p["causes"] == ["no running process with PID 9 (selected by pid 9)"]


# --- the report rows ---------------------------------------------------------

def test_result_rows_are_report_rows_ready_absent_or_refused():
    procs = decide([CAND, {"selector": "pid 9", "pid": 9}, {"selector": "pidfile /x", "pid": 0, "why": "gone"}],
                   allow_absent=True) + decide(fds=loop(dict(FD_OK, blockers=["a.", "b."])))
    rows = _preflight.result_rows(procs, "node1", "")
    assert [(r["pid"], r["result"], r["ok"]) for r in rows] == [
        (5, "ready", True), (9, "absent", True), (0, "absent", True), (5, "refused", False)]
    assert tuple(rows[0])[:len(_report.ROW_KEYS)] == _report.ROW_KEYS
    assert rows[0]["action"] == "preflight" and rows[0]["host"] == "node1" and rows[0]["destination"] is None
    assert rows[0]["rss_bytes"] == 4096 and rows[0]["changed"] is False and rows[0]["frozen_s"] is None
    assert rows[3]["cause"] == "a. b." and rows[3]["causes"] == ["a.", "b."]
    assert _preflight.result_rows(procs, "node1", "node2")[0]["destination"] == "node2"
    assert _report.failures(rows) == ["PID 5 (pid 5) refused: a. b."]


@pytest.mark.parametrize("lines, path", [
    (["CKPT_CRIU_CHANGED=yes", "/opt/ckpt-criu/bin/criu"], "/opt/ckpt-criu/bin/criu"),
    (["criu check failed"], ""), ([], ""), (None, ""),
])
def test_installed_criu_is_the_installers_last_line_when_a_path(lines, path):
    assert _preflight.installed_criu(lines) == path


def test_every_function_is_a_filter():
    f = FilterModule().filters()
    assert f["preflight_processes"] is _preflight.processes and f["preflight_rows"] is _preflight.result_rows
    assert all(name.startswith("preflight_") and callable(fn) for name, fn in f.items())
    assert len(f) == 14


def test_files_reopened_by_path_from_one_stat_run_on_the_destination():
    fd = dict(FD_OK, files_on_destination=[
        {"path": "/srv/in.txt", "fd": 3, "pid": 8, "mode": 0o100644},
        {"path": "/srv/log", "fd": 4, "pid": 5, "same_size": True, "size": 10, "mode": 0o100600},
        {"path": "/srv/ok", "fd": 5, "pid": 5, "same_size": True, "size": 10, "mode": 0o100600},
        {"path": "/srv/tab\tand space", "fd": 6, "pid": 5, "same_size": True, "size": 3, "mode": 0o100600},
        {"path": "/srv/mode", "fd": 7, "pid": 5, "mode": 0o100600},
        {"path": "/srv/nomode", "fd": 8, "pid": 5}])
    # stat printed raw mode (hex), tab, size, tab, path, NUL for each it could stat; /srv/in.txt is
    # missing from its output.
    ran = {"rc": 1, "stdout": "8180\t12\t/srv/log\x008180\t10\t/srv/ok\x008180\t3\t/srv/tab\tand space\x00"
                              "81a4\t0\t/srv/mode\x0041ed\t4096\t/srv/nomode\x00",
           "stderr": "stat: cannot statx '/srv/in.txt': No such file or directory"}
    (p,) = decide(fds=loop(fd), dest_files=ran, destination="node2")
    assert p["causes"] == [
        "/srv/in.txt, open as fd 3 of PID 8, does not exist on node2; the restore reopens it by path: create it "
        "there first",
        "/srv/log is 12 bytes on node2, 10 here; opened without O_APPEND, the restore needs the same size",
        "/srv/mode has mode file 0644 on node2, file 0600 here; the restore reopens it only with the same mode "
        "(type and permissions): chmod it there"]
    (p,) = decide(fds=loop(fd), dest_files={"skipped": True}, destination="node2")
    assert p["causes"] == []
