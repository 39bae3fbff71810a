# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark-only callback: one JSON line per task and host with wall-clock
start and end (time.time(), the same clock the workload's heartbeat uses), and
the timing fields of the result. The file is named by E(CKPT_BENCH_TIMING_FILE)."""
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_timing
type: aggregate
short_description: task start/end timestamps as JSON lines (ckpt.criu benchmarks only)
description: Appends, per task and host, the start and end time and the result's timing fields to E(CKPT_BENCH_TIMING_FILE).
"""

# Result keys worth keeping: module timings and the command module's own clock.
KEEP = ("timings", "delta", "start", "end", "image_bytes", "changed", "failed", "skipped", "msg", "pid", "port")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._starts = {}
        self._task_start = {}

    def _path(self):
        return os.environ.get("CKPT_BENCH_TIMING_FILE")

    def _emit(self, rec):
        path = self._path()
        if not path:
            return
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_start[task._uuid] = time.time()

    def v2_playbook_on_handler_task_start(self, task):
        self._task_start[task._uuid] = time.time()

    def v2_runner_on_start(self, host, task):
        self._starts[(host.get_name(), task._uuid)] = time.time()

    def _done(self, result, status):
        now = time.time()
        host = result._host.get_name()
        task = result._task
        key = (host, task._uuid)
        start = self._starts.pop(key, None)
        if start is None:
            start = self._task_start.get(task._uuid, now)
        data = result._result if isinstance(result._result, dict) else {}
        kept = {}
        for k in KEEP:
            if k in data:
                v = data[k]
                kept[k] = v[:300] if isinstance(v, str) else v
        self._emit({"host": host, "task": task.get_name(), "action": task.action, "status": status,
                    "async": bool(getattr(task, "async_val", 0)),
                    "task_start": self._task_start.get(task._uuid), "start": start, "end": now,
                    "result": kept})

    def v2_runner_on_ok(self, result):
        self._done(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._done(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._done(result, "unreachable")
