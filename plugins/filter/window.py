# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters of the playbooks' guards; the logic is in module_utils/_window.py."""

from __future__ import annotations

from ansible_collections.ckpt.criu.plugins.module_utils import _window


class FilterModule:
    """ckpt.criu.window_verdict, batch_verdict, reboot_argv."""

    def filters(self):
        return {
            "window_verdict": _window.window_verdict,
            "batch_verdict": _window.batch_verdict,
            "reboot_argv": _window.reboot_argv,
        }
