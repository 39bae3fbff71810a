"""The migrate role's decisions: how the source reaches the destination, what
a failure was, how long a process was frozen, and every row it records."""
from __future__ import annotations

import base64
import json

import pytest

from ansible_collections.ckpt.criu.plugins.filter.migrate import FilterModule
from ansible_collections.ckpt.criu.plugins.module_utils import _migrate_plan as plan
from ansible_collections.ckpt.criu.plugins.module_utils._report import ROW_KEYS

PROC = {"pid": 4242, "selector": "pidfile /run/app.pid", "present": True, "refused": False}


def test_filters_expose_the_rules():
    filters = FilterModule().filters()
    assert filters["migrate_rollback_row"] is plan.rollback_row
    assert filters["migrated_row"] is plan.migrated_row
    assert filters["migrate_ssh_argv"] is plan.ssh_argv


def test_port_address_and_service_fall_back_in_order():
    assert plan.ssh_port("2222", 2200) == "2222"
    assert plan.ssh_port("", 2200) == "2200" and plan.ssh_port(None, None) == "22"
    assert plan.ssh_port(" ", "") == "22"
    assert plan.dest_address("10.0.0.9", "10.0.0.2", "node2") == "10.0.0.9"
    assert plan.dest_address("", "10.0.0.2", "node2") == "10.0.0.2"
    assert plan.dest_address("", None, "node2") == "node2"
    assert plan.service(" 10.9.0.1/24 ", " eth0 ") == {"address": "10.9.0.1/24", "interface": "eth0"}
    assert plan.service("", "eth0") == {} and plan.service(None) == {}


def test_standing_ssh_argv_puts_options_before_the_key():
    argv = plan.ssh_argv("2222", "/run/ckpt-ssh", ["Compression=no", "ConnectTimeout=5"], "/root/.ssh/mig")
    assert argv == ["ssh", "-p", "2222", "-o", "ControlMaster=auto", "-o", "ControlPersist=300",
                    "-o", "ControlPath=/run/ckpt-ssh/%C", "-o", "Compression=no", "-o", "ConnectTimeout=5",
                    "-i", "/root/.ssh/mig"]
    assert "-i" not in plan.ssh_argv("22", "/run/c", None, "")


def test_key_ssh_argv_trusts_only_the_migration_key_and_known_hosts():
    argv = plan.key_ssh_argv("22", "/run/c/pid-7", ["Ciphers=aes128-gcm@openssh.com"])
    assert argv[:5] == ["ssh", "-F", "none", "-p", "22"]
    for pair in (["-o", "ControlPath=/run/c/pid-7/cm"], ["-o", "StrictHostKeyChecking=yes"],
                 ["-o", "UserKnownHostsFile=/run/c/pid-7/known_hosts"], ["-o", "GlobalKnownHostsFile=/dev/null"],
                 ["-o", "IdentitiesOnly=yes"], ["-o", "BatchMode=yes"], ["-i", "/run/c/pid-7/id"]):
        assert any(argv[i:i + 2] == pair for i in range(len(argv))), pair
    assert argv[-2:] == ["-o", "Ciphers=aes128-gcm@openssh.com"]


def test_cipher_preference_follows_the_operator_options_and_is_left_out_when_empty():
    ciphers = ["aes128-gcm@openssh.com", " chacha20-poly1305@openssh.com ", ""]
    key = plan.key_ssh_argv("22", "/run/c/pid-7", ["ConnectTimeout=5"], ciphers)
    assert key[-4:] == ["-o", "ConnectTimeout=5", "-o", "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com"]
    standing = plan.ssh_argv("22", "/run/c", ["Ciphers=aes256-ctr"], "/root/k", ciphers)
    # ssh keeps the first value of an option: the operator's Ciphers= comes first and wins.
    assert standing[-6:] == ["-o", "Ciphers=aes256-ctr", "-o", "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com",
                             "-i", "/root/k"]
    # As an AWX survey or -e passes it: ssh's own comma-separated form.
    assert plan.key_ssh_argv("22", "/run/c", None, "aes128-gcm@openssh.com, aes128-ctr")[-1] == \
        "Ciphers=aes128-gcm@openssh.com,aes128-ctr"
    for empty in (None, [], [" "], ""):
        assert not any(a.startswith("Ciphers=") for a in plan.ssh_argv("22", "/run/c", None, "", empty))
        assert not any(a.startswith("Ciphers=") for a in plan.key_ssh_argv("22", "/run/c", None, empty))


@pytest.mark.parametrize("address,san", [("10.0.0.2", "IP:10.0.0.2"), ("fd00::2", "IP:fd00::2"),
                                         ("node2.example", "DNS:node2.example")])
def test_tls_san_names_addresses_as_ip_and_names_as_dns(address, san):
    assert plan.tls_san(address) == san


def test_host_dirname_keeps_plain_names_and_never_merges_two_hosts():
    assert plan.host_dirname("node1", "from-") == "from-node1"
    assert plan.host_dirname("web-1.example.org", "key-") == "key-web-1.example.org"
    # Anything else becomes "_", and the name's hash keeps two hosts apart.
    v6, look_alike = plan.host_dirname("fe80::1", "from-"), plan.host_dirname("fe80__1", "from-")
    assert v6.startswith("from-fe80__1-") and len(v6) == len("from-fe80__1-") + 8
    assert look_alike == "from-fe80__1" and v6 != look_alike
    assert "/" not in plan.host_dirname("a/../b") and plan.host_dirname("a/../b").startswith("a_.._b-")
    assert plan.host_dirname("", "from-").startswith("from--")


def test_key_source_takes_the_route_src_unless_given():
    route = "10.232.1.3 dev veth0 src 10.232.1.2 uid 0 \n    cache"
    assert plan.key_source("", route) == "10.232.1.2"
    assert plan.key_source("192.0.2.7", route) == "192.0.2.7"
    assert plan.key_source("", "") == "" and plan.key_source(None, None) == ""


def test_key_left_names_each_place_and_what_to_do():
    assert plan.key_left({"changed": True}, {"changed": True}, "node2", "m", "root", "/run/c/pid-7") == []
    left = plan.key_left({"unreachable": True}, {"failed": True, "msg": "busy"}, "node2",
                         "ckpt.criu migrate node1 pid-7", "root", "/run/c/pid-7")
    assert left == ['the migration key is still authorized on node2 (block "ckpt.criu migrate node1 pid-7" in '
                    "~root/.ssh/authorized_keys): unreachable; remove it by hand",
                    "the migration key could not be removed from /run/c/pid-7 here: busy"]


def test_key_left_names_an_ssh_master_that_would_not_close_but_not_one_that_was_not_running():
    ok = ({"changed": True}, {"changed": True}, "node2", "m", "root", "/run/c/pid-7")
    for closed in (None, {}, {"rc": 0}, {"rc": 255, "stderr": "Control socket connect: No such file"},
                   {"skipped": True}):
        assert plan.key_left(*ok, closed=closed) == []
    left = plan.key_left(*ok, closed={"rc": 1, "stderr": "mux_client_request_stop: refused\n"})
    assert left == ["the SSH master of the migration key on the source could not be closed (ssh -O exit: rc 1, "
                    "mux_client_request_stop: refused); it ends on its own within 300 s (ControlPersist)"]


def test_tls_left_names_each_host_whose_credentials_are_left():
    assert plan.tls_left({"changed": True}, {"skipped": True}, "node1", "node2", "/s/t", "/d/t") == []
    assert plan.tls_left({"failed": True, "msg": "busy"}, {"unreachable": True}, "node1", "node2", "/s/t", "/d/t") == [
        "this migration's TLS credentials on node2 could not be removed (unreachable): remove /d/t by hand",
        "this migration's TLS credentials on node1 could not be removed (busy): remove /s/t by hand"]


def test_rollback_row_after_a_commit_that_failed_on_the_tls_credentials_names_them_once():
    left = "this migration's TLS credentials on node2 could not be removed (ro fs): remove /d/.tls-pid-4242 by hand"
    note = {"task": "Fail the cleanup when this migration's TLS credentials are left somewhere", "msg": left,
            "stage": "committed"}
    row = plan.rollback_row(note, PROC, "node1", "node2", _steps(tls_dest={"failed": True, "msg": "ro fs"}))
    assert row["result"] == "migrated, cleanup failed"
    assert row["causes"] == ['%s (stage committed, task "%s")' % (left, note["task"])]


def test_failure_says_a_dead_async_restore_died():
    note = plan.failure({"msg": "  No start of json char found\n...", "ansible_job_id": "j1.2", "finished": 1},
                        "Collect", "frozen", "node2")
    assert note == {"task": "Collect", "stage": "frozen",
                    "msg": "the restore on node2 died before it reported a result (killed or crashed; "
                           "its log is kept, see destination_logs)"}
    assert plan.failure({"msg": "Traceback (most recent call last)", "ansible_job_id": "j"}, "t", "frozen",
                        "n")["msg"].startswith("the restore on n died")


def test_failure_says_a_module_died():
    died = {"msg": "Module result deserialization failed: No start of json char found", "rc": 137,
            "module_stdout": "", "failed": True}
    assert plan.failure(died, "FROZEN: dump", "frozen", "node2")["msg"] == (
        "the module died before it reported a result (exit status 137: killed by signal 9)")
    assert plan.failure({"msg": "MODULE FAILURE\nSee stdout/stderr", "rc": -9}, "t", "frozen", "n")["msg"] == (
        "the module died before it reported a result (killed by signal 9)")
    assert plan.failure({"msg": "MODULE FAILURE"}, "t", "frozen", "n")["msg"] == (
        "the module died before it reported a result (killed or crashed)")
    # Not a restore: a synchronous task's result has no async job.
    assert "restore" not in plan.failure({"msg": "No start of json char found"}, "t", "frozen", "n")["msg"]
    assert plan.failure({"stderr": " boom \n"}, "", None, "n") == {"task": "?", "msg": "boom", "stage": "prepare"}
    assert plan.failure({}, "t", "prepare", "n")["msg"] == "unknown error"


def test_frozen_seconds_prefers_the_modules_clocks():
    dump = {"timings": {"frozen_at": 100.25}}
    restored = {"timings": {"resumed_at": 101.5, "verify": 0.5}}
    assert plan.frozen_seconds(dump, restored, 1.0, 9.0) == 1.25
    # Without the modules' clocks: the controller's, less the verification.
    assert plan.frozen_seconds({}, {"timings": {"verify": 0.5}}, "100.0", "102.1234") == 1.623
    assert plan.frozen_seconds({}, {}, 100.0, 101.0) == 1.0


def test_skipped_rows_refused_absent_and_migrated_already():
    record = base64.b64encode(json.dumps({"destination": "node2", "migrated_at": "2026-01-01T00:00:00Z"}).encode())
    procs = [PROC,
             {"pid": 7, "selector": "pid 7", "present": True, "refused": True, "causes": ["fd 1 is a pipe."]},
             {"pid": 8, "selector": "pid 8", "present": False, "refused": False, "causes": ["no process 8."]},
             {"pid": 9, "selector": "pidfile /run/b.pid", "present": False, "refused": False, "causes": ["gone"]}]
    rows = plan.skipped_rows(procs, [{"item": {"pid": 9}, "content": record.decode()},
                                     {"item": {"pid": 8}, "failed": True}], "node1", "node2")
    assert [(r["pid"], r["result"], r["ok"]) for r in rows] == [
        (7, "refused", False), (8, "absent", False), (9, "migrated already", True)]
    assert rows[0]["cause"] == "fd 1 is a pipe." and rows[0]["causes"] == ["fd 1 is a pipe."]
    assert rows[2]["cause"] == "migrated to node2 at 2026-01-01T00:00:00Z" and rows[2]["causes"] == []
    assert all(r["destination"] == "node2" and r["action"] == "migrate" and not r["changed"] for r in rows)


def test_migrated_row_carries_every_timing_rounded():
    dump = {"timings": {"frozen_at": 10.0, "frozen_time": 0.41234, "total": 0.91234,
                        "transfer": {"images": 0.11111, "total": 0.21234}},
            "image_bytes": 4096, "service_address": {"seconds": 0.01}}
    restored = {"timings": {"resumed_at": 10.61234, "criu_duration": 0.15555}, "pid": 999,
                "service_address": {"seconds": 0.02001}}
    row = plan.migrated_row(PROC, "node1", "node2", dump, restored, 1.0, 2.0, {"address": "10.9.0.1/24"},
                            "rsync", "false")
    assert list(row)[:len(ROW_KEYS)] == list(ROW_KEYS)
    assert (row["result"], row["ok"], row["changed"], row["pid"], row["destination"]) == (
        "migrated", True, True, 4242, "node2")
    assert (row["frozen_s"], row["criu_frozen_s"], row["dump_s"], row["transfer_s"], row["restore_s"]) == (
        0.612, 0.412, 0.912, 0.212, 0.156)
    # criu's frozen time + the images' rsync + criu restore: 0.41234 + 0.11111 + 0.15555
    assert row["raw_limit_s"] == 0.679
    assert row["image_bytes"] == 4096 and row["new_pid"] == 999 and row["transfer"] == "rsync"
    assert row["service_address"] == "10.9.0.1/24" and row["address_move_s"] == 0.03
    assert row["images_kept"] is False and row["cause"] == "" and row["causes"] == []
    plain = plan.migrated_row(PROC, "node1", "node2", {}, {}, 1.0, 2.5, {}, "page_server", True)
    assert plain["service_address"] is None and plain["address_move_s"] is None and plain["images_kept"] is True
    assert plain["frozen_s"] == 1.5 and plain["dump_s"] is None and plain["image_bytes"] is None
    assert plain["raw_limit_s"] is None


def _steps(**over):
    steps = {"kill": {"skipped": True}, "clean": {"changed": True}, "page_server": {"skipped": True},
             "job": {"skipped": True}, "restore_job": {}, "tls_dest": {"skipped": True}, "tls_src": {"skipped": True},
             "tls_dest_dir": "/d/.tls-pid-4242", "tls_src_dir": "/s/.tls-pid-4242", "pslog": {"skipped": True},
             "logs": {"results": []}, "logdir_made": {"changed": True}, "addr_dest": {}, "addr": {}}
    steps.update(over)
    return steps


def test_rollback_row_of_a_clean_rollback():
    note = {"task": "FROZEN: dump", "msg": "criu dump failed", "stage": "frozen"}
    row = plan.rollback_row(note, PROC, "node1", "node2", _steps(), {"image_bytes": 10}, 100.0, 102.5)
    assert (row["result"], row["ok"], row["changed"], row["source_resumed"]) == ("rolled back", False, True, True)
    assert row["cause"] == 'criu dump failed (stage frozen, task "FROZEN: dump")'
    assert row["causes"] == [row["cause"]] and row["destination_logs"] == []
    assert row["frozen_s"] == 2.5 and row["image_bytes"] == 10
    # Stopped only when the failure came while frozen, and not before the freeze.
    assert plan.rollback_row(dict(note, stage="prepare"), PROC, "n1", "n2", _steps(), None, 100.0, 102.5)["frozen_s"] is None
    early = dict(note, msg="refused before freezing anything")
    assert plan.rollback_row(early, PROC, "n1", "n2", _steps(), None, 100.0, 102.5)["frozen_s"] is None
    assert plan.rollback_row(note, PROC, "n1", "n2", _steps(), None, None, 102.5)["frozen_s"] is None


def test_rollback_row_names_every_step_that_failed():
    steps = _steps(kill={"failed": True, "msg": "EPERM"}, clean={"unreachable": True},
                   clean_src={"failed": True, "msg": "Device or resource busy"},
                   page_server={"failed": True, "msg": "no such job"},
                   job={"finished": 0, "msg": "still there"}, restore_job={"ansible_job_id": "j1.2"},
                   tls_dest={"failed": True, "msg": "ro fs"},
                   logs={"results": [{"dest": "/d/.rolled-back/pid-4242-x/restore.log", "checksum": "ab"},
                                     {"dest": "/d/.rolled-back/pid-4242-x/page-server.log", "failed": True}]},
                   addr_dest={"failed": True, "msg": "RTNETLINK"})
    row = plan.rollback_row({"task": "t", "msg": "m", "stage": "restored"}, PROC, "node1", "node2", steps,
                            service_address={"address": "10.9.0.1/24"}, logdir="/d/.rolled-back/pid-4242-x")
    assert row["causes"][1:] == [
        "the copy on node2 could not be killed: EPERM; check it by hand",
        "the images on node2 could not be removed: unreachable",
        "the images on node1 could not be removed: Device or resource busy",
        "the page server on node2 could not be stopped: no such job",
        "the restore on node2 (async job j1.2) did not end after its images were removed: still there",
        "this migration's TLS credentials on node2 could not be removed (ro fs): remove /d/.tls-pid-4242 by hand",
        "the destination's logs are kept in node2:/d/.rolled-back/pid-4242-x",
        "the service address 10.9.0.1/24 could not be taken off node2 (RTNETLINK), so it was not put back here: "
        "move it by hand"]
    assert row["destination_logs"] == ["/d/.rolled-back/pid-4242-x/restore.log"]
    assert row["cause"] == "; ".join(row["causes"])


def test_rollback_row_after_the_commit_names_only_the_cleanup():
    steps = _steps(kill={"failed": True, "msg": "stale"}, tls_src={"failed": True, "msg": "busy"},
                   logs={"results": [{"dest": "/x", "checksum": "1"}]})
    note = {"task": "Record the migration", "msg": "No space left on device", "stage": "committed"}
    row = plan.rollback_row(note, PROC, "node1", "node2", steps, None, 100.0, 200.0)
    assert (row["result"], row["source_resumed"], row["frozen_s"]) == ("migrated, cleanup failed", False, None)
    # A stale kill result is not this rollback's.
    assert row["causes"] == ['No space left on device (stage committed, task "Record the migration")',
                             "this migration's TLS credentials on node1 could not be removed (busy): "
                             "remove /s/.tls-pid-4242 by hand"]
    assert row["destination_logs"] == []


def test_rollback_row_explains_a_page_server_taken_by_another_peer():
    lines = ["(00.001) Accepted connection from 10.0.0.66:4711", "(00.002) Error (criu/tls.c:90): tls: no certificate"]
    row = plan.rollback_row({"task": "t", "msg": "m", "stage": "frozen"}, PROC, "node1", "node2",
                            _steps(pslog={"stdout_lines": lines}), page_server_port=27000)
    taken = row["causes"][1]
    assert taken.startswith("the page server on node2 was taken by another connection before this migration's "
                            "dump connected: it accepted connection from 10.0.0.66:4711, which failed TLS "
                            "authentication (no certificate)")
    assert taken.endswith("find who connects to port 27000 there, and run the migration again")
    only_peer = plan.rollback_row({"task": "t", "msg": "m", "stage": "frozen"}, PROC, "n1", "n2",
                                  _steps(pslog={"stdout_lines": lines[:1]}))
    assert only_peer["causes"] == [only_peer["cause"]]


def test_rollback_row_names_logs_not_kept_and_an_address_not_put_back():
    row = plan.rollback_row({"task": "t", "msg": "m", "stage": "frozen"}, PROC, "node1", "node2",
                            _steps(logdir_made={"unreachable": True}, addr={"failed": True, "msg": "EEXIST"},
                                   logs={"results": [{"dest": "/x", "checksum": "1"}]}),
                            service_address={"address": "10.9.0.1/24"})
    assert row["causes"][1:] == ["the logs on node2 could not be kept: unreachable",
                                 "the service address 10.9.0.1/24 could not be put back here: EEXIST"]


def _b64(text):
    return base64.b64encode(text.encode()).decode()


def test_known_hosts_name_the_dialled_address_and_port():
    keys = [{"content": _b64("ssh-ed25519 AAAAC3Nza root@node2\n")}, {"content": _b64("ecdsa-sha2-nistp256 AAAAE2 x\n")}]
    assert plan.known_hosts(keys, "10.0.0.2", "22") == (
        "10.0.0.2 ssh-ed25519 AAAAC3Nza\n10.0.0.2 ecdsa-sha2-nistp256 AAAAE2\n")
    assert plan.known_hosts(keys[:1], "10.0.0.2", 2222) == "[10.0.0.2]:2222 ssh-ed25519 AAAAC3Nza\n"
    assert plan.known_hosts([], "10.0.0.2", "22") == ""
    # The same keys as text (one command read them all); what is not a key line is left out.
    text = "ssh-ed25519 AAAAC3Nza root@node2\ncat: /etc/ssh/x: denied\n\necdsa-sha2-nistp256 AAAAE2 x\n"
    assert plan.known_hosts(text, "10.0.0.2", "22") == (
        "10.0.0.2 ssh-ed25519 AAAAC3Nza\n10.0.0.2 ecdsa-sha2-nistp256 AAAAE2\n")
    assert plan.known_hosts("", "10.0.0.2", "22") == ""


def test_authorized_key_is_confined_to_the_source_and_the_command():
    line = plan.authorized_key(_b64("ssh-ed25519 AAAAC3Nza ckpt.criu migrate node1 pid-7\n"), "10.0.0.1",
                               "/usr/bin/rrsync -wo -no-del /srv/pid-7", "ckpt.criu migrate node1 pid-7")
    assert line == ('from="10.0.0.1",restrict,command="/usr/bin/rrsync -wo -no-del /srv/pid-7" '
                    "ssh-ed25519 AAAAC3Nza ckpt.criu-migrate-node1-pid-7")
    # The same line from the key as text (ckpt.criu.migration_key's public_key).
    assert plan.authorized_key("ssh-ed25519 AAAAC3Nza ckpt.criu migrate node1 pid-7", "10.0.0.1",
                               "/usr/bin/rrsync -wo -no-del /srv/pid-7", "ckpt.criu migrate node1 pid-7") == line


def test_key_refusal_quotes_ssh_and_names_a_wrong_host_key():
    msg = plan.key_refusal({"rc": 255, "stderr": "warning: x\nHost key verification failed.\n\n"}, "10.0.0.2")
    assert msg == ("the source cannot log in to 10.0.0.2 with the migration's key (nothing was frozen): "
                   "Host key verification failed. The destination presented a host key other than its "
                   "/etc/ssh/ssh_host_*_key.pub read over the controller connection.")
    assert plan.key_refusal({"rc": 255, "stderr": ""}, "n2").endswith("(nothing was frozen): ssh exited 255")
    assert plan.key_refusal({"rc": 1, "stderr": "Permission denied (publickey).\n"}, "n2").endswith(
        "frozen): Permission denied (publickey).")


def test_taken_over_only_with_a_verified_restore():
    ok = {"finished": 1, "changed": True, "process": {"pid": 7, "start_time": 99}, "verified": {"alive": True}}
    assert plan.taken_over(ok) is True
    assert plan.taken_over(dict(ok, failed=True, msg="died within 2 s")) is False
    assert plan.taken_over(dict(ok, finished=0)) is False
    assert plan.taken_over(dict(ok, unreachable=True)) is False
    assert plan.taken_over({k: v for k, v in ok.items() if k != "verified"}) is False
    assert plan.taken_over(dict(ok, process={"pid": 7})) is False
    assert plan.taken_over({}) is False and plan.taken_over(None) is False and plan.taken_over("x") is False


def test_migrated_row_of_a_take_over_says_why_and_times_from_the_controller_freeze():
    failure = {"task": "FROZEN: dump", "msg": "MODULE FAILURE", "stage": "frozen"}
    restored = {"pid": 7, "timings": {"resumed_at": 103.25, "verify": 2.0}}
    row = plan.migrated_row(PROC, "node1", "node2", {"msg": "MODULE FAILURE"}, restored, 100.0, 106.0,
                            taken_over_from=failure)
    assert row["result"] == "migrated" and row["ok"] is True
    assert row["frozen_s"] == 3.25
    assert row["causes"] == [
        'the dump task failed after its checkpoint had reached node2 (MODULE FAILURE; task "FROZEN: dump"), and the '
        'restore there had already restored and verified the process: the migration was completed instead of rolled '
        'back, since resuming the source would have run the process twice']
    assert plan.migrated_row(PROC, "node1", "node2", {}, restored, 100.0, 106.0, taken_over_from={})["causes"] == []


def test_rollback_row_names_the_restore_awaited_before_the_source_resumed():
    note = {"task": "FROZEN: dump", "msg": "MODULE FAILURE", "stage": "frozen"}
    late_failed = {"finished": 1, "failed": True, "msg": "process 7 died within 0.3 s"}
    row = plan.rollback_row(note, PROC, "node1", "node2", _steps(late=late_failed, kill={"changed": True}))
    assert row["causes"][1:] == [
        "the copy the restore had left running on node2 was killed before the source resumed",
        "the restore on node2, awaited before the source resumed, failed: process 7 died within 0.3 s"]
    row = plan.rollback_row(note, PROC, "node1", "node2", _steps(late={"finished": 0, "msg": "timed out"}))
    assert row["causes"][1:] == ["the restore on node2 did not end while the rollback waited for it (timed out): "
                                 "check there that the process does not run too"]
    row = plan.rollback_row(note, PROC, "node1", "node2", _steps(late={"unreachable": True}))
    assert "could not be awaited before the source resumed (unreachable)" in row["causes"][1]
    # Skipped (the restore had been collected) or a restore that ended on the abort: nothing to add.
    assert plan.rollback_row(note, PROC, "node1", "node2", _steps(late={"skipped": True}))["causes"][1:] == []
    aborted = {"finished": 1, "failed": True, "aborted": True, "msg": "no checkpoint arrived"}
    assert plan.rollback_row(note, PROC, "node1", "node2", _steps(late=aborted))["causes"][1:] == []


def test_key_refusal_names_the_standing_login():
    check = {"rc": 255, "stderr": "Unable to negotiate with 10.0.0.2 port 22: no matching cipher found.\n"}
    msg = plan.key_refusal(check, "10.0.0.2", True)
    assert msg.startswith("the source cannot log in to 10.0.0.2 with its standing SSH login (ckpt_migrate_transfer_auth: "
                          "standing) (nothing was frozen): Unable to negotiate with 10.0.0.2 port 22: no matching cipher "
                          "found. ckpt_migrate_ssh_ciphers names no cipher")
    assert "set it to [] to leave the choice to ssh" in plan.key_refusal(
        {"rc": 255, "stderr": "command-line line 0: Bad SSH2 cipher spec 'x'."}, "10.0.0.2")
    assert "ckpt_migrate_ssh_ciphers" not in plan.key_refusal({"rc": 255, "stderr": "Permission denied"}, "10.0.0.2")
    assert "the migration's key" in plan.key_refusal(check, "10.0.0.2")


def test_lock_tables_are_found_by_the_dump_logs_run_id():
    lines = ["(00.000012) CRIU run id = ecdc463f-eaa0-4abe-8c1d-2b3c4d5e6f70",
             "table inet filter", "table inet CRIU-ecdc463f-eaa0-4abe-8c", "table inet CRIU-0badc0de-eaa0-4abe-8c",
             "table ip CRIU-ecdc463f-eaa0-4abe-8c1d-2b3c4d5e6f70", "table inet CRIU-"]
    assert plan.lock_tables(lines) == ["inet CRIU-ecdc463f-eaa0-4abe-8c",
                                       "ip CRIU-ecdc463f-eaa0-4abe-8c1d-2b3c4d5e6f70"]
    # No run id in the log (criu before 3.18, or no log): nothing is guessed.
    assert plan.lock_tables(lines[1:]) == []
    assert plan.lock_tables(None) == []
    # A short name that any run id would begin is not taken.
    assert plan.lock_tables([lines[0], "table inet CRIU-ecdc"]) == []


def test_dir_refusal_names_a_whole_failure_or_only_the_names_that_failed():
    ok = {"changed": True, "fresh": ["pid-1", "pid-2"]}
    assert plan.dir_refusal([ok, ok, {"skipped": True}], "pid-1") == ""
    root = {"failed": True, "msg": "/var/lib/ckpt is writable by others; nothing was changed"}
    assert plan.dir_refusal([ok, root, {"skipped": True}], "pid-1") == root["msg"]
    some = {"failed": True, "msg": "cannot make .../pid-2 afresh: busy", "fresh": ["pid-1"],
            "fresh_failed": {"pid-2": "cannot make .../pid-2 afresh: busy"}}
    assert plan.dir_refusal([ok, ok, some], "pid-1") == ""
    assert plan.dir_refusal([ok, ok, some], "pid-2") == "cannot make .../pid-2 afresh: busy"
    assert plan.dir_refusal([ok, {"unreachable": True}], "pid-1") == "unreachable"
    assert plan.dir_refusal(None, "pid-1") == ""


def test_unattempted_rows_name_each_process_without_a_row_and_only_those():
    procs = [{"pid": 1, "present": True, "selector": "a"}, {"pid": 2, "present": True, "selector": "b"},
             {"pid": 3, "present": True, "refused": True}, {"pid": 4, "present": False}]
    rows = plan.unattempted_rows(procs, [{"pid": 1, "result": "rolled back"}], "node1", "node2")
    assert [(r["pid"], r["result"], r["ok"], r["selector"]) for r in rows] == [(2, "not attempted", False, "b")]
    assert "rolled back" in rows[0]["cause"] and "ckpt_migrate_continue_on_failure" in rows[0]["cause"]
    assert plan.unattempted_rows(procs, [{"pid": 1}, {"pid": 2}], "node1", "node2") == []
