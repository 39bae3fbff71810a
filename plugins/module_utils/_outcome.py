# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The result rows of the checkpoint and restore roles, from what their
modules returned: one row per process (checkpoint) or per images directory
(restore), built with ``_report.result_row``. ``plugins/filter/outcome.py``
exposes these functions to the roles.
"""

from __future__ import annotations

import posixpath

from ansible_collections.ckpt.criu.plugins.module_utils._report import as_list, result_row, seconds


def _message(result):
    result = result or {}
    return str(result.get("msg", "unknown error")).strip()


def checkpoint_skipped_rows(processes, existing, host, images_root):
    """The rows of the processes not checkpointed in this run: refused by
    preflight, absent, or absent with a complete checkpoint left
    (``existing``: the loop results of a stat of each one's manifest)."""
    done = [(r.get("item") or {}).get("pid") for r in existing or []
            if (r.get("stat") or {}).get("exists")]
    rows = []
    for proc in processes or []:
        if proc.get("present") and not proc.get("refused"):
            continue
        ok = proc.get("pid") in done
        causes = [] if ok else list(proc.get("causes") or [])
        rows.append(result_row(
            proc, "checkpoint", host,
            "checkpointed already" if ok else ("refused" if proc.get("present") else "absent"), ok,
            causes=causes, images_dir="%s/pid-%s" % (images_root, proc.get("pid")) if ok else None))
    return rows


def checkpoint_row(dump, proc, host, mode, check_mode=False):
    """The row of a process the dump module checkpointed (or, in check
    mode, would checkpoint)."""
    dump = dump or {}
    changed = bool(dump.get("changed"))
    if check_mode:
        result = "would checkpoint"
    else:
        result = "checkpointed" if changed else "checkpointed already"
    return result_row(proc, "checkpoint", host, result, True, changed=changed, mode=mode,
                      frozen_s=(dump.get("timings") or {}).get("frozen_time"), image_bytes=dump.get("image_bytes"),
                      images_dir=dump.get("images_dir"), manifest_path=dump.get("manifest_path"))


def checkpoint_failed_row(failed, proc, host, mode, images_root, resume=None):
    """The row of a process whose checkpoint failed; ``resume``: the result
    of making it run again, named when that failed too."""
    cause = _message(failed)
    if (resume or {}).get("failed"):
        cause = "%s; the process could not be made to run: %s" % (cause, resume.get("msg", ""))
    return result_row(proc, "checkpoint", host, "failed", False, mode=mode, causes=[cause],
                      images_dir="%s/pid-%s" % (images_root, (proc or {}).get("pid")),
                      log_path=(failed or {}).get("log_path"))


def restore_dirs(images_dirs, found=None):
    """The images directories to restore: ``ckpt_restore_images_dirs`` (a
    list or a comma-separated string) when given, else the directories of
    the manifests found, sorted."""
    dirs = as_list(images_dirs)
    if dirs:
        return dirs
    return sorted(posixpath.dirname(str(f["path"])) for f in found or [])


def images_bytes(files, images_dir):
    """The bytes of the image files (find results) in ``images_dir``."""
    prefix = str(images_dir) + "/"
    return sum(int(f.get("size") or 0) for f in files or [] if str(f.get("path", "")).startswith(prefix))


def restore_row(run, host, images_dir, image_bytes, check_mode=False):
    """The row of an images directory the restore module restored (or found
    running already, or in check mode would restore)."""
    run = run or {}
    changed = bool(run.get("changed"))
    if check_mode:
        result = "would restore"
    elif changed:
        unit = run.get("unit")
        result = "restored" + (" under unit %s" % unit.get("name") if isinstance(unit, dict) else "")
    else:
        result = "running already"
    return result_row({"pid": run.get("pid"), "selector": "images " + str(images_dir)}, "restore", host, result, True,
                      changed=changed, image_bytes=int(image_bytes or 0),
                      restore_s=seconds((run.get("timings") or {}).get("criu_duration")), images_dir=images_dir)


def restore_failed_row(failed, host, images_dir, image_bytes):
    """The row of an images directory whose restore failed: ``fresh copy
    running`` when a fresh copy of a unit runs instead, else ``failed``."""
    failed = failed or {}
    cause = _message(failed)
    return result_row({"pid": failed.get("pid"), "selector": "images " + str(images_dir)}, "restore", host,
                      "fresh copy running" if failed.get("fresh_copy") else "failed", False,
                      image_bytes=int(image_bytes or 0), cause=cause, causes=[cause] + list(failed.get("problems") or []),
                      images_dir=images_dir, log_path=failed.get("log_path"))


def restore_failures(rows):
    """Why the host fails: ``<images dir> <result>: <cause>`` for every row
    that is not ok, each followed by a space."""
    return "".join("%s %s: %s " % (r.get("images_dir"), r.get("result"), r.get("cause"))
                   for r in rows or [] if not r.get("ok"))
