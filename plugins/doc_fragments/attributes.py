# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment(object):

    # Standard documentation fragment, used by every module of the collection (it also names the author).
    DOCUMENTATION = r"""
options: {}
author:
  - ckpt.criu contributors (@ckpt-criu)
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
"""

    PLATFORM = r"""
options: {}
attributes:
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
"""

    # Should be used together with the standard fragment
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
"""

    # For modules that make credentials for one use: new ones on every run.
    ONE_USE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - Checks the trust rule on the parent of O(path) and predicts RV(ignore:changed); makes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - What it makes is for one use (one transfer, one migration); every run makes it anew.
"""

    # For modules that change state, with check mode and no diff; the module adds check_mode's details.
    ACTION = r"""
options: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
"""
