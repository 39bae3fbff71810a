# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Content identity of a process's binaries: sha256 and ELF build-id.

CRIU restores a process by mapping its executable and libraries *by path*
again.  When the file at that path changed since the dump (a redeploy with
the same size, a rebuilt binary with the same or no build-id), criu restores
silently and the process runs code it was never checkpointed with.  So the
collection records the sha256 (streamed, 1 MiB chunks) and the GNU build-id
of the executable and of every file-backed mapping at dump time and compares
them before a restore.

* :func:`sha256_file`, :func:`elf_build_id`: the two digests.
* :class:`ChecksumCache`: digests keyed by (st_dev, st_ino, st_size,
  st_mtime_ns) so libc, shared by every process of a host, is hashed once.
* :func:`file_record`: ``{path, size, sha256, build_id, mtime_ns}`` of a path.
* :func:`process_files`: records of a live process's exe and mapped files,
  read through ``/proc/PID/map_files`` (the inode really mapped), with the
  file now at the same path compared against it (``replaced``/``deleted``).
* :func:`load_expected` / :func:`compare`: check records against a previous
  result, a list of records, or a checkpoint manifest.

Every failure raises :class:`ChecksumError` with one sentence saying what is
wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _procfs
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

PROC = _procfs.PROC
CHUNK_SIZE = 1024 * 1024
DELETED_SUFFIX = " (deleted)"

# ELF constants.
PT_NOTE = 4
SHT_NOTE = 7
NT_GNU_BUILD_ID = 3
# A note bigger than this is not a build-id note worth reading.
_MAX_NOTE_BYTES = 1024 * 1024
_MAX_HEADERS = 4096

# Fields compared between an expected and an actual record, in report order.
COMPARED_FIELDS = ("size", "sha256", "build_id")


class ChecksumError(CkptError):
    """A problem with an input or a file, as one sentence for a person."""

    def __init__(self, msg, path=None):
        super(ChecksumError, self).__init__(msg, path=path)
        self.path = path


# ------------------------------------------------------------------ digests

def sha256_fileobj(fh, chunk_size=CHUNK_SIZE):
    """sha256 hex digest of an open binary file, read in ``chunk_size`` chunks.

    Returns (hexdigest, bytes_read).
    """
    digest = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    total = 0
    while True:
        n = fh.readinto(buf)
        if not n:
            break
        digest.update(view[:n])
        total += n
    return digest.hexdigest(), total


def sha256_file(path, chunk_size=CHUNK_SIZE):
    """sha256 hex digest of the file at ``path`` (streamed)."""
    with open(path, "rb") as fh:
        return sha256_fileobj(fh, chunk_size)[0]


def stat_key(st):
    """:func:`cache_key` and the ctime: a write whose mtime was set back, a
    rename or an attribute change still moves the ctime."""
    return cache_key(st) + (st.st_ctime_ns,)


def sha256_unchanged(path, chunk_size=CHUNK_SIZE):
    """(sha256, stat_key) of the regular file at ``path`` (not followed if a
    symlink), or None if it is not a regular file or changed while it was read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return None
        digest = sha256_fileobj(fh, chunk_size)[0]
        after = os.fstat(fd)
    if stat_key(before) != stat_key(after):
        return None
    return digest, stat_key(after)


def _read_at(fh, offset, size):
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise ValueError("short read")
    return data


def _align(n, a):
    return (n + a - 1) & ~(a - 1)


def _notes_build_id(data, endian, align):
    """The GNU build-id in a block of ELF notes, or None."""
    off = 0
    hdr = struct.Struct(endian + "III")
    while off + hdr.size <= len(data):
        namesz, descsz, ntype = hdr.unpack_from(data, off)
        off += hdr.size
        name_end = off + namesz
        desc_off = off + _align(namesz, align)
        desc_end = desc_off + descsz
        if namesz > len(data) or descsz > len(data) or desc_end > len(data):
            return None
        name = bytes(data[off:name_end]).rstrip(b"\0")
        if ntype == NT_GNU_BUILD_ID and name == b"GNU" and descsz > 0:
            return bytes(data[desc_off:desc_end]).hex()
        off = desc_off + _align(descsz, align)
    return None


def _note_align(a):
    return 8 if a == 8 else 4


def _ph64_pick(f):
    return f[0], f[2], f[5], f[7]  # p_type, p_offset, p_filesz, p_align (p_flags comes second in ELF64)


def _ph32_pick(f):
    return f[0], f[1], f[4], f[7]  # p_type, p_offset, p_filesz, p_align


def _sh_pick(f):
    return f[1], f[4], f[5], f[8]  # sh_type, sh_offset, sh_size, sh_addralign


def _header_rows(fh, fsize, off, entsize, num, fmt, min_size, pick):
    """(type, offset, size, align) of each entry of a program or section header table, read when first
    asked for; none when the table is absent or implausible."""
    if not (off and entsize >= min_size and 0 < num < _MAX_HEADERS and off + num * entsize <= fsize):
        return
    table = _read_at(fh, off, num * entsize)
    for i in range(num):
        yield pick(struct.unpack_from(fmt, table, i * entsize))


def _first_build_id(fh, fsize, en, note_type, rows):
    """The build-id in the first of ROWS of NOTE_TYPE whose notes hold one, or None."""
    for typ, offset, size, align in rows:
        if typ != note_type or not size or size > _MAX_NOTE_BYTES or offset + size > fsize:
            continue
        found = _notes_build_id(_read_at(fh, offset, size), en, _note_align(align))
        if found:
            return found
    return None


def build_id_fileobj(fh):
    """GNU build-id (hex) of an open ELF file, or None (not ELF, none, or damaged).

    Reads only the headers and note segments/sections, never the whole file.
    32- and 64-bit, little and big endian.
    """
    try:
        fh.seek(0, os.SEEK_END)
        fsize = fh.tell()
        ident = _read_at(fh, 0, 16)
        if ident[:4] != b"\x7fELF":
            return None
        cls, data = ident[4], ident[5]
        if data == 1:
            en = "<"
        elif data == 2:
            en = ">"
        else:
            return None
        if cls == 2:
            ehdr = _read_at(fh, 16, 48)
            phoff, shoff = struct.unpack_from(en + "QQ", ehdr, 0x20 - 16)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(en + "HHHHH", ehdr, 0x36 - 16)
            ph_fmt, ph_size, ph_pick = en + "IIQQQQQQ", 56, _ph64_pick
            sh_fmt, sh_size = en + "IIQQQQIIQQ", 64
        elif cls == 1:
            ehdr = _read_at(fh, 16, 36)
            phoff, shoff = struct.unpack_from(en + "II", ehdr, 0x1C - 16)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(en + "HHHHH", ehdr, 0x2A - 16)
            ph_fmt, ph_size, ph_pick = en + "IIIIIIII", 32, _ph32_pick
            sh_fmt, sh_size = en + "IIIIIIIIII", 40
        else:
            return None

        # Program headers: PT_NOTE segments (what the loader and gdb use).
        found = _first_build_id(fh, fsize, en, PT_NOTE,
                                _header_rows(fh, fsize, phoff, phentsize, phnum, ph_fmt, ph_size, ph_pick))
        if found:
            return found
        # Section headers: SHT_NOTE sections (objects without program headers).
        return _first_build_id(fh, fsize, en, SHT_NOTE,
                               _header_rows(fh, fsize, shoff, shentsize, shnum, sh_fmt, sh_size, _sh_pick))
    except (ValueError, struct.error, OSError, OverflowError):
        return None
    return None


def elf_build_id(path):
    """GNU build-id (hex) of the ELF file at ``path``, or None."""
    with open(path, "rb") as fh:
        return build_id_fileobj(fh)


# -------------------------------------------------------------------- cache

def cache_key(st):
    """The identity of a file's content as far as stat can tell."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ChecksumCache(object):
    """(sha256, build_id) per (st_dev, st_ino, st_size, st_mtime_ns).

    Libraries are shared by most processes of a host; one run hashes each
    once.  A file rewritten in place changes its mtime (and usually size), so
    its old entry is simply never looked up again.
    """

    def __init__(self):
        self._entries = {}
        self.hits = 0
        self.misses = 0
        self.bytes_hashed = 0
        self.seconds = 0.0

    def __len__(self):
        return len(self._entries)

    def clear(self):
        self._entries.clear()
        self.hits = self.misses = self.bytes_hashed = 0
        self.seconds = 0.0

    def digest_fileobj(self, fh):
        """(sha256, build_id, stat) of an open file, from the cache when possible."""
        st = os.fstat(fh.fileno())
        key = cache_key(st)
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            return entry[0], entry[1], st
        self.misses += 1
        start = time.monotonic()
        fh.seek(0)
        sha, nbytes = sha256_fileobj(fh)
        build_id = build_id_fileobj(fh)
        self.seconds += time.monotonic() - start
        self.bytes_hashed += nbytes
        after = os.fstat(fh.fileno())
        if cache_key(after) != key or nbytes != st.st_size:
            raise ChecksumError("the file %s changed while it was being hashed; run the check again "
                                "once nothing writes to it" % getattr(fh, "name", "?"))
        self._entries[key] = (sha, build_id)
        return sha, build_id, st

    def stats(self):
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._entries),
                "bytes_hashed": self.bytes_hashed, "seconds": round(self.seconds, 4)}


# One cache per module run (a module is one process): shared by every caller.
DEFAULT_CACHE = ChecksumCache()


# ------------------------------------------------------------------ records

def _describe_kind(mode):
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _open_regular(path, what=None):
    """Open ``path`` read-only, refusing anything but a regular file."""
    what = what or path
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ChecksumError("%s does not exist; give the path of an existing file" % what, path)
    except PermissionError:
        raise ChecksumError("%s cannot be read (permission denied); run as root (become: true)" % what, path)
    except OSError as exc:
        raise ChecksumError("%s cannot be examined: %s" % (what, exc.strerror or exc), path)
    if not stat.S_ISREG(st.st_mode):
        raise ChecksumError("%s is %s, not a regular file; give the path of a binary or library"
                            % (what, _describe_kind(st.st_mode)), path)
    try:
        # O_NONBLOCK: never hang on a FIFO swapped in between stat and open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise ChecksumError("%s cannot be read (permission denied); run as root (become: true)" % what, path)
    except OSError as exc:
        raise ChecksumError("%s cannot be opened: %s" % (what, exc.strerror or exc), path)
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fh.close()
        raise ChecksumError("%s is not a regular file; give the path of a binary or library" % what, path)
    return fh


def _record_from(fh, path, cache):
    sha, build_id, st = cache.digest_fileobj(fh)
    return {"path": path, "size": st.st_size, "sha256": sha, "build_id": build_id,
            "mtime_ns": st.st_mtime_ns}, st


def file_record(path, cache=None):
    """``{path, size, sha256, build_id, mtime_ns}`` of the file at ``path``.

    ``path`` is resolved to its real path; when that differs from what was
    asked, the record carries ``requested`` (the path as given).
    """
    cache = DEFAULT_CACHE if cache is None else cache
    if not isinstance(path, str) or not path:
        raise ChecksumError("an empty path was given; list the files to check by their paths")
    if "\0" in path:
        raise ChecksumError("the path %r contains a NUL byte; give a real file path" % path)
    real = os.path.realpath(path)
    with _open_regular(real, path if real == path else "%s (resolved to %s)" % (path, real)) as fh:
        rec = _record_from(fh, real, cache)[0]
    if real != path:
        rec["requested"] = path
    return rec


# ----------------------------------------------------------------- processes

def _map_files_name(mapping):
    """The /proc/PID/map_files entry of a mapping: 'start-end' in hex without the padding maps uses."""
    return "%x-%x" % (mapping["start"], mapping["end"])


def _skip_reason(path, inode):
    """Why a mapping is not a file to hash, or None when it is one."""
    if not path:
        return "anonymous"
    if path.startswith("[") and path.endswith("]"):
        return "special"  # [heap] [stack] [vdso] [vvar] [vsyscall] [anon:x]
    if path.startswith("[") or not path.startswith("/"):
        return "special"
    if path.startswith("/memfd:"):
        return "memfd"
    if path.startswith("/SYSV") or path.startswith("/dev/zero") or path.startswith("/[aio]"):
        return "shared memory"
    if inode == 0:
        return "anonymous"
    return None


def _same_inode(a, b):
    return a is not None and b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _process_record(pid, proc_link, path, deleted, cache, proc_root):
    """Record of a file a process maps, read through the mapped inode.

    Adds ``deleted`` / ``replaced`` and, for a replaced file, ``on_disk``:
    the record of the different file now at the same path.
    """
    fh = None
    try:
        fh = open(proc_link, "rb")
    except OSError:
        fh = None
    disk_path = os.path.join(proc_root, str(pid), "root") + path  # the path in the process's mount namespace
    if fh is None:
        # map_files needs CAP_SYS_ADMIN; fall back to the path (if it still exists).
        if deleted:
            raise ChecksumError("%s, mapped by PID %d, was deleted and cannot be read through %s; run as root "
                                "(become: true)" % (path, pid, proc_link), path)
        try:
            if not stat.S_ISREG(os.stat(disk_path).st_mode):
                return None
        except OSError:
            pass
        fh = _open_regular(disk_path, path)
    with fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        rec, mapped_st = _record_from(fh, path, cache)
    rec["deleted"] = bool(deleted)
    rec["replaced"] = False
    try:
        disk_st = os.stat(disk_path)
    except OSError:
        disk_st = None
    if disk_st is None:
        rec["deleted"] = True
    elif not _same_inode(disk_st, mapped_st):
        rec["deleted"] = False
        rec["replaced"] = True
        try:
            with _open_regular(disk_path, path) as dfh:
                rec["on_disk"] = _record_from(dfh, path, cache)[0]
        except ChecksumError as exc:
            rec["on_disk"] = {"path": path, "error": exc.msg}
    if rec["deleted"]:
        rec["note"] = ("%s was deleted after PID %d mapped it; the record describes the mapped copy, "
                       "and a restore needs criu to carry it in the images" % (path, pid))
    elif rec["replaced"]:
        same = rec.get("on_disk", {}).get("sha256") == rec["sha256"]
        rec["note"] = ("%s was replaced on disk after PID %d mapped it; the file now at that path %s what "
                       "the process runs" % (path, pid, "has the same content as" if same else "differs from"))
        rec["replaced_differs"] = not same
    return rec


def process_files(pid, exe_only=False, cache=None, proc_root=PROC):
    """Records of a live process's executable and every distinct file it maps.

    Returns ``{"exe": record, "files": [records]}``; ``files`` includes the
    exe (first) and each mapped regular file once, in map order.  Each record
    is read through the inode really mapped (``/proc/PID/exe``,
    ``/proc/PID/map_files/...``), and flags ``deleted`` (gone from disk) or
    ``replaced`` (another file now at the path, whose record is ``on_disk``).
    Files mapped shared and writable are data, not binaries, and are left out.
    """
    cache = DEFAULT_CACHE if cache is None else cache
    pid = _procfs.check_live_pid(pid, proc_root)["pid"]
    base = os.path.join(proc_root, str(pid))
    try:
        link = os.readlink(os.path.join(base, "exe"))
    except FileNotFoundError:
        raise ChecksumError("PID %d has no executable (it exited, or is a kernel thread); give the PID "
                            "of a running user process" % pid)
    except PermissionError:
        raise ChecksumError("cannot read /proc/%d/exe (permission denied); run as root (become: true)" % pid)
    except OSError as exc:
        raise ChecksumError("cannot read /proc/%d/exe: %s" % (pid, exc.strerror or exc))
    deleted = link.endswith(DELETED_SUFFIX)
    exe_path = link[:-len(DELETED_SUFFIX)] if deleted else link
    if deleted and os.path.exists(link):
        deleted = False  # a file really named "... (deleted)"
        exe_path = link
    exe = _process_record(pid, os.path.join(base, "exe"), exe_path, deleted, cache, proc_root)
    if exe is None:
        raise ChecksumError("the executable of PID %d is not a regular file" % pid)
    exe["exe"] = True
    files = [exe]
    if exe_only:
        return {"exe": exe, "files": files}

    maps = _procfs.read_maps(pid, proc_root, file_backed_only=False)
    seen_paths = {exe_path}
    # A file mapped shared and writable is data the process changes (a database,
    # an sqlite -shm file): criu maps it again as it is, so it is not a binary.
    # (path, deleted): the path as the kernel printed it, " (deleted)" and all.
    data_paths = set((m["path"], m["deleted"]) for m in maps if "w" in m["perms"] and "s" in m["perms"])
    for m in maps:
        path, mdeleted = m["path"], m["deleted"]
        if _skip_reason(path, m["inode"]) or (path, mdeleted) in data_paths:
            continue
        if path in seen_paths:
            continue
        seen_paths.add(path)
        proc_link = os.path.join(base, "map_files", _map_files_name(m))
        try:
            rec = _process_record(pid, proc_link, path, mdeleted, cache, proc_root)
        except ChecksumError:
            if not os.path.isdir(base):
                raise ChecksumError("PID %d exited while its files were being read; check the process is "
                                    "running and try again" % pid)
            raise
        if rec is not None:
            files.append(rec)
    return {"exe": exe, "files": files}


# ---------------------------------------------------------------- expected

def _records_from_dict(data, origin):
    if "binaries" in data and isinstance(data["binaries"], dict):
        data = data["binaries"]
    if "files" not in data and "exe" not in data:
        if "path" in data:
            return [data]
        raise ChecksumError("expected (%s) has no binary records: give a previous binary_checksum result "
                            "(with files), a list of records, or a checkpoint manifest (with binaries)" % origin)
    files = list(data.get("files") or [])
    exe = data.get("exe")
    known = [f.get("path") for f in files if isinstance(f, dict)]
    if isinstance(exe, dict) and exe.get("path") and exe.get("path") not in known:
        files.insert(0, exe)
    return files


def read_manifest_binaries(path):
    """Binary records of a checkpoint manifest (file or images directory)."""
    # Imported here: _manifest hashes images with this module.
    from ansible_collections.ckpt.criu.plugins.module_utils import _manifest
    target = path
    if os.path.isdir(path):
        target = os.path.join(path, _manifest.MANIFEST_NAME)
        if not os.path.exists(target):
            raise ChecksumError("%s holds no %s, so it is not a completed checkpoint; give the images "
                                "directory of a finished dump" % (path, _manifest.MANIFEST_NAME), path)
    try:
        loaded = _manifest.read_json(target)
    except _manifest.ManifestError as exc:
        if isinstance(exc.cause, OSError):
            raise ChecksumError("%s cannot be read: %s" % (target, exc.cause.strerror or exc.cause), target)
        raise ChecksumError("%s is not a valid JSON manifest (%s); take a new checkpoint" % (target, exc.cause),
                            target)
    if loaded is None:
        raise ChecksumError("expected names %s, which does not exist; give a checkpoint manifest, its "
                            "directory, or a previous result" % target, target)
    data = loaded[0]
    if not isinstance(data, dict) or not isinstance(data.get("binaries"), dict):
        raise ChecksumError("%s has no binaries section, so the binaries cannot be verified against it; take a "
                            "new checkpoint with ckpt.criu.dump" % target, target)
    return _records_from_dict(data, target)


def load_expected(expected):
    """Normalise ``expected`` into a list of records.

    Accepts a list of records, a dict (a previous binary_checksum result with
    ``files``/``exe``, a manifest dict with ``binaries``, or one record), a
    JSON string of those, or the path of a manifest (or of its directory).
    """
    if expected is None:
        return None
    if isinstance(expected, (bytes, bytearray)):
        expected = expected.decode("utf-8", "surrogateescape")
    if isinstance(expected, str):
        text = expected.strip()
        if text[:1] in ("[", "{"):
            try:
                expected = json.loads(text)
            except ValueError as exc:
                raise ChecksumError("expected looks like JSON but does not parse (%s); pass the registered "
                                    "result itself or a manifest path" % exc)
        elif not text:
            raise ChecksumError("expected is empty; give a previous result, a list of records or a manifest path")
        else:
            return _validate_records(read_manifest_binaries(text), text)
    if isinstance(expected, dict):
        return _validate_records(_records_from_dict(expected, "a dict"), "a dict")
    if isinstance(expected, (list, tuple)):
        return _validate_records(list(expected), "a list")
    raise ChecksumError("expected must be a list of records, a previous result or a manifest path, not %s"
                        % type(expected).__name__)


def _validate_records(records, origin):
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("path"), str) or not rec.get("path"):
            raise ChecksumError("expected (%s) entry %d is not a record with a path; each entry needs at least "
                                "path and sha256" % (origin, i))
        out.append(rec)
    return out


# ----------------------------------------------------------------- compare

def _short(value):
    if value is None:
        return "none"
    value = str(value)
    return value[:12] + "..." if len(value) > 16 else value


def _mismatch_sentence(path, differs, exp, act):
    if differs == ["missing"]:
        return ("%s is expected but was not found among the checked files; make the same file available "
                "at that path" % path)
    if differs == ["unexpected"]:
        return ("%s was checked but is not among the expected files, so it cannot be verified; check the "
                "expected records cover this file" % path)
    parts = []
    for field in differs:
        if field == "size":
            parts.append("size %s bytes expected, %s found" % (exp.get("size"), act.get("size")))
        elif field == "sha256":
            if exp.get("sha256") is None:
                parts.append("the expected record has no sha256, so the content cannot be verified")
            else:
                parts.append("sha256 %s expected, %s found" % (_short(exp.get("sha256")), _short(act.get("sha256"))))
        elif field == "build_id":
            parts.append("build-id %s expected, %s found" % (_short(exp.get("build_id")), _short(act.get("build_id"))))
    same = [f for f in COMPARED_FIELDS if f not in differs and f in exp]
    tail = " (same %s)" % " and ".join(s.replace("_", "-") for s in same) if same and "sha256" in differs else ""
    return ("%s differs from the expected file: %s%s; put back the file the checkpoint was taken with"
            % (path, "; ".join(parts), tail))


def compare_records(exp, act):
    """Fields (of COMPARED_FIELDS) in which ``act`` differs from ``exp``."""
    differs = []
    for field in COMPARED_FIELDS:
        if field == "sha256":
            if exp.get("sha256") is None or exp.get("sha256") != act.get("sha256"):
                differs.append(field)
        elif field in exp:
            want, have = exp.get(field), act.get(field)
            if field == "size":
                try:
                    want = None if want is None else int(want)
                except (TypeError, ValueError):
                    pass
            if want != have:
                differs.append(field)
    return differs


def compare(expected, actual, only_paths=None):
    """Compare expected records with actual records, by path.

    ``expected`` is anything :func:`load_expected` accepts.  ``only_paths``
    limits the expected side to those paths (when only some files were
    checked).  Returns ``(matches, mismatches)``: the matching paths, and for
    each difference ``{path, differs: [...], expected: {...}, actual: {...},
    msg}`` where ``differs`` holds ``missing`` (expected, not checked),
    ``unexpected`` (checked, not expected), or the fields that differ
    (``size``, ``sha256``, ``build_id``).
    """
    exp_list = load_expected(expected) if not (isinstance(expected, list) and all(
        isinstance(r, dict) and r.get("path") for r in expected)) else expected
    exp_by_path = {}
    for rec in exp_list:
        exp_by_path.setdefault(rec["path"], rec)
    act_by_path = {}
    for rec in actual:
        act_by_path.setdefault(rec["path"], rec)
        if rec.get("requested"):
            act_by_path.setdefault(rec["requested"], rec)
    if only_paths is not None:
        keep = set(only_paths)
        for rec in actual:
            keep.add(rec["path"])
        exp_by_path = dict((p, r) for p, r in exp_by_path.items() if p in keep)

    matches, mismatches = [], []
    for path, exp in exp_by_path.items():
        act = act_by_path.get(path)
        if act is None:
            differs = ["missing"]
            act_view = None
        else:
            differs = compare_records(exp, act)
            act_view = dict((k, act.get(k)) for k in COMPARED_FIELDS)
        exp_view = dict((k, exp.get(k)) for k in COMPARED_FIELDS)
        if differs:
            mismatches.append({"path": path, "differs": differs, "expected": exp_view, "actual": act_view,
                               "msg": _mismatch_sentence(path, differs, exp_view, act_view or {})})
        else:
            matches.append(path)
    reported = set(exp_by_path)
    for rec in actual:
        if rec["path"] in reported or rec.get("requested") in exp_by_path:
            continue
        reported.add(rec["path"])
        mismatches.append({"path": rec["path"], "differs": ["unexpected"], "expected": None,
                           "actual": dict((k, rec.get(k)) for k in COMPARED_FIELDS),
                           "msg": _mismatch_sentence(rec["path"], ["unexpected"], {}, rec)})
    return matches, mismatches


def summarize_mismatches(mismatches, total):
    """One sentence for a failed comparison: the count and the first difference."""
    if not mismatches:
        return "all %d files match the expected records" % total
    first = mismatches[0]["msg"]
    more = len(mismatches) - 1
    return "%d of %d files do not match the expected binaries: %s%s" % (
        len(mismatches), total, first,
        (" (and %d more, see mismatches)" % more) if more else "")
