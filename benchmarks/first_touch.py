#!/usr/bin/env python
# Copyright (c) ckpt.criu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Why criu restore is slower under the migrate playbook: a raw criu experiment.

    sudo .venv/bin/python benchmarks/first_touch.py [--mib 1024] [--repeats 3]

The same page-server migration between two test-fleet hosts, by raw criu, with
the source treated three ways before `criu restore -d` on the destination:

* ``kill``: `criu dump` kills the source (the raw baseline of benchmarks/run.py);
* ``stopped``: `criu dump --leave-stopped`, the source is killed only after the
  restore (what the migrate role does, so that it can roll back);
* ``stopped_warm``: as ``stopped``, but 2 x MIB of memory is touched and freed
  just before the restore.

It prints criu restore's wall time per variant and writes
docs/benchmarks/first-touch.json, with whether the machine's virtio balloon
reports free pages to the hypervisor (then memory freed for about 2 s must be
faulted in again by the hypervisor on its next use). Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "fleet"))
sys.path.insert(0, HERE)

import fleet as fleetmod  # noqa: E402  pylint: disable=wrong-import-position
import run as bench  # noqa: E402  pylint: disable=wrong-import-position

VARIANTS = ("kill", "stopped", "stopped_warm")
IMAGES = "/var/lib/ckpt/first-touch"
PORT = 27199
WORK = "/tmp/ckt-first-touch"
OUT = os.path.join(REPO, "docs", "benchmarks", "first-touch.json")


def balloon_reporting():
    """True when a virtio balloon with free page reporting (feature bit 5) is bound, else False."""
    base = "/sys/bus/virtio/devices"
    for dev in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        try:
            with open(os.path.join(base, dev, "device"), encoding="ascii") as fh:
                if fh.read().strip() != "0x0005":
                    continue
            with open(os.path.join(base, dev, "features"), encoding="ascii") as fh:
                bits = fh.read().strip()
        except OSError:
            continue
        return len(bits) > 5 and bits[5] == "1"
    return False


def touch(mib):
    code = "import sys\nn = int(sys.argv[1]) << 20\nb = bytearray(n)\nb[::4096] = b'\\1' * len(range(0, n, 4096))\n"
    subprocess.run([sys.executable, "-c", code, str(mib)], check=True)


def one(fleet, variant, mib, rep):
    out = os.path.join(WORK, "hb-%s-%d" % (variant, rep))
    w = bench.Workload(fleet, "node1", out, mib)
    try:
        if not w.wait_ticks(5, timeout=120):
            raise RuntimeError("the workload did not start")
        for h in ("node1", "node2"):
            fleet.exec(h, ["rm", "-rf", IMAGES], check=True)
            fleet.exec(h, ["mkdir", "-p", "-m", "0700", IMAGES], check=True)
        addr = fleet.address("node2")
        quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        fleet.exec("node2", [bench.CRIU, "page-server", "-D", IMAGES, "--address", addr, "--port", str(PORT),
                             "-d", "-o", "page-server.log", "-v4"], check=True, **quiet)
        argv = [bench.CRIU, "dump", "-t", str(w.pid), "-D", IMAGES, "-o", "dump.log", "-v4",
                "--page-server", "--address", addr, "--port", str(PORT)]
        if variant != "kill":
            argv.append("--leave-stopped")
        fleet.exec("node1", argv, check=True, **quiet)
        src, dst = fleet.host_path("node1", IMAGES), fleet.host_path("node2", IMAGES)
        for name in os.listdir(src):
            if not os.path.exists(os.path.join(dst, name)):
                shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
        if variant == "stopped_warm":
            touch(2 * mib)
        t0 = time.monotonic()
        fleet.exec("node2", [bench.CRIU, "restore", "-d", "-D", IMAGES, "-o", "restore.log", "-v4"],
                   check=True, **quiet)
        return round(time.monotonic() - t0, 3)
    finally:
        w.kill(["node1", "node2"])
        time.sleep(1.5)   # the machine's init reaps slowly


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it starts a test fleet and runs criu")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK, mode=0o755)
    fleet = fleetmod.Fleet(state_dir="/run/ckpt-first-touch-fleet", name="ckt", subnet="10.222.0.0/24")
    fleet.up(hosts=2, timeout=60)
    results = {v: [] for v in VARIANTS}
    try:
        for rep in range(1, args.repeats + 1):
            order = VARIANTS if rep % 2 else tuple(reversed(VARIANTS))
            for variant in order:
                sec = one(fleet, variant, args.mib, rep)
                results[variant].append(sec)
                print("%-13s rep %d: criu restore %.3f s" % (variant, rep, sec), flush=True)
    finally:
        fleet.down()
        shutil.rmtree(WORK, ignore_errors=True)
    summary = {v: {"median": statistics.median(s), "min": min(s), "max": max(s)} for v, s in results.items()}
    doc = {"mib": args.mib, "repeats": args.repeats, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "machine": bench.machine_info(), "balloon_free_page_reporting": balloon_reporting(),
           "restore_s": results, "summary": summary}
    with open(OUT, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.write("\n")
    for v in VARIANTS:
        print("%-13s median %.3f s [%.3f-%.3f]" % (v, summary[v]["median"], summary[v]["min"], summary[v]["max"]))
    print("free page reporting: %s; wrote %s" % (doc["balloon_free_page_reporting"], OUT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
