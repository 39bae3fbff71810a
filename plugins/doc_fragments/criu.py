# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment(object):

    # Options shared by every module that runs criu.
    DOCUMENTATION = r"""
options:
  criu_path:
    description:
      - Path of the C(criu) executable to use.
      - When not set, C(criu) is looked up on E(PATH), then in V(/opt/ckpt-criu/bin/criu)
        (where this collection's installer puts Debian 13's CRIU on Debian 12).
    type: path
requirements:
  - CRIU 4.1 or newer on the managed node.
  - Root on the managed node (C(become)).
notes:
  - Every criu run uses C(-o <log> -v4) and keeps criu's own stdin on C(/dev/null)
    and stdout/stderr on pipes, so criu never inherits a closed or redirected
    stdio from the process that started Ansible.
"""

    # For modules whose results name processes (see docs/security.md).
    CMDLINE = r"""
options:
  include_cmdline:
    description:
      - Return full command lines. By default a command line in the result keeps only the program
        (its first word) plus C(cmdline_sha256) and C(cmdline_args) (how many arguments were left
        out), since arguments often carry secrets such as C(--db-password=...).
    type: bool
    default: false
"""
