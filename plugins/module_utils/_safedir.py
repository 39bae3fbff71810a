# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one trust rule for images directories, and files opened inside one safely.

Checkpoint images are the whole memory of a process, and everything here runs
as root. An images directory is trusted only when no one but root can change
what it holds or where its path leads:

* every component of its path, from ``/`` down, is a real directory (no
  symlink), owned by root;
* every component above it is writable only by root, or is sticky
  (``/tmp``, ``/var/tmp``: others cannot rename or remove root's entries there);
* the directory itself is owned by root and writable by no group or other
  (a sticky 1777 directory is refused: anyone could plant files in it).

The walk opens each component relative to the one above it with
``O_NOFOLLOW``, so what is checked is what is held: :func:`hold` returns a
:class:`HeldDir` whose file descriptor is the verified directory. A missing
tail is created there (``mkdir`` 0700 relative to the held parent), never
through a path that could have been swapped. Files inside are opened relative
to that descriptor with ``O_NOFOLLOW`` (and ``O_EXCL`` when new), so a planted
symlink is refused, never followed. criu receives the verified path: since
root owns every component and nobody else can write them, the path keeps
leading to the held directory (:meth:`HeldDir.check_path` proves it again
right before criu runs).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW | os.O_CLOEXEC


# What the trust rule guards unless told otherwise; its messages say why images need it.
IMAGES_DIR = "images directory"


class UntrustedDirError(CkptError):
    """An images directory (or a file in it) that breaks the trust rule; the message names the reason."""


def _components(path):
    if not isinstance(path, str) or not os.path.isabs(path):
        raise UntrustedDirError("images_dir must be an absolute path, got %r" % (path,))
    parts = [p for p in os.path.normpath(path).split("/") if p]
    if ".." in path.split("/"):
        raise UntrustedDirError("images_dir must not contain '..' components, got %r" % path)
    return parts


def _open_component(parent_fd, name, shown):
    """Open NAME below PARENT_FD as a directory without following a symlink."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and _is_link(parent_fd, name)):
            raise UntrustedDirError("%s is a symlink; an images directory must not be or pass through a "
                                    "symlink (someone could redirect it): give the real path" % shown)
        if exc.errno == errno.ENOTDIR:
            raise UntrustedDirError("%s exists and is not a directory" % shown)
        raise


def _is_link(parent_fd, name):
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=parent_fd).st_mode)
    except OSError:
        return False


def _owners(owner):
    return "root" if owner == 0 else "root or uid %d (the user this runs as)" % owner


def _check_ancestor(st, shown, owner=0, what=IMAGES_DIR):
    if st.st_uid not in (0, owner):
        raise UntrustedDirError("%s (above the %s) is owned by uid %d, not %s: that user could swap the %s "
                                "for one of their own; use a path whose every directory is owned by %s"
                                % (shown, what, st.st_uid, _owners(owner), what, _owners(owner)))
    # Root's rule: no group may write above; a user's own directory (the controller's report under an
    # execution environment's group-writable /runner, say): no other user.
    if st.st_mode & (0o022 if owner == 0 else 0o002) and not st.st_mode & stat.S_ISVTX:
        raise UntrustedDirError("%s (above the %s) is writable by %s (mode %04o) without the sticky bit: "
                                "others could swap the %s; use a path whose directories only %s can write"
                                % (shown, what, _who(st.st_mode), stat.S_IMODE(st.st_mode), what, _owners(owner)))


def _check_final(st, shown, owner=0, what=IMAGES_DIR):
    if what != IMAGES_DIR:
        if st.st_uid != owner:
            raise UntrustedDirError("%s %s is owned by uid %d, not uid %d (the user this runs as): someone else "
                                    "made it and could read or replace what is written there; use a directory "
                                    "of your own (it is created 0700)" % (what, shown, st.st_uid, owner))
        if st.st_mode & 0o022:
            raise UntrustedDirError("%s %s is writable by %s (mode %04o): others could replace what is written "
                                    "there; make it writable only by you (chmod 0700) or use a fresh directory"
                                    % (what, shown, _who(st.st_mode), stat.S_IMODE(st.st_mode)))
        return
    if st.st_uid != 0:
        raise UntrustedDirError("images directory %s is owned by uid %d, not root; images are process memory "
                                "restored as root, so the directory must be owned by root and writable only by "
                                "it: check who wrote it, then use a fresh directory" % (shown, st.st_uid))
    if st.st_mode & 0o022:
        raise UntrustedDirError("images directory %s is writable by %s (mode %04o); anyone who can write it can "
                                "plant or replace images, so it must be writable only by root: use a fresh "
                                "directory (it is created 0700)" % (shown, _who(st.st_mode),
                                                                    stat.S_IMODE(st.st_mode)))


def _who(mode):
    return " and ".join(w for w, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit)


def _walk(path, create, mode=0o700, owner=0, what=IMAGES_DIR):
    """(fd of the verified directory, 0), or (None, number of missing components) when
    PATH is incomplete and not ``create``; UntrustedDirError on a broken rule."""
    parts = _components(path)
    fd = os.open("/", _DIR_FLAGS)
    try:
        for i, name in enumerate(parts):
            shown = "/" + "/".join(parts[:i + 1])
            _check_ancestor(os.fstat(fd), "/" + "/".join(parts[:i]) or "/", owner, what)
            try:
                nfd = _open_component(fd, name, shown)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise UntrustedDirError("cannot open %s: %s" % (shown, exc.strerror or exc))
                if not create:
                    os.close(fd)
                    return None, len(parts) - i
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # created by someone else meanwhile: the checks below decide
                nfd = _open_component(fd, name, shown)
            os.close(fd)
            fd = nfd
        _check_final(os.fstat(fd), "/" + "/".join(parts), owner, what)
    except BaseException:
        os.close(fd)
        raise
    return fd, 0


def check(path):
    """The trust rule for PATH without creating anything.

    Returns the number of missing trailing components (0 when PATH exists);
    raises UntrustedDirError naming the first rule broken.
    """
    fd, missing = _walk(path, create=False)
    if fd is not None:
        os.close(fd)
    return missing


def hold(path, create=False, mode=0o700, owner=0, what=IMAGES_DIR):
    """A HeldDir of PATH after checking the trust rule; missing components are created
    (0700) only with ``create``. UntrustedDirError when a rule is broken,
    FileNotFoundError when PATH is missing and ``create`` is false.

    ``owner`` other than root (a user's own directory, such as the controller's
    report directory): the directory must be that user's, and each one above it
    owned by root or that user and writable by no other user (a group may,
    as an execution environment's /runner is); ``what`` names it in the
    messages."""
    fd, missing = _walk(path, create, mode, owner, what)
    if fd is None:
        raise FileNotFoundError(errno.ENOENT, "no such directory (%d components missing)" % missing, path)
    return HeldDir("/" + "/".join(_components(path)), fd)


def root_module_path(module, name):
    """The module's ``path`` parameter, normalised, for a module ``name``
    that writes root's secrets: the module fails unless it is absolute and
    the module runs as root."""
    path = os.path.normpath(module.params["path"])
    if not os.path.isabs(path):
        module.fail_json(msg="path must be absolute, got %r" % module.params["path"], path=path)
    if os.geteuid() != 0:
        module.fail_json(msg="ckpt.criu.%s must run as root (become: true); running as uid %d"
                         % (name, os.geteuid()), path=path)
    return path


def fresh_dir(path):
    """PATH removed if it exists (a directory, a file or a symlink: never
    followed) and made again, empty and 0700, in its parent, which must pass the
    trust rule (created 0700 when missing). Returns the new directory held.
    For credentials made for one use: nothing of an earlier attempt is kept."""
    parent, name = os.path.split(os.path.normpath(path))
    if not name or name in (".", ".."):
        raise UntrustedDirError("%s is not a directory path" % path)
    with hold(parent, create=True) as held:
        fresh_entry(held, name)
    return hold(path)


def fresh_entry(held, name):
    """NAME in the HeldDir ``held`` removed if it exists (a directory, a file or
    a symlink: never followed) and made again, empty and 0700."""
    remove_entry(held, name)
    os.mkdir(name, 0o700, dir_fd=held.fd)


def plain_name(name):
    """Whether NAME is one path component: not empty, no "/", not "." or ".."."""
    return bool(name) and "/" not in name and name not in (".", "..")


def remove_entry(held, name):
    """NAME in the HeldDir ``held`` removed if it exists: a directory with all
    in it, a file or a symlink (never followed)."""
    if not plain_name(name):
        raise UntrustedDirError("%r is not a plain directory name" % name)
    try:
        st = os.lstat(name, dir_fd=held.fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=held.fd)
    else:
        held.check_path()
        shutil.rmtree(os.path.join(held.path, name))   # fd-based: never follows a symlink


def remove_dir(path):
    """PATH removed with all in it, through its parent held after the trust
    rule (never through a symlink); a missing PATH is fine."""
    parent, name = os.path.split(os.path.normpath(path))
    with hold(parent) as held:
        remove_entry(held, name)


class HeldDir(object):
    """A verified images directory, held open; files in it opened relative to the fd."""

    def __init__(self, path, fd):
        self.path = path
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def check_path(self):
        """UntrustedDirError unless self.path still leads to the held directory."""
        held = os.fstat(self.fd)
        try:
            now = os.stat(self.path)
        except OSError as exc:
            raise UntrustedDirError("images directory %s went away while in use: %s" % (self.path, exc.strerror))
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            raise UntrustedDirError("images directory %s was replaced while in use; nothing more is written "
                                    "there" % self.path)

    def open(self, name, flags, mode=0o600):
        """os.open of NAME in the directory, never following a symlink (UntrustedDirError on one)."""
        if "/" in name:
            raise ValueError("a plain file name is needed, got %r" % name)
        try:
            return os.open(name, flags | NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UntrustedDirError("%s in %s is a symlink; it is never followed: remove it (someone may "
                                        "have planted it to redirect root's writes)" % (name, self.path))
            raise

    def read_text(self, name):
        """The text of NAME in the directory (never through a symlink)."""
        with os.fdopen(self.open(name, os.O_RDONLY), "r") as fh:
            return fh.read()

    def write_new(self, name, text, mode=0o600):
        """A new file NAME holding text (O_EXCL, never through a symlink); FileExistsError if NAME exists."""
        with os.fdopen(self.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as fh:
            fh.write(text)

    def fresh(self, name, mode=0o600):
        """Replace NAME by a new empty regular file (O_EXCL, O_NOFOLLOW) and return its path.

        Whatever was there (an old log, a planted symlink) is unlinked, never
        followed; criu then opens a file root just created in a directory only
        root can write.
        """
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise UntrustedDirError("%s in %s is a directory; remove it" % (name, self.path))
        fd = self.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.close(fd)
        return os.path.join(self.path, name)


def hold_images_dir(images_dir, error, create=True):
    """The verified images_dir held open (created 0700 when missing); ``error`` raised on a broken rule."""
    try:
        return hold(images_dir, create=create)
    except UntrustedDirError as exc:
        raise error(exc.msg)
    except OSError as exc:
        raise error("cannot create or open images_dir %s: %s" % (images_dir, exc.strerror or exc))


def fresh_file(held, name, error):
    """A new, empty file NAME (a log) in the held directory; an old one, or a planted symlink, is unlinked;
    ``error`` raised when the directory is no longer the one held."""
    try:
        held.check_path()
        return held.fresh(name)
    except UntrustedDirError as exc:
        raise error(exc.msg)
