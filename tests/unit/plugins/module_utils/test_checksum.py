"""Tests of _checksum: digests against hashlib and readelf, the cache, records,
expected-loading and compare().  Real files throughout; no mocks."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _checksum as c
from ansible_collections.ckpt.criu.plugins.module_utils import _procfs
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

MiB = 1024 * 1024


# ------------------------------------------------------------------ sha256

@pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB, MiB + 1, 3 * MiB + 12345])
def test_sha256_matches_hashlib(tmp_path, size):
    data = os.urandom(size)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    assert c.sha256_file(str(f)) == hashlib.sha256(data).hexdigest()


def test_sha256_small_chunks_same_digest(tmp_path):
    data = os.urandom(100000)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    with open(f, "rb") as fh:
        digest, n = c.sha256_fileobj(fh, chunk_size=4096)
    assert (digest, n) == (hashlib.sha256(data).hexdigest(), len(data))


# ----------------------------------------------------------------- build-id

def _readelf_build_id(path):
    if not shutil.which("readelf"):
        pytest.skip("readelf not installed")
    out = subprocess.run(["readelf", "-n", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, check=False).stdout
    m = re.search(r"Build ID:\s*([0-9a-f]+)", out)
    return m.group(1) if m else None


REAL_ELFS = ["/bin/true", "/bin/ls", "/usr/lib/x86_64-linux-gnu/libc.so.6",
             "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "/opt/ckpt-criu/root/usr/sbin/criu"]


@pytest.mark.parametrize("path", REAL_ELFS)
def test_build_id_matches_readelf(path):
    if not os.path.exists(path):
        pytest.skip("%s not on this machine" % path)
    want = _readelf_build_id(path)
    assert want, "readelf found no build-id in %s" % path
    assert c.elf_build_id(path) == want


def _note(name, ntype, desc, en="<", align=4):
    name_b = name + b"\0"

    def pad(b):
        return b + b"\0" * ((-len(b)) % align)

    return struct.pack(en + "III", len(name_b), len(desc), ntype) + pad(name_b) + pad(desc)


def _elf32(notes, en="<", with_phdr=True, with_shdr=False):
    """A minimal 32-bit ELF: header, optional one PT_NOTE phdr and/or SHT_NOTE section."""
    ehsize, phentsize, shentsize = 52, 32, 40
    phoff = ehsize if with_phdr else 0
    note_off = ehsize + (phentsize if with_phdr else 0)
    shoff = (note_off + len(notes)) if with_shdr else 0
    ident = b"\x7fELF" + bytes([1, 1 if en == "<" else 2, 1]) + b"\0" * 9
    hdr = ident + struct.pack(en + "HHIIIIIHHHHHH", 2, 3, 1, 0, phoff, shoff, 0, ehsize,
                              phentsize, 1 if with_phdr else 0, shentsize, 2 if with_shdr else 0, 0)
    out = hdr
    if with_phdr:
        out += struct.pack(en + "IIIIIIII", c.PT_NOTE, note_off, 0, 0, len(notes), len(notes), 4, 4)
    out += notes
    if with_shdr:
        out += b"\0" * shentsize  # SHT_NULL
        out += struct.pack(en + "IIIIIIIIII", 0, c.SHT_NOTE, 2, 0, note_off, len(notes), 0, 0, 4, 0)
    return out


def _elf64(notes, en="<"):
    ehsize, phentsize = 64, 56
    note_off = ehsize + phentsize
    ident = b"\x7fELF" + bytes([2, 1 if en == "<" else 2, 1]) + b"\0" * 9
    hdr = ident + struct.pack(en + "HHIQQQIHHHHHH", 2, 62, 1, 0, ehsize, 0, 0, ehsize,
                              phentsize, 1, 64, 0, 0)
    ph = struct.pack(en + "IIQQQQQQ", c.PT_NOTE, 4, note_off, 0, 0, len(notes), len(notes), 4)
    return hdr + ph + notes


BID = bytes(range(1, 21))


@pytest.mark.parametrize("en", ["<", ">"])
def test_build_id_synthesized_32bit(tmp_path, en):
    f = tmp_path / "elf32"
    f.write_bytes(_elf32(_note(b"GNU", 1, b"\x01\x02\x03\x04", en) + _note(b"GNU", 3, BID, en), en))
    assert c.elf_build_id(str(f)) == BID.hex()


def test_build_id_synthesized_32bit_agrees_with_readelf(tmp_path):
    f = tmp_path / "elf32"
    f.write_bytes(_elf32(_note(b"GNU", 3, BID)))
    assert _readelf_build_id(str(f)) == BID.hex() == c.elf_build_id(str(f))


def test_build_id_from_section_headers_only(tmp_path):
    f = tmp_path / "elf32s"
    f.write_bytes(_elf32(_note(b"GNU", 3, BID), with_phdr=False, with_shdr=True))
    assert c.elf_build_id(str(f)) == BID.hex()


@pytest.mark.parametrize("en", ["<", ">"])
def test_build_id_synthesized_64bit(tmp_path, en):
    f = tmp_path / "elf64"
    f.write_bytes(_elf64(_note(b"GNU", 3, BID, en), en))
    assert c.elf_build_id(str(f)) == BID.hex()


def test_build_id_ignores_other_owners_and_types(tmp_path):
    f = tmp_path / "elf32"
    f.write_bytes(_elf32(_note(b"Go", 3, BID) + _note(b"GNU", 4, BID)))
    assert c.elf_build_id(str(f)) is None


@pytest.mark.parametrize("content", [b"", b"#!/bin/sh\necho hi\n", b"\x7fEL", b"\x7fELF", b"\x7fELF\x09\x01" + b"\0" * 60,
                                     os.urandom(4096)])
def test_build_id_non_elf_is_none(tmp_path, content):
    f = tmp_path / "x"
    f.write_bytes(content)
    assert c.elf_build_id(str(f)) is None


def test_build_id_truncated_elf_never_crashes(tmp_path):
    data = open("/bin/true", "rb").read()
    f = tmp_path / "t"
    for n in (5, 16, 20, 52, 63, 64, 100, 200, 400, 700, 1000, 4096, len(data) // 2):
        f.write_bytes(data[:n])
        assert c.elf_build_id(str(f)) in (None, c.elf_build_id("/bin/true"))


def test_build_id_garbage_headers_never_crash(tmp_path):
    # A 64-bit header whose phoff/phnum/shoff point far beyond the file, and a note with huge sizes.
    f = tmp_path / "g"
    bad = bytearray(_elf64(struct.pack("<III", 0xFFFFFFF0, 0xFFFFFFF0, 3) + b"GNU\0"))
    f.write_bytes(bytes(bad))
    assert c.elf_build_id(str(f)) is None
    bad[0x20:0x28] = struct.pack("<Q", 2 ** 63)
    f.write_bytes(bytes(bad))
    assert c.elf_build_id(str(f)) is None


# -------------------------------------------------------------------- cache

def test_cache_counts_hits_and_misses(tmp_path):
    cache = c.ChecksumCache()
    f = tmp_path / "lib.so"
    f.write_bytes(b"a" * 1000)
    r1 = c.file_record(str(f), cache)
    r2 = c.file_record(str(f), cache)
    assert r1 == r2
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 1 and len(cache) == 1
    assert cache.stats()["bytes_hashed"] == 1000


def test_cache_shared_inode_via_hardlink_is_one_entry(tmp_path):
    cache = c.ChecksumCache()
    f = tmp_path / "a"
    f.write_bytes(b"x" * 10)
    os.link(str(f), str(tmp_path / "b"))
    c.file_record(str(f), cache)
    rec = c.file_record(str(tmp_path / "b"), cache)
    assert rec["path"] == str(tmp_path / "b")
    assert (cache.hits, cache.misses) == (1, 1)


def _hashed_then_edited(tmp_path, cache, mtime_shift_ns):
    """A file hashed into cache, then edited in place (same size, same inode), its mtime moved by the shift."""
    f = tmp_path / "bin"
    f.write_bytes(b"A" * 100)
    r1 = c.file_record(str(f), cache)
    st = os.stat(f)
    with open(f, "r+b") as fh:
        fh.write(b"B")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + mtime_shift_ns))
    return f, r1


def test_cache_invalidated_by_mtime_change(tmp_path):
    cache = c.ChecksumCache()
    # Same size, same inode, different content: only mtime tells.
    f, r1 = _hashed_then_edited(tmp_path, cache, 1000)
    r2 = c.file_record(str(f), cache)
    assert r2["sha256"] == hashlib.sha256(b"B" + b"A" * 99).hexdigest() != r1["sha256"]
    assert (cache.hits, cache.misses) == (0, 2)


def test_cache_same_mtime_same_size_in_place_edit_is_not_seen(tmp_path):
    """Documented limit: a same-size edit that restores the mtime defeats any stat-keyed cache."""
    cache = c.ChecksumCache()
    f, r1 = _hashed_then_edited(tmp_path, cache, 0)
    assert c.file_record(str(f), cache)["sha256"] == r1["sha256"]
    # A fresh cache (one per module run) sees the real content.
    assert c.file_record(str(f), c.ChecksumCache())["sha256"] != r1["sha256"]


def test_cache_invalidated_by_size_change(tmp_path):
    cache = c.ChecksumCache()
    f = tmp_path / "bin"
    f.write_bytes(b"A" * 100)
    c.file_record(str(f), cache)
    with open(f, "ab") as fh:
        fh.write(b"more")
    r = c.file_record(str(f), cache)
    assert r["size"] == 104 and cache.misses == 2 and cache.hits == 0


def test_cache_clear(tmp_path):
    cache = c.ChecksumCache()
    f = tmp_path / "x"
    f.write_bytes(b"1")
    c.file_record(str(f), cache)
    cache.clear()
    assert cache.stats() == {"hits": 0, "misses": 0, "entries": 0, "bytes_hashed": 0, "seconds": 0.0}


# ------------------------------------------------------------------ records

def test_file_record_fields(tmp_path):
    f = tmp_path / "true"
    shutil.copy("/bin/true", str(f))
    rec = c.file_record(str(f), c.ChecksumCache())
    assert rec["path"] == str(f)
    assert rec["size"] == os.path.getsize(str(f))
    assert rec["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert rec["build_id"] == c.elf_build_id("/bin/true")
    assert rec["mtime_ns"] == os.stat(str(f)).st_mtime_ns
    assert "requested" not in rec


def test_file_record_symlink_reports_realpath(tmp_path):
    target = tmp_path / "real"
    target.write_bytes(b"data")
    link = tmp_path / "link"
    link.symlink_to(target)
    rec = c.file_record(str(link), c.ChecksumCache())
    assert rec["path"] == str(target) and rec["requested"] == str(link)


@pytest.mark.parametrize("make,needle", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "is a directory"),
    (lambda p: "/dev/null", "is a device"),
    (lambda p: "", "empty path"),
])
def test_file_record_bad_paths(tmp_path, make, needle):
    with pytest.raises(c.ChecksumError, match=needle):
        c.file_record(str(make(tmp_path)), c.ChecksumCache())


def test_file_record_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(str(fifo))
    with pytest.raises(c.ChecksumError, match="FIFO"):
        c.file_record(str(fifo), c.ChecksumCache())


def test_file_record_dangling_symlink(tmp_path):
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(c.ChecksumError, match="does not exist"):
        c.file_record(str(link), c.ChecksumCache())


# -------------------------------------------------------------- pid checks

@pytest.mark.parametrize("pid,needle", [
    (1, "PID 1 is the init process"),
    (0, "not valid"),
    (-5, "not valid"),
    ("abc", "not a number"),
    (2 ** 22 + 12345, "no process with PID"),
])
def test_check_pid_refuses(pid, needle):
    with pytest.raises(CkptError, match=needle):
        c.process_files(pid)


def test_check_pid_kernel_thread():
    kthreads = []
    for name in os.listdir("/proc"):
        if name.isdigit() and name != "1":
            try:
                flags = _procfs.read_stat(int(name), "/proc")["flags"]
            except _procfs.ProcfsError:
                continue
            if flags & _procfs.PF_KTHREAD:
                kthreads.append(int(name))
    if not kthreads:
        pytest.skip("no kernel thread visible in this PID namespace")
    with pytest.raises(CkptError, match="kernel thread"):
        c.process_files(kthreads[0])


def test_check_pid_zombie():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        for dummy in range(200):
            if _procfs.read_stat(pid, "/proc")["state"] == "Z":
                break
            import time
            time.sleep(0.01)
        with pytest.raises(CkptError, match="zombie"):
            c.process_files(pid)
    finally:
        os.waitpid(pid, 0)


def test_read_pidfile_ok_and_missing(tmp_path):
    f = tmp_path / "p.pid"
    f.write_text("4242\n")
    assert _procfs.read_pidfile(str(f)) == 4242
    with pytest.raises(CkptError, match="does not exist"):
        _procfs.read_pidfile(str(tmp_path / "nope"))
    with pytest.raises(CkptError, match="is a directory"):
        _procfs.read_pidfile(str(tmp_path))


def test_parse_maps():
    text = ("55d0-55d1 r--p 00000000 08:01 1234 /usr/bin/prog\n"
            "7f00-7f01 rw-p 00000000 00:00 0 \n"
            "7f01-7f02 r-xp 00001000 08:01 99 /tmp/x (deleted)\n"
            "7ffc-7ffd r-xp 00000000 00:00 0 [vdso]\n"
            "7f03-7f04 rw-s 00000000 00:01 7 /memfd:buf (deleted)\n"
            "7f05-7f06 r--p 00000000 08:01 5 /path with spaces/lib.so\n")
    maps = _procfs.parse_maps(text, file_backed_only=False)
    assert [m["path"] + (c.DELETED_SUFFIX if m["deleted"] else "") for m in maps] == [
        "/usr/bin/prog", "", "/tmp/x (deleted)", "[vdso]", "/memfd:buf (deleted)", "/path with spaces/lib.so"]
    assert [c._skip_reason(m["path"], m["inode"]) for m in maps] == [
        None, "anonymous", None, "special", "memfd", None]


def test_map_files_name_drops_the_padding_of_maps():
    """maps prints addresses as %08lx, map_files names its entries %lx-%lx."""
    m = _procfs.parse_maps("00400000-00401000 r-xp 00000000 08:01 5 /opt/app\n")[0]
    assert c._map_files_name(m) == "400000-401000"


def test_process_files_of_self():
    """This very test process: exe first, libc among the files, every record verifiable."""
    cache = c.ChecksumCache()
    recs = c.process_files(os.getpid(), cache=cache)
    exe = recs["exe"]
    assert exe["exe"] is True and recs["files"][0] is exe
    assert exe["path"] == os.path.realpath("/proc/self/exe")
    paths = [r["path"] for r in recs["files"]]
    assert len(paths) == len(set(paths))
    for r in recs["files"]:
        if not r["deleted"] and not r["replaced"]:
            assert r["sha256"] == c.sha256_file(r["path"]), r["path"]
    only = c.process_files(os.getpid(), exe_only=True, cache=cache)
    assert only["files"] == [only["exe"]] and cache.hits >= 1


# ------------------------------------------------------- expected / compare

def _rec(path, size=10, sha="a" * 64, bid="b1"):
    return {"path": path, "size": size, "sha256": sha, "build_id": bid}


def test_compare_all_match():
    recs = [_rec("/a"), _rec("/b")]
    assert c.compare(recs, [dict(r) for r in recs]) == (["/a", "/b"], [])


@pytest.mark.parametrize("actual,differs,phrase", [
    (_rec("/a", size=11, sha="c" * 64), ["size", "sha256"], "size 10 bytes expected, 11 found"),
    (_rec("/a", sha="c" * 64), ["sha256"], "same size and build-id"),
    (_rec("/a", bid="b2"), ["build_id"], "build-id b1 expected, b2 found"),
    (_rec("/a", sha="c" * 64, bid=None), ["sha256", "build_id"], "build-id b1 expected, none found"),
])
def test_compare_field_mismatches(actual, differs, phrase):
    matches, mism = c.compare([_rec("/a")], [actual])
    assert matches == []
    assert len(mism) == 1 and mism[0]["differs"] == differs and mism[0]["path"] == "/a"
    assert phrase in mism[0]["msg"] and mism[0]["msg"].startswith("/a differs")
    assert "put back the file" in mism[0]["msg"]


def test_compare_missing_and_unexpected():
    matches, mism = c.compare([_rec("/a"), _rec("/gone")], [_rec("/a"), _rec("/new")])
    assert matches == ["/a"]
    kinds = dict((m["path"], m["differs"]) for m in mism)
    assert kinds == {"/gone": ["missing"], "/new": ["unexpected"]}
    by = dict((m["path"], m) for m in mism)
    assert by["/gone"]["actual"] is None and by["/new"]["expected"] is None
    assert "expected but was not found" in by["/gone"]["msg"]
    assert "not among the expected files" in by["/new"]["msg"]


def test_compare_expected_without_sha256_is_a_mismatch():
    dummy, mism = c.compare([{"path": "/a", "size": 10}], [_rec("/a")])
    assert mism[0]["differs"] == ["sha256"] and "no sha256" in mism[0]["msg"]


def test_compare_only_paths_limits_expected():
    matches, mism = c.compare([_rec("/a"), _rec("/b")], [_rec("/a")], only_paths=["/a"])
    assert (matches, mism) == (["/a"], [])


def test_compare_symlink_requested_path_matches_expected():
    act = dict(_rec("/real"), requested="/link")
    matches, mism = c.compare([_rec("/link")], [act])
    assert matches == ["/link"] and mism == []


def test_load_expected_forms(tmp_path):
    exe = _rec("/bin/x")
    files = [exe, _rec("/lib/y")]
    result = {"changed": False, "exe": exe, "files": files, "cache": {}}
    manifest = {"schema": 1, "binaries": {"exe": exe, "files": [_rec("/lib/y")]}}
    (tmp_path / "ckpt-manifest.json").write_text(json.dumps(manifest))
    for form in (files, result, manifest, json.dumps(result), str(tmp_path),
                 str(tmp_path / "ckpt-manifest.json")):
        got = c.load_expected(form)
        assert sorted(r["path"] for r in got) == ["/bin/x", "/lib/y"], form


@pytest.mark.parametrize("setup,needle", [
    (lambda p: str(p / "none.json"), "does not exist"),
    (str, "holds no ckpt-manifest.json"),
    (lambda p: (p / "ckpt-manifest.json").write_text("{not json") and str(p), "not a valid JSON manifest"),
    (lambda p: (p / "ckpt-manifest.json").write_text('{"schema": 1}') and str(p), "no binaries section"),
    (lambda p: [{"size": 3}], "not a record with a path"),
    (lambda p: {"foo": 1}, "no binary records"),
    (lambda p: 42, "must be a list of records"),
    (lambda p: "{oops", "does not parse"),
    (lambda p: "   ", "is empty"),
])
def test_load_expected_errors(tmp_path, setup, needle):
    with pytest.raises(c.ChecksumError, match=needle):
        c.load_expected(setup(tmp_path))


def test_summarize():
    dummy, mism = c.compare([_rec("/a"), _rec("/b")], [_rec("/a", sha="d" * 64), _rec("/b", size=3)])
    s = c.summarize_mismatches(mism, 2)
    assert s.startswith("2 of 2 files do not match the expected binaries: /a differs")
    assert "(and 1 more, see mismatches)" in s
