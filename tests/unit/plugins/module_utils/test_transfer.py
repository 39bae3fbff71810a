"""Validation of the transfer spec (no command is run here)."""
from __future__ import annotations

import pytest

from ansible_collections.ckpt.criu.plugins.module_utils import _transfer


def test_good_spec():
    assert _transfer.validate({"destination": "root@10.0.0.2", "path": "/var/lib/ckpt/pid-42",
                               "rsh": ["ssh", "-p", "22", "-o", "ControlPath=/run/ckpt-criu-ssh/%C"]}) == []


@pytest.mark.parametrize("spec,word", [
    ({"destination": "-oProxyCommand=x", "path": "/x"}, "destination"),
    ({"destination": "a b", "path": "/x"}, "destination"),
    ({"destination": "node2", "path": "relative"}, "path"),
    ({"destination": "node2", "path": "/a/../etc"}, "path"),
    ({"destination": "node2", "path": "/a b"}, "path"),
    ({"destination": "node2", "path": "/x", "rsh": ["ssh", "-o", "ProxyCommand=sh -c id"]}, "rsh"),
    ({"destination": "node2", "path": "/x", "rsh": ["ssh", "'quoted'"]}, "rsh"),
])
def test_bad_specs_are_refused(spec, word):
    problems = _transfer.validate(spec)
    assert problems and word in problems[0]


def test_push_refuses_before_running_anything():
    with pytest.raises(_transfer.TransferError, match="destination"):
        _transfer.Push("/nonexistent", {"destination": "a b", "path": "/x"})
