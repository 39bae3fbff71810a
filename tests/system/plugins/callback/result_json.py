# Test-only callback: appends every task result as one JSON line to the file
# named by CKPT_RESULT_FILE, so pytest can assert on real module results.
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: result_json
type: aggregate
short_description: write task results as JSON lines (ckpt.criu tests only)
description: Appends each task result to the file named by E(CKPT_RESULT_FILE).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "result_json"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, status):
        path = os.environ.get("CKPT_RESULT_FILE")
        if not path:
            return
        data = dict(result._result)
        data.pop("_ansible_no_log", None)
        rec = {"host": result._host.get_name(), "task": result._task.get_name(),
               "status": status, "result": data}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")

    def v2_runner_on_ok(self, result):
        self._write(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._write(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self._write(result, "skipped")
