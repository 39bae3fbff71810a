"""The preflight role's free-space check, with real ansible-playbook, stat and
df on this host: an images root that does not exist yet is measured on its
nearest existing parent, and too little space is refused with the numbers.
The rules themselves (the parents looked for, the bytes needed) are unit
tests of ckpt.criu.preflight_space_paths and preflight_space_need
(tests/unit/plugins/module_utils/test_preflight_rules.py); here the task file
gets its inputs: the root, the host, the processes that run, and the df
run the role makes (one ckpt.criu.read_commands run per host)."""
from __future__ import annotations

import subprocess

import pytest

from ckpt_testlib import REPO, VENV_BIN

PLAY = """
- name: Space check
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Read the free space as the role does
      ckpt.criu.read_commands:
        commands:
          - "{{{{ ['df', '-B1', '--output=avail'] + ('{root}' | ckpt.criu.preflight_space_paths) }}}}"
      register: reads

    - name: Check the space under {root}
      ansible.builtin.include_tasks: {tasks}
      vars:
        __preflight_space_host: localhost
        __preflight_space_root: {root}
        __preflight_space_df: "{{{{ {df} }}}}"
        __preflight_running: {{present: [1], rss: {{1: {rss}}}}}
        ckpt_preflight_space_factor: 1.5
"""


def _run(tmp_path, ansible_env, root, rss, df="reads.reads[0]"):
    play = tmp_path / "space.yml"
    play.write_text(PLAY.format(root=root, rss=rss, df=df,
                                tasks=REPO / "roles" / "preflight" / "tasks" / "space.yml"))
    env = dict(ansible_env)
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), str(play)], env=env, cwd=str(REPO),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300, check=False)


@pytest.mark.parametrize("root", ["/var/tmp/ckpt-space-test-missing/a/b", "/"])
def test_missing_images_root_is_measured_on_its_parent(tmp_path, ansible_env, root):
    p = _run(tmp_path, ansible_env, root, 1000)
    assert p.returncode == 0, p.stdout[-3000:]


def test_too_little_space_is_refused_with_the_numbers(tmp_path, ansible_env):
    p = _run(tmp_path, ansible_env, str(tmp_path / "images"), 10 ** 18)
    assert p.returncode != 0
    assert "Not enough space for the images" in p.stdout and "needed" in p.stdout
    assert "%d needed" % int(10 ** 18 * 1.5) in p.stdout, p.stdout[-3000:]


def test_a_df_that_could_not_read_is_named_with_its_words(tmp_path, ansible_env):
    p = _run(tmp_path, ansible_env, str(tmp_path / "images"), 1000,
             df="{'rc': 1, 'stdout_lines': ['Avail'], 'stderr': 'df: /x: Input/output error'}")
    assert p.returncode != 0
    assert "Cannot read the free space under %s on localhost (df rc 1): df: /x: Input/output error" \
        % (tmp_path / "images") in p.stdout, p.stdout[-3000:]
