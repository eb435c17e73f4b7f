"""Shared by scripts/fuzz.py, stress.py, bench_idle.py, faults.py and their tests: mount a
kmemfs of our own (or use a given mount point), find its daemon, watch it, talk to `ctl`,
and print progress."""
import contextlib
import errno
import os
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

from mounting import Mount  # noqa: E402  (tests/mounting.py: start()/stop(), always unmounts)
from kmemfs.tools.ctlclient import exchange_fd  # noqa: E402


def daemon_pid(mountpoint: str):
    """The pid of the daemon serving `mountpoint`, or None."""
    from kmemfs.fuse.daemon import daemon_pids
    pids = daemon_pids(os.path.abspath(mountpoint))
    return pids[0] if pids else None


def proc_state(pid: int) -> str:
    """One-letter state from /proc/PID/stat ('' when the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2:].split()[0].decode()
    except (OSError, ValueError, IndexError):
        return ""


def alive(pid: int) -> bool:
    return proc_state(pid) not in ("", "Z", "X")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_mounted(path: str) -> bool:
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path for line in f)


@contextlib.contextmanager
def kmemfs_mount(mountpoint=None, options=(), env=None):
    """Yield (mountpoint, daemon pid). With no mountpoint, mount our own kmemfs in a temp
    dir and always unmount it; with one, use the mount that is already there."""
    if mountpoint:
        pid = daemon_pid(mountpoint)
        if not os.path.isdir(os.path.join(mountpoint, ".kmemfs")):
            raise SystemExit(f"{mountpoint}: not a kmemfs mount")
        yield os.path.abspath(mountpoint), pid
        return
    tmp = tempfile.mkdtemp(prefix="kmemfs-")
    m = Mount(os.path.join(tmp, "mnt"), options, env=env)
    old = signal.signal(signal.SIGTERM, _exit_on_sigterm)     # so `finally` unmounts
    try:
        m.start()
        yield m.path, m.proc.pid
    finally:
        m.stop()
        _rmtree(tmp)
        signal.signal(signal.SIGTERM, old)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _rmtree(tmp):
    for name in ("kmemfs.log",):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(tmp, name))
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(tmp, "mnt"))
    with contextlib.suppress(OSError):
        os.rmdir(tmp)


def ctl(mountpoint: str, text: str) -> str:
    """Write commands to .kmemfs/ctl, return the result lines; OSError on failure (the
    result lines are attached as `.results`)."""
    fd = os.open(os.path.join(mountpoint, ".kmemfs", "ctl"), os.O_RDWR)
    try:
        out, err = exchange_fd(fd, text.encode() if isinstance(text, str) else text)
    finally:
        os.close(fd)
    if err is not None:
        err.results = out.decode(errors="replace")
        raise err
    return out.decode(errors="replace")


def errname(err) -> str:
    return errno.errorcode.get(err, str(err)) if err else "ok"


class Progress:
    """kmemfs.tools.progress (a rich bar on a terminal, plain lines otherwise) when it exists, else
    plain lines. Counts operations when `total` is known, else seconds of `seconds`."""

    def __init__(self, label: str, total=None, seconds=None, quiet: bool = False):
        self.label, self.quiet = label, quiet
        self.by_time = total is None
        self.total = int(total if total is not None else max(1, round(seconds or 1)))
        self.start = time.monotonic()
        self.cm = self.bar = None
        self.last = -1

    def __enter__(self):
        if self.quiet:
            return self
        try:
            from kmemfs.tools.progress import progress
            self.cm = progress(self.total, self.label)
            self.bar = self.cm.__enter__()
        except ImportError:
            self.cm = None
        return self

    def __exit__(self, *exc):
        if self.cm is not None:
            self.cm.__exit__(*exc)
        return False

    def update(self, done: int) -> None:
        if self.quiet:
            return
        n = min(self.total, int(time.monotonic() - self.start)) if self.by_time else done
        if n == self.last:
            return
        self.last = n
        if self.bar is not None:
            self.bar.update(n)
        elif n % max(1, self.total // 10) == 0:
            print(f"{self.label}... {n}/{self.total}", file=sys.stderr, flush=True)
