# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters building the checkpoint and restore roles' result rows; the logic is in module_utils/_outcome.py."""

from __future__ import annotations

from ansible_collections.ckpt.criu.plugins.module_utils import _outcome


class FilterModule:
    """ckpt.criu.checkpoint_*, restore_* and images_bytes."""

    def filters(self):
        return {
            "checkpoint_skipped_rows": _outcome.checkpoint_skipped_rows,
            "checkpoint_row": _outcome.checkpoint_row,
            "checkpoint_failed_row": _outcome.checkpoint_failed_row,
            "restore_dirs": _outcome.restore_dirs,
            "images_bytes": _outcome.images_bytes,
            "restore_row": _outcome.restore_row,
            "restore_failed_row": _outcome.restore_failed_row,
            "restore_failures": _outcome.restore_failures,
        }
