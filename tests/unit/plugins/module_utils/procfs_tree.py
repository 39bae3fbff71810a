"""Recorded /proc trees (fixtures/procfs) for the unit tests: the pytest fixtures pipe_tree and unix_tree.

A test module uses them by binding the names, e.g. ``pipe_tree = procfs_tree.pipe_tree``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

FIX = Path(__file__).parent / "fixtures" / "procfs"


def materialize(name, dest):
    """Copy the recorded tree fixtures/procfs/NAME to DEST and re-create its symbolic links (fd/*, exe,
    cwd) from links.json there: a collection may not hold links that point outside it, so they are
    stored as data. Every PID directory gets an fd/ directory, as record.py creates one."""
    src = FIX / name
    shutil.copytree(str(src), str(dest), ignore=shutil.ignore_patterns("links.json"))
    for pid_dir in dest.iterdir():
        if pid_dir.name.isdigit():
            (pid_dir / "fd").mkdir(exist_ok=True)
    for rel, target in json.loads((src / "links.json").read_text()).items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, str(dest / rel))
    return str(dest)


@pytest.fixture
def pipe_tree(tmp_path):
    """8183 (comm "my (app) ) x") -> child 8202; 8181 reads their stdout pipe."""
    return materialize("pipe_tree", tmp_path / "pipe_tree")


@pytest.fixture
def unix_tree(tmp_path):
    """8587 (sleep) stdout on a unix socket to listener 8585."""
    return materialize("unix_tree", tmp_path / "unix_tree")
