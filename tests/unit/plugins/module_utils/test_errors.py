"""The one error base: every error class of module_utils derives from CkptError,
and a module maps any of them to fail_json the same way, details kept."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from ansible_collections.ckpt.criu.plugins import module_utils
from ansible_collections.ckpt.criu.plugins.module_utils import _criu, _dump, _procfs, _restore, _transfer, _unit
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError, fail


def _error_classes():
    found = []
    for info in pkgutil.iter_modules(module_utils.__path__):
        mod = importlib.import_module("%s.%s" % (module_utils.__name__, info.name))
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found.append(obj)
    return found


def test_every_error_of_module_utils_derives_from_ckpt_error():
    classes = _error_classes()
    assert len(classes) >= 10, classes
    assert [c.__name__ for c in classes if not issubclass(c, CkptError)] == []


class _Module(object):
    def fail_json(self, **kw):
        raise SystemExit(kw)


@pytest.mark.parametrize("exc,expected", [
    (_dump.DumpError("refused", pid=7, skipped=None), {"msg": "refused", "pid": 7}),
    (_procfs.ProcfsError("no such PID", pid=9, kind="absent"), {"msg": "no such PID", "pid": 9}),
    (_criu.CriuError("criu failed", rc=1, log_path="/x/dump.log", argv=["criu", "dump"]),
     {"msg": "criu failed", "rc": 1, "log_path": "/x/dump.log", "cmd": ["criu", "dump"]}),
    (_restore.RestoreError("taken", details={"holders": [1]}, rc=2), {"msg": "taken", "rc": 2, "holders": [1]}),
    (_transfer.TransferError("rsync failed", rc=23, stderr="e", argv=["rsync"]),
     {"msg": "rsync failed", "rc": 23, "stderr": "e", "cmd": ["rsync"]}),
    (_unit.UnitError("not running", unit="a.service", state="inactive"),
     {"msg": "not running", "unit": "a.service", "state": "inactive"}),
])
def test_fail_keeps_the_details(exc, expected):
    with pytest.raises(SystemExit) as ended:
        fail(_Module(), exc, changed=False)
    assert ended.value.args[0] == dict(expected, changed=False)
    assert str(exc) == exc.msg


def test_the_error_wins_over_extra():
    with pytest.raises(SystemExit) as ended:
        fail(_Module(), CkptError("bad", changed=True), changed=False)
    assert ended.value.args[0] == {"msg": "bad", "changed": True}


def test_fail_passes_the_result_through_the_modules_filter():
    def hide(kw):
        return dict(kw, cmdline=["python3"]) if "cmdline" in kw else kw
    with pytest.raises(SystemExit) as ended:
        fail(_Module(), CkptError("gone", cmdline=["python3", "--password=x"], pid=4), shown=hide, changed=False)
    assert ended.value.args[0] == {"msg": "gone", "cmdline": ["python3"], "pid": 4, "changed": False}
