#!/usr/bin/env python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ckpt.criu benchmarks: downtime, fleet scaling, checksum throughput.

    sudo .venv/bin/python benchmarks/run.py [--quick] [--label NAME] [--only downtime|scaling|checksum]
        [--modes rsync,page_server,page_server_tls]

Starts its own test fleet (state dir /run/ckpt-bench-fleet, name ckb, subnet
10.219.0.0/24), runs the benchmarks, tears the fleet down (also on failure),
and writes docs/benchmarks/results-<label>.json, docs/benchmarks/README.md
(tables of the newest run, plus every label found) and PNG plots. Raw and
collection runs are interleaved so that machine noise hits both alike. See
benchmarks/README.md. Standard library + matplotlib (requirements/bench.txt,
installed into .venv when missing).
"""
from __future__ import annotations

import argparse
import collections
import glob
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENV = os.path.join(REPO, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")
OUT_DIR = os.path.join(REPO, "docs", "benchmarks")
WORKLOADS = os.path.join(REPO, "tests", "integration", "targets", "setup_workloads", "files")
COUNTER = os.path.join(WORKLOADS, "counter.py")
SPAWN = os.path.join(WORKLOADS, "spawn.py")
CRIU = "/opt/ckpt-criu/bin/criu"
CRIU_ELF = "/opt/ckpt-criu/root/usr/sbin/criu"    # the wrapper above execs this one
HOST_PYTHON = "/usr/bin/python3"
WORKTREE_COLLECTIONS = os.path.join(REPO, ".build", "collections")
SNAPSHOT_ROOT = "/var/tmp/ckb-bench-collection"
# Set by use_revision(): the collections path and the playbooks benchmarked.
COLLECTION = {"path": WORKTREE_COLLECTIONS, "playbooks": os.path.join(REPO, "playbooks"), "rev": "worktree"}

FLEET_STATE = os.environ.get("CKPT_BENCH_FLEET_STATE", "/run/ckpt-bench-fleet")
FLEET_NAME = "ckb"
FLEET_SUBNET = os.environ.get("CKPT_BENCH_FLEET_SUBNET", "10.219.0.0/24")
WORK_ROOT = "/tmp/ckb-bench"          # shared by the hosts and the controller (heartbeat files)
TICK = 0.01                            # heartbeat interval, seconds
RAW_PORT = 27110
COLL_PORT = 27111
LABEL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")

PROFILES = {
    "full": {"sizes": [64, 256, 1024], "repeats": {64: 5, 256: 5, 1024: 5},
             "scale_hosts": [1, 3, 6], "scale_procs": [1, 10], "scale_repeats": 2, "mscale_repeats": 5,
             "checksum_mib": 256, "checksum_repeats": 5, "checksum_procs": 10, "overhead_repeats": 5},
    "quick": {"sizes": [16, 256], "repeats": {16: 2, 256: 2},
              "scale_hosts": [1, 3], "scale_procs": [1, 10], "scale_repeats": 1, "mscale_repeats": 1,
              "checksum_mib": 64, "checksum_repeats": 3, "checksum_procs": 5, "overhead_repeats": 2},
}
# Downtime modes: (transfer, TLS). page_server: criu's page server in cleartext
# in both pipelines (raw_pageserver.sh plain, the role with
# ckpt_migrate_page_server_tls: false); page_server_tls: criu's TLS in both
# (raw_pageserver.sh tls, the role's default). Each ratio is against the raw
# pipeline of the same mode.
MODES = ("rsync", "page_server", "page_server_tls", "rsync_prefault", "page_server_tls_prefault")
MODE_TRANSFER = {"rsync": "rsync", "page_server": "page_server", "page_server_tls": "page_server",
                 "rsync_prefault": "rsync", "page_server_tls_prefault": "page_server"}
MODE_TLS = {"rsync": None, "page_server": False, "page_server_tls": True,
            "rsync_prefault": None, "page_server_tls_prefault": True}
# The destination's prefault (opt-in, ckpt_migrate_prefault) measured on in every run, against the
# same raw pipelines; it is meant for large processes, so only from PREFAULT_MIN_MIB up.
MODE_EXTRA = {"rsync_prefault": {"ckpt_migrate_prefault": "true"},
              "page_server_tls_prefault": {"ckpt_migrate_prefault": "true"}}
PREFAULT_MIN_MIB = 256


def log(msg):
    sys.stdout.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


def run(argv, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, check=kw.pop("check", False), **kw)


def med(values, digits=4):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": round(statistics.median(vals), digits), "min": round(min(vals), digits),
            "max": round(max(vals), digits), "n": len(vals)}


# --------------------------------------------------------------- environment

def ensure_venv():
    """Re-run under .venv's python (ansible and matplotlib live there)."""
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV) and os.path.exists(VENV_PY):
        os.execv(VENV_PY, [VENV_PY] + sys.argv)


def _import_matplotlib():
    try:
        importlib.import_module("matplotlib")
        return True
    except ImportError:
        return False


def ensure_matplotlib():
    if _import_matplotlib():
        return True
    req = os.path.join(REPO, "requirements", "bench.txt")
    log("installing %s into %s" % (req, VENV))
    res = run([VENV_PY, "-m", "pip", "install", "-q", "-r", req])
    if res.returncode != 0:
        log("pip install failed (rc %d): plots are skipped" % res.returncode)
        return False
    importlib.invalidate_caches()
    return _import_matplotlib()


def load_fleet_module():
    spec = importlib.util.spec_from_file_location("ckpt_test_fleet", os.path.join(REPO, "tests", "system", "fleet", "fleet.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ckpt_test_fleet"] = mod
    spec.loader.exec_module(mod)
    return mod


def use_revision(rev):
    """Benchmark the collection as committed at `rev` (a snapshot exported with
    git archive), so that others' uncommitted edits in the working tree do not
    leak into a labelled run; `worktree` uses the working tree as it is."""
    if rev == "worktree":
        return {"rev": "worktree"}
    res = run(["git", "-C", REPO, "rev-parse", "--verify", rev + "^{commit}"], stdout=subprocess.PIPE,
              stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        sys.exit("--rev %s: not a commit of %s" % (rev, REPO))
    commit = res.stdout.strip()
    dest = os.path.join(SNAPSHOT_ROOT, commit[:12], "ansible_collections", "ckpt", "criu")
    if not os.path.isdir(os.path.join(dest, "plugins")):
        tmp = dest + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        arch = subprocess.Popen(["git", "-C", REPO, "archive", "--format=tar", commit, "plugins", "roles",
                                 "playbooks", "meta", "galaxy.yml"], stdout=subprocess.PIPE)
        run(["tar", "-x", "-C", tmp], stdin=arch.stdout, check=True)
        arch.stdout.close()
        if arch.wait() != 0:
            sys.exit("git archive %s failed" % commit)
        os.replace(tmp, dest)
    COLLECTION.update({"path": os.path.join(SNAPSHOT_ROOT, commit[:12]), "playbooks": os.path.join(dest, "playbooks"),
                       "rev": commit})
    return {"rev": rev, "commit": commit, "snapshot": dest}


def git_info():
    def out(argv):
        res = run(["git", "-C", REPO] + argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return res.stdout.strip()
    dirty = []
    if COLLECTION["rev"] == "worktree":
        dirty = [line[3:] for line in out(["status", "--porcelain", "--", "plugins", "roles", "playbooks"]).splitlines()]
    return {"commit": out(["rev-parse", "HEAD"]), "subject": out(["log", "-1", "--format=%s"]),
            "dirty_collection_files": dirty}


def machine_info():
    crv = run([CRIU, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout.strip()
    with open("/proc/loadavg", encoding="ascii") as fh:
        load = fh.read().split()[:3]
    ans = run([os.path.join(VENV, "bin", "ansible"), "--version"], stdout=subprocess.PIPE, text=True).stdout
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "criu": crv.splitlines()[0] if crv else None,
            "ansible": ans.splitlines()[0] if ans else None, "loadavg_at_start": load,
            "python": platform.python_version()}


# --------------------------------------------------------------- workloads

class Workload:
    """A counter (heartbeat) started inside a fleet host, detached."""

    def __init__(self, fleet, host, out, mem, interval=TICK):
        self.fleet = fleet
        self.host = host
        self.out = out
        self.pidfile = out + ".pid"
        # `env -C` changes directory after nsenter entered the host's mount namespace: a
        # directory opened before (nsenter --wd) belongs to the machine's mounts, which
        # criu cannot find in the host's mountinfo.
        argv = ["env", "-C", os.path.dirname(out), HOST_PYTHON, SPAWN, "--stdio", "devnull",
                "--pidfile", self.pidfile, "--",
                HOST_PYTHON, COUNTER, "--out", out, "--interval", str(interval), "--mem", str(mem)]
        res = fleet.exec(host, argv, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError("cannot start the workload on %s: %s" % (host, res.stderr.strip()))
        self.pid = int(res.stdout.strip().split()[-1])

    def wait_ticks(self, count=5, timeout=60.0, after_ns=0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            ticks = read_ticks(self.out)
            if len([t for t in ticks if t[1] > after_ns]) >= count:
                return True
            time.sleep(0.05)
        return False

    def kill(self, hosts):
        for h in hosts:
            self.fleet.exec(h, ["kill", "-KILL", str(self.pid)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def read_ticks(path):
    ticks = []
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 2 and line.endswith("\n"):
                    ticks.append((int(parts[0]), int(parts[1])))
    except OSError:
        pass
    return ticks


def heartbeat_gap(ticks, since):
    """The largest gap between consecutive ticks after `since` (epoch s):
    (gap s, last tick before, first tick after, continuity ok)."""
    best = None
    for a, b in zip(ticks, ticks[1:]):
        if b[1] / 1e9 < since:
            continue
        gap = (b[1] - a[1]) / 1e9
        if best is None or gap > best[0]:
            best = (gap, a[1] / 1e9, b[1] / 1e9)
    seqs = [t[0] for t in ticks]
    continuous = all(y == x + 1 for x, y in zip(seqs, seqs[1:]))
    if best is None:
        return None, None, None, continuous
    return round(best[0], 4), best[1], best[2], continuous


# --------------------------------------------------------------- ansible

def ansible_env(timing_file, forks=None):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": COLLECTION["path"],
        "ANSIBLE_CALLBACK_PLUGINS": os.path.join(HERE, "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "bench_timing",
        "CKPT_BENCH_TIMING_FILE": timing_file,
        "ANSIBLE_NOCOLOR": "1",
        "PATH": os.path.join(VENV, "bin") + os.pathsep + env.get("PATH", ""),
    })
    if forks:
        env["ANSIBLE_FORKS"] = str(forks)
    return env


def write_inventory(fleet, path, hosts, dest=None):
    lines = ["[fleet]"]
    for h in hosts:
        lines.append("%s ansible_host=%s" % (h, fleet.address(h)))
    lines += ["", "[fleet:vars]", "ansible_user=root", "ansible_ssh_private_key_file=%s" % fleet.key_path,
              "ansible_ssh_common_args='-F %s'" % fleet.ssh_config_path,
              "ansible_python_interpreter=%s" % HOST_PYTHON, ""]
    if dest:
        lines.insert(1, "%s ansible_host=%s" % (dest, fleet.address(dest)))
    with open(path, "w", encoding="ascii") as fh:
        fh.write("\n".join(lines))
    return path


def task_seconds(pb):
    """Where a playbook run's wall time went: seconds per task name, summed over its runs (hosts,
    loop items, processes), each from its start to its end; and ``between``, the playbook's wall time
    that no task covered (Ansible's own work: includes, templating, forks)."""
    out, spans = {}, []
    for t in pb["tasks"]:
        out[t["task"]] = round(out.get(t["task"], 0.0) + t["end"] - t["start"], 3)
        spans.append((t["start"], t["end"]))
    covered, edge = 0.0, pb["start"]
    for start, end in sorted(spans):
        if end > edge:
            covered += end - max(start, edge)
            edge = end
    out["between"] = round(pb["wall"] - covered, 3)
    return out


def playbook(name, inventory, extra, work, tag, forks=None, timeout=900):
    timing = os.path.join(work, "timing-%s.jsonl" % tag)
    evfile = os.path.join(work, "ev-%s.json" % tag)
    extra = dict(extra, ckpt_become="false", ckpt_report_dir=os.path.join(work, "reports"),
                 ckpt_report_name=tag, ckpt_report_formats="json")
    with open(evfile, "w", encoding="ascii") as fh:
        json.dump(extra, fh)
    _unlink(timing)
    argv = [os.path.join(VENV, "bin", "ansible-playbook"), "-i", inventory,
            os.path.join(COLLECTION["playbooks"], name), "-e", "@" + evfile]
    t0 = time.time()
    res = run(argv, cwd=REPO, env=ansible_env(timing, forks), stdout=subprocess.PIPE,
              stderr=subprocess.STDOUT, text=True, timeout=timeout)
    t1 = time.time()
    tasks = []
    if os.path.exists(timing):
        with open(timing, encoding="utf-8") as fh:
            tasks = [json.loads(line) for line in fh if line.strip()]
    report = None
    rpath = os.path.join(work, "reports", tag + ".json")
    if os.path.exists(rpath):
        with open(rpath, encoding="utf-8") as fh:
            report = json.load(fh)
    failed = ["%s: %s" % (t["task"], (t["result"].get("msg") or "")) for t in tasks if t["status"] == "failed"]
    if report:
        failed += ["PID %s %s: %s" % (r.get("pid"), r.get("result"), r.get("cause"))
                   for r in report.get("processes", []) if not r.get("ok")]
    return {"rc": res.returncode, "start": t0, "end": t1, "wall": t1 - t0, "tasks": tasks,
            "report": report, "output_tail": " | ".join(failed) or res.stdout[-3000:] if res.returncode else ""}


# --------------------------------------------------------------- downtime

def parse_stages(text):
    stages = {}
    for line in text.splitlines():
        p = line.split()
        if len(p) == 5 and p[0] == "stage":
            stages[p[1]] = {"start": float(p[2]), "end": float(p[3]), "s": round(float(p[3]) - float(p[2]), 4),
                            "rc": int(p[4])}
    return stages


def raw_migration(fleet, work, mode, size, rep, rest=0.0):
    tag = "raw-%s-%d-%d" % (mode, size, rep)
    ticks = os.path.join(work, tag + ".ticks")
    w = Workload(fleet, "node1", ticks, size)
    try:
        if not w.wait_ticks(20, timeout=120):
            raise RuntimeError("workload did not start ticking")
        time.sleep(rest)
        src_dir = "/var/lib/ckpt/bench/raw-%d" % w.pid
        dst_dir = src_dir
        script = "raw_rsync.sh" if MODE_TRANSFER[mode] == "rsync" else "raw_pageserver.sh"
        argv = ["bash", os.path.join(HERE, script), fleet.ssh_config_path, "node1", "node2",
                fleet.address("node2"), str(w.pid), src_dir, dst_dir, CRIU]
        if MODE_TRANSFER[mode] == "page_server":
            argv += [str(RAW_PORT), "tls" if MODE_TLS[mode] else "plain"]
        t0 = time.time()
        res = run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
        t1 = time.time()
        stages = parse_stages(res.stdout)
        handshakes = parse_handshakes(res.stdout)
        ok = res.returncode == 0 and w.wait_ticks(10, timeout=30, after_ns=int(t1 * 1e9))
        gap, last, first, cont = heartbeat_gap(read_ticks(ticks), t0)
        rec = {"kind": "raw", "mode": mode, "mib": size, "rep": rep, "ok": bool(ok), "downtime": gap,
               "continuous": cont, "wall": round(t1 - t0, 3), "freeze_tick": last, "resume_tick": first,
               "stages": stages, "tls": MODE_TLS[mode]}
        if MODE_TLS[mode]:
            # Like with like: a TLS run counts only when the page server's log shows the handshake.
            rec["tls_handshakes"] = handshakes
            if ok and not handshakes:
                ok = False
                rec["ok"] = False
                rec["error"] = "no 'TLS handshake completed' in the raw page server's log"
        if not ok and not rec.get("error"):
            rec["error"] = (res.stderr or "")[-1500:]
        if ok and last is not None:
            rec["breakdown"] = raw_breakdown(stages, last, first)
        return rec
    finally:
        w.kill(["node1", "node2"])
        for h in ("node1", "node2"):
            fleet.exec(h, ["rm", "-rf", "/var/lib/ckpt/bench/raw-%d" % w.pid,
                           "/var/lib/ckpt/bench/raw-%d.tls" % w.pid])
        _unlink(ticks)


def parse_handshakes(text):
    """raw_pageserver.sh's "tls handshakes N" line (TLS runs): N, else None."""
    for line in text.splitlines():
        p = line.split()
        if len(p) == 3 and p[:2] == ["tls", "handshakes"] and p[2].isdigit():
            return int(p[2])
    return None


def raw_breakdown(stages, t_a, t_b):
    out = {}
    total = t_b - t_a
    for name in ("dump", "transfer", "restore"):
        st = stages.get(name)
        if st:
            out[name] = round(_overlap(st["start"], st["end"], t_a, t_b), 4)
    out["ssh and other"] = round(total - sum(out.values()), 4)
    return out


def _overlap(s, e, a, b):
    return max(0.0, min(e, b) - max(s, a))


def coll_migration(fleet, work, inventory, mode, size, rep, extra_vars=None, rest=0.0):
    tag = "coll-%s-%d-%d" % (mode, size, rep)
    ticks = os.path.join(work, tag + ".ticks")
    w = Workload(fleet, "node1", ticks, size)
    try:
        if not w.wait_ticks(20, timeout=120):
            raise RuntimeError("workload did not start ticking")
        time.sleep(rest)
        extra = {"ckpt_hosts": "node1", "ckpt_migrate_destination": "node2",
                 "ckpt_migrate_pids": str(w.pid), "ckpt_migrate_transfer": MODE_TRANSFER[mode],
                 "ckpt_migrate_images_root": "/var/lib/ckpt/bench/coll",
                 "ckpt_migrate_page_server_port": str(COLL_PORT)}
        extra.update(extra_vars or {})
        extra.update(MODE_EXTRA.get(mode, {}))
        if MODE_TLS[mode] is not None:
            # The mode decides (set last, over --extra-vars): the raw run of this mode used the same.
            extra["ckpt_migrate_page_server_tls"] = MODE_TLS[mode]
        pb = playbook("migrate.yml", inventory, extra, work, tag)
        ok = pb["rc"] == 0 and w.wait_ticks(10, timeout=30, after_ns=int(pb["end"] * 1e9))
        gap, last, first, cont = heartbeat_gap(read_ticks(ticks), pb["start"])
        row = {}
        if pb["report"]:
            rows = [r for r in pb["report"].get("processes", []) if r.get("pid") == w.pid]
            row = rows[0] if rows else {}
        rec = {"kind": "collection", "mode": mode, "mib": size, "rep": rep, "ok": bool(ok), "downtime": gap,
               "continuous": cont, "wall": round(pb["wall"], 3), "freeze_tick": last, "resume_tick": first,
               "tls": MODE_TLS[mode],
               "role_report": {k: row.get(k) for k in ("result", "frozen_s", "criu_frozen_s", "dump_s", "transfer_s",
                                                       "restore_s", "image_bytes")},
               "tasks": [t for t in pb["tasks"] if last and t["end"] >= last - 1 and t["start"] <= first + 1]
               if last else []}
        if not ok:
            rec["error"] = pb["output_tail"]
        if ok and last is not None:
            rec["breakdown"] = coll_breakdown(pb["tasks"], last, first)
        return rec
    finally:
        w.kill(["node1", "node2"])
        for h in ("node1", "node2"):
            fleet.exec(h, ["rm", "-rf", "/var/lib/ckpt/bench/coll/pid-%d" % w.pid])
        _unlink(ticks)


def _find(tasks, marker):
    # Task names carry the role prefix ("ckpt.criu.migrate : FROZEN 1/3: ...").
    for t in tasks:
        if marker in t["task"] and t["status"] == "ok":
            return t
    return None


def coll_breakdown(tasks, t_a, t_b):
    """Split the heartbeat gap [t_a, t_b] of a collection run into stages.

    Since the frozen path is one task (the destination's restore waits for the
    manifest, the dump sends it last), the stages come from the modules' own
    wall-clock timings: see coll_breakdown_one_task. Older revisions ran three
    tasks (dump, transfer, restore): their split uses the callback's task
    timestamps (coll_breakdown_three_tasks)."""
    one = coll_breakdown_one_task(tasks, t_a, t_b)
    if one is not None:
        return one
    return coll_breakdown_three_tasks(tasks, t_a, t_b)


def _timed(tasks, key):
    """The last successful task whose result's timings carry `key`."""
    found = None
    for t in tasks:
        tm = (t.get("result") or {}).get("timings")
        if t.get("status") == "ok" and isinstance(tm, dict) and tm.get(key) is not None:
            found = t
    return found


# Stage names of the one-task frozen path, in the order they happen.
ONE_TASK_STAGES = (
    "before criu dump",
    "dump: criu dump",
    "dump: after criu (wait stopped, image sha256, manifest)",
    "transfer: images (rsync)",
    "transfer: manifest (rsync)",
    "restore: manifest seen -> checks (poll, load)",
    "restore: checks (verify images + binaries)",
    "restore: criu restore",
    "resumed -> first tick",
)


def one_task_points(tasks):
    """Wall-clock points (epoch s) of the one-task frozen path, from the dump's
    and the waiting restore's own timings; None for an older revision.

    frozen_at (dump, just before criu dump starts) + criu_duration = criu's end;
    resumed_at (restore, criu restore -d returned) - criu_duration = criu
    restore's start, minus checks = the checks' start. The moment the restore
    saw the manifest is resumed_at + verify - total (its `total` is counted
    from that moment to its return, `verify` is the settle check after the
    resume; a few ms of bookkeeping are ignored). The manifest is the last
    thing the dump sends, so its transfer ends there (up to the restore's 10 ms
    poll interval earlier); the transfer started `transfer.total` before."""
    dump = _timed(tasks, "frozen_at")
    rest = _timed(tasks, "resumed_at")
    if not (dump and rest):
        return None
    dt = dump["result"]["timings"]
    rt = rest["result"]["timings"]
    xfer = dt.get("transfer") or {}
    pts = {"frozen_at": dt["frozen_at"], "criu_dump_end": dt["frozen_at"] + (dt.get("criu_duration") or 0.0),
           "resumed_at": rt["resumed_at"], "image_bytes": (dump.get("result") or {}).get("image_bytes"),
           "criu_frozen_time": dt.get("frozen_time"), "waited_for_manifest": rt.get("waited_for_manifest"),
           "dump_total": dt.get("total"), "dump_criu": dt.get("criu_duration"), "checks": rt.get("checks"),
           "restore_criu": rt.get("criu_duration"), "transfer_images": xfer.get("images"),
           "transfer_manifest": xfer.get("manifest"), "transfer_total": xfer.get("total")}
    pts["restore_criu_start"] = rt["resumed_at"] - (rt.get("criu_duration") or 0.0)
    pts["checks_start"] = pts["restore_criu_start"] - (rt.get("checks") or 0.0)
    if rt.get("total") is not None and rt.get("verify") is not None:
        seen = rt["resumed_at"] + rt["verify"] - rt["total"]
    else:
        seen = dump["end"]       # fallback: the dump task's return (a little late)
    pts["manifest_seen"] = min(seen, pts["checks_start"])
    pts["transfer_end"] = pts["manifest_seen"]
    pts["transfer_start"] = pts["transfer_end"] - (xfer.get("total") or 0.0)
    pts["transfer_images_end"] = pts["transfer_start"] + (xfer.get("images") or 0.0)
    return pts


def coll_breakdown_one_task(tasks, t_a, t_b):
    """The heartbeat gap of the one-task frozen path, split at the points of
    one_task_points (each stage clipped to the gap); None for an older run."""
    p = one_task_points(tasks)
    if p is None:
        return None
    edges = [t_a, p["frozen_at"], p["criu_dump_end"], p["transfer_start"], p["transfer_images_end"],
             p["transfer_end"], p["checks_start"], p["restore_criu_start"], p["resumed_at"], t_b]
    out = {}
    for name, s, e in zip(ONE_TASK_STAGES, edges, edges[1:]):
        out[name] = round(_overlap(s, e, t_a, t_b), 4)
    # Negative when two estimated points cross (e.g. hashing shorter than the
    # transfer's estimate allows): the residue stays visible, not hidden.
    out["unattributed"] = round((t_b - t_a) - sum(out.values()), 4)
    return out


def coll_breakdown_three_tasks(tasks, t_a, t_b):
    """Split the heartbeat gap [t_a, t_b] of a three-task frozen path (dump,
    transfer, restore: revisions before the one-task path) into stages, from
    the callback's task timestamps and the modules' own timings."""
    out = {}
    dump = _find(tasks, "FROZEN 1/3")
    xfer = _find(tasks, "FROZEN 2/3")
    rest = _find(tasks, "FROZEN 3/3")
    if not (dump and xfer and rest):
        return {"unattributed": round(t_b - t_a, 4)}
    dt = dump["result"].get("timings") or {}
    criu_frozen = dt.get("frozen_time") or 0.0
    dump_part = _overlap(dump["start"], dump["end"], t_a, t_b)
    out["dump: criu (frozen)"] = round(min(criu_frozen, dump_part), 4)
    out["dump: after criu (image sha256, manifest, module return)"] = round(dump_part - out["dump: criu (frozen)"], 4)
    out["task round-trip: dump -> transfer"] = round(_overlap(dump["end"], xfer["start"], t_a, t_b), 4)
    delta = _delta_s(xfer["result"].get("delta"))
    xfer_part = _overlap(xfer["start"], xfer["end"], t_a, t_b)
    out["transfer: rsync"] = round(min(delta, xfer_part), 4)
    out["transfer: task overhead"] = round(xfer_part - out["transfer: rsync"], 4)
    out["task round-trip: transfer -> restore"] = round(_overlap(xfer["end"], rest["start"], t_a, t_b), 4)
    rt = rest["result"].get("timings") or {}
    rest_part = _overlap(rest["start"], rest["end"], t_a, t_b)
    checks = min(rt.get("checks") or 0.0, rest_part)
    criu_r = min(rt.get("criu_duration") or 0.0, rest_part - checks)
    out["restore: verify images + binaries (sha256)"] = round(checks, 4)
    out["restore: criu restore"] = round(criu_r, 4)
    out["restore: module start, connection"] = round(rest_part - checks - criu_r, 4)
    out["unattributed"] = round((t_b - t_a) - sum(out.values()), 4)
    return out


def _delta_s(text):
    if not text:
        return 0.0
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def bench_downtime(fleet, prof, work):
    inventory = write_inventory(fleet, os.path.join(work, "inv-migrate.ini"), ["node1"], dest="node2")
    # The role's free-space preflight runs df on the images root or its parent: make the parent exist.
    for h in ("node1", "node2"):
        fleet.exec(h, ["mkdir", "-p", "-m", "0700", "/var/lib/ckpt/bench"], check=True)
    runs = []
    for size in prof["sizes"]:
        for rep in range(1, prof["repeats"][size] + 1):
            for mode in prof["modes"]:
                if mode in MODE_EXTRA and size < PREFAULT_MIN_MIB:
                    continue
                rest = rest_seconds(prof, size)
                for kind in ("raw", "collection"):
                    try:
                        if kind == "raw":
                            rec = raw_migration(fleet, work, mode, size, rep, rest)
                        else:
                            rec = coll_migration(fleet, work, inventory, mode, size, rep, prof.get("extra_vars"),
                                                 rest)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        rec = {"kind": kind, "mode": mode, "mib": size, "rep": rep, "ok": False,
                               "downtime": None, "error": str(exc)}
                    runs.append(rec)
                    extra = ""
                    if rec.get("kind") == "collection" and rec.get("role_report"):
                        extra = " (role's frozen_s %s)" % rec["role_report"].get("frozen_s")
                    log("downtime %5d MiB %-15s %-10s rep %d: %s%s" % (
                        size, mode, kind, rep,
                        ("%.3f s, wall %.1f s" % (rec["downtime"], rec.get("wall", 0))) if rec["ok"]
                        else "FAILED: %s" % (rec.get("error") or "")[-300:].replace("\n", " | "), extra if rec["ok"] else ""))
    return {"runs": runs, "summary": summarize_downtime(runs)}


# Memory at rest. On this VM, memory a process just freed is backed and fast
# to fault in; a few seconds later the free-page reporting has handed it back
# to the hypervisor, and faulting it in again costs 2-3x (a 1 GiB restore's
# preadv: 2.6 s right after the previous run freed its memory, 3.5-4.0 s 20 s
# later). The raw pipeline freezes 2 s after its workload started, the role
# about 15 s after (preflight, directories, keys): without a pause the raw
# restore would reuse the memory the previous run just freed and the role's
# would not. Both wait this long with their workload running before they start.
REST_MIN_MIB = 256
REST_S = 15.0


def rest_seconds(prof, size):
    """Seconds both pipelines wait before they start, for a workload of ``size`` MiB."""
    rest = prof.get("rest_s")
    if rest is None:
        rest = REST_S if size >= REST_MIN_MIB else 0.0
    return float(rest)


def summarize_downtime(runs):
    rows = []
    sizes = sorted({r["mib"] for r in runs})
    # The modes that ran (older results have no page_server_tls), in MODES order.
    modes = [m for m in MODES if any(r["mode"] == m for r in runs)]
    modes += sorted({r["mode"] for r in runs} - set(modes))
    for size in sizes:
        for mode in modes:
            if not any(r["mib"] == size and r["mode"] == mode for r in runs):
                continue
            sel = {k: [r for r in runs if r["mib"] == size and r["mode"] == mode and r["kind"] == k and r["ok"]]
                   for k in ("raw", "collection")}
            raw = med([r["downtime"] for r in sel["raw"]])
            coll = med([r["downtime"] for r in sel["collection"]])
            row = {"mib": size, "mode": mode, "raw": raw, "collection": coll, "ratio": None, "extra_s": None,
                   "failed": len([r for r in runs if r["mib"] == size and r["mode"] == mode and not r["ok"]]),
                   "role_frozen_s": med([(r.get("role_report") or {}).get("frozen_s") for r in sel["collection"]])}
            if raw and coll:
                row["ratio"] = round(coll["median"] / raw["median"], 3)
                row["extra_s"] = round(coll["median"] - raw["median"], 3)
            for k in ("raw", "collection"):
                keys = []
                for r in sel[k]:
                    for name in r.get("breakdown") or {}:
                        if name not in keys:
                            keys.append(name)
                row["breakdown_" + k] = {name: med([(r.get("breakdown") or {}).get(name) for r in sel[k]])["median"]
                                         for name in keys}
            row["hash_rates"] = hash_rates(sel["collection"])
            rows.append(row)
    return rows


def hash_rates(runs):
    """Median MiB/s of the image hashing inside the frozen window (one-task
    path): the dump's work after criu (mostly the sha256 of every local image)
    and the restore's checks (the same images verified again), over the
    bytes of the local images (the role's image_bytes; a page server's pages
    are not hashed). Runs with less than 20 ms of either are left out."""
    out = {}
    for key, stage in (("dump_after_criu", ONE_TASK_STAGES[2]), ("restore_checks", ONE_TASK_STAGES[6])):
        vals = []
        for r in runs:
            nbytes = (r.get("role_report") or {}).get("image_bytes")
            sec = (r.get("breakdown") or {}).get(stage)
            if nbytes and sec and sec >= 0.02:
                vals.append(nbytes / 1048576.0 / sec)
        m = med(vals, 1)
        out[key] = m["median"] if m else None
    out["image_mib"] = None
    sizes = [(r.get("role_report") or {}).get("image_bytes") for r in runs]
    sizes = [x for x in sizes if x]
    if sizes:
        out["image_mib"] = round(statistics.median(sizes) / 1048576.0, 1)
    return out


# Targets of the downtime issue, against the raw page-server pipeline: at most
# 1.25x for 256 MiB and 1 GiB, at most raw + 0.5 s for 16 MiB.
def target_limit(mib, raw_median):
    if raw_median is None:
        return None, None
    if mib <= 16:
        return raw_median + 0.5, "<= raw + 0.5 s"
    return raw_median * 1.25, "<= 1.25x raw"


def _row(res, mib, mode):
    for r in (res.get("downtime") or {}).get("summary", []):
        if r["mib"] == mib and r["mode"] == mode:
            return r
    return None


def _m(x):
    return x["median"] if x else None


# The performance targets, on medians against the raw pipeline of the same mode in the same run:
# (mode, MiB) -> (kind, bound): "ratio" collection <= bound x raw, "extra" collection <= raw + bound s.
TARGETS = {("page_server_tls", 64): ("extra", 0.1), ("page_server_tls", 256): ("ratio", 1.10),
           ("page_server_tls", 1024): ("ratio", 1.10), ("rsync", 256): ("ratio", 1.25),
           ("rsync", 1024): ("ratio", 1.25)}


def targets_lines(results):
    """Each target, its bound from this run's raw median, the collection's median, met or not."""
    rows = []
    for (mode, mib), (kind, bound) in sorted(TARGETS.items()):
        r = _row(results, mib, mode)
        raw, coll = (_m(r["raw"]), _m(r["collection"])) if r else (None, None)
        if raw is None or coll is None:
            continue
        limit = raw * bound if kind == "ratio" else raw + bound
        rows.append("| %d | %s | %s | %.2f | %.2f | %.2f | %s |" % (
            mib, mode, ("<= %.2fx raw" % bound) if kind == "ratio" else ("<= raw + %.1f s" % bound), raw, limit,
            coll, "**met**" if coll <= limit else "not met (%+.2f s over)" % (coll - limit)))
    if not rows:
        return []
    return ["### Targets", "", "Medians, against the raw pipeline of the same mode in this run.", "",
            "| R (MiB) | mode | target | raw | bound | collection | |", "|---:|---|---|---:|---:|---:|---|"] + rows + [""]


def before_after_lines(results, others):
    """The before/after table: the collection's median downtime in the run
    labelled `before` and in this run, against this run's raw baselines, and
    whether the issue's targets are met."""
    if results["label"] == "before":
        return []
    base = [o for o in others if o.get("label") == "before" and o.get("downtime")]
    if not base or not results.get("downtime"):
        return []
    base = base[0]
    lines = ["### Before and after", "",
             "Collection downtime medians (s): label **before** (collection at `%s`, %s) and this run, label "
             "**%s** (collection at `%s`, %s). *raw* is this run's baseline of the same mode, *raw ps* this run's "
             "raw page-server pipeline (the issue's baseline; with TLS for the page_server_tls rows, in cleartext "
             "for the others). Targets (the issue): downtime <= 1.25x the raw "
             "page-server pipeline for 256 MiB and 1 GiB, <= raw + 0.5 s for 16 MiB; checked against the raw "
             "page-server pipeline and against the raw pipeline of the same mode, on medians." % (
                 (base.get("collection") or {}).get("commit", "?")[:12], base.get("finished"), results["label"],
                 (results.get("collection") or {}).get("commit", "worktree")[:12], results.get("finished")), "",
             "| R (MiB) | mode | raw (before run) | raw | raw ps | collection before | collection after "
             "| after / raw | after - raw s | after / raw ps | after - raw ps s | target vs raw ps | "
             "target vs own raw |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in results["downtime"]["summary"]:
        b = _row(base, r["mib"], r["mode"])
        ps = _row(results, r["mib"], "page_server_tls" if r["mode"] == "page_server_tls" else "page_server")
        raw, coll, rawps = _m(r["raw"]), _m(r["collection"]), _m(ps["raw"]) if ps else None
        cells = []
        for ref in (rawps, raw):
            lim, rule = target_limit(r["mib"], ref)
            if lim is None or coll is None:
                cells.append("-")
            else:
                cells.append("%s (%s: %.2f s)" % ("**met**" if coll <= lim else "not met", rule, lim))

        def num(x, f="%.2f"):
            return f % x if x is not None else "-"
        lines.append("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["mib"], r["mode"], num(_m(b["raw"]) if b else None), num(raw), num(rawps),
            num(_m(b["collection"]) if b else None), num(coll),
            num(coll / raw if coll and raw else None, "%.2fx"), num(coll - raw if coll and raw else None, "%+.2f"),
            num(coll / rawps if coll and rawps else None, "%.2fx"),
            num(coll - rawps if coll and rawps else None, "%+.2f"), cells[0], cells[1]))
    lines.append("")
    return lines


# --------------------------------------------------------------- scaling

def bench_scaling(fleet, prof, work):
    runs = []
    for nh in prof["scale_hosts"]:
        hosts = fleet.hosts[:nh]
        inventory = write_inventory(fleet, os.path.join(work, "inv-scale-%d.ini" % nh), hosts)
        for npr in prof["scale_procs"]:
            marker = "ckbscale%dx%d" % (nh, npr)
            sdir = os.path.join(WORK_ROOT, marker)
            os.makedirs(sdir, exist_ok=True)
            procs = {h: [] for h in hosts}
            try:
                for h in hosts:
                    for i in range(npr):
                        procs[h].append(Workload(fleet, h, os.path.join(sdir, "%s-%d.ticks" % (h, i)), 0, interval=0.1))
                for h in hosts:
                    for wl in procs[h]:
                        wl.wait_ticks(2, timeout=60)
                for rep in range(1, prof["scale_repeats"] + 1):
                    for kind in ("raw", "collection"):
                        root = "/var/lib/ckpt/bench/scale-%s-%s-%d" % (marker, kind, rep)
                        if kind == "raw":
                            rec = raw_scaling(fleet, hosts, procs, root)
                        else:
                            rec = coll_scaling(fleet, inventory, hosts, sdir, root, work,
                                               "%s-%d" % (marker, rep))
                        rec.update({"kind": kind, "hosts": nh, "procs": npr, "rep": rep})
                        runs.append(rec)
                        for h in hosts:
                            fleet.exec(h, ["rm", "-rf", root])
                        log("scaling %d host(s) x %2d proc(s) %-10s rep %d: %s" % (
                            nh, npr, kind, rep,
                            ("wall %.2f s, criu dump median %.3f s/process" % (rec["wall"], rec["criu_dump_median"] or 0))
                            if rec["ok"] else "FAILED: %s" % rec.get("error", "")[-300:].replace("\n", " | ")))
            finally:
                for h in hosts:
                    for wl in procs[h]:
                        wl.kill([h])
                shutil.rmtree(sdir, ignore_errors=True)
    return {"runs": runs, "summary": summarize_scaling(runs)}


def raw_scaling(fleet, hosts, procs, root):
    t0 = time.time()
    children = []
    for h in hosts:
        argv = ["bash", os.path.join(HERE, "raw_checkpoint.sh"), fleet.ssh_config_path, h, CRIU, root]
        argv += [str(wl.pid) for wl in procs[h]]
        children.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True))
    durations, ok, err = [], True, ""
    for c in children:
        out, e = c.communicate(timeout=600)
        ok = ok and c.returncode == 0
        err += e[-500:]
        for line in out.splitlines():
            p = line.split()
            if len(p) == 5 and p[0] == "dump":
                durations.append(float(p[3]) - float(p[2]))
                ok = ok and p[4] == "0"
    wall = time.time() - t0
    rec = {"ok": ok, "wall": round(wall, 3), "criu_dumps": [round(d, 4) for d in durations],
           "criu_dump_median": round(statistics.median(durations), 4) if durations else None}
    if not ok:
        rec["error"] = err
    return rec


def coll_scaling(fleet, inventory, hosts, sdir, root, work, tag):
    extra = {"ckpt_hosts": ":".join(hosts), "ckpt_checkpoint_cmdline_regex": "counter\\.py --out %s/" % sdir,
             "ckpt_checkpoint_images_root": root}
    pb = playbook("checkpoint.yml", inventory, extra, work, "scale-" + tag, forks=max(5, len(hosts)))
    dumps = [t for t in pb["tasks"] if t["action"] in ("ckpt.criu.dump", "dump") and t["status"] == "ok"]
    crius = [(t["result"].get("timings") or {}).get("criu_duration") for t in dumps]
    crius = [c for c in crius if c is not None]
    summary = (pb["report"] or {}).get("summary") or {}
    ok = pb["rc"] == 0 and summary.get("ok") == summary.get("processes")
    rec = {"ok": ok, "wall": round(pb["wall"], 3), "criu_dumps": crius,
           "criu_dump_median": round(statistics.median(crius), 4) if crius else None,
           "dump_task_median": round(statistics.median([t["end"] - t["start"] for t in dumps]), 4) if dumps else None,
           "processes_ok": summary.get("ok")}
    if not ok:
        rec["error"] = pb["output_tail"] or "report: %s" % summary
    return rec


# ---------------------------------------------------------- migration wall time

# (pairs, processes per source, ckpt_serial): one pair is node1 -> node2, two add node3 -> node4.
MSCALE_CASES = ((1, 1, 1), (1, 3, 1), (2, 1, 1), (2, 1, 2))


def write_pairs_inventory(fleet, path, pairs, pids):
    """Sources and their destinations: node1 -> node2, node3 -> node4 ... (``pairs`` of them);
    ``pids``: source -> the PIDs it migrates."""
    lines = ["[fleet]"]
    for i in range(pairs):
        src, dst = "node%d" % (2 * i + 1), "node%d" % (2 * i + 2)
        lines.append("%s ansible_host=%s ckpt_migrate_destination=%s ckpt_migrate_pids=%s" % (
            src, fleet.address(src), dst, ",".join(str(p) for p in pids[src])))
        lines.append("%s ansible_host=%s" % (dst, fleet.address(dst)))
    lines += ["", "[fleet:vars]", "ansible_user=root", "ansible_ssh_private_key_file=%s" % fleet.key_path,
              "ansible_ssh_common_args='-F %s'" % fleet.ssh_config_path,
              "ansible_python_interpreter=%s" % HOST_PYTHON, ""]
    with open(path, "w", encoding="ascii") as fh:
        fh.write("\n".join(lines))
    return path


def bench_migrate_scaling(fleet, prof, work):
    """Wall time of migrate.yml, end to end, for one 64 MiB process, for more
    processes on one host, and for a second host at ckpt_serial 1 and 2; with
    the frozen time of every process, which must not grow with the count."""
    runs = []
    mib = prof.get("mscale_mib", 64)
    for rep in range(1, prof["mscale_repeats"] + 1):
        for pairs, procs, serial in MSCALE_CASES:
            tag = "mscale-%dx%d-s%d-%d" % (pairs, procs, serial, rep)
            sources = ["node%d" % (2 * i + 1) for i in range(pairs)]
            wls = []
            try:
                for h in sources:
                    for i in range(procs):
                        wls.append(Workload(fleet, h, os.path.join(work, "%s-%s-%d.ticks" % (tag, h, i)), mib))
                for wl in wls:
                    if not wl.wait_ticks(20, timeout=120):
                        raise RuntimeError("workload did not start ticking")
                inv = write_pairs_inventory(fleet, os.path.join(work, "inv-%s.ini" % tag), pairs,
                                            {h: [wl.pid for wl in wls if wl.host == h] for h in sources})
                extra = {"ckpt_hosts": ":".join(sources), "ckpt_serial": str(serial),
                         "ckpt_migrate_images_root": "/var/lib/ckpt/bench/mscale",
                         "ckpt_migrate_page_server_port": str(COLL_PORT)}
                extra.update(prof.get("extra_vars") or {})
                pb = playbook("migrate.yml", inv, extra, work, tag, forks=max(5, 2 * pairs))
                rows = [r for r in ((pb["report"] or {}).get("processes") or []) if r.get("result") == "migrated"]
                ok = pb["rc"] == 0 and len(rows) == len(wls)
                rec = {"pairs": pairs, "procs": procs, "serial": serial, "rep": rep, "ok": ok,
                       "wall": round(pb["wall"], 3), "frozen": [r.get("frozen_s") for r in rows],
                       "raw_limit": [r.get("raw_limit_s") for r in rows]}
                rec["tasks"] = task_seconds(pb)
                ran = [t for t in pb["tasks"] if t["status"] != "skipped" and t["action"] in MIGRATE_MODULES]
                rec["actions"] = dict(collections.Counter(t["action"] for t in ran))
                rec["actions"]["async"] = len([t for t in ran if t.get("async")])
                rec["small_tasks"] = len(pb["tasks"]) - len(ran)
                if not ok:
                    rec["error"] = pb["output_tail"] or "%d of %d migrated" % (len(rows), len(wls))
            finally:
                for wl in wls:
                    wl.kill([wl.host, "node%d" % (int(wl.host[4:]) + 1)])
                for h in fleet.hosts[:2 * pairs]:
                    fleet.exec(h, ["rm", "-rf", "/var/lib/ckpt/bench/mscale"])
            runs.append(rec)
            log("migration wall time %d pair(s) x %d proc(s), serial %d, rep %d: %s" % (
                pairs, procs, serial, rep, ("wall %.2f s, frozen %s" % (rec["wall"], rec["frozen"]))
                if ok else "FAILED: %s" % rec.get("error", "")[-300:].replace("\n", " | ")))
    return {"runs": runs, "summary": summarize_mscale(runs)}


def summarize_mscale(runs):
    def case(pairs, procs, serial):
        return [r for r in runs if (r["pairs"], r["procs"], r["serial"]) == (pairs, procs, serial) and r["ok"]]
    rows = []
    for pairs, procs, serial in MSCALE_CASES:
        sel = case(pairs, procs, serial)
        rows.append({"pairs": pairs, "procs": procs, "serial": serial, "wall": med([r["wall"] for r in sel]),
                     "frozen": med([f for r in sel for f in r["frozen"] if f is not None]),
                     "raw_limit": med([f for r in sel for f in r["raw_limit"] if f is not None]),
                     "failed": len([r for r in runs if (r["pairs"], r["procs"], r["serial"]) == (pairs, procs, serial)
                                    and not r["ok"]])})
        per_run = [generic_tasks(r["tasks"]) for r in sel if r.get("tasks")]
        names = {n for t in per_run for n in t}
        if names:
            rows[-1]["tasks"] = dict(sorted(((n, med([t.get(n, 0.0) for t in per_run])["median"]) for n in names),
                                            key=lambda kv: -kv[1]))
    one = rows[0]["wall"]
    derived = {}
    if one:
        by = {(r["pairs"], r["procs"], r["serial"]): r for r in rows}
        if (by.get((1, 3, 1)) or {}).get("wall"):
            derived["per_process_s"] = round((by[(1, 3, 1)]["wall"]["median"] - one["median"]) / 2, 2)
        for serial in (1, 2):
            if (by.get((2, 1, serial)) or {}).get("wall"):
                derived["per_host_serial%d_s" % serial] = round(by[(2, 1, serial)]["wall"]["median"] - one["median"], 2)
        derived["one_migration_s"] = one["median"]
        if by.get((1, 3, 1), {}).get("tasks") and rows[0].get("tasks"):
            derived["per_process_tasks"] = per_process_tasks(rows[0]["tasks"], by[(1, 3, 1)]["tasks"], 2)
    return {"rows": rows, "derived": derived}


def generic_tasks(tasks):
    """Seconds per task name with a process's PID in the name made generic (``PID N``), so that runs
    of different processes compare; the collection's prefix dropped."""
    out = {}
    for name, sec in tasks.items():
        key = re.sub(r"\bPID \d+", "PID N", re.sub(r"^ckpt\.criu\.", "", name))
        out[key] = round(out.get(key, 0.0) + sec, 3)
    return out


def per_process_tasks(one, more, extra):
    """Where the wall time of each further process goes: per task, the median seconds of the run with
    ``extra`` more processes minus those of the one-process run, divided by ``extra``; largest first,
    tasks under 0.1 s summed as ``other tasks``."""
    diff = {k: (more.get(k, 0.0) - one.get(k, 0.0)) / extra for k in set(one) | set(more)}
    big = sorted(((k, v) for k, v in diff.items() if v >= 0.1), key=lambda kv: -kv[1])
    rest = sum(v for v in diff.values() if v < 0.1)
    return [[k, round(v, 2)] for k, v in big] + [["other tasks", round(rest, 2)]]


def summarize_scaling(runs):
    rows = []
    for nh in sorted({r["hosts"] for r in runs}):
        for npr in sorted({r["procs"] for r in runs}):
            sel = {k: [r for r in runs if r["hosts"] == nh and r["procs"] == npr and r["kind"] == k and r["ok"]]
                   for k in ("raw", "collection")}
            if not sel["raw"] and not sel["collection"]:
                continue
            raw = med([r["wall"] for r in sel["raw"]])
            coll = med([r["wall"] for r in sel["collection"]])
            criu = med([d for r in sel["raw"] for d in r["criu_dumps"]])
            criu_coll = med([d for r in sel["collection"] for d in r["criu_dumps"]])
            row = {"hosts": nh, "procs": npr, "raw_wall": raw, "collection_wall": coll, "criu_dump_raw": criu,
                   "criu_dump_collection": criu_coll,
                   "dump_task": med([r.get("dump_task_median") for r in sel["collection"]])}
            if raw and coll:
                per = (coll["median"] - raw["median"]) / npr
                row["overhead_per_process_s"] = round(per, 3)
                if criu:
                    row["overhead_vs_criu_dump"] = round(per / criu["median"], 1)
                row["ratio"] = round(coll["median"] / raw["median"], 2)
            rows.append(row)
    # Marginal cost of one more process on a host: slope between the smallest and
    # largest process count (the fixed cost of a playbook run cancels out).
    for nh in sorted({r["hosts"] for r in rows}):
        sel = sorted([r for r in rows if r["hosts"] == nh and r["raw_wall"] and r["collection_wall"]],
                     key=lambda r: r["procs"])
        if len(sel) >= 2 and sel[-1]["procs"] > sel[0]["procs"]:
            lo, hi = sel[0], sel[-1]
            dn = hi["procs"] - lo["procs"]
            coll = (hi["collection_wall"]["median"] - lo["collection_wall"]["median"]) / dn
            raw = (hi["raw_wall"]["median"] - lo["raw_wall"]["median"]) / dn
            hi["marginal_collection_s"] = round(coll, 3)
            hi["marginal_raw_s"] = round(raw, 3)
            hi["fixed_collection_s"] = round(lo["collection_wall"]["median"] - coll * lo["procs"], 2)
            if hi["criu_dump_raw"]:
                hi["marginal_vs_criu_dump"] = round(coll / hi["criu_dump_raw"]["median"], 1)
    return rows


# --------------------------------------------------------------- checksum

def load_checksum_module():
    if COLLECTION["path"] not in sys.path:
        sys.path.insert(0, COLLECTION["path"])
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.ckpt.criu.plugins.module_utils import _checksum
    return _checksum


def bench_checksum(prof, work):
    cks = load_checksum_module()
    cdir = os.path.join(work, "checksum")
    os.makedirs(cdir, exist_ok=True)
    big = os.path.join(cdir, "random-%dmib.bin" % prof["checksum_mib"])
    with open(big, "wb") as fh:
        for _mib in range(prof["checksum_mib"]):
            fh.write(os.urandom(1 << 20))
    children = []
    try:
        for i in range(prof["checksum_procs"]):
            out = os.path.join(cdir, "c%d.ticks" % i)
            children.append(subprocess.Popen([HOST_PYTHON, COUNTER, "--out", out, "--interval", "0.5"],
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        pids = [c.pid for c in children]
        mapped = sorted({r["path"] for r in cks.process_files(pids[0], cache=cks.ChecksumCache())["files"]
                         if os.path.isfile(r["path"])})
        sets = {"one large file (%d MiB, random)" % prof["checksum_mib"]: [big],
                "criu ELF binary": [CRIU_ELF],
                "files mapped by python3 (%d files)" % len(mapped): mapped}
        rows = []
        for name, files in sets.items():
            nbytes = sum(os.path.getsize(f) for f in files)
            run(["cat"] + files, stdout=subprocess.DEVNULL)          # warm the page cache for both
            t_sum, t_mod, t_rec = [], [], []
            for _rep in range(prof["checksum_repeats"]):
                t0 = time.perf_counter()
                run(["sha256sum"] + files, stdout=subprocess.DEVNULL, check=True)
                t_sum.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for f in files:
                    cks.sha256_file(f)
                t_mod.append(time.perf_counter() - t0)
                cache = cks.ChecksumCache()
                t0 = time.perf_counter()
                for f in files:
                    cks.file_record(f, cache=cache)
                t_rec.append(time.perf_counter() - t0)
            row = {"set": name, "files": len(files), "bytes": nbytes, "sha256sum_s": med(t_sum, 6),
                   "module_sha256_s": med(t_mod, 6), "module_record_s": med(t_rec, 6)}
            mib = nbytes / 1048576.0
            row["sha256sum_mib_s"] = round(mib / row["sha256sum_s"]["median"], 1)
            row["module_sha256_mib_s"] = round(mib / row["module_sha256_s"]["median"], 1)
            row["module_record_mib_s"] = round(mib / row["module_record_s"]["median"], 1)
            row["ratio_module_vs_sha256sum"] = round(row["module_record_s"]["median"] / row["sha256sum_s"]["median"], 2)
            rows.append(row)
            log("checksum %-40s %8.1f MiB: sha256sum %.3f s (%.0f MiB/s), binary_checksum %.3f s (%.0f MiB/s), ratio %.2f"
                % (name, mib, row["sha256sum_s"]["median"], row["sha256sum_mib_s"], row["module_record_s"]["median"],
                   row["module_record_mib_s"], row["ratio_module_vs_sha256sum"]))
        # The cache across processes sharing libraries.
        fresh, shared = [], []
        hits = {}
        for _rep in range(prof["checksum_repeats"]):
            t0 = time.perf_counter()
            for p in pids:
                cks.process_files(p, cache=cks.ChecksumCache())
            fresh.append(time.perf_counter() - t0)
            cache = cks.ChecksumCache()
            t0 = time.perf_counter()
            for p in pids:
                cks.process_files(p, cache=cache)
            shared.append(time.perf_counter() - t0)
            hits = cache.stats()
        t0 = time.perf_counter()
        run(["sha256sum"] + mapped * len(pids), stdout=subprocess.DEVNULL, check=True)
        t_sum_all = time.perf_counter() - t0
        cache_row = {"processes": len(pids), "files_per_process": len(mapped),
                     "fresh_cache_s": med(fresh, 6), "shared_cache_s": med(shared, 6), "cache_stats": hits,
                     "sha256sum_all_s": round(t_sum_all, 4)}
        cache_row["speedup"] = round(cache_row["fresh_cache_s"]["median"] / cache_row["shared_cache_s"]["median"], 1)
        log("checksum cache: %d processes x %d mapped files: fresh cache per process %.3f s, one shared cache %.3f s "
            "(x%.1f); sha256sum of the same files %.3f s"
            % (len(pids), len(mapped), cache_row["fresh_cache_s"]["median"], cache_row["shared_cache_s"]["median"],
               cache_row["speedup"], t_sum_all))
        return {"rows": rows, "cache": cache_row}
    finally:
        for c in children:
            c.kill()
            c.wait()
        shutil.rmtree(cdir, ignore_errors=True)


# ------------------------------------------------- Ansible's own cost per task

# The modules one migration runs (playbooks/migrate.yml with the role's defaults: rsync and the
# ephemeral key), in the order they first run. Ansible builds each one's payload (AnsiballZ: the
# module and the module_utils it imports, found by parsing them) once per playbook run, on the
# controller, the first time a task uses it.
MIGRATE_MODULES = ("ckpt.criu.host_checks", "ckpt.criu.images_dir", "ansible.builtin.command",
                   "ckpt.criu.migration_key", "ansible.builtin.blockinfile", "ckpt.criu.restore",
                   "ckpt.criu.dump", "ansible.builtin.async_status", "ckpt.criu.migration_commit")
OVERHEAD_AGAIN = 3        # warm runs of each module after its first


def overhead_playbook(path):
    """A play on node1 that measures, task by task: a raw command (the connection and Ansible's
    per-task floor, no Python), Python's start, a task that runs no module, and for each module of
    a migration its first run (payload built) and warm runs. Each module gets arguments it refuses
    (a missing required option, a job that is not there): the run then costs the module's transfer,
    start and imports and changes nothing. Async: the restore module started with poll 0, as the
    role starts it, and async_status on that job."""
    tasks = [{"name": "raw true %d" % i, "ansible.builtin.raw": "true"} for i in range(5)]
    tasks += [{"name": "raw python3 %d" % i, "ansible.builtin.raw": "%s -c pass" % HOST_PYTHON} for i in range(5)]
    tasks += [{"name": "no module %d" % i, "ansible.builtin.set_fact": {"ckb_x": i}} for i in range(10)]
    tasks += [{"name": "first ansible.builtin.ping", "ansible.builtin.ping": {}}]
    tasks += [{"name": "again ansible.builtin.ping %d" % i, "ansible.builtin.ping": {}} for i in range(OVERHEAD_AGAIN)]
    args = {"ansible.builtin.async_status": {"jid": "0.0"}}
    for mod in MIGRATE_MODULES:
        for i in range(OVERHEAD_AGAIN + 1):
            tasks.append({"name": ("first %s" % mod) if i == 0 else ("again %s %d" % (mod, i)),
                          mod: args.get(mod, {}), "ignore_errors": True})
    for i in range(OVERHEAD_AGAIN):
        tasks.append({"name": "async ckpt.criu.restore %d" % i, "ckpt.criu.restore": {}, "async": 60, "poll": 0,
                      "register": "ckb_job"})
        tasks.append({"name": "async_status of it %d" % i, "ansible.builtin.async_status": {
            "jid": "{{ ckb_job.ansible_job_id }}"}, "ignore_errors": True})
    with open(path, "w", encoding="ascii") as fh:
        json.dump([{"hosts": "node1", "gather_facts": False, "tasks": tasks}], fh, indent=1)
    return path


def bench_overhead(fleet, prof, work):
    """What Ansible itself costs per task on this machine (no criu, no workload), repeated, so that a
    migration's wall time can be split into Ansible's share and the work. See overhead_playbook."""
    inv = write_inventory(fleet, os.path.join(work, "inv-overhead.ini"), ["node1"])
    pbook = overhead_playbook(os.path.join(work, "overhead.json"))
    runs = []
    for rep in range(1, prof["overhead_repeats"] + 1):
        pb = playbook(pbook, inv, {}, work, "overhead-%d" % rep)    # an absolute path: not one of the collection's
        tasks = pb["tasks"]
        sec = {}
        for t in tasks:
            sec.setdefault(re.sub(r" \d+$", "", t["task"]), []).append(t["end"] - t["start"])
        rec = {"rep": rep, "rc": pb["rc"], "wall": round(pb["wall"], 3),
               "start_end_s": round((tasks[0]["task_start"] - pb["start"]) + (pb["end"] - tasks[-1]["end"]), 3)
               if tasks else None,
               "tasks": {k: [round(v, 4) for v in vs] for k, vs in sec.items()}}
        if pb["rc"] != 0:
            rec["error"] = pb["output_tail"]
        runs.append(rec)
        log("overhead run %d: wall %.2f s, start and end %.2f s" % (rep, rec["wall"], rec["start_end_s"] or -1))
    return {"runs": runs, "summary": summarize_overhead(runs)}


def summarize_overhead(runs):
    """Per run the median of each kind of task; then median [min-max] over the runs."""
    ok = [r for r in runs if r["rc"] == 0]

    def per_run(fn):
        return med([fn(r["tasks"]) for r in ok])

    def m(tasks, name):
        return statistics.median(tasks[name]) if tasks.get(name) else None

    def build(tasks, mod):
        first, again = m(tasks, "first %s" % mod), m(tasks, "again %s" % mod)
        return None if first is None or again is None else first - again

    rows = {"start_end": med([r["start_end_s"] for r in ok]),
            "raw": per_run(lambda t: m(t, "raw true")),
            "raw_python": per_run(lambda t: m(t, "raw python3")),
            "no_module": per_run(lambda t: m(t, "no module")),
            "ping": per_run(lambda t: m(t, "again ansible.builtin.ping")),
            "async_launch": per_run(lambda t: m(t, "async ckpt.criu.restore")),
            "async_status": per_run(lambda t: m(t, "async_status of it"))}
    modules = {}
    for mod in MIGRATE_MODULES:
        modules[mod] = {"warm": per_run(lambda t, mod=mod: m(t, "again %s" % mod)),
                        "build": per_run(lambda t, mod=mod: build(t, mod))}
    rows["modules"] = modules
    builds = [[build(r["tasks"], mod) for mod in MIGRATE_MODULES] for r in ok]
    rows["builds_total"] = med([sum(b) for b in builds if None not in b])
    rows["failed_runs"] = len(runs) - len(ok)
    return rows


def overhead_model(ov, one_run):
    """One migration's wall time split into Ansible's share, priced with the overhead part's unit costs,
    and the rest. one_run: an mscale run of one process with its ``actions`` (task counts per action)."""
    counts = one_run.get("actions") or {}
    if not counts or not ov:
        return None
    mods = ov["modules"]
    used = dict((a, n) for a, n in counts.items() if a in mods)
    parts = {
        "ansible-playbook's start and end": ov["start_end"]["median"],
        "module runs, warm (payload sent, Python, imports): %d" % sum(used.values()):
            sum(n * mods[a]["warm"]["median"] for a, n in used.items()),
        "payloads built on the controller, once per module and run: %d" % len(used):
            sum(mods[a]["build"]["median"] for a in used),
        "tasks that run no module (includes, facts, asserts, skipped tasks): %d" % one_run["small_tasks"]:
            one_run["small_tasks"] * ov["no_module"]["median"],
    }
    if counts.get("async"):
        parts["async starts, above a warm run: %d" % counts["async"]] = \
            counts["async"] * (ov["async_launch"]["median"] - mods["ckpt.criu.restore"]["warm"]["median"])
    share = sum(parts.values())
    return {"parts": {k: round(v, 2) for k, v in parts.items()}, "ansible_s": round(share, 2),
            "wall_s": one_run["wall"], "rest_s": round(one_run["wall"] - share, 2)}


# --------------------------------------------------------------- output

def fmt(m, digits=2):
    if not m:
        return "-"
    return "%.*f [%.*f-%.*f]" % (digits, m["median"], digits, m["min"], digits, m["max"])


def of_head(results):
    """The run benchmarked the collection as committed then (not an older commit given with --rev)."""
    return (results.get("collection") or {}).get("rev", "HEAD") in ("HEAD", "worktree")


def markdown(results, others):
    lines = ["# ckpt.criu benchmarks", "",
             "Generated by `benchmarks/run.py` (see [benchmarks/README.md](../../benchmarks/README.md)); "
             "do not edit by hand. Newest run: label **%s**, %s, %s profile, collection at `%s`%s." % (
                 results["label"], results["finished"], results["profile"],
                 results.get("collection", {}).get("commit", results["git"]["commit"])[:12] + (
                     "" if results.get("collection", {}).get("commit") else " + working tree"),
                 " (uncommitted changes in %s)" % ", ".join(results["git"]["dirty_collection_files"])
                 if results["git"]["dirty_collection_files"] else ""),
             "", "Medians with [min-max] over the repeats; every ratio is against the raw baseline measured in "
             "the same run, interleaved (raw, collection, raw, collection ...). Machine: %s CPUs, kernel %s, %s, "
             "%s; load average at start %s (a shared machine: numbers are noisy)." % (
                 results["machine"]["cpus"], results["machine"]["kernel"], results["machine"]["criu"],
                 results["machine"]["ansible"], " ".join(results["machine"]["loadavg_at_start"])), ""]
    dt = results.get("downtime")
    if dt:
        lines += ["## Downtime of a migration (heartbeat gap, seconds)", "",
                  "A counter holding R MiB of touched memory appends a timestamped tick every %d ms; downtime is "
                  "the largest gap between two ticks across the migration node1 -> node2. *raw*: "
                  "`benchmarks/raw_rsync.sh` / `raw_pageserver.sh` (plain `criu dump`, rsync or page server, "
                  "`criu restore -d`, ssh masters opened before the freeze). *collection*: `playbooks/migrate.yml`. "
                  "Modes: *rsync* (`ckpt_migrate_transfer: rsync`; from run `cipher-1206` on, the role's ssh offers "
                  "AES-GCM first, `ckpt_migrate_ssh_ciphers`, while the raw rsync keeps ssh's default first choice, "
                  "chacha20-poly1305: see `notes-cipher-1206b.md`); *page_server*: the page server in cleartext in "
                  "both (raw without `--tls`, the role with `ckpt_migrate_page_server_tls: false`); "
                  "*page_server_tls*: criu's TLS in both (raw with a throw-away CA and certificates made before "
                  "the freeze, the role's default per-migration credentials). *rsync_prefault*, "
                  "*page_server_tls_prefault*: the same with the destination's prefault on "
                  "(`ckpt_migrate_prefault: true`; it is off by default), from %d MiB, against the same raw "
                  "pipelines run again. Each ratio is against the raw "
                  "pipeline of the same mode. *role frozen_s*: what the role itself reports.%s" % (
                      TICK * 1000, PREFAULT_MIN_MIB,
                      (" In this run the raw pipelines keep the source stopped, holding its memory, until their "
                       "restore is done (`--raw-keep-source`), as the role does."
                       if results["settings"].get("raw_keep_source") else "") + rest_note(results["settings"])),
                  "", "| R (MiB) | mode | raw | collection | ratio | extra s | role frozen_s | failed runs |",
                  "|---:|---|---|---|---:|---:|---|---:|"]
        for r in dt["summary"]:
            lines.append("| %d | %s | %s | %s | %s | %s | %s | %d |" % (
                r["mib"], r["mode"], fmt(r["raw"]), fmt(r["collection"]),
                "%.2fx" % r["ratio"] if r["ratio"] else "-", "%+.2f" % r["extra_s"] if r["extra_s"] is not None else "-",
                fmt(r["role_frozen_s"]), r["failed"]))
        causes = {}
        for r in dt["runs"]:
            if not r.get("ok"):
                cause = re.sub(r"pid-[0-9]+|PID [0-9]+", "pid-N", (r.get("error") or "?").split(" | ")[-1]).replace("\n", " ")[:400]
                causes.setdefault((r["mib"], r["mode"], r["kind"], cause), 0)
                causes[(r["mib"], r["mode"], r["kind"], cause)] += 1
        if causes:
            lines += ["", "Failed runs (no downtime recorded for them):", ""]
            for (mib, mode, kind, cause), n in sorted(causes.items()):
                lines.append("- %d MiB %s %s, %d run(s): %s" % (mib, mode, kind, n, cause))
        lines += ["", "![downtime](downtime-%s.png)" % results["label"], ""]
        lines += targets_lines(results)
        lines += before_after_lines(results, others)
        notes = os.path.join(OUT_DIR, "notes-%s.md" % results["label"])
        if os.path.exists(notes):
            with open(notes, encoding="utf-8") as fh:
                lines += [fh.read().rstrip("\n"), ""]
        lines += ["### Where the time goes (medians, seconds inside the heartbeat gap)", "",
                  "One-task frozen path (the destination's restore waits for the manifest the dump sends last): "
                  "the stages are cut at wall-clock points the modules report (same clock as the heartbeat): the "
                  "dump's `frozen_at` (+ `criu_duration` = criu's end), the restore's `resumed_at` (- "
                  "`criu_duration` = criu restore's start, - `checks` = the checks' start), the moment the "
                  "restore saw the manifest (`resumed_at` + `verify` - `total`) = the end of the transfer, which "
                  "started `transfer.total` before. *dump: after criu* is then the dump's work between criu's "
                  "end and the transfer (waiting for the stopped state, the sha256 of every local image, the "
                  "manifest); the restore's poll for the manifest (10 ms interval) lands in *transfer: "
                  "manifest*. Runs of the older three-task path (dump, transfer, restore tasks) are split by "
                  "the task start/end timestamps of `benchmarks/callback_plugins/bench_timing.py` and the "
                  "modules' `timings`. Raw stages come from the script's timestamps around each ssh command.", ""]
        for r in dt["summary"]:
            lines.append("**%d MiB, %s** (raw %s s, collection %s s):" % (
                r["mib"], r["mode"], r["raw"]["median"] if r["raw"] else "-",
                r["collection"]["median"] if r["collection"] else "-"))
            lines.append("")
            lines.append("| stage | seconds |")
            lines.append("|---|---:|")
            for k in ("raw", "collection"):
                for name, v in (r.get("breakdown_" + k) or {}).items():
                    lines.append("| %s: %s | %.3f |" % (k, name, v))
            lines.append("")
            hr = r.get("hash_rates") or {}
            if (hr.get("image_mib") or 0) >= 8 and (hr.get("dump_after_criu") or hr.get("restore_checks")):
                lines.append("Image hashing inside the frozen window: %s MiB of local images; dump after criu %s "
                             "MiB/s, restore checks %s MiB/s (medians per run)." % (
                                 hr.get("image_mib"), hr.get("dump_after_criu") or "-", hr.get("restore_checks") or "-"))
                lines.append("")
        lines += ["![where the time goes](breakdown-%s.png)" % results["label"], ""]
    ms, ms_from = results.get("mscale"), results
    if not ms:
        # The newest run that measured it, so that a run of one part does not hide the others' figures.
        # A baseline of an older commit (--rev) is compared in its notes, not shown as the figures.
        ms_from = next((r for r in reversed(others) if r.get("mscale") and of_head(r)), None)
        ms = ms_from and ms_from["mscale"]
    if ms:
        d = ms["summary"]["derived"]
        lines += ["## Migration wall time, end to end (seconds)", ""]
        if ms_from is not results:
            lines += ["Run **%s** did not measure it; these figures are from run **%s** (%s, collection at `%s`)." % (
                results["label"], ms_from["label"], ms_from.get("finished", "?"),
                (ms_from.get("collection") or {}).get("commit", "?")[:12]), ""]
        lines += ["`playbooks/migrate.yml` with the role's defaults (transfer %s), %d MiB counters, from "
                  "`ansible-playbook`'s start to its end: one process node1 -> node2; three processes on node1; "
                  "a second pair node3 -> node4 at `ckpt_serial` 1 and 2. *frozen* and *raw limit*: the report's "
                  "`frozen_s` and `raw_limit_s` of every process (criu and rsync alone for that checkpoint)." % (
                      (ms_from["settings"].get("extra_vars") or {}).get("ckpt_migrate_transfer", "rsync"),
                      ms_from["settings"].get("mscale_mib", 64)), "",
                  "| pairs | processes per source | ckpt_serial | wall | frozen per process | raw limit | failed runs |",
                  "|---:|---:|---:|---|---|---|---:|"]
        for r in ms["summary"]["rows"]:
            lines.append("| %d | %d | %d | %s | %s | %s | %d |" % (
                r["pairs"], r["procs"], r["serial"], fmt(r["wall"]), fmt(r["frozen"]), fmt(r["raw_limit"]),
                r["failed"]))
        lines += ["", "One migration: %s s; each further process on the same host: %s s; a second host: %s s at "
                  "`ckpt_serial` 1, %s s at 2." % (
                      d.get("one_migration_s", "-"), d.get("per_process_s", "-"),
                      d.get("per_host_serial1_s", "-"), d.get("per_host_serial2_s", "-")), ""]
        if d.get("per_process_tasks"):
            lines += ["Where each further process's %s s go: per task, (three processes - one process) / 2, medians "
                      "of seconds from the task's start to its end on its host; *between* is the time no task "
                      "covered (Ansible's includes, templating and forks). The tasks run one after another on the "
                      "controller, so the rows add up to about the figure (medians do not add up exactly); each "
                      "restore's settle check runs inside the restore on the destination, while the role migrates "
                      "the next process, and shows only in what is left of *Collect*." % d.get("per_process_s", "-"),
                      "",
                      "| task | seconds per further process |", "|---|---:|"]
            lines += ["| %s | %.2f |" % (name.replace("|", "/"), sec) for name, sec in d["per_process_tasks"]]
            lines.append("")
        notes = os.path.join(OUT_DIR, "notes-%s.md" % ms_from["label"])
        if ms_from is not results and os.path.exists(notes):
            with open(notes, encoding="utf-8") as fh:
                lines += [fh.read().rstrip("\n"), ""]
    lines += overhead_lines(results, others)
    sc = results.get("scaling")
    if sc:
        lines += ["## Fleet scaling: checkpoint wall time (seconds)", "",
                  "`playbooks/checkpoint.yml` (snapshot, processes selected by command line, forks >= hosts) "
                  "against `benchmarks/raw_checkpoint.sh` (one ssh per host, hosts in parallel, `criu dump "
                  "--leave-running` of each process one after another). Overhead per process = (collection - raw) "
                  "/ processes per host; relative to criu's own dump time of one process.", "",
                  "| hosts | procs/host | raw wall | collection wall | ratio | criu dump/process (raw) | "
                  "criu dump/process (collection) | dump task/process | overhead/process s | overhead / criu dump |",
                  "|---:|---:|---|---|---:|---|---|---|---:|---:|"]
        for r in sc["summary"]:
            lines.append("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r["hosts"], r["procs"], fmt(r["raw_wall"]), fmt(r["collection_wall"]),
                "%.1fx" % r["ratio"] if r.get("ratio") else "-", fmt(r["criu_dump_raw"], 3),
                fmt(r["criu_dump_collection"], 3), fmt(r["dump_task"], 2),
                r.get("overhead_per_process_s", "-"), "%sx" % r["overhead_vs_criu_dump"] if r.get("overhead_vs_criu_dump") else "-"))
        for r in sc["summary"]:
            if "marginal_collection_s" in r:
                lines.append("")
                lines.append("%d host(s): each extra process per host costs the collection %.2f s of wall time "
                             "(raw: %.3f s; %.0fx criu's own dump time of %.3f s); a run's fixed cost "
                             "(playbook start, window guard, preflight, report) is about %.1f s." % (
                                 r["hosts"], r["marginal_collection_s"], r["marginal_raw_s"],
                                 r.get("marginal_vs_criu_dump") or 0, r["criu_dump_raw"]["median"],
                                 r["fixed_collection_s"]))
        lines += ["", "![scaling](scaling-%s.png)" % results["label"], ""]
    ck = results.get("checksum")
    if ck:
        lines += ["## Checksum throughput: `binary_checksum` against `sha256sum`", "",
                  "Same files, page cache warm. *module sha256*: `_checksum.sha256_file` (streamed hashlib); "
                  "*module record*: `_checksum.file_record` (sha256 + ELF build-id, what `binary_checksum`, `dump` "
                  "and `restore` compute per file).", "",
                  "| files | MiB | sha256sum s | module sha256 s | module record s | sha256sum MiB/s | module MiB/s | "
                  "module / sha256sum |", "|---|---:|---|---|---|---:|---:|---:|"]
        for r in ck["rows"]:
            lines.append("| %s | %.1f | %s | %s | %s | %.0f | %.0f | %.2fx |" % (
                r["set"], r["bytes"] / 1048576.0, fmt(r["sha256sum_s"], 3), fmt(r["module_sha256_s"], 3),
                fmt(r["module_record_s"], 3), r["sha256sum_mib_s"], r["module_record_mib_s"],
                r["ratio_module_vs_sha256sum"]))
        c = ck["cache"]
        lines += ["", "Cache across processes sharing libraries: %d python3 processes x %d mapped files. "
                  "`process_files` with a fresh cache per process (one module run per process, as `binary_checksum`, "
                  "`dump` and `restore` run today) %s s; with one cache shared by all (one module run covering the "
                  "processes) %s s: x%.1f. `sha256sum` of the same %d files: %.3f s. Cache after the shared run: %s." % (
                      c["processes"], c["files_per_process"], fmt(c["fresh_cache_s"], 3), fmt(c["shared_cache_s"], 3),
                      c["speedup"], c["processes"] * c["files_per_process"], c["sha256sum_all_s"],
                      json.dumps(c["cache_stats"])), ""]
    if others:
        lines += ["## Every labelled run in docs/benchmarks/", "",
                  "Downtime medians (s) per label; re-run with `--label after` and compare here.", "",
                  "| label | finished | " + " | ".join("%d MiB %s raw / coll" % (s, m) for s, m in _keys(others))
                  + " | plots |",
                  "|---|---|" + "---|" * len(_keys(others)) + "---|"]
        for res in others:
            cells = []
            for s, m in _keys(others):
                row = [r for r in (res.get("downtime") or {}).get("summary", []) if r["mib"] == s and r["mode"] == m]
                if row and row[0]["raw"] and row[0]["collection"]:
                    cells.append("%.2f / %.2f" % (row[0]["raw"]["median"], row[0]["collection"]["median"]))
                else:
                    cells.append("-")
            pngs = ["[%s](%s-%s.png)" % (kind, kind, res["label"]) for kind in ("downtime", "breakdown", "scaling")
                    if os.path.exists(os.path.join(OUT_DIR, "%s-%s.png" % (kind, res["label"])))]
            lines.append("| %s | %s | %s | %s |" % (
                res["label"], res["finished"], " | ".join(cells), ", ".join(pngs) or "-"))
        lines.append("")
    return "\n".join(lines)


def overhead_lines(results, others):
    """The overhead part's table, from this run or the newest of HEAD that measured it, and the split of
    one migration measured in the same run."""
    ov_from = results if results.get("overhead") else next(
        (r for r in reversed(others) if r.get("overhead") and of_head(r)), None)
    if not ov_from:
        return []
    ov = ov_from["overhead"]["summary"]
    lines = ["## Ansible's own cost per task (seconds)", "",
             "Run **%s** (%s), `--only overhead`: a play on one fleet host that runs no criu; median [min-max] "
             "over %d playbook runs of each run's median per kind of task. Each module of a migration runs once "
             "(its payload is built on the controller: ansible-core parses the module and every module_utils it "
             "imports, once per playbook run and module) and %d times more (warm), with arguments it refuses, "
             "which costs its transfer, Python's start and its imports and changes nothing."
             % (ov_from["label"], ov_from.get("finished", "?"), ov["start_end"]["n"] if ov["start_end"] else 0,
                OVERHEAD_AGAIN), "",
             "| task | seconds |", "|---|---|",
             "| `ansible-playbook`'s start and end (no task) | %s |" % fmt(ov["start_end"]),
             "| a task that runs no module (`set_fact`) | %s |" % fmt(ov["no_module"], 3),
             "| `raw: true` (SSH, Ansible's per-task work, no Python) | %s |" % fmt(ov["raw"], 3),
             "| `raw: python3 -c pass` | %s |" % fmt(ov["raw_python"], 3),
             "| `ansible.builtin.ping`, warm (AnsiballZ: payload, ansible-core's imports) | %s |" % fmt(ov["ping"], 3),
             "| `ckpt.criu.restore` started with `async` and `poll: 0` | %s |" % fmt(ov["async_launch"], 3),
             "| `async_status` of that job | %s |" % fmt(ov["async_status"], 3), "",
             "| module of a migration | warm run | payload built (first run - warm run) |", "|---|---|---|"]
    for mod, row in ov["modules"].items():
        lines.append("| `%s` | %s | %s |" % (mod, fmt(row["warm"], 3), fmt(row["build"], 3)))
    lines += ["| all %d payloads | | %s |" % (len(ov["modules"]), fmt(ov["builds_total"])), ""]
    ms = ov_from.get("mscale")
    models = [overhead_model(ov, r) for r in (ms or {}).get("runs", [])
              if r.get("ok") and (r["pairs"], r["procs"]) == (1, 1)]
    models = [m for m in models if m]
    if models:
        lines += ["One migration of the same run (one process, node1 -> node2) split with these unit costs, "
                  "medians over its %d repeats: what is left after Ansible's share is criu, rsync, the checks "
                  "inside the modules, the restore's settle check and the controller's templating." % len(models),
                  "", "| part | seconds |", "|---|---:|"]
        for name in models[0]["parts"]:
            lines.append("| %s | %.2f |" % (name, statistics.median([m["parts"].get(name, 0.0) for m in models])))
        lines += ["| **Ansible's share** | **%.2f** |" % statistics.median([m["ansible_s"] for m in models]),
                  "| the rest | %.2f |" % statistics.median([m["rest_s"] for m in models]),
                  "| one migration, wall | %.2f |" % statistics.median([m["wall_s"] for m in models]), ""]
    return lines


def rest_note(settings):
    """The sentence on memory at rest for the downtime section (older results had no pause)."""
    if "rest_s" not in settings and not settings.get("rest_default"):
        return " Both pipelines started as soon as their workload ticked (no pause for memory at rest)."
    rest = settings.get("rest_s")
    when = ("%.0f s" % rest) if rest is not None else "%.0f s from %d MiB" % (REST_S, REST_MIN_MIB)
    return (" Both pipelines waited %s with their workload running before they started, so that neither "
            "restored into memory the previous run had just freed (see REST_S in `benchmarks/run.py`)." % when)


def _keys(results_list):
    keys = []
    for res in results_list:
        for r in (res.get("downtime") or {}).get("summary", []):
            if (r["mib"], r["mode"]) not in keys:
                keys.append((r["mib"], r["mode"]))
    return sorted(keys)


def plots(results):
    # pylint: disable-next=import-outside-toplevel
    import matplotlib
    matplotlib.use("Agg")
    # pylint: disable-next=import-outside-toplevel
    import matplotlib.pyplot as plt
    label = results["label"]
    written = []
    dt = results.get("downtime")
    if dt and dt["summary"]:
        rows = dt["summary"]
        fig, ax = plt.subplots(figsize=(max(9.0, 1.2 * len(rows)), 4.5))
        xs = list(range(len(rows)))
        for off, kind, color in ((-0.2, "raw", "#4c72b0"), (0.2, "collection", "#dd8452")):
            meds = [r[kind]["median"] if r[kind] else 0 for r in rows]
            lo = [r[kind]["median"] - r[kind]["min"] if r[kind] else 0 for r in rows]
            hi = [r[kind]["max"] - r[kind]["median"] if r[kind] else 0 for r in rows]
            ax.bar([x + off for x in xs], meds, 0.4, yerr=[lo, hi], capsize=3, label=kind, color=color)
        for x, r in zip(xs, rows):
            if r["ratio"]:
                top = max(r["collection"]["max"], r["raw"]["max"])
                ax.text(x, top * 1.02, "%.2fx" % r["ratio"], ha="center", fontsize=8)
        ax.set_xticks(xs)
        ax.set_xticklabels(["%d MiB\n%s" % (r["mib"], r["mode"]) for r in rows], fontsize=8)
        ax.set_ylabel("downtime (s), median, min-max")
        ax.set_title("Migration downtime node1 -> node2: raw criu vs migrate playbook (%s)" % label)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(OUT_DIR, "downtime-%s.png" % label)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
        # Stacked breakdown of the collection's gap.
        names = []
        for r in rows:
            for n in (r.get("breakdown_collection") or {}):
                if n not in names:
                    names.append(n)
        if names:
            fig, ax = plt.subplots(figsize=(max(12.0, 3.0 + 1.2 * len(rows)), 5))
            bottoms = [0.0] * len(rows)
            cmap = plt.get_cmap("tab20")
            for i, n in enumerate(names):
                vals = [max(0.0, (r.get("breakdown_collection") or {}).get(n, 0.0)) for r in rows]
                ax.bar(xs, vals, 0.5, bottom=bottoms, label=n, color=cmap(i))
                bottoms = [b + v for b, v in zip(bottoms, vals)]
            ax.plot(xs, [r["raw"]["median"] if r["raw"] else 0 for r in rows], "k_", markersize=30, mew=2,
                    label="raw pipeline (median)")
            ax.set_xticks(xs)
            ax.set_xticklabels(["%d MiB\n%s" % (r["mib"], r["mode"]) for r in rows], fontsize=8)
            ax.set_ylabel("seconds inside the heartbeat gap (medians)")
            ax.set_title("Where the collection's downtime goes (%s)" % label)
            ax.set_ylim(0, max(bottoms + [0.1]) * 1.08)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            fig.tight_layout()
            path = os.path.join(OUT_DIR, "breakdown-%s.png" % label)
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    sc = results.get("scaling")
    if sc and sc["summary"]:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for npr in sorted({r["procs"] for r in sc["summary"]}):
            sel = [r for r in sc["summary"] if r["procs"] == npr]
            for kind, style in (("raw_wall", "--o"), ("collection_wall", "-s")):
                pts = [(r["hosts"], r[kind]["median"]) for r in sel if r[kind]]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style,
                            label="%s, %d proc/host" % (kind.replace("_wall", ""), npr))
        ax.set_xlabel("hosts")
        ax.set_ylabel("checkpoint wall time (s), median")
        ax.set_title("Checkpoint wall time vs fleet size (%s)" % label)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(OUT_DIR, "scaling-%s.png" % label)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def print_summary(results):
    print("")
    print("=" * 100)
    print("SUMMARY (label %s, %s profile)" % (results["label"], results["profile"]))
    dt = results.get("downtime")
    if dt:
        print("\nDowntime (s): median [min-max]")
        print("%8s %-16s %-24s %-24s %7s %7s" % ("MiB", "mode", "raw", "collection", "ratio", "extra"))
        for r in dt["summary"]:
            print("%8d %-16s %-24s %-24s %7s %7s" % (
                r["mib"], r["mode"], fmt(r["raw"]), fmt(r["collection"]), "%.2fx" % r["ratio"] if r["ratio"] else "-",
                "%+.2f" % r["extra_s"] if r["extra_s"] is not None else "-"))
    ms = results.get("mscale")
    if ms:
        print("\nMigration wall time (s): median [min-max]")
        for r in ms["summary"]["rows"]:
            print("  %d pair(s) x %d proc(s), serial %d: wall %-22s frozen %-22s raw limit %s" % (
                r["pairs"], r["procs"], r["serial"], fmt(r["wall"]), fmt(r["frozen"]), fmt(r["raw_limit"])))
        print("  derived: %s" % json.dumps(ms["summary"]["derived"]))
    ov = results.get("overhead")
    if ov:
        o = ov["summary"]
        print("\nAnsible per task (s): start+end %s, no module %s, raw %s, ping %s, async start %s, builds %s"
              % (fmt(o["start_end"]), fmt(o["no_module"], 3), fmt(o["raw"], 3), fmt(o["ping"], 3),
                 fmt(o["async_launch"], 3), fmt(o["builds_total"])))
    sc = results.get("scaling")
    if sc:
        print("\nScaling: checkpoint wall time (s)")
        print("%6s %6s %-22s %-22s %10s %10s" % ("hosts", "procs", "raw", "collection", "ovh/proc", "vs criu"))
        for r in sc["summary"]:
            print("%6d %6d %-22s %-22s %10s %10s" % (r["hosts"], r["procs"], fmt(r["raw_wall"]), fmt(r["collection_wall"]),
                                                     r.get("overhead_per_process_s", "-"),
                                                     r.get("overhead_vs_criu_dump", "-")))
    ck = results.get("checksum")
    if ck:
        print("\nChecksum: MiB/s (sha256sum vs module record), ratio of times")
        for r in ck["rows"]:
            print("  %-42s %8.0f %8.0f %6.2fx" % (r["set"], r["sha256sum_mib_s"], r["module_record_mib_s"],
                                                  r["ratio_module_vs_sha256sum"]))
        print("  cache across %d processes: x%.1f" % (ck["cache"]["processes"], ck["cache"]["speedup"]))
    print("=" * 100)


def load_all_results():
    out = []
    for path in sorted(glob.glob(os.path.join(OUT_DIR, "results-*.json"))):
        try:
            with open(path, encoding="utf-8") as fh:
                out.append(json.load(fh))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda r: r.get("finished", ""))


# --------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="ckpt.criu benchmarks (see benchmarks/README.md)")
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats: a smoke run")
    ap.add_argument("--label", default=None, help="name of this run: docs/benchmarks/results-LABEL.json")
    ap.add_argument("--only", choices=["downtime", "mscale", "scaling", "checksum", "overhead"], action="append",
                    help="run only this part (repeatable)")
    ap.add_argument("--rev", default="HEAD",
                    help="git revision of the collection to benchmark (exported snapshot; default HEAD); "
                         "'worktree' uses the working tree with its uncommitted changes")
    ap.add_argument("--sizes", default=None,
                    help="downtime: comma-separated sizes in MiB instead of the profile's (e.g. 1024)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="downtime: repeats per size instead of the profile's (at least 1)")
    ap.add_argument("--modes", default=None, metavar="LIST",
                    help="downtime: comma-separated modes to run (default all: %s); e.g. "
                         "page_server,page_server_tls" % ",".join(MODES))
    ap.add_argument("--extra-vars", default=None, metavar="JSON",
                    help="downtime: extra variables for the migrate playbook, e.g. "
                         "'{\"ckpt_migrate_prefault\": \"false\"}' (recorded in the results' settings)")
    ap.add_argument("--raw-keep-source", action="store_true",
                    help="downtime: the raw pipelines keep the source stopped until their restore is done "
                         "(criu dump --leave-stopped, then SIGKILL), as the migrate role does, instead of letting "
                         "criu kill it as the dump ends")
    ap.add_argument("--rest", type=float, default=None, metavar="SECONDS",
                    help="downtime: seconds both pipelines wait with their workload running before they start, so "
                         "that neither restores into memory the previous run just freed (default %.0f from %d MiB, "
                         "0 below)" % (REST_S, REST_MIN_MIB))
    ap.add_argument("--keep-fleet", action="store_true", help="do not tear the benchmark fleet down (debugging)")
    ap.add_argument("--report-only", action="store_true",
                    help="regenerate docs/benchmarks/README.md and plots from the saved results, run nothing")
    args = ap.parse_args(argv)
    if args.label is None:
        args.label = "quick" if args.quick else time.strftime("%Y%m%d-%H%M%S")
    if not LABEL_RE.match(args.label):
        ap.error("--label must be 1-40 characters of letters, digits, '.', '_' or '-'")
    if args.modes is not None:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            ap.error("--modes: a comma-separated list of %s, not %r" % (", ".join(MODES), args.modes))
        args.modes = [m for m in MODES if m in modes]       # run in the usual interleaving order
    return args


def recompute(results):
    """Breakdowns and summaries again from the stored per-run data (after a
    change of the attribution code: --report-only)."""
    dt = results.get("downtime") or {"runs": []}
    for r in dt["runs"]:
        if r.get("kind") == "collection" and r.get("ok") and r.get("tasks") and r.get("freeze_tick"):
            r["breakdown"] = coll_breakdown(r["tasks"], r["freeze_tick"], r["resume_tick"])
    if results.get("downtime"):
        dt["summary"] = summarize_downtime(dt["runs"])
    if results.get("scaling"):
        results["scaling"]["summary"] = summarize_scaling(results["scaling"]["runs"])
    if results.get("mscale"):
        results["mscale"]["summary"] = summarize_mscale(results["mscale"]["runs"])
    if results.get("overhead"):
        results["overhead"]["summary"] = summarize_overhead(results["overhead"]["runs"])


def write_outputs(results, have_plots):
    recompute(results)
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, "results-%s.json" % results["label"])
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(path + ".tmp", path)
    written = [path]
    if have_plots:
        written += plots(results)
    readme = os.path.join(OUT_DIR, "README.md")
    with open(readme, "w", encoding="utf-8") as fh:
        fh.write(markdown(results, load_all_results()))
    written.append(readme)
    return written


def main(argv=None):
    ensure_venv()
    args = parse_args(argv)
    if args.report_only:
        results = [r for r in load_all_results() if r["label"] == args.label]
        if not results:
            sys.exit("no docs/benchmarks/results-%s.json" % args.label)
        for p in write_outputs(results[0], ensure_matplotlib()):
            log("wrote %s" % p)
        print_summary(results[0])
        return 0
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmarks start a test fleet (namespaces) and run criu")
    parts = args.only or ["downtime", "mscale", "overhead", "scaling", "checksum"]
    prof = dict(PROFILES["quick" if args.quick else "full"])
    if args.sizes:
        prof["sizes"] = [int(x) for x in args.sizes.split(",") if x.strip()]
    if args.sizes or args.repeats:
        prof["repeats"] = {size: max(1, args.repeats or prof["repeats"].get(size, 3)) for size in prof["sizes"]}
    prof["modes"] = list(args.modes or MODES)
    prof["rest_default"] = args.rest is None
    if args.extra_vars:
        prof["extra_vars"] = json.loads(args.extra_vars)
    if args.rest is not None:
        prof["rest_s"] = max(0.0, args.rest)
    if args.raw_keep_source:
        prof["raw_keep_source"] = True
        os.environ["CKB_RAW_KEEP_SOURCE"] = "1"     # read by benchmarks/raw_common.sh
    have_plots = ensure_matplotlib()
    collection = use_revision(args.rev)
    results = {"schema": 1, "label": args.label, "profile": "quick" if args.quick else "full",
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "parts": parts, "settings": prof,
               "git": git_info(), "collection": collection, "machine": machine_info(), "tick_s": TICK}
    os.makedirs(WORK_ROOT, mode=0o755, exist_ok=True)
    work = tempfile.mkdtemp(prefix="run-", dir=WORK_ROOT)
    os.chmod(work, 0o755)
    fleet = None
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if "downtime" in parts or "scaling" in parts or "mscale" in parts or "overhead" in parts:
            fleetmod = load_fleet_module()
            nhosts = max(prof["scale_hosts"]) if "scaling" in parts else 4 if "mscale" in parts else 2
            fleet = fleetmod.Fleet(state_dir=FLEET_STATE, name=FLEET_NAME, subnet=FLEET_SUBNET)
            log("starting the benchmark fleet: %d hosts in %s" % (nhosts, FLEET_STATE))
            fleet.up(hosts=max(2, nhosts), timeout=60)
        if "downtime" in parts:
            results["downtime"] = bench_downtime(fleet, prof, work)
        if "mscale" in parts:
            results["mscale"] = bench_migrate_scaling(fleet, prof, work)
        if "overhead" in parts:
            results["overhead"] = bench_overhead(fleet, prof, work)
        if "scaling" in parts:
            results["scaling"] = bench_scaling(fleet, prof, work)
        if "checksum" in parts:
            results["checksum"] = bench_checksum(prof, work)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if fleet is not None and not args.keep_fleet:
            log("tearing the benchmark fleet down")
            try:
                fleet.down()
            except Exception as exc:  # pylint: disable=broad-except
                log("fleet down failed: %s" % exc)
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for p in write_outputs(results, have_plots):
        log("wrote %s" % p)
    print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
