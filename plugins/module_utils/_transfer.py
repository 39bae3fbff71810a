# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Send a finished checkpoint to another host, manifest last.

Used by ckpt.criu.dump's ``transfer`` option so that a migration's frozen path
is one task: freeze and dump, send the images, send the manifest. The
destination's restore (started before the freeze with ``wait_for_manifest``)
begins the moment the manifest is renamed into place by rsync.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _manifest
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

# An ssh argv element must be one word: rsync splits --rsh on whitespace.
_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./~-]+$")
_DEST = re.compile(r"^(?:[A-Za-z0-9_.-]+@)?[A-Za-z0-9_.:-]+$")


class TransferError(CkptError):
    """A transfer of the images that failed; rc, stderr and the command go with it."""

    def __init__(self, msg, rc=None, stderr=None, argv=None):
        super(TransferError, self).__init__(msg, rc=rc, stderr=stderr, cmd=argv)
        self.rc = rc
        self.stderr = stderr
        self.argv = argv


def validate(spec):
    """Check a transfer spec {destination, path, rsh}; return the list of problems."""
    problems = []
    dest = spec.get("destination") or ""
    if not _DEST.match(dest) or dest.startswith("-"):
        problems.append("transfer.destination %r must be HOST or USER@HOST (no spaces, no leading '-')" % dest)
    path = spec.get("path") or ""
    if not os.path.isabs(path) or "/../" in path + "/" or not _WORD.match(path):
        problems.append("transfer.path %r must be an absolute path without '..', spaces or quotes" % path)
    rsh = spec.get("rsh") or ["ssh"]
    for word in rsh:
        if not _WORD.match(word):
            problems.append("transfer.rsh element %r must be a single word without spaces or quotes "
                            "(rsync splits the remote shell command on whitespace)" % word)
    return problems


def _rsync(argv, timeout):
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, check=False,
                           universal_newlines=True)
    except subprocess.TimeoutExpired:
        raise TransferError("sending the checkpoint did not finish within %s s" % timeout, argv=argv)
    except OSError as exc:
        raise TransferError("cannot run rsync (%s); install rsync on the source host" % exc, argv=argv)
    if p.returncode != 0:
        raise _rsync_failed(argv[-1], p.returncode, p.stderr, argv, fallback=p.stdout)


def _rsync_failed(target, rc, stderr, argv, fallback=None):
    """TransferError naming rsync's last line of output (stderr, else ``fallback``)."""
    lines = (stderr or fallback or "").strip().splitlines()
    return TransferError("rsync to %s failed (rc=%d): %s" % (target, rc, lines[-1] if lines else "no output"),
                         rc=rc, stderr=stderr, argv=argv)


class Push(object):
    """Send a checkpoint, in one rsync or in two so that work can overlap the transfer.

    ``Push(images_dir, spec)`` starts rsync of every image (not the manifest) at
    once; the caller may hash the images and write the manifest meanwhile (both
    only read the images); ``finish()`` waits for the images and then sends the
    manifest alone, so the destination never sees a manifest before its images.
    ``Push(images_dir, spec, with_manifest=True)``, for a manifest already
    written, sends it with the images in one rsync (one connection less in the
    frozen window); rsync sends files in name order, so the manifest may land
    first, and the waiting restore waits for the images it lists
    (``_restore.wait_for_manifest``). ``abort()`` stops a transfer the caller
    gives up on.
    """

    def __init__(self, images_dir, spec, timeout=None, with_manifest=False):
        problems = validate(spec)
        if problems:
            raise TransferError(problems[0])
        self.images_dir = images_dir
        self.timeout = timeout
        self.target = "%s:%s/" % (spec["destination"], spec["path"].rstrip("/"))
        self.base = ["rsync", "--archive", "--rsh=%s" % " ".join(spec.get("rsh") or ["ssh"])]
        self.with_manifest = with_manifest
        self.argv = self.base + ([] if with_manifest else ["--exclude=/%s" % _manifest.MANIFEST_NAME]) + [
            "--exclude=/.ckpt-*", images_dir.rstrip("/") + "/", self.target]
        self._err = tempfile.TemporaryFile()
        self.t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._err,
                                         stderr=self._err)
        except OSError as exc:
            self._err.close()
            raise TransferError("cannot run rsync (%s); install rsync on the source host" % exc, argv=self.argv)

    def abort(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._err.close()

    def _wait_images(self):
        left = None if self.timeout is None else max(0.0, self.timeout - (time.monotonic() - self.t0))
        try:
            rc = self.proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            self.abort()
            raise TransferError("sending the checkpoint did not finish within %s s" % self.timeout,
                                argv=self.argv)
        self._err.seek(0)
        output = self._err.read().decode("utf-8", "replace")
        self._err.close()
        if rc != 0:
            raise _rsync_failed(self.target, rc, output, self.argv)

    def finish(self):
        """Wait for the images, then send the manifest (unless it went with
        them); return the timings, ``passes`` being the number of rsync runs."""
        self._wait_images()
        t1 = time.monotonic()
        if not self.with_manifest:
            _rsync(self.base + [os.path.join(self.images_dir, _manifest.MANIFEST_NAME), self.target], self.timeout)
        t2 = time.monotonic()
        return {"images": round(t1 - self.t0, 4), "manifest": round(t2 - t1, 4), "total": round(t2 - self.t0, 4),
                "destination": self.target, "passes": 1 if self.with_manifest else 2}
