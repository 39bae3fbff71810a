"""Test workload: several threads, each ticking its own counter.

    threads.py --dir DIR [--threads N] [--interval S]

Thread i appends "SEQ TIME_NS TID" lines to DIR/thread-i.ticks (opened once,
O_APPEND). Across a checkpoint/restore every thread must continue its own
sequence with no gap or repeat. DIR/ready appears once every thread ticked.
"""
import argparse
import os
import threading
import time


def tick(path, interval, started):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    tid = threading.get_native_id()
    seq = 0
    while True:
        seq += 1
        os.write(fd, ("%d %d %d\n" % (seq, time.time_ns(), tid)).encode())
        if seq == 1:
            started.release()
        time.sleep(interval)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--interval", type=float, default=0.02)
    a = ap.parse_args()
    started = threading.Semaphore(0)
    for i in range(a.threads):
        t = threading.Thread(target=tick, args=(os.path.join(a.dir, "thread-%d.ticks" % i), a.interval, started),
                             name="ticker-%d" % i, daemon=True)
        t.start()
    for dummy in range(a.threads):
        started.acquire()
    with open(os.path.join(a.dir, "ready"), "w") as fh:
        fh.write("%d\n" % os.getpid())
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
