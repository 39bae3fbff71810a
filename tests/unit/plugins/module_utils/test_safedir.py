"""The images-directory trust rule and the bounded pieces around it, on a real filesystem."""
from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _criu, _dump, _restore, _safedir


@pytest.fixture
def root(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("these tests need root: the rule is about root-owned directories (run them as root)")
    os.chmod(str(tmp_path), 0o755)
    return tmp_path


def test_missing_tail_is_counted_and_created_0700(root):
    path = str(root / "a" / "b")
    assert _safedir.check(path) == 2
    with _safedir.hold(path, create=True) as held:
        assert held.path == path
        held.check_path()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700 and _safedir.check(path) == 0
    with pytest.raises(FileNotFoundError):
        _safedir.hold(str(root / "c"))


@pytest.mark.parametrize("mode, words", [(0o1777, "its group and others"), (0o770, "its group"), (0o757, "others")])
def test_writable_images_dir_is_refused_and_left_alone(root, mode, words):
    d = root / "d"
    d.mkdir()
    os.chmod(str(d), mode)
    with pytest.raises(_safedir.UntrustedDirError, match="writable by %s" % words):
        _safedir.hold(str(d), create=True)
    assert stat.S_IMODE(d.stat().st_mode) == mode


def test_foreign_owner_anywhere_on_the_path_is_refused(root):
    parent = root / "p"
    parent.mkdir()
    os.chown(str(parent), 65534, 65534)
    with pytest.raises(_safedir.UntrustedDirError, match="above the images directory.*uid 65534"):
        _safedir.check(str(parent / "images"))
    assert not (parent / "images").exists()
    os.chown(str(parent), 0, 0)
    (parent / "images").mkdir()
    os.chown(str(parent / "images"), 65534, 65534)
    with pytest.raises(_safedir.UntrustedDirError, match="owned by uid 65534, not root"):
        _safedir.check(str(parent / "images"))


def test_sticky_world_writable_parent_is_fine_symlink_is_not(root):
    sticky = root / "tmp"
    sticky.mkdir()
    os.chmod(str(sticky), 0o1777)
    assert _safedir.check(str(sticky / "images")) == 1
    (root / "link").symlink_to(str(root))
    with pytest.raises(_safedir.UntrustedDirError, match="symlink"):
        _safedir.check(str(root / "link" / "tmp"))


def test_planted_symlinks_in_a_held_dir_are_never_followed(root):
    victim = root / "victim"
    victim.write_text("keep")
    d = root / "d"
    with _safedir.hold(str(d), create=True) as held:
        os.symlink(str(victim), str(d / "dump.log"))
        os.symlink(str(victim), str(d / ".ckpt-lock"))
        with pytest.raises(_safedir.UntrustedDirError, match="symlink"):
            held.open(".ckpt-lock", os.O_RDWR | os.O_CREAT)
        path = held.fresh("dump.log")
        assert os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) == 0
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert victim.read_text() == "keep"


def test_a_huge_log_is_read_head_and_tail_only(tmp_path):
    log = tmp_path / "restore.log"
    with open(str(log), "w") as fh:
        fh.write("(00.000001) Error (criu/cr-restore.c:1): first cause\n")
        for i in range(200000):
            fh.write("(00.000002) 7: restorer loop line %d\n" % i)
        fh.write("(00.000003) Restore finished successfully\n")
    text = _criu.read_log(str(log), head=4096, tail=8192)
    assert len(text) < 4096 + 8192 + 200
    assert "first cause" in text and "Restore finished successfully" in text and "left out" in text
    assert _criu.read_log(str(tmp_path / "none")) == ""


def test_default_restore_timeout_grows_with_the_images():
    assert _restore.default_timeout({"images_total_bytes": 0}) == 30.0
    assert _restore.default_timeout({"images_total_bytes": 1 << 30}) == 94.0


@pytest.mark.parametrize("port, ok", [(1, True), (65535, True), (0, False), (70000, False), (-1, False),
                                      ("x", False), (True, False)])
def test_port_range_names_the_option(port, ok):
    problem = _dump.port_problem(port, "page_server.port")
    assert (problem is None) == ok
    if not ok:
        assert problem.startswith("page_server.port must")
    assert _dump.port_problem(0, "port", allow_zero=True) is None


def test_address_shapes():
    assert _dump.address_problem("10.0.0.1", "a") is None and _dump.address_problem("::1", "a") is None
    assert _dump.address_problem("node-2.example", "a") is None
    assert "must be an IP address" in _dump.address_problem("10.0.0.1; rm", "a")
