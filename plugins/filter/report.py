# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters over the roles' result rows; the logic is in module_utils/_report.py."""

from __future__ import annotations

from ansible_collections.ckpt.criu.plugins.module_utils import _report


class FilterModule:
    """ckpt.criu.seconds, process_label, failures, batch_stop, as_list, result_row, fleet_report,
    summary_lines, report_basename, report_files, outcome_line."""

    def filters(self):
        return {
            "seconds": _report.seconds,
            "process_label": _report.process_label,
            "failures": _report.failures,
            "batch_stop": _report.batch_stop,
            "as_list": _report.as_list,
            "result_row": _report.result_row,
            "fleet_report": _report.fleet_report,
            "summary_lines": _report.summary_lines,
            "report_basename": _report.report_basename,
            "report_files": _report.report_files,
            "outcome_line": _report.outcome_line,
        }
