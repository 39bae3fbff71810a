"""Unit tests of _manifest: atomic write, schema validation, image records and
verification (one flipped byte is caught), directory states, move aside."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import time

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _checksum
from ansible_collections.ckpt.criu.plugins.module_utils import _manifest


def _images(d, files=None):
    files = files or {"core-10.img": b"core" * 100, "pages-1.img": os.urandom(8192),
                      "inventory.img": b"inv", "stats-dump": b"stats"}
    for name, data in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def _manifest_for(d, pid=10, start_time=555, boot_id="b-1"):
    records = _manifest.image_records(str(d))
    return {
        "schema": 1, "complete": True, "created": _manifest.utc_now(),
        "host": _manifest.host_identity(),
        "criu": {"path": "/usr/sbin/criu", "version": "4.1.1", "argv": ["criu", "dump"], "log": "dump.log",
                 "duration": 0.1, "stats": {}},
        "process": {"pid": pid, "start_time": start_time, "boot_id": boot_id, "comm": "x", "cmdline": ["x"]},
        "tree": [{"pid": pid}], "options": {"leave_running": False}, "fds": {}, "stdio": {},
        "stdio_files": [], "binaries": {"exe": {"path": "/bin/x", "size": 1, "sha256": "ab"}, "files": []},
        "images": records, "images_total_bytes": _manifest.images_total_bytes(records),
    }


def test_image_records_checksum_every_image_but_not_our_files(tmp_path):
    files = _images(tmp_path)
    (tmp_path / "dump.log").write_text("log")
    (tmp_path / ".ckpt-lock").write_text("1")
    (tmp_path / "ckpt-failed.json").write_text("{}")
    (tmp_path / ".ckpt-work-x").mkdir()
    (tmp_path / ".ckpt-work-x" / "proc.crtools").write_text("x")
    recs = _manifest.image_records(str(tmp_path))
    assert [r["name"] for r in recs] == sorted(files)
    import hashlib
    for r in recs:
        assert r["sha256"] == hashlib.sha256(files[r["name"]]).hexdigest()
        assert r["size"] == len(files[r["name"]])


def test_image_records_subdirs_and_remote(tmp_path):
    _images(tmp_path, {"core-1.img": b"a", "pre-1/pages-1.img": b"bb"})
    recs = _manifest.image_records(str(tmp_path), remote=["pagemap-1.img"])
    assert {"name": "pagemap-1.img", "remote": True} in recs
    assert any(r["name"] == os.path.join("pre-1", "pages-1.img") and r["size"] == 2 for r in recs)


def test_write_is_atomic_0600_and_reads_back(tmp_path):
    _images(tmp_path)
    m = _manifest_for(tmp_path)
    path = _manifest.write_manifest(str(tmp_path), m)
    assert path == _manifest.manifest_path(str(tmp_path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _manifest.read_manifest(str(tmp_path)) == json.loads(json.dumps(m))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_write_refuses_invalid_manifest(tmp_path):
    m = _manifest_for(tmp_path)
    del m["process"]
    with pytest.raises(_manifest.ManifestError, match="process"):
        _manifest.write_manifest(str(tmp_path), m)
    assert not os.path.exists(_manifest.manifest_path(str(tmp_path)))


def test_failed_rename_leaves_no_temp_and_no_manifest(tmp_path, monkeypatch):
    _images(tmp_path)
    m = _manifest_for(tmp_path)

    def boom(a, b):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(_manifest.os, "rename", boom)
    with pytest.raises(OSError):
        _manifest.write_manifest(str(tmp_path), m)
    assert not os.path.exists(_manifest.manifest_path(str(tmp_path)))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".ckpt-")]


@pytest.mark.parametrize("mutate,needle", [
    (lambda m: m.update(schema=2), "schema 2"),
    (lambda m: m.update(complete=False), "complete"),
    (lambda m: m["process"].pop("start_time"), "start_time"),
    (lambda m: m["process"].update(pid=True), "pid"),
    (lambda m: m.update(images=[]), "no images"),
    (lambda m: m["images"].append({"name": "x.img"}), "x.img"),
    (lambda m: m["binaries"].update(exe={}), "exe.sha256"),
    (lambda m: m.update(images_total_bytes="1"), "images_total_bytes"),
])
def test_validate_names_each_problem(tmp_path, mutate, needle):
    _images(tmp_path)
    m = _manifest_for(tmp_path)
    assert _manifest.validate(m) == []
    mutate(m)
    problems = _manifest.validate(m)
    assert problems and any(needle in p for p in problems), problems


def test_read_manifest_garbage(tmp_path):
    (tmp_path / _manifest.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(_manifest.ManifestError, match="not valid JSON"):
        _manifest.read_manifest(str(tmp_path))
    assert _manifest.read_manifest(str(tmp_path / "nope")) is None


def test_load_manifest_bytes_returns_what_it_parsed(tmp_path):
    assert _manifest.load_manifest_bytes(str(tmp_path)) is None
    raw = b'{"schema": 1, "x": "\xc3\xa9"}'
    (tmp_path / _manifest.MANIFEST_NAME).write_bytes(raw)
    data, got = _manifest.load_manifest_bytes(str(tmp_path))
    assert got == raw and data == {"schema": 1, "x": "\u00e9"}
    (tmp_path / _manifest.MANIFEST_NAME).write_bytes(b"\xff\xfe")
    with pytest.raises(_manifest.ManifestError, match="not valid JSON"):
        _manifest.load_manifest_bytes(str(tmp_path))


def test_verify_catches_one_flipped_byte(tmp_path):
    _images(tmp_path)
    m = _manifest_for(tmp_path)
    assert _manifest.verify_images(m, str(tmp_path)) == []
    p = tmp_path / "pages-1.img"
    data = bytearray(p.read_bytes())
    data[4000] ^= 0x01
    p.write_bytes(bytes(data))
    problems = _manifest.verify_images(m, str(tmp_path))
    assert problems == ["image pages-1.img does not match its recorded sha256 (corrupted or altered)"]


def test_verify_missing_size_extra_and_remote(tmp_path):
    _images(tmp_path)
    m = _manifest_for(tmp_path)
    m["images"].append({"name": "pagemap-10.img", "remote": True})
    os.unlink(tmp_path / "inventory.img")
    with open(tmp_path / "core-10.img", "ab") as fh:
        fh.write(b"x")
    (tmp_path / "pages-2.img").write_bytes(b"old")
    problems = _manifest.verify_images(m, str(tmp_path))
    assert "image inventory.img is missing" in problems
    assert any("core-10.img has 401 bytes" in p for p in problems)
    assert any("pages-2.img is not listed" in p for p in problems)
    assert not any("pagemap-10" in p for p in problems)
    assert any("pagemap-10.img is missing" in p for p in _manifest.verify_images(m, str(tmp_path),
                                                                                 check_remote=True))


def test_pages_named_by_the_page_server_are_accepted_on_the_receiving_host(tmp_path):
    _images(tmp_path)
    m = _manifest_for(tmp_path)
    m["remote_pages"] = {"address": "10.0.0.2", "port": 27000, "files": ["pagemap-10.img"],
                         "pattern": "pages-*.img"}
    (tmp_path / "pages-65537.img").write_bytes(b"pages")
    assert _manifest.verify_images(m, str(tmp_path), check_remote=True) == []
    # On a host that did not receive them, a stray pages file is still refused.
    assert any("pages-65537.img is not listed" in p for p in _manifest.verify_images(m, str(tmp_path)))
    # Only the pattern is excused, nothing else.
    (tmp_path / "core-99.img").write_bytes(b"x")
    assert any("core-99.img is not listed" in p
               for p in _manifest.verify_images(m, str(tmp_path), check_remote=True))


def test_verify_refuses_path_escape(tmp_path):
    m = {"images": [{"name": "../etc/passwd", "size": 1, "sha256": "x"}]}
    assert "invalid image name" in _manifest.verify_images(m, str(tmp_path))[0]


def test_inspect_dir_states(tmp_path):
    d = tmp_path / "imgs"
    assert _manifest.inspect_dir(str(d))["state"] == "absent"
    d.mkdir()
    (d / ".ckpt-lock").write_text("")
    (d / "dump.log").write_text("")
    assert _manifest.inspect_dir(str(d))["state"] == "empty"
    (d / "core-1.img").write_bytes(b"x")
    info = _manifest.inspect_dir(str(d))
    assert info["state"] == "foreign" and info["entries"] == ["core-1.img"]
    _manifest.write_failed_marker(str(d), "boom")
    assert _manifest.inspect_dir(str(d))["state"] == "failed"
    (d / "other.txt").write_text("not ours")
    assert _manifest.inspect_dir(str(d))["state"] == "foreign"
    os.unlink(d / "other.txt")
    _manifest.clear_own_leftovers(str(d), ["core-1.img"])
    assert _manifest.inspect_dir(str(d))["state"] == "empty"
    _images(d)
    _manifest.write_manifest(str(d), _manifest_for(d))
    info = _manifest.inspect_dir(str(d))
    assert info["state"] == "complete" and info["manifest"]["process"]["pid"] == 10
    (d / _manifest.MANIFEST_NAME).write_text("[]")
    assert _manifest.inspect_dir(str(d))["state"] == "invalid"


def test_move_aside_keeps_everything_but_the_lock(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    _images(d)
    (d / ".ckpt-lock").write_text("1")
    dest = _manifest.move_aside(str(d), stamp="T1")
    assert dest == str(tmp_path / "imgs.replaced-T1")
    assert sorted(os.listdir(d)) == [".ckpt-lock"]
    assert "core-10.img" in os.listdir(dest)
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700


def test_same_process():
    a = {"boot_id": "b", "pid": 1, "start_time": 5}
    assert _manifest.same_process(a, dict(a, comm="x"))
    assert not _manifest.same_process(a, dict(a, start_time=6))
    assert not _manifest.same_process(a, {"pid": 1})
    assert not _manifest.same_process(None, a)


def test_host_identity_has_the_keys():
    h = _manifest.host_identity()
    assert set(h) == {"hostname", "boot_id", "kernel", "machine_id"}
    assert h["boot_id"] and h["kernel"]


def test_read_json_is_the_one_reader_of_records(tmp_path):
    path = str(tmp_path / "r.json")
    assert _manifest.read_json(path) is None and _manifest.read_record(path) is None
    (tmp_path / "r.json").write_bytes(b'{"pid": 7}')
    assert _manifest.read_json(path) == ({"pid": 7}, b'{"pid": 7}')
    assert _manifest.read_record(path) == {"pid": 7}
    (tmp_path / "r.json").write_bytes(b"[1, 2]")
    assert _manifest.read_json(path)[0] == [1, 2]
    assert _manifest.read_record(path) is None, "a record is a JSON object"
    (tmp_path / "r.json").write_bytes(b"{broken")
    with pytest.raises(_manifest.ManifestError, match="is not valid JSON") as exc:
        _manifest.read_json(path)
    assert isinstance(exc.value.cause, ValueError)
    assert _manifest.read_record(path) is None
    with pytest.raises(_manifest.ManifestError, match="cannot read") as exc:
        _manifest.read_json(str(tmp_path))          # a directory
    assert isinstance(exc.value.cause, OSError)


def test_failed_marker_round_trip(tmp_path):
    assert _manifest.read_failed_marker(str(tmp_path)) is None
    _manifest.write_failed_marker(str(tmp_path), "disk full", {"pid": 3})
    marker = _manifest.read_failed_marker(str(tmp_path))
    assert marker["cause"] == "disk full" and marker["pid"] == 3 and marker["failed"] is True


def test_checkpoint_bytes_counts_the_pages_a_page_server_received():
    assert _manifest.checkpoint_bytes({"images_total_bytes": 4096}) == 4096
    assert _manifest.checkpoint_bytes({"images_total_bytes": 4096,
                                       "remote_pages": {"pattern": "pages-*.img", "bytes": 8192}}) == 12288
    assert _manifest.checkpoint_bytes({}) == 0


def _image(d, name, data):
    (d / name).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_hash_arrived_hashes_named_images_once_and_leaves_temporaries_and_skipped(tmp_path):
    _image(tmp_path, "core-1.img", b"core")
    _image(tmp_path, "pages-1.img", b"pages")
    _image(tmp_path, ".mm-1.img.Xy12", b"partial")      # rsync's temporary name
    known = {}
    got = []
    while True:
        name = _manifest.hash_arrived(str(tmp_path), known, skip=("pages-*.img",))
        if name is None:
            break
        got.append(name)
    assert got == ["core-1.img"]
    assert known["core-1.img"][1] == hashlib.sha256(b"core").hexdigest()
    assert _manifest.hash_arrived(str(tmp_path), known) == "pages-1.img"
    assert _manifest.hash_arrived(str(tmp_path), known) is None


def test_verify_images_uses_a_known_hash_only_while_the_file_is_unchanged(tmp_path):
    digest = _image(tmp_path, "core-1.img", b"core")
    manifest = {"images": [{"name": "core-1.img", "size": 4, "sha256": digest}]}
    key = _checksum.stat_key(os.lstat(tmp_path / "core-1.img"))
    # A known entry with this file's stat key is believed (here a wrong digest, to show it is used) ...
    known = {"core-1.img": (key, "0" * 64)}
    assert "does not match its recorded sha256" in _manifest.verify_images(manifest, str(tmp_path), known=known)[0]
    # ... and one whose key no longer matches (the file was rewritten since) is not.
    st = os.stat(tmp_path / "core-1.img")
    time.sleep(0.05)   # past the kernel's timestamp granularity, so the ctime moves
    (tmp_path / "core-1.img").write_bytes(b"core")
    os.utime(tmp_path / "core-1.img", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _manifest.verify_images(manifest, str(tmp_path), known=known) == []


def test_images_to_come_names_the_listed_local_images_not_yet_whole(tmp_path):
    _image(tmp_path, "core-1.img", b"core")
    _image(tmp_path, "mm-1.img", b"mm")          # still growing: fewer bytes than listed
    manifest = {"images": [{"name": "core-1.img", "size": 4}, {"name": "mm-1.img", "size": 10},
                           {"name": "pstree.img", "size": 3}, {"name": "pages-1.img", "remote": True}]}
    assert _manifest.images_to_come(manifest, str(tmp_path)) == ["mm-1.img", "pstree.img"]
    _image(tmp_path, "mm-1.img", b"0123456789")
    _image(tmp_path, "pstree.img", b"pst")
    assert _manifest.images_to_come(manifest, str(tmp_path)) == []
    assert _manifest.images_to_come({}, str(tmp_path)) == []
