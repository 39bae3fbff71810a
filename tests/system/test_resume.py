"""Resuming a task criu just let go.

criu leaves a task stopped (``--leave-stopped``, or a failed dump) by queueing
SIGSTOP and then detaching; until the task runs again it shows R with its stop
pending, and it stops a moment later. The dump's guard and its failure path run
right after criu ends, so they can look at exactly that moment: a resume that
only signalled tasks showing T left such a task stopped for good (the flaky
``test_killing_the_dump_module_loses_nothing[during_dump]``).

Here the moment is made on purpose: the test's helper does what criu does
(PTRACE_SEIZE, PTRACE_INTERRUPT, SIGSTOP, PTRACE_DETACH) while it holds the only
CPU the task may use at real-time priority, so the task cannot run before the
resume is called."""
from __future__ import annotations

import ctypes
import functools
import json
import os
import signal
import subprocess
import time

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _dump, _guard, _identity

PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
WALL = 0x40000000


def _ptrace(libc, request, pid):
    if libc.ptrace(ctypes.c_long(request), ctypes.c_long(pid), None, None) != 0:
        raise OSError(ctypes.get_errno(), "ptrace(%#x, %d) failed" % (request, pid))


def _let_go_and_resume(pid, resume):
    """In a forked helper on CPU 0 at SCHED_FIFO: stop PID as criu does, detach it, and call
    ``resume`` before PID can run; returns (state just before the call, the call's result)."""
    r, w = os.pipe()
    helper = os.fork()
    if helper == 0:  # pragma: no cover - runs in the helper
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            os.sched_setaffinity(0, {0})
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            _ptrace(libc, PTRACE_SEIZE, pid)
            _ptrace(libc, PTRACE_INTERRUPT, pid)
            os.waitpid(pid, WALL)
            os.kill(pid, signal.SIGSTOP)
            _ptrace(libc, PTRACE_DETACH, pid)
            before = _identity.state_letter(pid)
            result = resume()
            os.write(w, json.dumps([before, result]).encode())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            os.write(w, json.dumps(["error", repr(exc)]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        out = json.loads(fh.read().decode() or '["error", "the helper said nothing"]')
    os.waitpid(helper, 0)
    return out


@pytest.fixture
def sleeper():
    """A task that may only run on CPU 0."""
    p = subprocess.Popen(["sleep", "600"], preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    time.sleep(0.1)
    yield p
    p.kill()
    p.wait()


def _wait_not_stopped(pid, seconds=1.0):
    """The state PID settles in: T when its stop went through, else what it shows after ``seconds``."""
    deadline = time.monotonic() + seconds
    state = _identity.state_letter(pid)
    while time.monotonic() < deadline:
        state = _identity.state_letter(pid)
        if state == "T":
            return state
        time.sleep(0.02)
    return state


@pytest.mark.parametrize("how", ["guard", "failed_dump"])
def test_a_task_criu_just_let_go_is_resumed_even_before_it_shows_stopped(sleeper, how):
    pid = sleeper.pid
    start = _identity.read_stat(pid)["start_time"]
    resume = functools.partial(_guard.resume_tree if how == "guard" else _dump.ensure_running,
                               [{"pid": pid, "start_time": start}])
    before, result = _let_go_and_resume(pid, resume)
    assert before != "error", "the helper failed: %s" % result
    # The moment under test: let go by criu's steps, stop pending, not stopped yet.
    assert before not in ("T", "t"), "the task was already %s: the moment was not made" % before
    state = _wait_not_stopped(pid)
    assert state not in ("T", "t"), (
        "resumed while it showed %s with SIGSTOP pending (%s), the task stopped anyway" % (before, result))
    if how == "guard":
        assert result == [pid]
    else:
        assert any("with a stop pending" in note for note in result), result
