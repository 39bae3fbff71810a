"""_identity's readers on real processes: this one, and a zombie child it has not reaped yet."""
from __future__ import annotations

import os
import time

from ansible_collections.ckpt.criu.plugins.module_utils import _identity


def _zombie():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = time.monotonic() + 5
    while _identity.state_letter(pid) != "Z":
        assert time.monotonic() < deadline, "the child never became a zombie"
        time.sleep(0.01)
    return pid


def test_readers_of_a_live_process():
    me = os.getpid()
    assert _identity.read_sid(me) == os.getsid(0)
    assert _identity.state_letter(me) == "R"
    ident = _identity.live_identity(me)
    assert ident["pid"] == me and ident["start_time"] == _identity.read_stat(me)["start_time"]


def test_a_zombie_has_a_state_but_no_live_identity():
    pid = _zombie()
    try:
        assert _identity.read_identity(pid)["state"] == "Z"
        assert _identity.live_identity(pid) is None
        assert _identity.wait_state(pid, ("absent", "zombie"), 0) == "zombie"
    finally:
        os.waitpid(pid, 0)
    assert _identity.state_letter(pid) is None and _identity.read_sid(pid) is None
    assert _identity.live_identity(pid) is None and _identity.process_state(pid) == "absent"


def test_public_shows_the_state_as_a_word():
    assert _identity.public(None) is None
    assert _identity.public({"pid": 3, "state": "T"}) == {"pid": 3, "state": "stopped"}
