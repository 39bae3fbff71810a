# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Write the fleet report's files on the controller, in this process.

The report is rendered on the controller already (filters, template lookups);
writing it there needs no module run, where the copy and template actions paid
one or two each (stat, then copy), about 0.6 s apiece on a loaded controller.
"""

from __future__ import annotations

import contextlib
import os
import secrets

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.ckpt.criu.plugins.module_utils import _safedir

ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    files=dict(type="dict", required=True),
)


def write_files(path, files):
    """Write each of FILES (plain name -> text, given a last newline if it lacks one) in PATH, a directory of this
    user's (created 0700 with missing parents), each file 0600 and replaced
    atomically: written under a random name in the held directory, then renamed
    over the old one (a symlink planted there is replaced, never followed).
    Raises UntrustedDirError or OSError."""
    for name in files:
        if not _safedir.plain_name(name) or name.startswith("."):
            raise _safedir.UntrustedDirError("%r is not a plain file name for a report file" % (name,))
    with _safedir.hold(path, create=True, owner=os.geteuid(), what="report directory") as held:
        os.chmod(held.fd, 0o700)
        for name, text in sorted(files.items()):
            tmp = ".%s.%s" % (name, secrets.token_hex(8))
            fd = held.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text if text.endswith("\n") else text + "\n")
                os.rename(tmp, name, src_dir_fd=held.fd, dst_dir_fd=held.fd)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=held.fd)
                raise


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("ckpt.criu.report_files: %s" % "; ".join(validation.error_messages))
        args = validation.validated_parameters
        path = os.path.normpath(args["path"])
        files = dict((str(k), str(v)) for k, v in args["files"].items())
        result["path"] = path
        result["files"] = [os.path.join(path, name) for name in sorted(files)]
        if self._task.check_mode:
            result["changed"] = bool(files)
            return result
        try:
            write_files(path, files)
        except _safedir.UntrustedDirError as exc:
            raise AnsibleActionFail("cannot write the report: %s" % exc.msg)
        except OSError as exc:
            raise AnsibleActionFail("cannot write the report in %s on the controller: %s; free space there or "
                                    "set ckpt_report_dir to a writable directory" % (path, exc.strerror or exc))
        result["changed"] = bool(files)
        return result
