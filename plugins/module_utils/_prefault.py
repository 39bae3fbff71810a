# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Warm memory for a restore that waits for its checkpoint (``ckpt.criu.restore`` with ``prefault``)."""

from __future__ import annotations

import threading
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _procfs


class Prefault(object):
    """Touch memory in a thread while the restore waits for its checkpoint; free it as the
    checkpoint arrives and just before criu.

    On a virtual machine whose balloon reports free pages to the hypervisor, memory the
    guest freed more than about 2 s ago must be faulted in by the hypervisor again on its
    next use: a restore of 1 GiB then spends 1.3-2.5 s more in criu's read of the pages
    (measured with benchmarks/first_touch.py). A migration keeps its source frozen until
    the restore is verified, so its restore cannot reuse the source's pages the way a
    kill-then-restore does. Pages touched here and freed right before they are needed
    are warm when they are taken.

    Twice ``nbytes`` is touched (at most half of MemAvailable): the images that arrive
    need about as much page cache as the process needs memory. arrival() frees all but
    ``nbytes`` for the images; release() frees the rest right before criu, and stops at
    once. ``on_done(self)`` runs in the thread when the touching has finished first.
    """

    CHUNK = 8 << 20

    def __init__(self, nbytes, proc_root=_procfs.PROC, on_done=None):
        self.requested = int(nbytes)
        self._on_done = on_done
        self.limit = max(0, min(2 * self.requested, _procfs.mem_available(proc_root) // 2))
        self.touched = 0
        self.freed_at_arrival = 0
        self._chunks = []
        self._stop = threading.Event()
        self._info = None
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="ckpt-prefault")
        self._thread.daemon = True
        self._thread.start()

    def _run(self):
        while self.touched < self.limit and not self._stop.is_set():
            n = min(self.CHUNK, self.limit - self.touched)
            chunk = bytearray(n)
            chunk[::4096] = b"\1" * len(range(0, n, 4096))
            self._chunks.append(chunk)
            self.touched += n
        if self._on_done is not None and not self._stop.is_set():
            self._on_done(self)

    def arrival(self):
        """The first images arrive: stop touching, keep at most ``nbytes`` for criu restore."""
        self._stop.set()
        self._thread.join()
        held = self.touched - self.freed_at_arrival
        while self._chunks and held > self.requested:
            n = len(self._chunks.pop())
            held -= n
            self.freed_at_arrival += n

    def release(self):
        """Stop touching, free everything touched; return what was done (idempotent)."""
        if self._info is None:
            self._stop.set()
            self._thread.join()
            del self._chunks[:]
            self._info = {"requested_bytes": self.requested, "limit_bytes": self.limit,
                          "touched_bytes": self.touched, "freed_at_arrival_bytes": self.freed_at_arrival,
                          "seconds": round(time.monotonic() - self._t0, 4)}
        return self._info
