"""ansible-playbook must be launched with fds 0-2 open (docs/operations.md).

Real runs of the pinned ansible-playbook from a process whose fds 0, 1 and 2
are closed, as a careless launcher leaves them: without redirections it exits
at once and writes nothing; with the redirections of the documented cron line
it runs and logs. The systemd example must set the service's stdio.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "operations.md"
PLAYBOOK = "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: launched}\n"


def _section():
    text = DOC.read_text()
    start = text.index("## Launching ansible-playbook")
    return text[start:text.index("\n## ", start + 1)]


def _close_stdio():
    for fd in (0, 1, 2):
        os.close(fd)


def _run_closed(cmd, tmp_path):
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_LOG_PATH=str(tmp_path / "ansible.log"))
    p = subprocess.Popen(["/bin/sh", "-c", cmd], cwd=str(tmp_path), env=env, preexec_fn=_close_stdio,
                         close_fds=True)
    return p.wait(timeout=300)


def test_cron_line_keeps_stdio_open(tmp_path):
    section = _section()
    (cron,) = [line for block in re.findall(r"```sh\n(.*?)```", section, re.S) for line in block.splitlines()
               if "ansible-playbook" in line]
    fields = cron.split()
    assert len(fields) > 6 and fields[5] == "root", cron            # m h dom mon dow user command
    m = re.search(r"(</dev/null\s+>>\s*)(\S+)(\s+2>&1)\s*$", cron)
    assert m, "the cron line does not give ansible-playbook stdin, stdout and stderr: %s" % cron
    (tmp_path / "pb.yml").write_text(PLAYBOOK)
    playbook = "%s -i localhost, -c local pb.yml" % (Path(sys.executable).parent / "ansible-playbook")

    # What the documentation warns about: fds 1 and 2 closed, nothing runs, nothing is written.
    rc = _run_closed(playbook, tmp_path)
    assert rc != 0
    assert not (tmp_path / "ansible.log").exists() or "launched" not in (tmp_path / "ansible.log").read_text()

    # The documented redirections, with the log in this test's directory.
    log = tmp_path / "ckpt.log"
    rc = _run_closed(playbook + " " + m.group(1) + str(log) + m.group(3), tmp_path)
    out = log.read_text() if log.exists() else ""
    assert rc == 0, out[-3000:]
    assert "launched" in out and "PLAY RECAP" in out


def test_systemd_example_sets_the_service_stdio():
    section = _section()
    (ini,) = re.findall(r"```ini\n(.*?)```", section, re.S)
    keys = dict(line.split("=", 1) for line in ini.splitlines() if "=" in line and not line.startswith("#"))
    assert keys.get("StandardInput") == "null"
    for k in ("StandardOutput", "StandardError"):
        assert re.match(r"(journal|append:/|file:/)", keys.get(k, "")), (k, keys.get(k))
    assert "ansible-playbook" in keys["ExecStart"] and keys["Type"] == "oneshot"
    assert keys["OnCalendar"] and keys["WantedBy"] == "timers.target"
