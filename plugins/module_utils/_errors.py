# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one error base of the collection.

Every error a module_utils file raises derives from :class:`CkptError`: ``msg``
is one sentence for a person (what is wrong, what to do), ``details`` the
result keys that go with it. A module maps every one of them the same way,
with :func:`fail`, so no detail is dropped on the way to the result.
"""

from __future__ import annotations


class CkptError(Exception):
    """A refusal or failure: ``msg`` for a person, ``details`` for the result."""

    def __init__(self, msg, **details):
        super(CkptError, self).__init__(msg)
        self.msg = msg
        self.details = dict((k, v) for k, v in details.items() if v is not None)

    def to_fail_kwargs(self):
        """Keyword arguments for ``module.fail_json``: the details, then ``msg``."""
        kw = dict(self.details)
        kw["msg"] = self.msg
        return kw


def fail(module, exc, shown=None, **extra):
    """``module.fail_json`` for a CkptError: its details, ``extra`` where it has none, its msg.

    ``shown``, when given, maps those keyword arguments to what the result may show (a module
    that hides command lines passes its filter)."""
    kw = dict(extra)
    kw.update(exc.to_fail_kwargs())
    module.fail_json(**(shown(kw) if shown is not None else kw))


def run_job(module, job):
    """Exit ``module`` with what ``job(params, warn)`` returns: failed when the
    result says so (its ``msg`` then says why), mapped by :func:`fail` when
    the job raises a CkptError."""
    try:
        result = job(module.params, module.warn)
    except CkptError as exc:
        fail(module, exc, changed=False)
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)
