# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The decisions of the migrate role, as pure functions: how the source
reaches the destination (address, port, the ssh argv of the transfer), what
a failure was, how long the process was frozen, and the result row of every
outcome (migrated, refused or absent, rolled back, migrated with a failed
cleanup). The role's tasks run modules; ``plugins/filter/migrate.py`` exposes
these functions to them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.ckpt.criu.plugins.module_utils._report import as_list, result_row, seconds


def _failed(result):
    """A registered result that failed or whose host was unreachable."""
    result = result or {}
    return bool(result.get("failed")) or bool(result.get("unreachable"))


def _get(mapping, *path, default=None):
    """``mapping.a.b | default(default)``: a missing key or a None on the
    way gives ``default``."""
    for key in path:
        if not isinstance(mapping, dict) or mapping.get(key) is None:
            return default
        mapping = mapping[key]
    return mapping


def ssh_port(port, inventory_port=None):
    """The destination's SSH port as a string: ``ckpt_migrate_ssh_port`` when
    set, else the destination's ``ansible_port``, else 22."""
    port = "" if port is None else str(port).strip()
    if port:
        return port
    return str(inventory_port) if inventory_port not in (None, "") else "22"


def dest_address(address, ansible_host=None, name=None):
    """The address the source dials: ``ckpt_migrate_destination_address``
    when set, else the destination's ``ansible_host``, else its name."""
    if address not in (None, "") and str(address):
        return str(address)
    return str(ansible_host) if ansible_host not in (None, "") else str(name)


def service(address, interface=""):
    """The service address that moves with the process as the modules take
    it (``{address, interface}``), or {} when none moves."""
    address = "" if address is None else str(address).strip()
    if not address:
        return {}
    return {"address": address, "interface": "" if interface is None else str(interface).strip()}


def host_dirname(name, prefix=""):
    """A directory name for the inventory host ``name``: ``prefix`` and the
    name itself when it is made only of letters, digits, ``_``, ``.`` and
    ``-``; otherwise every other character becomes ``_`` and 8 hex digits of
    the name's SHA-1 follow, so that two names never share a directory."""
    name = str(name)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if safe == name and name:
        return str(prefix) + name
    return "%s%s-%s" % (prefix, safe, hashlib.sha1(name.encode("utf-8")).hexdigest()[:8])


# How long an idle SSH master of a transfer stays (ssh's ControlPersist), in seconds.
CONTROL_PERSIST_S = 300


def _options(options):
    out = []
    for option in options or []:
        out.extend(["-o", str(option)])
    return out


def _ciphers(ciphers):
    """``-o Ciphers=...`` for ``ckpt_migrate_ssh_ciphers`` (a list, or a
    comma-separated string as ssh itself writes it); nothing when empty.
    It comes after the operator's options: ssh keeps the first value it reads
    for an option, so a ``Ciphers=`` among those wins."""
    ciphers = as_list(ciphers)
    return ["-o", "Ciphers=" + ",".join(ciphers)] if ciphers else []


def ssh_argv(port, control_dir, options=None, key="", ciphers=None):
    """The remote shell of a transfer with the standing SSH access: one
    multiplexed connection per destination (socket in ``control_dir``), the
    operator's ``ckpt_migrate_ssh_options``, the cipher preference
    (``ckpt_migrate_ssh_ciphers``), and ``-i key`` when given."""
    argv = ["ssh", "-p", str(port), "-o", "ControlMaster=auto", "-o", "ControlPersist=%d" % CONTROL_PERSIST_S,
            "-o", "ControlPath=%s/%%C" % control_dir]
    argv.extend(_options(options))
    argv.extend(_ciphers(ciphers))
    if key:
        argv.extend(["-i", str(key)])
    return argv


def key_ssh_argv(port, key_dir, options=None, ciphers=None):
    """The remote shell of a transfer with the migration's own key (in
    ``key_dir``): no ssh_config, no agent, only the destination's host keys
    read over the controller's connection, then ``ckpt_migrate_ssh_options``
    and the cipher preference (``ckpt_migrate_ssh_ciphers``)."""
    argv = ["ssh", "-F", "none", "-p", str(port),
            "-o", "ControlMaster=auto", "-o", "ControlPersist=%d" % CONTROL_PERSIST_S,
            "-o", "ControlPath=%s/cm" % key_dir,
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=%s/known_hosts" % key_dir,
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
            "-i", "%s/id" % key_dir]
    argv.extend(_options(options))
    argv.extend(_ciphers(ciphers))
    return argv


def tls_san(address):
    """The subjectAltName naming ``address`` in the migration's certificates:
    ``IP:`` for an IPv4 or IPv6 address, ``DNS:`` for a name."""
    address = str(address)
    if re.match(r"^[0-9.]+$", address) or ":" in address:
        return "IP:" + address
    return "DNS:" + address


def key_source(address, route_stdout=""):
    """The source address the destination sees (``from=`` of the migration's
    key): ``ckpt_migrate_source_address`` when set, else the ``src`` of
    ``ip route get <destination>``, else ""."""
    if address not in (None, "") and str(address):
        return str(address)
    match = re.search(r"\bsrc\s+(\S+)", route_stdout or "")
    return match.group(1) if match else ""


# A public key line: its type, then its base64 body.
HOSTKEY_LINE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)\s+[A-Za-z0-9+/=]+")


def _b64text(content):
    return base64.b64decode(content).decode("utf-8", "replace")


def known_hosts(hostkeys, address, port):
    """The known hosts of the migration's key: each of the destination's
    host keys (``hostkeys``: the text of its ssh_host_*_key.pub, or their slurp
    results, read over the controller's connection) under the address the
    source dials (``[address]:port`` unless the port is 22). Lines that are not
    a public key are left out."""
    name = address if str(port) == "22" else "[%s]:%s" % (address, port)
    if isinstance(hostkeys, str):
        lines = hostkeys.splitlines()
    else:
        lines = [line for r in hostkeys or [] for line in _b64text(r["content"]).splitlines()]
    keys = [line.split()[:2] for line in lines if HOSTKEY_LINE.match(line)]
    return "".join("%s %s\n" % (name, " ".join(k)) for k in keys)


def authorized_key(public_key, source, command, marker):
    """The authorized_keys line of the migration's key (``public_key``: the
    one line of id.pub, as ckpt.criu.migration_key returns it, or slurped,
    in base64): only from ``source``, restricted, forced to ``command``,
    commented with ``marker``."""
    text = str(public_key).strip()
    if not re.match(r"^(ssh|ecdsa|sk)-", text):
        text = _b64text(text)
    return 'from="%s",restrict,command="%s" %s %s' % (
        source, command, " ".join(text.split()[:2]), str(marker).replace(" ", "-"))


def key_refusal(check, address, standing=False):
    """Why the source cannot log in with the migration's key (or, ``standing``,
    with its standing SSH login), in ssh's own last words (``check``: the
    result of the test connection)."""
    check = check or {}
    stderr = str(check.get("stderr") or "")
    lines = [line for line in stderr.strip().splitlines() if line]
    login = "its standing SSH login (ckpt_migrate_transfer_auth: standing)" if standing else "the migration's key"
    msg = "the source cannot log in to %s with %s (nothing was frozen): %s" % (
        address, login, lines[-1] if lines else "ssh exited %s" % check.get("rc"))
    if "Bad SSH2 cipher spec" in stderr or "no matching cipher found" in stderr:
        msg += (" ckpt_migrate_ssh_ciphers names no cipher both this ssh and the destination's sshd allow (a FIPS "
                "build allows fewer): list ones they do, or set it to [] to leave the choice to ssh.")
    if "Host key verification failed" in stderr and not standing:
        msg += (" The destination presented a host key other than its /etc/ssh/ssh_host_*_key.pub read over the "
                "controller connection.")
    return msg


def lock_tables(lines):
    """criu's nftables lock tables of a dump whose task did not report them
    (its module died after criu ran). ``lines``: the dump log's
    ``CRIU run id = <uuid>`` line, then ``nft list tables``. criu names its
    table ``CRIU-<run id>``, cut to the length its buffer holds, so a table is
    this dump's when its name begins that name (and holds at least 8
    characters of the run id). No run id (a criu before 3.18 named the table
    after the PID, or no log): none."""
    run_id, tables = None, []
    for line in lines or []:
        line = str(line)
        found = re.search(r"CRIU run id = ([0-9a-f-]+)", line)
        if found and run_id is None:
            run_id = found.group(1)
            continue
        found = re.match(r"^table (\S+) (CRIU-\S+)$", line.strip())
        if found:
            tables.append(found.groups())
    if not run_id:
        return []
    name = "CRIU-" + run_id
    return ["%s %s" % (family, table) for family, table in tables
            if len(table) >= len("CRIU-") + 8 and name.startswith(table)]


def key_left(unauthorized, removed, destination, marker, user, key_dir, closed=None):
    """What of the migration's key could not be taken away, one sentence per
    place, from the registered results of the two removals (and of closing the
    key's SSH master on the source: ssh exits 255 when no master runs)."""
    out = []
    closed = closed or {}
    if not closed.get("skipped") and closed.get("rc") not in (None, 0, 255):
        out.append("the SSH master of the migration key on the source could not be closed (ssh -O exit: rc %s, %s); "
                   "it ends on its own within %d s (ControlPersist)"
                   % (closed.get("rc"), (closed.get("stderr") or closed.get("msg") or "no message").strip(),
                      CONTROL_PERSIST_S))
    if _failed(unauthorized):
        out.append('the migration key is still authorized on %s (block "%s" in ~%s/.ssh/authorized_keys): %s; '
                   "remove it by hand" % (destination, marker, user, (unauthorized or {}).get("msg", "unreachable")))
    if (removed or {}).get("failed"):
        out.append("the migration key could not be removed from %s here: %s"
                   % (key_dir, (removed or {}).get("msg", "?")))
    return out


def dir_refusal(results, name):
    """Why a process cannot use its images directories, or "": from the
    registered runs of ckpt.criu.images_dir that made a host's directories
    (``results``, in order), the first that failed as a whole (its root
    refused, say), or one whose ``fresh_failed`` names ``name`` (the process's
    own directory, say ``pid-4242``). A run that made the others afresh does
    not refuse this process."""
    for r in results or []:
        if not isinstance(r, dict) or r.get("skipped") or not _failed(r):
            continue
        each = r.get("fresh_failed")
        if isinstance(each, dict):
            if name in each:
                return str(each[name])
            continue
        return str(r.get("msg") or "unreachable")
    return ""


def tls_left(removed_src, removed_dest, host, destination, src_dir, dest_dir):
    """What of the migration's TLS credentials could not be removed, one sentence per host
    (destination first), from the registered results of the two removals."""
    out = []
    for result, where, path in ((removed_dest, destination, dest_dir), (removed_src, host, src_dir)):
        if _failed(result):
            out.append("this migration's TLS credentials on %s could not be removed (%s): remove %s by hand"
                       % (where, result.get("msg", "unreachable"), path))
    return out


def failure(result, task, stage, destination):
    """What failed in a migration: ``{task, msg, stage}`` from the failed
    task's name and result. An async restore that died (killed, OOM) leaves
    async_wrapper's parse traceback as its message, and any other module that
    died leaves Ansible's "MODULE FAILURE" or "Module result deserialization
    failed": say what happened instead."""
    result = result or {}
    msg = result["msg"] if "msg" in result else result.get("stderr", "unknown error")
    msg = str(msg).strip()
    if "ansible_job_id" in result and ("No start of json char found" in msg or msg.startswith("Traceback")):
        msg = ("the restore on %s died before it reported a result (killed or crashed; "
               "its log is kept, see destination_logs)" % destination)
    elif msg.startswith(("MODULE FAILURE", "Module result deserialization failed")):
        rc = result.get("rc")
        how = "killed or crashed"
        if isinstance(rc, int) and rc > 128:
            how = "exit status %d: killed by signal %d" % (rc, rc - 128)
        elif isinstance(rc, int) and rc < 0:
            how = "killed by signal %d" % -rc
        msg = "the module died before it reported a result (%s)" % how
    return {"task": task if task not in (None, "") else "?", "msg": msg, "stage": stage or "prepare"}


def frozen_seconds(dump, restored, t_freeze=None, t_restored=None):
    """How long the process was frozen: from the dump's freeze to the
    restore's resume when both modules timed them, else from the controller's
    note of the freeze to its note of the restore, less the restore's
    verification."""
    resumed_at = _get(restored, "timings", "resumed_at")
    frozen_at = _get(dump, "timings", "frozen_at")
    if resumed_at is not None and frozen_at is not None:
        return seconds(float(resumed_at) - float(frozen_at))
    if resumed_at is not None and t_freeze is not None:
        # The dump task failed after the checkpoint left (a take-over): it timed nothing.
        return seconds(float(resumed_at) - float(t_freeze))
    verify = _get(restored, "timings", "verify", default=0)
    return seconds(float(t_restored) - float(verify) - float(t_freeze))


def raw_limit_seconds(dump, restored):
    """What criu and rsync alone needed for this checkpoint, the floor of
    its frozen time: the dump's frozen time as criu counts it (pages sent to a
    page server included), the rsync of the images, criu restore. None when
    a module did not report its part. ``frozen_s`` less this is what the
    collection added (waiting, hashing, the manifest, the checks, the
    restore's verification before criu). The parts are timed apart and may
    overlap by a few milliseconds (the restore can start while rsync ends its
    session after the last file landed), so this can pass ``frozen_s`` by as
    much."""
    parts = (_get(dump, "timings", "frozen_time"), _get(dump, "timings", "transfer", "images"),
             _get(restored, "timings", "criu_duration"))
    if any(part is None for part in parts):
        return None
    return seconds(sum(float(part) for part in parts))


def skipped_rows(processes, records, host, destination):
    """The rows of the processes not migrated in this run: refused by
    preflight, absent, or absent because migrated already (a record in
    ``<images_root>/.migrated``, read with slurp: ``records`` are its loop
    results)."""
    done = {}
    for rec in records or []:
        if "content" in rec:
            done[_get(rec, "item", "pid")] = json.loads(base64.b64decode(rec["content"]))
    rows = []
    for proc in processes or []:
        if proc.get("present") and not proc.get("refused"):
            continue
        rec = done.get(proc.get("pid"))
        causes = list(proc.get("causes") or [])
        if rec:
            result = "migrated already"
            cause = "migrated to %s at %s" % (rec.get("destination"), rec.get("migrated_at"))
            causes = []
        else:
            result = "refused" if proc.get("present") else "absent"
            cause = " ".join(str(c) for c in causes)
        rows.append(result_row(proc, "migrate", host, result, rec is not None, destination=destination,
                               cause=cause, causes=causes))
    return rows


def unattempted_rows(processes, rows, host, destination):
    """The rows of the processes this run was to migrate (present, not
    refused) that have no row in ``rows``: left alone, running where they
    were, after an earlier process of the host rolled back."""
    seen = {r.get("pid") for r in rows or [] if isinstance(r, dict)}
    return [result_row(p, "migrate", host, "not attempted", False, destination=destination,
                       cause="not attempted: an earlier migration on %s rolled back, and "
                             "ckpt_migrate_continue_on_failure is false; it runs on here, untouched" % host)
            for p in processes or [] if p.get("present") and not p.get("refused") and p.get("pid") not in seen]


def taken_over(late):
    """Whether the destination's restore, awaited after the dump task failed
    (``late``, its async_status result), restored the process and verified it:
    then the copy there is the process, and the migration is completed rather
    than rolled back."""
    if not isinstance(late, dict) or _failed(late) or not boolean(late.get("finished", 0), strict=False):
        return False
    return _get(late, "process", "start_time") is not None and late.get("verified") is not None


def take_over_note(failure_note, destination):
    """The sentence of a migrated row whose dump task failed after its checkpoint had left."""
    failure_note = failure_note or {}
    return ('the dump task failed after its checkpoint had reached %s (%s; task "%s"), and the restore there '
            'had already restored and verified the process: the migration was completed instead of rolled '
            'back, since resuming the source would have run the process twice' % (
                destination, failure_note.get("msg", "?"), failure_note.get("task", "?")))


def migrated_row(proc, host, destination, dump, restored, t_freeze=None, t_restored=None, service_address=None,
                 transfer=None, images_kept=False, taken_over_from=None):
    """The row of a process that runs on the destination and was verified.
    ``service_address``: the address that moved with it ({} or None: none);
    ``taken_over_from``: the failure of the dump task, when the destination's
    restore had taken the checkpoint over all the same (see ``taken_over``)."""
    dump = dump or {}
    restored = restored or {}
    moved = service_address or {}
    causes = [take_over_note(taken_over_from, destination)] if taken_over_from else None
    return result_row(
        proc, "migrate", host, "migrated", True, changed=True, destination=destination, causes=causes,
        frozen_s=frozen_seconds(dump, restored, t_freeze, t_restored),
        image_bytes=dump.get("image_bytes"),
        raw_limit_s=raw_limit_seconds(dump, restored),
        criu_frozen_s=seconds(_get(dump, "timings", "frozen_time")),
        dump_s=seconds(_get(dump, "timings", "total")),
        transfer_s=seconds(_get(dump, "timings", "transfer", "total")),
        restore_s=seconds(_get(restored, "timings", "criu_duration")),
        service_address=moved.get("address") if moved else None,
        address_move_s=round(float(_get(dump, "service_address", "seconds", default=0))
                             + float(_get(restored, "service_address", "seconds", default=0)), 4)
        if moved else None,
        transfer=transfer, new_pid=restored.get("pid"), images_kept=boolean(images_kept, strict=False))


def _page_server_taken(lines, destination, port):
    """criu's page server serves one connection: a peer that connected first
    and failed TLS authentication took it. The sentence, or None."""
    peer = next((line for line in lines if "Accepted connection from" in line), "")
    tls_errors = [line for line in lines if re.search(r"Error .*tls: ", line)]
    if not (peer and tls_errors):
        return None
    return ("the page server on %s was taken by another connection before this migration's dump connected: "
            "it %s, which failed TLS authentication (%s), and criu's page server serves one connection only, "
            "then ends. Nothing was sent to that peer and nothing was frozen (criu connects before it freezes); "
            "find who connects to port %s there, and run the migration again"
            % (destination, re.sub(r"^\([0-9.]+\) ", "", peer).lower(),
               " ".join(re.sub(r"^.*tls: ", "", line) for line in tls_errors), port))


def rollback_notes(destination, host, steps, service_address=None, logdir="", page_server_port=None, rolled=True):
    """What the rollback (or the cleanup after a commit) could not do, and
    where the destination's logs are kept, one sentence each, from the
    registered results in ``steps``: ``kill``, ``clean`` (the destination's
    images), ``clean_src`` (the source's), ``page_server``,
    ``job`` (the wait for the restore's end) with ``restore_job``,
    ``tls_dest``/``tls_src`` with ``tls_dest_dir``/``tls_src_dir``,
    ``pslog`` (the page server's log lines), ``logs`` and ``logdir_made``,
    ``addr_dest``/``addr`` (the service address). ``rolled``: the source
    was not killed, so the whole rollback ran."""
    steps = steps or {}
    step = steps.get
    notes = []
    if rolled and _failed(step("kill")):
        notes.append("the copy on %s could not be killed: %s; check it by hand"
                     % (destination, step("kill").get("msg", "unreachable")))
    elif rolled and (step("kill") or {}).get("changed"):
        notes.append("the copy the restore had left running on %s was killed before the source resumed"
                     % destination)
    if rolled and _failed(step("clean")):
        notes.append("the images on %s could not be removed: %s" % (destination, step("clean").get("msg", "unreachable")))
    if rolled and _failed(step("clean_src")):
        notes.append("the images on %s could not be removed: %s" % (host, step("clean_src").get("msg", "?")))
    if rolled and _failed(step("page_server")):
        notes.append("the page server on %s could not be stopped: %s"
                     % (destination, step("page_server").get("msg", "unreachable")))
    late = step("late")
    if rolled and late and not late.get("skipped"):
        if late.get("unreachable"):
            notes.append("the restore on %s could not be awaited before the source resumed (unreachable): "
                         "check there that the process does not run too" % destination)
        elif not boolean(late.get("finished", 0), strict=False):
            notes.append("the restore on %s did not end while the rollback waited for it (%s): check there "
                         "that the process does not run too" % (destination, late.get("msg", "still running")))
        elif late.get("failed") and not late.get("aborted"):   # one that ended on the abort did nothing
            notes.append("the restore on %s, awaited before the source resumed, failed: %s"
                         % (destination, late.get("msg", "?")))
    job = step("job")
    if rolled and job and not job.get("skipped") and not boolean(job.get("finished", 0), strict=False):
        notes.append("the restore on %s (async job %s) did not end after its images were removed: %s"
                     % (destination, _get(step("restore_job"), "ansible_job_id"), job.get("msg", "still running")))
    notes.extend(tls_left(step("tls_src"), step("tls_dest"), host, destination, step("tls_src_dir"),
                          step("tls_dest_dir")))
    if rolled:
        taken = _page_server_taken(_get(step("pslog"), "stdout_lines", default=[]), destination, page_server_port)
        if taken:
            notes.append(taken)
    kept = [r["dest"] for r in _get(step("logs"), "results", default=[]) if "checksum" in r] if rolled else []
    if rolled and step("logdir_made") is not None and _failed(step("logdir_made")):
        notes.append("the logs on %s could not be kept: %s" % (destination, step("logdir_made").get("msg", "unreachable")))
    elif kept:
        notes.append("the destination's logs are kept in %s:%s" % (destination, logdir))
    address = (service_address or {}).get("address")
    if rolled and _failed(step("addr_dest")):
        notes.append("the service address %s could not be taken off %s (%s), so it was not put back here: "
                     "move it by hand" % (address, destination, step("addr_dest").get("msg", "unreachable")))
    elif rolled and (step("addr") or {}).get("failed"):
        notes.append("the service address %s could not be put back here: %s" % (address, step("addr").get("msg", "?")))
    return notes, kept


def rollback_row(failure_note, proc, host, destination, steps, dump=None, t_freeze=None, now=None,
                 service_address=None, logdir="", page_server_port=None):
    """The row of a migration that failed: ``rolled back`` (the source runs
    again) or, after the commit killed the source, ``migrated, cleanup
    failed``. ``failure_note``: see ``failure``; ``steps``: see
    ``rollback_notes``; ``now``: the controller's time (epoch seconds), for
    how long a process failed while frozen was stopped."""
    rolled = failure_note.get("stage") != "committed"
    notes, kept = rollback_notes(destination, host, steps, service_address, logdir, page_server_port, rolled)
    cause = '%s (stage %s, task "%s")' % (failure_note.get("msg"), failure_note.get("stage"), failure_note.get("task"))
    frozen = None
    if (rolled and t_freeze is not None and failure_note.get("stage") == "frozen"
            and "before freezing anything" not in str(failure_note.get("msg", ""))):
        frozen = float(now) - float(t_freeze)
    # A sentence the failure's own message already says (the commit failed on it) is not named twice.
    causes = [cause] + [note for note in notes if note not in str(failure_note.get("msg", ""))]
    return result_row(proc, "migrate", host, "rolled back" if rolled else "migrated, cleanup failed", False,
                      changed=True, destination=destination, frozen_s=frozen,
                      image_bytes=(dump or {}).get("image_bytes"), causes=causes, cause="; ".join(causes),
                      source_resumed=rolled, destination_logs=kept)
