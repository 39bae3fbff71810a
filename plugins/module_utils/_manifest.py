# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The checkpoint manifest: ``<images_dir>/ckpt-manifest.json`` (schema 1).

Its presence means "this dump completed": :func:`write_manifest` writes it
last, atomically (temp file in the same directory, fsync, rename, fsync of the
directory), mode 0600.  The schema is documented in ``docs/dev/manifest.md``.

Besides the manifest, an images directory may hold files that belong to this
collection and are never images:

* ``ckpt-failed.json`` -- the marker of a failed dump (cause + the files that
  attempt left behind); a later dump clears such an attempt by itself;
* ``ckpt-restore.json`` -- the restore record written by ``ckpt.criu.restore``;
* ``.ckpt-lock`` -- the lock file two concurrent dumps contend for;
* ``*.log`` -- criu's logs; ``.ckpt-*`` -- temporary files and work dirs.

:func:`inspect_dir` says what a directory holds (absent, empty, a complete
checkpoint, our own failed attempt, or foreign content) so the dump module can
decide between "nothing to do", "go ahead" and "refuse unless force".
"""

from __future__ import annotations

import datetime
import errno
import fnmatch
import json
import os
import socket
import stat
import tempfile

from ansible_collections.ckpt.criu.plugins.module_utils import _checksum
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

SCHEMA = 1
MANIFEST_NAME = "ckpt-manifest.json"
FAILED_NAME = "ckpt-failed.json"
RESTORE_RECORD_NAME = "ckpt-restore.json"
LOCK_NAME = ".ckpt-lock"
# The record of a page server receiving into the directory (_page_server).
PAGE_SERVER_RECORD_NAME = ".ckpt-page-server.json"
DUMP_LOG_NAME = "dump.log"
PRIVATE_PREFIX = ".ckpt-"

IDENTITY_KEYS = ("boot_id", "pid", "start_time")

# Top-level keys a complete schema-1 manifest must carry, with their types.
REQUIRED = (
    ("schema", int),
    ("complete", bool),
    ("created", str),
    ("host", dict),
    ("criu", dict),
    ("process", dict),
    ("tree", list),
    ("options", dict),
    ("fds", dict),
    ("stdio", dict),
    ("stdio_files", list),
    ("binaries", dict),
    ("images", list),
    ("images_total_bytes", int),
)


class ManifestError(CkptError):
    """The manifest is missing, unreadable or not a valid schema-1 manifest."""


# ------------------------------------------------------------------ naming

def manifest_path(images_dir):
    return os.path.join(images_dir, MANIFEST_NAME)


def failed_path(images_dir):
    return os.path.join(images_dir, FAILED_NAME)


def lock_path(images_dir):
    return os.path.join(images_dir, LOCK_NAME)


def is_own_file(name):
    """True for files of this collection that are not criu images."""
    return (name in (MANIFEST_NAME, FAILED_NAME, RESTORE_RECORD_NAME, LOCK_NAME)
            or name.startswith(PRIVATE_PREFIX) or name.endswith(".log"))


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- identity

def _read_text(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except (IOError, OSError):
        return None


def host_identity(proc_root="/proc", etc_root="/etc"):
    """{hostname, boot_id, kernel, machine_id} of this host."""
    return {
        "hostname": socket.gethostname(),
        "boot_id": _read_text(os.path.join(proc_root, "sys/kernel/random/boot_id")),
        "kernel": os.uname().release,
        "machine_id": _read_text(os.path.join(etc_root, "machine-id")),
    }


def same_process(a, b):
    """True when two identities (dicts with boot_id, pid, start_time) name one process."""
    if not a or not b:
        return False
    return all(a.get(k) is not None and a.get(k) == b.get(k) for k in IDENTITY_KEYS)


# ------------------------------------------------------------------ images

def list_images(images_dir):
    """Relative names of every image file under images_dir (sorted).

    Everything criu wrote counts (``*.img``, ``stats-dump``, ...), in
    subdirectories too (pre-dump generations), except this collection's own
    files (:func:`is_own_file`).  Symlinks are never followed.
    """
    out = []
    for root, dirs, files in os.walk(images_dir):
        dirs[:] = sorted(d for d in dirs if not is_own_file(d)
                         and not os.path.islink(os.path.join(root, d)))
        rel_root = os.path.relpath(root, images_dir)
        for name in files:
            if root == images_dir and is_own_file(name):
                continue
            if name.startswith(PRIVATE_PREFIX):
                continue
            path = os.path.join(root, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            out.append(name if rel_root == "." else os.path.join(rel_root, name))
    return sorted(out)


def image_records(images_dir, remote=None):
    """[{name, size, sha256}] for every image file, plus {name, remote: true}
    for each name in ``remote`` (files a page server wrote elsewhere)."""
    records = []
    local = list_images(images_dir)
    for name in local:
        path = os.path.join(images_dir, name)
        records.append({"name": name, "size": os.lstat(path).st_size, "sha256": _checksum.sha256_file(path)})
    for name in sorted(set(remote or ()) - set(local)):
        records.append({"name": name, "remote": True})
    return records


def images_total_bytes(records):
    return sum(r.get("size") or 0 for r in records)


def checkpoint_bytes(manifest):
    """How large the checkpoint is: the image files here plus, with a page
    server, the pages it received (``remote_pages.bytes``: criu's
    ``pages_written`` times the page size), which are not in images_dir."""
    remote = (manifest.get("remote_pages") or {}).get("bytes") or 0
    return int(manifest.get("images_total_bytes") or 0) + int(remote)


def hash_arrived(images_dir, known, skip=()):
    """Hash one image that has arrived complete and is not in ``known`` yet.

    A restore waiting for its checkpoint calls this between its looks for the
    manifest, so that the images are verified while they arrive rather than
    after. rsync gives a file its name only once it is whole (it writes a
    dot-named temporary file and renames it), so a named image is complete;
    names matching a pattern in ``skip`` (a page server's pages, written in
    place) are left alone. ``known`` maps a name to (stat key, sha256);
    :func:`verify_images` uses an entry only while the file still has that
    stat key, so a file changed later is hashed again. Returns the name
    hashed, or None when there was nothing to hash.
    """
    try:
        names = list_images(images_dir)
    except OSError:
        return None
    for name in names:
        base = os.path.basename(name)
        if base.startswith(".") or any(fnmatch.fnmatch(base, pat) for pat in skip):
            continue
        path = os.path.join(images_dir, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if _known_sha256(known, name, st) is not None:
            continue
        got = _checksum.sha256_unchanged(path)
        if got is None:
            continue
        known[name] = (got[1], got[0])
        return name
    return None


def images_to_come(manifest, images_dir):
    """Names of the local images ``manifest`` lists that are not in
    images_dir yet with their recorded size: still on their way when the
    manifest was sent in the same rsync as the images (rsync names a file
    only once it is whole). Images a page server received are not waited for."""
    waiting = []
    for img in manifest.get("images") or []:
        if not isinstance(img, dict) or img.get("remote") or not img.get("name"):
            continue
        try:
            st = os.lstat(os.path.join(images_dir, img["name"]))
        except (OSError, TypeError, ValueError):
            waiting.append(img["name"])
            continue
        if img.get("size") is not None and st.st_size != img["size"]:
            waiting.append(img["name"])
    return waiting


def _known_sha256(known, name, st):
    """The sha256 ``known`` has for ``name`` while the file (``st`` its lstat) is unchanged, else None."""
    entry = known.get(name)
    if entry is not None and entry[0] == _checksum.stat_key(st):
        return entry[1]
    return None


def verify_images(manifest, images_dir, check_remote=False, extra=True, known=None):
    """Problems (sentences) with the images of ``manifest`` in images_dir; [] when they verify.

    Every recorded image must exist as a regular file with its size and
    sha256.  ``remote`` images (sent to a page server) are only required when
    ``check_remote`` (on the host that received them), and have no checksum.
    With ``extra``, an ``*.img`` file the manifest does not list is a problem
    too (left over from another dump, it would be restored with these).
    ``known`` (from :func:`hash_arrived`) saves hashing a file again that has
    not changed since it was hashed.
    """
    known = known or {}
    problems = []
    listed = set()
    for img in manifest.get("images") or []:
        name = img.get("name") if isinstance(img, dict) else None
        if not name or os.path.isabs(name) or ".." in name.split(os.sep):
            problems.append("the manifest lists an invalid image name %r" % (name,))
            continue
        listed.add(name)
        path = os.path.join(images_dir, name)
        try:
            st = os.lstat(path)
        except OSError:
            if img.get("remote") and not check_remote:
                continue
            problems.append("image %s is missing" % name)
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append("image %s is not a regular file" % name)
            continue
        if img.get("remote"):
            continue
        if img.get("size") is not None and st.st_size != img["size"]:
            problems.append("image %s has %d bytes, the manifest says %d (truncated or altered)"
                            % (name, st.st_size, img["size"]))
            continue
        if not img.get("sha256"):
            problems.append("image %s has no recorded sha256" % name)
        elif (_known_sha256(known, name, st) or _checksum.sha256_file(path)) != img["sha256"]:
            problems.append("image %s does not match its recorded sha256 (corrupted or altered)" % name)
    # A page server names its pages file itself (pages-<N>.img): the manifest
    # records only the pattern.
    remote_pattern = (manifest.get("remote_pages") or {}).get("pattern") if check_remote else None
    if extra and os.path.isdir(images_dir):
        for name in list_images(images_dir):
            if remote_pattern and fnmatch.fnmatch(name, remote_pattern):
                continue
            if name.endswith(".img") and name not in listed:
                problems.append("image %s is not listed in the manifest (left over from another dump?)"
                                % name)
    return problems


# ------------------------------------------------------------ read / write

def validate(manifest):
    """Problems (sentences) with the structure of a manifest; [] when valid."""
    if not isinstance(manifest, dict):
        return ["the manifest is not a JSON object"]
    problems = []
    for key, typ in REQUIRED:
        if key not in manifest:
            problems.append("the manifest has no %r" % key)
        elif not isinstance(manifest[key], typ) or (typ is int and isinstance(manifest[key], bool)):
            problems.append("the manifest's %r is not a %s" % (key, typ.__name__))
    if problems:
        return problems
    if manifest["schema"] != SCHEMA:
        problems.append("the manifest has schema %r; this collection reads schema %d"
                        % (manifest["schema"], SCHEMA))
    if manifest["complete"] is not True:
        problems.append("the manifest does not mark the checkpoint complete")
    proc = manifest["process"]
    for key in IDENTITY_KEYS:
        if proc.get(key) is None:
            problems.append("the manifest's process has no %s" % key)
    if not isinstance(proc.get("pid"), int) or isinstance(proc.get("pid"), bool) or proc.get("pid", 0) <= 0:
        problems.append("the manifest's process.pid is not a positive integer")
    if not manifest["images"]:
        problems.append("the manifest lists no images")
    for img in manifest["images"]:
        if not isinstance(img, dict) or not isinstance(img.get("name"), str):
            problems.append("the manifest has an image entry without a name")
            break
        if not img.get("remote") and not (isinstance(img.get("size"), int) and img.get("sha256")):
            problems.append("image %s has no size or sha256 in the manifest" % img["name"])
    exe = manifest["binaries"].get("exe")
    if not isinstance(exe, dict) or not exe.get("sha256"):
        problems.append("the manifest has no binaries.exe.sha256")
    for key in ("argv", "version"):
        if not manifest["criu"].get(key):
            problems.append("the manifest's criu has no %s" % key)
    return problems


def read_json(path):
    """(data, raw bytes) of the JSON file at ``path``, or None when it does not exist.

    Every JSON record of the collection (manifest, failure marker, restore and
    page server records) is read here. ManifestError when it exists but cannot
    be read or is not JSON; its ``cause`` is the OSError or the decoding error.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        err = ManifestError("cannot read %s: %s" % (path, exc.strerror or exc))
        err.cause = exc
        raise err
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        err = ManifestError("%s is not valid JSON (%s)" % (path, exc))
        err.cause = exc
        raise err
    return data, raw


def read_record(path):
    """The JSON object at ``path``, or None when it is missing, unreadable, not JSON or not an object."""
    try:
        loaded = read_json(path)
    except ManifestError:
        return None
    if loaded is None or not isinstance(loaded[0], dict):
        return None
    return loaded[0]


def load_manifest_bytes(images_dir):
    """(manifest dict, its raw bytes), or None when images_dir has no manifest.

    The caller hashes the same bytes it parsed, so a manifest replaced in
    between cannot be checked under one content and used under another.
    ManifestError when it exists but cannot be read or is not JSON; the
    schema is not checked here.
    """
    return read_json(manifest_path(images_dir))


def read_manifest(images_dir):
    """The manifest of images_dir as a dict, or None when there is none.

    ManifestError when it exists but cannot be read, is not JSON, or is not a
    complete schema-1 manifest.
    """
    loaded = load_manifest_bytes(images_dir)
    if loaded is None:
        return None
    problems = validate(loaded[0])
    if problems:
        raise ManifestError("%s is not a valid checkpoint manifest: %s"
                            % (manifest_path(images_dir), "; ".join(problems)))
    return loaded[0]


def write_json_atomic(path, data, mode=0o600):
    """Write data as JSON to path atomically: temp file + fsync + rename + dir fsync."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=PRIVATE_PREFIX + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def write_manifest(images_dir, manifest):
    """Validate and write the manifest atomically (0600); returns its path."""
    problems = validate(manifest)
    if problems:
        raise ManifestError("refusing to write an invalid manifest: %s" % "; ".join(problems))
    return write_json_atomic(manifest_path(images_dir), manifest)


def write_failed_marker(images_dir, cause, extra=None):
    """Mark a failed dump: ``ckpt-failed.json`` with the cause and the files it left."""
    record = {"schema": SCHEMA, "failed": True, "created": utc_now(), "cause": cause,
              "files": list_images(images_dir)}
    record.update(extra or {})
    return write_json_atomic(failed_path(images_dir), record)


def read_failed_marker(images_dir):
    return read_record(failed_path(images_dir))


# ------------------------------------------------------------ dir states

def inspect_dir(images_dir):
    """What images_dir holds, as a dict with ``state``:

    * ``absent`` -- it does not exist;
    * ``empty`` -- nothing but this collection's lock file and logs;
    * ``complete`` -- a valid manifest (``manifest`` is set);
    * ``invalid`` -- a manifest that cannot be read or is not valid (``problem``);
    * ``failed`` -- only the leftovers of a failed dump of this module, as its
      ``ckpt-failed.json`` lists them (``failed`` is the marker);
    * ``foreign`` -- anything else (``entries`` names some of it).
    """
    if not os.path.lexists(images_dir):
        return {"state": "absent"}
    entries = sorted(os.listdir(images_dir))
    if MANIFEST_NAME in entries:
        try:
            return {"state": "complete", "manifest": read_manifest(images_dir), "entries": entries}
        except ManifestError as exc:
            return {"state": "invalid", "problem": str(exc), "entries": entries}
    content = [e for e in entries if not (e == LOCK_NAME or e.endswith(".log")
                                          or e.startswith(PRIVATE_PREFIX))]
    if not content:
        return {"state": "empty", "entries": entries}
    marker = read_failed_marker(images_dir) if FAILED_NAME in content else None
    if marker is not None:
        recorded = set(marker.get("files") or [])
        if set(list_images(images_dir)) <= recorded and \
                all(e == FAILED_NAME or e in recorded or any(r.startswith(e + os.sep) for r in recorded)
                    for e in content):
            return {"state": "failed", "failed": marker, "entries": entries}
    return {"state": "foreign", "entries": content}


def clear_own_leftovers(images_dir, names):
    """Remove the named leftovers of our own failed attempt (files and their dirs)."""
    removed = []
    for name in sorted(names, key=lambda n: -n.count(os.sep)):
        path = os.path.join(images_dir, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)
            removed.append(name)
        except OSError:
            pass
    for name in (FAILED_NAME, DUMP_LOG_NAME):
        try:
            os.unlink(os.path.join(images_dir, name))
        except OSError:
            pass
    # Now-empty subdirectories (pre-dump generations).
    for root, dirs, files in os.walk(images_dir, topdown=False):
        if root != images_dir and not os.listdir(root) and not os.path.basename(root).startswith(PRIVATE_PREFIX):
            try:
                os.rmdir(root)
            except OSError:
                pass
    return removed


def move_aside(images_dir, stamp=None):
    """Move every entry of images_dir except the lock file to ``DIR.replaced-<stamp>``.

    The directory itself stays (it may be a mount point, and the caller holds
    the lock file inside it).  Returns the new directory's path.  OSError when
    the entries cannot be moved there (EXDEV: images_dir is a mount point).
    """
    stamp = stamp or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    base = os.path.normpath(images_dir)
    dest = "%s.replaced-%s" % (base, stamp)
    os.mkdir(dest, 0o700)
    try:
        for name in sorted(os.listdir(base)):
            if name == LOCK_NAME:
                continue
            os.rename(os.path.join(base, name), os.path.join(dest, name))
    except OSError:
        # Put back what was moved, so nothing is half-replaced.
        for name in os.listdir(dest):
            try:
                os.rename(os.path.join(dest, name), os.path.join(base, name))
            except OSError:
                pass
        try:
            os.rmdir(dest)
        except OSError:
            pass
        raise
    return dest
