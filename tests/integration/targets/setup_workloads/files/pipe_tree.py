"""Test workload: a process tree with a pipe between its two members.

    pipe_tree.py OUT

The root writes "SEQ" lines into a pipe every 20 ms; its child reads them and
appends "SEQ TIME_NS" to OUT. Across a checkpoint/restore of the tree no line
may be lost or repeated (both ends of the pipe are inside the dump). When the
writer is gone the child keeps its PID and stops ticking.
"""
import os
import sys
import time


def reader(r, out):
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    buf = b""
    while True:
        data = os.read(r, 4096)
        if not data:
            break  # the writer is gone: keep the PID, stop ticking
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            os.write(fd, line + b" %d\n" % time.time_ns())
    while True:
        time.sleep(1)


def main():
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(w)
        reader(r, sys.argv[1])
    os.close(r)
    seq = 0
    while True:
        seq += 1
        os.write(w, b"%d\n" % seq)
        time.sleep(0.02)


if __name__ == "__main__":
    main()
