# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters of the migrate role's decisions; the logic is in module_utils/_migrate_plan.py."""

from __future__ import annotations

from ansible_collections.ckpt.criu.plugins.module_utils import _migrate_plan


class FilterModule:
    """ckpt.criu.migrate_* and migrated_row."""

    def filters(self):
        return {
            "migrate_ssh_port": _migrate_plan.ssh_port,
            "migrate_address": _migrate_plan.dest_address,
            "migrate_service": _migrate_plan.service,
            "migrate_ssh_argv": _migrate_plan.ssh_argv,
            "migrate_key_ssh_argv": _migrate_plan.key_ssh_argv,
            "migrate_tls_san": _migrate_plan.tls_san,
            "migrate_host_dirname": _migrate_plan.host_dirname,
            "migrate_key_source": _migrate_plan.key_source,
            "migrate_key_left": _migrate_plan.key_left,
            "migrate_dir_refusal": _migrate_plan.dir_refusal,
            "migrate_tls_left": _migrate_plan.tls_left,
            "migrate_known_hosts": _migrate_plan.known_hosts,
            "migrate_authorized_key": _migrate_plan.authorized_key,
            "migrate_key_refusal": _migrate_plan.key_refusal,
            "migrate_lock_tables": _migrate_plan.lock_tables,
            "migrate_failure": _migrate_plan.failure,
            "migrate_skipped_rows": _migrate_plan.skipped_rows,
            "migrate_unattempted_rows": _migrate_plan.unattempted_rows,
            "migrated_row": _migrate_plan.migrated_row,
            "migrate_taken_over": _migrate_plan.taken_over,
            "migrate_rollback_row": _migrate_plan.rollback_row,
        }
