# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One module run for many processes.

A role that inspects every process of a host in a loop pays one module run
per process (about 0.2 s each: the transfer, a Python start, the imports).
The inspection modules therefore also take a list of PIDs and return
``per_pid``: one result per PID, in the order given, each what the module
returns for that PID alone plus ``item`` (the PID), as a loop's results
carry their item. A PID that fails does not fail the others: its entry
carries ``failed: true`` and ``msg`` (and the error's details), as a loop
item with ``failed_when: false`` would.
"""

from __future__ import annotations

from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError


def each(keys, one):
    """``one(key)`` for every key, in order, as ``per_pid`` entries (see the
    module docstring); a :class:`CkptError` is that key's failure."""
    out = []
    for key in keys:
        try:
            entry = dict(one(key))
        except CkptError as exc:
            entry = exc.to_fail_kwargs()
            entry["failed"] = True
        entry["item"] = key
        out.append(entry)
    return out
