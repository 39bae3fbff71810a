"""Run every integration target under tests/integration/targets as a role,
the way ansible-test runs a target, with real ansible-playbook on localhost.

Targets use the pattern check mode -> apply -> check mode -> apply and assert
`changed` each time. A target whose aliases say `disabled` is not collected."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGETS = REPO / "tests" / "integration" / "targets"


def _targets():
    out = []
    for d in sorted(TARGETS.iterdir()) if TARGETS.is_dir() else []:
        if not (d / "tasks" / "main.yml").is_file():
            continue
        aliases = (d / "aliases").read_text().split() if (d / "aliases").exists() else []
        if "disabled" in aliases or d.name.startswith("setup_"):
            continue
        out.append(d.name)
    return out


@pytest.mark.criu
@pytest.mark.parametrize("target", _targets())
def test_target(target, tmp_path, ansible_env):
    playbook = tmp_path / "run.yml"
    playbook.write_text(
        "- name: Integration target %s\n"
        "  hosts: localhost\n"
        "  gather_facts: false\n"
        "  roles:\n"
        "    - role: %s\n" % (target, target))
    env = dict(ansible_env)
    env["ANSIBLE_ROLES_PATH"] = str(TARGETS)
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    output_dir = tmp_path / "output"
    output_dir.mkdir()
    cmd = [str(REPO / ".venv" / "bin" / "ansible-playbook"), str(playbook),
           "-e", "output_dir=%s" % output_dir,
           "-e", "ckpt_test_workloads=%s" % (REPO / "tests" / "workloads"),
           "-e", "ansible_python_interpreter=%s" % (REPO / ".venv" / "bin" / "python")]
    p = subprocess.run(cmd, env=env, cwd=str(REPO), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
                       check=False)
    assert p.returncode == 0, p.stdout[-6000:]
