# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The logic of ``ckpt.criu.page_server``: a daemonized ``criu page-server`` that receives the pages of
one dump into images_dir, recorded in ``.ckpt-page-server.json`` so that it is found, and stopped, as
itself (never a process that reused its PID)."""

from __future__ import annotations

import os
import signal
import socket

from ansible_collections.ckpt.criu.plugins.module_utils import _criu
from ansible_collections.ckpt.criu.plugins.module_utils import _dump
from ansible_collections.ckpt.criu.plugins.module_utils import _identity
from ansible_collections.ckpt.criu.plugins.module_utils import _manifest
from ansible_collections.ckpt.criu.plugins.module_utils import _safedir
from ansible_collections.ckpt.criu.plugins.module_utils._errors import CkptError

# What a process that ended looks like to _identity.wait_state.
GONE = ("absent", "zombie")


class PageServerError(CkptError):
    """A page server refused, or failed to start, with what a person needs to act on it."""


PS_PIDFILE_NAME = ".ckpt-page-server.pid"
PS_LOG_NAME = "page-server.log"


def pick_free_port(address):
    """A TCP port the kernel says is free on address now (criu refuses --port 0)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((address, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def page_server_running(record, proc_root=_identity.PROC):
    """True when the process the record names still runs and is that page server."""
    if not record or not record.get("pid"):
        return False
    live = _identity.live_identity(record["pid"], proc_root)
    if not live or not _manifest.same_process(record, live):
        return False
    cmdline = live.get("cmdline") or []
    return "page-server" in cmdline and record.get("images_dir") in cmdline


def read_ps_record(images_dir):
    """The record of the page server of images_dir, or None."""
    return _manifest.read_record(os.path.join(images_dir, _manifest.PAGE_SERVER_RECORD_NAME))


def build_page_server_args(images_dir, address, port, pidfile, tls=None):
    args = ["-D", images_dir, "--address", address, "--port", str(int(port)), "-d", "--pidfile", pidfile]
    args.extend(_criu.tls_args(tls or {}))
    return args


def _ps_result(record, images_dir, changed, msg):
    return {"changed": changed, "msg": msg, "pid": record.get("pid") if record else None,
            "port": record.get("port") if record else None,
            "address": record.get("address") if record else None,
            "images_dir": images_dir, "log_path": os.path.join(images_dir, PS_LOG_NAME),
            "criu_cmd": record.get("argv") if record else None}


def stop_page_server(record, timeout=3.0, proc_root=_identity.PROC):
    """SIGTERM, then SIGKILL, the page server the record names, through a pidfd pinned to
    its recorded start time (a reused PID is never signalled)."""
    pid, start = record["pid"], record.get("start_time")
    _identity.send_signal(pid, signal.SIGTERM, start_time=start, proc_root=proc_root)
    if _identity.wait_state(pid, GONE, timeout, proc_root) not in GONE:
        _identity.send_signal(pid, signal.SIGKILL, start_time=start, proc_root=proc_root)
        _identity.wait_state(pid, GONE, timeout, proc_root)


def page_server(params, check_mode=False, proc_root=_identity.PROC):
    """Start (daemonized) or stop the page server of images_dir; the module result dict."""
    if os.geteuid() != 0:
        raise PageServerError("ckpt.criu.page_server must run as root (become: true) (running as uid %d)"
                              % os.geteuid())
    images_dir = _dump.validate_images_dir(params["images_dir"])
    state = params.get("state") or "started"
    record = read_ps_record(images_dir) if os.path.isdir(images_dir) else None
    running = page_server_running(record, proc_root)

    if state == "stopped":
        if not running:
            return _ps_result(None, images_dir, False, "no page server of %s is running" % images_dir)
        if not check_mode:
            stop_page_server(record, proc_root=proc_root)
        return _ps_result(record, images_dir, True, "stopped the page server PID %d" % record["pid"])

    address = params.get("address")
    if not address:
        raise PageServerError("address is required to start a page server: give the destination's own address (it "
                              "listens there only); there is no default, so it never listens on every address by "
                              "accident")
    problem = (_dump.port_problem(params.get("port") or 0, "port", allow_zero=True)
               or _dump.address_problem(address, "address"))
    if problem:
        raise PageServerError(problem)
    port = int(params.get("port") or 0)
    tls = dict((k, params.get(k)) for k in ("tls", "tls_cacert", "tls_cert", "tls_key"))
    for key in ("tls_cacert", "tls_cert", "tls_key"):
        if tls.get(key) and not os.path.isfile(tls[key]):
            raise PageServerError("%s %s does not exist on this host" % (key, tls[key]))
    if running:
        if record.get("address") == address and (port == 0 or record.get("port") == port):
            return _ps_result(record, images_dir, False, "the page server PID %d of %s is already listening on "
                              "%s:%s" % (record["pid"], images_dir, address, record.get("port")))
        raise PageServerError("a page server of %s is already running (PID %d on %s:%s); stop it first (state: stopped)"
                              % (images_dir, record["pid"], record.get("address"), record.get("port")))

    info = _manifest.inspect_dir(images_dir)
    leftovers = [e for e in info.get("entries") or []
                 if not (e.startswith(_manifest.PRIVATE_PREFIX) or e.endswith(".log") or e == _manifest.LOCK_NAME)]
    if leftovers and info["state"] != "empty":
        if not params.get("force"):
            raise PageServerError("images_dir %s is not empty (%s); a page server writes pages into it and would mix them "
                                  "with that content: use an empty directory, or force: true to move the old content "
                                  "aside" % (images_dir, ", ".join(leftovers[:5])))
    if check_mode:
        return {"changed": True, "msg": "would start a page server for %s on %s:%s" % (
            images_dir, address, port or "<free port>"), "pid": None, "port": port or None,
            "address": address, "images_dir": images_dir, "log_path": os.path.join(images_dir, PS_LOG_NAME),
            "criu_cmd": None}

    criu = _criu.find_criu(params.get("criu_path"))
    held = _safedir.hold_images_dir(images_dir, PageServerError)
    try:
        return _start_page_server(params, criu, held, address, port, tls, info, leftovers, proc_root)
    finally:
        held.close()


def _start_page_server(params, criu, held, address, port, tls, info, leftovers, proc_root):
    images_dir = held.path
    moved = None
    if leftovers and info["state"] != "empty":
        try:
            moved = _manifest.move_aside(images_dir)
        except OSError as exc:
            raise PageServerError("cannot move the old content of %s aside (%s); empty it yourself"
                                  % (images_dir, exc.strerror or exc))
    pidfile = os.path.join(images_dir, PS_PIDFILE_NAME)
    log_path = _safedir.fresh_file(held, PS_LOG_NAME, PageServerError)
    attempts = 3 if port == 0 else 1
    res = None
    for dummy in range(attempts):
        use_port = port or pick_free_port(address)
        try:
            os.unlink(pidfile)
        except OSError:
            pass
        args = build_page_server_args(images_dir, address, use_port, pidfile, tls)
        res = _criu.run_criu(criu, "page-server", args, log_path, timeout=params.get("timeout") or 30)
        if res.ok:
            break
        if "bind" not in (res.log_text + (res.stderr or "")).lower():
            break
    if not res.ok:
        raise _criu.CriuError(
            "criu page-server failed to start on %s:%s: %s (log: %s)" % (address, use_port, res.cause(), log_path),
            rc=res.rc, log_path=log_path, log_errors=res.log_errors, argv=res.argv,
            stdout=res.stdout, stderr=res.stderr)
    try:
        with open(pidfile) as fh:
            ps_pid = int(fh.read().strip())
    except (IOError, OSError, ValueError):
        raise PageServerError("criu page-server started but wrote no pidfile %s; see %s" % (pidfile, log_path),
                              log_path=log_path, cmd=res.argv)
    live = _identity.live_identity(ps_pid, proc_root)
    if live is None:
        raise PageServerError("criu page-server (PID %d) exited right after starting; see %s" % (ps_pid, log_path),
                              log_path=log_path, cmd=res.argv, log_errors=res.log_errors)
    record = {"pid": ps_pid, "start_time": live.get("start_time"), "boot_id": live.get("boot_id"),
              "address": address, "port": use_port, "images_dir": images_dir, "argv": res.argv,
              "tls": bool(_criu.tls_args(tls)), "started": _manifest.utc_now()}
    _manifest.write_json_atomic(os.path.join(images_dir, _manifest.PAGE_SERVER_RECORD_NAME), record)
    out = _ps_result(record, images_dir, True, "page server PID %d listening on %s:%d for %s"
                     % (ps_pid, address, use_port, images_dir))
    if moved:
        out["replaced"] = {"moved_to": moved}
    return out
