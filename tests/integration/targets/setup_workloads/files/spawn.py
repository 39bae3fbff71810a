"""Start a detached workload with a chosen stdio situation.

    spawn.py --stdio MODE --pidfile FILE [--stdio-file PATH] -- CMD [ARGS...]

The workload is double-forked into its own session (reparented to init), so it
is not a child of the caller. Helper processes that must live outside the
workload's tree (a pipe reader, a unix socket listener, a pty master holder)
are started first; their PIDs go to FILE.aux, one per line, for cleanup.

Modes (fds 0, 1 and 2 unless said otherwise):
  devnull   /dev/null
  closed    all three closed (the incident's launcher)
  append    stdin /dev/null; stdout/stderr a regular file opened O_APPEND
  file      stdin /dev/null; stdout/stderr a regular file without O_APPEND
  pipe      stdin /dev/null; stdout/stderr a pipe to a reader outside the tree
  unix      stdin /dev/null; stdout/stderr a unix stream socket to an external
            listener (journald style)
  pty       all three on a pty slave whose master is held outside the tree
  deleted   /dev/null, plus fd 3 on a file that is then unlinked
            (--deleted-size bytes)
Prints the workload PID on stdout once it is running.
"""
import argparse
import os
import pty
import socket
import time


def _in_grandchild(body):
    """Run body(w) in a grandchild reparented to init (its parent starts a session of
    its own and exits at once). body writes the grandchild's PID to the pipe end w and
    closes it; the grandchild ends when body returns. Returns that PID."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        try:
            body(w)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return int(data)


def _detach_helper(target):
    """Fork a helper in its own session running target(); return its PID."""
    def body(w):
        os.write(w, str(os.getpid()).encode())
        os.close(w)
        target()
    return _in_grandchild(body)


def _quiet_stdio():
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _close_others(keep):
    for fd in range(3, 256):
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stdio", required=True,
                    choices=["devnull", "closed", "append", "file", "pipe", "unix", "pty", "deleted"])
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--stdio-file")
    ap.add_argument("--deleted-size", type=int, default=4096)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("no command")
    aux = []
    fds = {}  # target fd -> fd in this process
    null = os.open(os.devnull, os.O_RDWR)
    stdio_file = a.stdio_file or a.pidfile + ".stdio"

    if a.stdio == "devnull" or a.stdio == "deleted":
        fds = {0: null, 1: null, 2: null}
    elif a.stdio == "closed":
        fds = {}
    elif a.stdio in ("append", "file"):
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if a.stdio == "append" else os.O_TRUNC)
        f = os.open(stdio_file, flags, 0o600)
        fds = {0: null, 1: f, 2: f}
    elif a.stdio == "pipe":
        r, w = os.pipe()

        def reader():
            os.close(w)
            _quiet_stdio()
            while os.read(r, 65536):
                pass
        aux.append(_detach_helper(reader))
        os.close(r)
        fds = {0: null, 1: w, 2: w}
    elif a.stdio == "unix":
        path = a.pidfile + ".sock"
        if os.path.exists(path):
            os.unlink(path)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(4)

        def listener():
            _quiet_stdio()
            conns = []
            while True:
                conn, dummy = srv.accept()
                conns.append(conn)
        aux.append(_detach_helper(listener))
        cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cli.connect(path)
        srv.close()
        fds = {0: null, 1: cli.fileno(), 2: cli.fileno()}
        a._keep_sock = cli
    elif a.stdio == "pty":
        master, slave = pty.openpty()

        def holder():
            os.close(slave)
            _quiet_stdio()
            while True:
                try:
                    if not os.read(master, 65536):
                        time.sleep(0.2)
                except OSError:
                    time.sleep(0.2)
        aux.append(_detach_helper(holder))
        os.close(master)
        fds = {0: slave, 1: slave, 2: slave}

    deleted_fd = None
    if a.stdio == "deleted":
        dpath = a.pidfile + ".deleted"
        deleted_fd = os.open(dpath, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(deleted_fd, b"x" * a.deleted_size)
        os.unlink(dpath)

    with open(a.pidfile + ".aux", "w") as fh:
        fh.write("".join("%d\n" % p for p in aux))

    def workload(w):
        # The grandchild: the workload.
        is_pty = a.stdio == "pty"
        src = dict(fds)
        if deleted_fd is not None:
            src[3] = deleted_fd
        # Move sources out of the way, then place them.
        moved = {t: os.dup(s) for t, s in src.items()}
        keep = set(moved.values()) | {w}
        _close_others(keep)
        for fd in (0, 1, 2, 3):
            if fd not in moved:
                try:
                    os.close(fd)
                except OSError:
                    pass
        for t, s in moved.items():
            os.dup2(s, t)
        for s in set(moved.values()):
            if s not in moved:
                os.close(s)
        # Be a session leader, as a real daemon is (CRIU refuses a root task
        # that is not one unless --shell-job), and so a pty can be our
        # controlling tty.
        os.setsid()
        if is_pty:
            import fcntl
            import termios
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        with open(a.pidfile, "w") as fh:
            fh.write("%d\n" % os.getpid())
        os.write(w, b"%d" % os.getpid())
        os.close(w)
        os.execvp(cmd[0], cmd)

    print(_in_grandchild(workload))


if __name__ == "__main__":
    main()
