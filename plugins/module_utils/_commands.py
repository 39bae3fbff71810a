# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Commands run for what they print, in the shape ``ansible.builtin.command``
registers: the job of ``ckpt.criu.read_commands`` (also one of
``ckpt.criu.host_checks``), and the one command a module reads now and then
(``ckpt.criu.migration_key``'s route). A file of its own, so that a module
that only runs a command does not carry the other checks' code (every
module_utils a module imports is parsed on the controller once per playbook
run, and compiled on the host at every run)."""

from __future__ import annotations

import os
import subprocess

from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

READ_COMMANDS_ARGS = dict(
    argument_spec=dict(
        commands=dict(type="list", elements="raw", required=True),
        timeout=dict(type="float", default=60.0),
    ),
)


def run_command(argv, timeout):
    """The registered shape of one command, as ansible.builtin.command gives it."""
    env = dict(os.environ, LC_ALL="C")
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, check=False, timeout=timeout)
    out = res.stdout.decode("utf-8", "replace").rstrip("\n")
    err = res.stderr.decode("utf-8", "replace").rstrip("\n")
    return {"cmd": argv, "rc": res.returncode, "stdout": out, "stderr": err,
            "stdout_lines": out.splitlines(), "stderr_lines": err.splitlines()}


def read_commands(params, warn):
    """ckpt.criu.read_commands: each command's status and output; a command that cannot run fails."""
    results = []
    for i, argv in enumerate(params["commands"]):
        if not argv:
            results.append({"cmd": [], "skipped": True, "rc": 0, "stdout": "", "stderr": "",
                            "stdout_lines": [], "stderr_lines": []})
            continue
        if not isinstance(argv, list) or not all(isinstance(a, (str, int, float)) for a in argv):
            raise CkptError("commands[%d] must be a list of strings (the program first), got %r" % (i, argv),
                            reads=results)
        argv = [str(a) for a in argv]
        try:
            results.append(run_command(argv, params["timeout"]))
        except subprocess.TimeoutExpired:
            raise CkptError("%s took longer than %s s and was killed" % (" ".join(argv), params["timeout"]),
                            reads=results)
        except OSError as exc:
            raise CkptError("cannot run %s: %s" % (argv[0], exc.strerror or exc), reads=results)
    return dict(changed=False, reads=results)
