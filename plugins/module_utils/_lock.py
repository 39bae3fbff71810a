# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The lock of an images_dir: one dump at a time writes into it (``ckpt.criu.dump``)."""

from __future__ import annotations

import errno
import fcntl
import os

from ansible_collections.ckpt.criu.plugins.module_utils import _manifest
from ansible_collections.ckpt.criu.plugins.module_utils import _safedir
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError


class LockError(CkptError):
    """The images_dir is locked by another dump, or its lock cannot be taken."""


class DirLock(object):
    """flock on ``images_dir/.ckpt-lock``; the holder's PID is written in it."""

    def __init__(self, images_dir):
        self.path = _manifest.lock_path(images_dir)
        self.images_dir = images_dir
        self.fd = None

    def probe(self):
        """Without creating anything: LockError when another dump holds the lock now."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | _safedir.NOFOLLOW)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LockError("another dump into %s is running (PID %s); wait for it to finish"
                            % (self.images_dir, holder))
        finally:
            os.close(fd)

    def acquire(self, held=None):
        """Take the lock in the verified directory ``held`` (a _safedir.HeldDir; held here when
        not given): the lock file is opened relative to it, never through a symlink."""
        if held is None:
            with _safedir.hold_images_dir(self.images_dir, LockError, create=False) as own:
                return self.acquire(own)
        try:
            fd = held.open(_manifest.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except _safedir.UntrustedDirError as exc:
            raise LockError(exc.msg)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = "unknown"
            try:
                holder = os.pread(fd, 32, 0).decode().strip() or holder
            except OSError:
                pass
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise LockError("another dump into %s is running (PID %s); wait for it to finish"
                                % (self.images_dir, holder))
            raise LockError("cannot lock %s: %s" % (self.path, exc.strerror or exc))
        os.ftruncate(fd, 0)
        os.pwrite(fd, ("%d\n" % os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
