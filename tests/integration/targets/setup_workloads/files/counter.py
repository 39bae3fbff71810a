"""Test workload: a counter that appends timestamped ticks.

Each tick is one line "SEQ TIME_NS" appended to --out (opened once, O_APPEND).
Continuity across a checkpoint/restore is checked from this file: the sequence
must never repeat or skip, and the largest gap between two ticks bounds the
time the process was frozen. Optionally holds --mem MiB of touched memory,
prints ticks to stdout (--stdout), and listens on a TCP port (--listen).
"""
import argparse
import os
import signal
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--mem", type=int, default=0, help="MiB of touched memory")
    ap.add_argument("--stdout", action="store_true", help="also print each tick on stdout")
    ap.add_argument("--listen", type=int, default=0, help="TCP port on 127.0.0.1 to listen on")
    ap.add_argument("--label", default="", help="ignored; puts an argument of the test's own (a fake "
                    "secret, say) on the command line")
    args = ap.parse_args()

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ballast = bytearray(args.mem * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    listener = None
    if args.listen:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", args.listen))
        listener.listen(8)
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    seq = 0
    while True:
        seq += 1
        line = "%d %d\n" % (seq, time.time_ns())
        os.write(fd, line.encode())
        if args.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
