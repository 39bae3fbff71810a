#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: report_files
short_description: Write the fleet report's files on the controller
version_added: 0.2.0
description:
  - Writes each of O(files) in the directory O(path) B(on the controller), in the controller's own process (an
    action plugin; no module runs on any host, whatever host the task is delegated to).
  - O(path) must be the controller user's own directory, writable by no one else, and every directory above it
    owned by root or that user and writable by no one else unless sticky (C(/tmp), C(/var/tmp)); no component may be a symlink.
    Missing directories are created 0700; O(path) is set to 0700.
  - Each file is written 0600 under a random name in O(path), then renamed over the old one, so a reader sees the
    old report or the new one, never half of one, and a symlink planted under the file's name is replaced, never
    followed.
  - The ckpt.criu.report role writes its JSON, Markdown and HTML files with it.
extends_documentation_fragment:
  - ckpt.criu.attributes
attributes:
  check_mode:
    support: full
    details:
      - Writes nothing; RV(ignore:changed) is true when there are files to write.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Writes the files on every run (a report carries the time it was made).
  action:
    support: full
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
options:
  path:
    description:
      - The directory on the controller.
    type: path
    required: true
  files:
    description:
      - Plain file name (no C(/), not starting with C(.)) to the text it holds, UTF-8 (given a last newline if it lacks one).
    type: dict
    required: true
seealso:
  - module: ckpt.criu.images_dir
"""

EXAMPLES = r"""
- name: Write the report files
  ckpt.criu.report_files:
    path: /var/tmp/ckpt-reports
    files:
      migrate-42.json: "{{ ckpt_report | to_nice_json }}"
      migrate-42.md: "{{ lookup('ansible.builtin.template', 'report.md.j2') }}"
  delegate_to: localhost
"""

RETURN = r"""
path:
  description: The normalised directory.
  returned: always
  type: str
  sample: /var/tmp/ckpt-reports
files:
  description: The files written (in check mode, those that would be).
  returned: always
  type: list
  elements: str
  sample: [/var/tmp/ckpt-reports/migrate-42.json]
"""
