"""`kmemfs ctl`: one command through the mount's control file."""
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


def run_ctl(mountpoint: str, command: str) -> int:
    path = os.path.join(mountpoint, ".kmemfs", "ctl")
    if not command.strip():
        print("kmemfs: ctl needs a command", file=sys.stderr)
        return 2
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        print(f"kmemfs: {path}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        out, failed = exchange_fd(fd, (command.strip() + "\n").encode())
    finally:
        os.close(fd)
    text = out.decode(errors="replace").rstrip("\n")
    if failed is not None:
        print(text or f"error: {errno.errorcode.get(failed.errno, failed.errno)}", file=sys.stderr)
        print(f"kmemfs: {failed.strerror}", file=sys.stderr)
        return 1
    print(text)
    return 0
