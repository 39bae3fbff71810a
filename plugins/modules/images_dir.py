#!/usr/bin/python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: images_dir
short_description: Check an images directory against the trust rule, and create it only then
version_added: 0.1.0
description:
  - Checkpoint images are a process's whole memory, restored as root. A directory for them
    is trusted only when every component of its path, from C(/) down, is a real directory
    (no symlink) owned by root; every directory above it is writable only by root or is
    sticky; and the directory itself is owned by root and writable by no group or other.
  - The module applies that rule before anything is created or changed. A directory that
    breaks it (a 1777 directory, one owned by another user, a path through a symlink) is
    refused with the reason and left exactly as it was; it is never chmod-ed or chown-ed
    into shape.
  - With O(state=present), missing components are created with mode 0700, each relative to
    the directory above it, never through a symlink.
  - With O(state=fresh), the directory is made anew and empty, for one use. Whatever is at O(path)
    (an earlier attempt's directory, a file or a symlink) is removed first, never followed; the
    rule is checked on the parent (created like with V(present) when missing) before anything is
    removed.
  - With O(fresh), the directory is checked (and created) as with V(present), then each of the
    named directories directly under it is made afresh, in the directory held open, as with
    V(fresh), in one run for the images directories of many processes.
  - M(ckpt.criu.dump), M(ckpt.criu.restore) and M(ckpt.criu.page_server) apply the same rule
    themselves; the roles call this module first for their images roots.
extends_documentation_fragment:
  - ckpt.criu.attributes
  - ckpt.criu.attributes.ACTION
attributes:
  check_mode:
    details:
      - Checks the rule and predicts RV(ignore:changed); creates and removes nothing.
  idempotent:
    details:
      - V(fresh) and O(fresh) are not, by design (they empty the directories each time); V(present) and
        V(checked) are.
options:
  path:
    description:
      - Absolute path of the directory.
    type: path
    required: true
  state:
    description:
      - V(present) checks the rule and creates what is missing (0700).
      - V(checked) only checks; a missing directory is then an error.
      - V(fresh) removes what is at O(path) and creates it empty (0700); always RV(ignore:changed).
    type: str
    choices: [present, checked, fresh]
    default: present
  fresh:
    description:
      - Names of directories directly under O(path) (plain names, no C(/)) to make afresh, after
        O(path) itself was checked and, when missing, created. Whatever is at each name is removed
        first, never followed, and an empty 0700 directory made in its place.
      - A name that cannot be made afresh does not stop the others; the module then fails, naming
        each in RV(fresh_failed). Needs O(state=present); always RV(ignore:changed).
    type: list
    elements: str
    default: []
  subdirs:
    description:
      - Names of directories directly under O(path) (plain names, no C(/)) that are checked against the rule
        and created (0700) when missing, after O(path) itself, and never emptied (say the records of the
        migrations kept beside the images directories). One that breaks the rule fails the module before any
        of O(fresh) is touched. Needs O(state=present).
    type: list
    elements: str
    default: []
    version_added: 0.2.0
notes:
  - Must run as root on the managed node.
seealso:
  - module: ckpt.criu.dump
  - module: ckpt.criu.restore
"""

EXAMPLES = r"""
- name: Create the images root, refusing one that others can write
  ckpt.criu.images_dir:
    path: /var/lib/ckpt/checkpoint

- name: Empty the images directories of two processes, one run
  ckpt.criu.images_dir:
    path: /var/lib/ckpt/migrate
    fresh: [pid-4242, pid-4343]
"""

RETURN = r"""
path:
  description: The normalised path.
  returned: always
  type: str
  sample: /var/lib/ckpt/checkpoint
created:
  description: How many missing path components were (or, in check mode, would be) created; with V(fresh),
    the directory itself counts; each of O(subdirs) that was missing counts.
  returned: success
  type: int
  sample: 1
fresh:
  description: The names under O(path) made (or, in check mode, to be made) afresh.
  returned: success, and on failure once O(path) was held
  type: list
  elements: str
  sample: [pid-4242, pid-4343]
fresh_failed:
  description: Each name of O(fresh) that could not be made afresh, with the reason.
  returned: failure, when a name failed
  type: dict
  sample: {pid-4343: "cannot make /var/lib/ckpt/migrate/pid-4343 afresh - Device or resource busy"}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ckpt.criu.plugins.module_utils import _safedir
from ansible_collections.ckpt.criu.plugins.module_utils._errors import fail


def _fresh(module, path):
    try:
        missing = _safedir.check(os.path.dirname(path))
        if not module.check_mode:
            _safedir.fresh_dir(path).close()
    except _safedir.UntrustedDirError as exc:
        fail(module, _safedir.UntrustedDirError("%s; nothing was changed" % exc.msg, **exc.details), path=path)
    except OSError as exc:
        module.fail_json(msg="cannot make %s afresh: %s" % (path, exc.strerror or exc), path=path)
    module.exit_json(changed=True, path=path, created=missing + 1)


def _hold(module, path):
    """PATH held after the trust rule, missing components created (0700); the module fails otherwise."""
    try:
        return _safedir.hold(path, create=True)
    except _safedir.UntrustedDirError as exc:
        fail(module, _safedir.UntrustedDirError("%s; nothing more was changed" % exc.msg, **exc.details), path=path)
    except OSError as exc:
        module.fail_json(msg="cannot create %s: %s" % (path, exc.strerror or exc), path=path)


def _fresh_entries(module, path, names, missing):
    """Each of NAMES under PATH (checked already: ``missing`` components) made afresh."""
    if module.check_mode:
        module.exit_json(changed=True, path=path, created=missing, fresh=names)
    made, failed = [], {}
    with _hold(module, path) as held:
        for name in names:
            try:
                _safedir.fresh_entry(held, name)
                made.append(name)
            except _safedir.UntrustedDirError as exc:
                failed[name] = "cannot make %s/%s afresh: %s" % (path, name, exc.msg)
            except OSError as exc:
                failed[name] = "cannot make %s/%s afresh: %s" % (path, name, exc.strerror or exc)
    if failed:
        module.fail_json(msg="; ".join(failed[n] for n in names if n in failed), path=path, created=missing,
                         fresh=made, fresh_failed=failed)
    module.exit_json(changed=True, path=path, created=missing, fresh=made)


def _subdirs(module, path, names, missing):
    """Each of NAMES under PATH checked against the rule and, unless in check mode, created; how many
    components were missing (PATH's ``missing``, then one for each name missing under it)."""
    created = missing
    for name in names:
        try:
            created += _safedir.check(os.path.join(path, name)) - missing
        except _safedir.UntrustedDirError as exc:
            fail(module, _safedir.UntrustedDirError("%s; nothing was changed" % exc.msg, **exc.details), path=path)
    for name in names if not module.check_mode else []:
        _hold(module, os.path.join(path, name)).close()
    return created


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "checked", "fresh"], default="present"),
            fresh=dict(type="list", elements="str", default=[]),
            subdirs=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    path = _safedir.root_module_path(module, "images_dir")
    names = module.params["fresh"]
    subdirs = module.params["subdirs"]
    for option, given in (("fresh", names), ("subdirs", subdirs)):
        if not given:
            continue
        if module.params["state"] != "present":
            module.fail_json(msg="%s needs state=present (got state=%s)" % (option, module.params["state"]), path=path)
        bad = [n for n in given if not _safedir.plain_name(n)]
        if bad or len(set(given)) != len(given):
            module.fail_json(msg="%s takes distinct plain names of directories under %s, got %s; nothing was "
                             "changed" % (option, path, ", ".join(repr(n) for n in (bad or given))), path=path)
    if set(names) & set(subdirs):
        module.fail_json(msg="%s cannot be both made afresh (fresh) and kept (subdirs); nothing was changed"
                         % ", ".join(sorted(set(names) & set(subdirs))), path=path)
    if module.params["state"] == "fresh":
        _fresh(module, path)
    try:
        missing = _safedir.check(path)
    except _safedir.UntrustedDirError as exc:
        fail(module, _safedir.UntrustedDirError("%s; nothing was changed" % exc.msg, **exc.details), path=path)
    if missing and module.params["state"] == "checked":
        module.fail_json(msg="images directory %s does not exist" % path, path=path)
    if subdirs:
        missing = _subdirs(module, path, subdirs, missing)
    if names:
        _fresh_entries(module, path, names, missing)
    if missing and not module.check_mode:
        _hold(module, path).close()
    module.exit_json(changed=bool(missing), path=path, created=missing)


if __name__ == "__main__":
    main()
