"""Fixtures for the system tests: real Ansible, real CRIU, real processes.

`run_module` runs one module of this collection through `ansible` (ad-hoc,
local connection) and returns its result as Ansible reported it, captured by
the test-only `result_json` callback. `workload` starts a detached counter
process in a chosen stdio situation and cleans it (and its helpers) up.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The test fleet's harness and helpers (fleet/) serve tests here too.
sys.path.append(str(Path(__file__).resolve().parent / "fleet"))

from ckpt_testlib import REPO, VENV_BIN, WORKLOADS, Workload, criu_binary, wait_gone  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope="session")
def criu_bin():
    c = criu_binary()
    if not c:
        pytest.fail("no criu found: run `make setup` first")
    return c


@pytest.fixture(scope="session")
def ansible_env(tmp_path_factory):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_CALLBACK_PLUGINS": str(REPO / "tests" / "system" / "plugins" / "callback"),
        "ANSIBLE_CALLBACKS_ENABLED": "result_json",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path_factory.mktemp("ansible-local")),
        "PATH": "%s:%s" % (VENV_BIN, env.get("PATH", "")),
    })
    return env


class ModuleResult(dict):
    """A module's result dict, plus `.status` (ok/failed/...) and `.rc`."""

    status = None
    process_rc = None

    @property
    def failed(self):
        return self.status != "ok" or bool(self.get("failed"))


@pytest.fixture
def run_module(ansible_env, tmp_path):
    counter = {"n": 0}

    def _run(name, args=None, check=False, diff=False, env=None, timeout=300, prefix=None):
        counter["n"] += 1
        rfile = tmp_path / ("result-%d.jsonl" % counter["n"])
        e = dict(ansible_env)
        e["CKPT_RESULT_FILE"] = str(rfile)
        if env:
            e.update(env)
        fqcn = name if "." in name else "ckpt.criu." + name
        # prefix: a command that runs ansible elsewhere, e.g. ["ip", "netns", "exec", NAME].
        cmd = list(prefix or []) + [str(VENV_BIN / "ansible"), "localhost", "-m", fqcn,
                                    "-a", json.dumps(args or {})]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        p = subprocess.run(cmd, env=e, cwd=str(REPO), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, text=True, check=False)
        if not rfile.exists():
            raise AssertionError("ansible produced no result (rc=%d):\n%s" % (p.returncode, p.stdout))
        rec = json.loads(rfile.read_text().splitlines()[-1])
        res = ModuleResult(rec["result"])
        res.status = rec["status"]
        res.process_rc = p.returncode
        res.output = p.stdout
        return res

    return _run


@pytest.fixture
def workload(tmp_path):
    """Factory: workload(stdio="devnull", mem=0, stdout=False, extra=[])."""
    started = []

    def _start(stdio="devnull", mem=0, stdout=False, interval=0.02, extra=None,
               spawn_args=None, name="w"):
        pidfile = tmp_path / ("%s.pid" % name)
        ticks = tmp_path / ("%s.ticks" % name)
        cmd = [sys.executable, str(WORKLOADS / "spawn.py"), "--stdio", stdio,
               "--pidfile", str(pidfile)] + list(spawn_args or [])
        cmd += ["--", sys.executable, str(WORKLOADS / "counter.py"), "--out", str(ticks),
                "--interval", str(interval), "--mem", str(mem)]
        if stdout:
            cmd.append("--stdout")
        cmd += list(extra or [])
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL, cwd=str(tmp_path)).stdout
        pid = int(out.strip())
        aux_file = Path(str(pidfile) + ".aux")
        aux = [int(x) for x in aux_file.read_text().split()] if aux_file.exists() else []
        w = Workload(pid, str(pidfile), str(ticks), aux)
        started.append(w)
        # Wait until it runs its loop (ticks appear), unless it is meant to die.
        deadline = time.time() + 10
        while time.time() < deadline and not w.read_ticks() and w.alive():
            time.sleep(0.02)
        return w

    yield _start
    for w in started:
        w.kill()
    for w in started:
        wait_gone(w.pid, 5)
