# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters of the preflight role's decisions; the logic is in module_utils/_preflight.py."""

from __future__ import annotations

from ansible_collections.ckpt.criu.plugins.module_utils import _preflight


class FilterModule:
    """ckpt.criu.preflight_selection, preflight_candidates, preflight_candidate_pids,
    preflight_unit_candidates, preflight_ps_state, preflight_taken_pids, preflight_tree_pids,
    preflight_destination_files, preflight_space_paths, preflight_space_need, preflight_net_problems,
    preflight_processes, preflight_rows, preflight_installed_criu."""

    def filters(self):
        return {
            "preflight_selection": _preflight.selection,
            "preflight_candidates": _preflight.candidates,
            "preflight_candidate_pids": _preflight.candidate_pids,
            "preflight_unit_candidates": _preflight.unit_candidates,
            "preflight_ps_state": _preflight.ps_state,
            "preflight_taken_pids": _preflight.taken_pids,
            "preflight_tree_pids": _preflight.tree_pids,
            "preflight_destination_files": _preflight.destination_files,
            "preflight_space_paths": _preflight.space_paths,
            "preflight_space_need": _preflight.space_need,
            "preflight_net_problems": _preflight.net_problems,
            "preflight_processes": _preflight.processes,
            "preflight_rows": _preflight.result_rows,
            "preflight_installed_criu": _preflight.installed_criu,
        }
