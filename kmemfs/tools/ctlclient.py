"""`kmemfs ctl`: commands through the mount's control file, one from the arguments or many
from stdin (one open file, one write per line, so each line gets its own result)."""
import errno
import os
import sys


def exchange_fd(fd: int, data: bytes):
    """One write of commands to an open ctl file, then its result lines (read to the end).
    Returns (results, OSError or None): the results also tell what a failed write did."""
    failed = None
    try:
        os.write(fd, data)
    except OSError as e:
        failed = e
    out = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out, failed


def _one(fd: int, command: str) -> int:
    out, failed = exchange_fd(fd, (command.strip() + "\n").encode())
    text = out.decode(errors="replace").rstrip("\n")
    if failed is not None:
        print(text or f"error: {errno.errorcode.get(failed.errno, failed.errno)}", file=sys.stderr)
        print(f"kmemfs: {failed.strerror}", file=sys.stderr)
        return 1
    print(text, flush=True)
    return 0


def _lines(stream):
    """Commands from stdin; a prompt when it is a terminal. Blank and # lines are skipped."""
    tty = stream.isatty()
    while True:
        if tty:
            print("kmemfs> ", end="", file=sys.stderr, flush=True)
        line = stream.readline()
        if not line:
            return
        if line.strip() and not line.lstrip().startswith("#"):
            yield line


def run_ctl(mountpoint: str, command: str) -> int:
    """command '' or '-': read commands from stdin; the exit status is 1 if any failed."""
    path = os.path.join(mountpoint, ".kmemfs", "ctl")
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        print(f"kmemfs: {path}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        if command.strip() not in ("", "-"):
            return _one(fd, command)
        rc = 0
        for line in _lines(sys.stdin):
            rc |= _one(fd, line)
        return rc
    finally:
        os.close(fd)
