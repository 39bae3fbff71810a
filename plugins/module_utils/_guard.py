# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A dump survives the death of the module that runs it.

criu never holds the point of no return: a dump always runs with
``--leave-stopped`` (never criu's own "kill the tree when done"), so criu
finishing or dying leaves the workload stopped, not gone.  The module kills
the tree itself, and only after the manifest is written (the default
dump's promise: the process ends *because* a complete checkpoint exists).

If the module process dies anywhere in between (SIGKILL by a timeout, an
OOM kill, a lost controller), a guard finishes the job.  The guard is a fork
of the module made once criu's pipes exist and *before* criu starts, so no
instant exists in which criu runs unwatched.  It is in its own session, holds
nothing of Ansible's (fds 0-2 on /dev/null), holds the read ends of criu's
stdout and stderr (so criu never dies of SIGPIPE halfway through), and waits
on a pipe from the module:

* ``P<pid> <start_time>;`` criu started as that process;
* ``C`` (committed): the manifest is written;
* ``D`` (done): the module finished; the guard exits;
* end of file without ``D``: the module died.  The guard drains criu's
  pipes until every writer is gone (criu ended, or never started), or until
  criu, when its PID is known, has been gone for half a second (a stopped
  helper may hold the pipes).  Then, when the manifest was not committed, it
  resumes every task of the tree that is still the process it was (SIGCONT
  through a pidfd) and marks the directory with ``ckpt-failed.json``; when it
  was committed and the dump was to end the process, kills the tree.

So after any death of the module the workload is running, or a complete,
restorable checkpoint with its manifest exists.
"""

from __future__ import annotations

import os
import selectors
import signal
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _identity
from ansible_collections.ckpt.criu.plugins.module_utils import _manifest


def kill_tree(tree, proc_root=_identity.PROC):
    """SIGKILL every task of ``tree`` ([{pid, start_time}]) that is still that process."""
    for entry in tree:
        _identity.send_signal(entry["pid"], signal.SIGKILL, start_time=entry.get("start_time"),
                              proc_root=proc_root)


def resume_tree(tree, proc_root=_identity.PROC):
    """SIGCONT every task of ``tree`` that is still that process; the PIDs signalled.

    Whatever state a task shows: criu leaves a task stopped by queueing SIGSTOP and then detaching,
    so a task criu just let go can still show R (or D, S) with its stop pending, and stop a moment
    later. SIGCONT discards a pending stop signal, so it resumes a task in that transit too; a task
    that runs anyway only sees a SIGCONT."""
    resumed = []
    for entry in tree:
        if _identity.send_signal(entry["pid"], signal.SIGCONT, start_time=entry.get("start_time"),
                                 proc_root=proc_root):
            resumed.append(entry["pid"])
    return resumed


class Guard(object):
    """The watcher of one dump; see the module docstring."""

    def __init__(self, images_dir, kill_when_committed):
        self.tree = []  # [{pid, start_time}] of the dumped tree, set before criu starts
        self.images_dir = images_dir
        self.kill_when_committed = kill_when_committed
        self.is_committed = False
        self.pid = None
        self._w = None

    def fork(self, read_fds, write_fds):
        """Fork the guard before criu starts: ``read_fds`` are the read ends of criu's stdout and
        stderr (the guard holds them), ``write_fds`` their write ends (the guard closes them, so that
        their end of file means criu's end)."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked guard
            try:
                os.close(w)
                for fd in write_fds:
                    os.close(fd)
                self._watch(r, list(read_fds))
            finally:
                os._exit(0)
        os.close(r)
        self.pid, self._w = pid, w

    def start(self, criu_proc):
        """criu started as ``criu_proc`` (its Popen): tell the guard which process to wait for."""
        self._send(b"P%d %d;" % (criu_proc.pid, _start_time(criu_proc.pid) or 0))

    def _send(self, code):
        if self._w is not None:
            try:
                os.write(self._w, code)
            except OSError:
                pass

    def committed(self):
        """The manifest is written: from now on the checkpoint is the truth."""
        self.is_committed = True
        self._send(b"C")

    def close(self):
        """The module leaves the dump: a tree that criu left stopped only because the dump was to end it
        is resumed when no manifest was committed (a failure after criu); then the guard exits."""
        if self.pid is not None and self.kill_when_committed and not self.is_committed:
            resume_tree(self.tree)
        self.done()

    def done(self):
        """The module is done with the dump (success or failure handled); the guard exits."""
        if self._w is None:
            return
        self._send(b"D")
        os.close(self._w)
        self._w = None
        try:
            os.waitpid(self.pid, 0)
        except OSError:
            pass

    # ---------------------------------------------------------- in the guard

    def _watch(self, r, pipes):  # pragma: no cover - runs in the forked guard
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        keep = [r] + pipes
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd > 2 and fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        seen = b""
        while True:
            data = os.read(r, 64)
            if not data:
                break
            seen += data
            if b"D" in seen:
                return
        # The module died. Let criu finish (it leaves the tree stopped, never killed).
        _wait_criu_end(pipes, _criu_started(seen))
        if b"C" in seen:
            if self.kill_when_committed:
                kill_tree(self.tree)
            return
        resumed = resume_tree(self.tree)
        if not os.path.exists(_manifest.manifest_path(self.images_dir)):
            try:
                _manifest.write_failed_marker(self.images_dir, (
                    "the module process died during the dump, before the manifest was written; the workload "
                    "was resumed (PIDs %s) and these images are incomplete" % (resumed or "none stopped")),
                    {"module_died": True})
            except (IOError, OSError):
                pass


def _criu_started(seen):
    """(pid, start_time) from the module's ``P`` message, or None when it never came."""
    head, sep, dummy = seen.partition(b";")
    if not sep or b"P" not in head:
        return None
    try:
        pid, start = head[head.index(b"P") + 1:].split()
        return int(pid), int(start)
    except ValueError:
        return None


def _wait_criu_end(pipes, criu, grace=0.5):  # pragma: no cover - runs in the forked guard
    """Drain criu's pipes until every writer is gone, or until ``criu`` (pid, start_time), when known,
    has been gone for ``grace`` seconds (a stopped helper of a killed criu may hold the pipes)."""
    sel = selectors.DefaultSelector()
    for fd in pipes:
        sel.register(fd, selectors.EVENT_READ)
    gone_at = None
    try:
        while sel.get_map():
            if criu is not None and gone_at is None and _start_time(criu[0]) != criu[1]:
                gone_at = time.monotonic()
            if gone_at is not None and time.monotonic() - gone_at > grace:
                return
            for key, dummy in sel.select(0.05):
                if not os.read(key.fd, 65536):
                    sel.unregister(key.fd)
    finally:
        sel.close()


def _start_time(pid):
    st = _identity.read_stat(pid)
    return None if st is None or st["state"] in _identity.DEAD_STATES else st["start_time"]
