"""Mounting: options, the stale-mount check, the trio main loop and clean shutdown."""
import errno
import logging
import os
import signal
import stat
import subprocess
from dataclasses import replace
from typing import NamedTuple

import pyfuse3
import trio

from ..cgroupfs.tree import CgroupFS
from ..engine import Config, Engine, EngineError, load_catalogue
from .safepath import UnsafePath, resolve
from ..engine.policy import DESIGNS

log = logging.getLogger("kmemfs")


class MountError(Exception):
    """A one-line reason the mount cannot go ahead."""


BOOL_OPTIONS = {"acct_root": "acct_root", "boot_slabs": "boot_slabs",
                "array_caches": "array_caches", "numa": "numa"}
INT_OPTIONS = {"charge_batch", "nr_cpus", "page_size", "max_memcgs", "vm_swappiness",
               "event_log_size", "max_tasks", "max_objects"}
FUSE_OPTIONS = {"allow_other", "nonempty"}   # nonempty is kmemfs's own: see check_mountpoint
# for the adapter (ops.py, follow.py), never passed to libfuse
ADAPTER_OPTIONS = {"page_cache", "follow", "follow_buffer_kb"}


def parse_options(text: str):
    """`-o acct_root,noswapaccount,allow_other,charge_batch=32` -> (Config, fuse options)."""
    cfg, fuse = Config(), set()
    for opt in filter(None, (text or "").split(",")):
        key, _, val = opt.partition("=")
        try:
            if key == "follow_buffer_kb":       # tracefs buffer per CPU and instance
                if int(val) < 1:
                    raise ValueError
                fuse.add(f"{key}={int(val)}")
            elif key in (FUSE_OPTIONS | ADAPTER_OPTIONS) and not val:
                fuse.add(key)
            elif key == "noswapaccount" and not val:
                cfg = replace(cfg, swap_account=False)
            elif key == "swapaccount":
                cfg = replace(cfg, swap_account=_bool(val))
            elif key in BOOL_OPTIONS:
                cfg = replace(cfg, **{BOOL_OPTIONS[key]: _bool(val) if val else True})
            elif key.startswith("no") and key[2:] in BOOL_OPTIONS and not val:
                cfg = replace(cfg, **{BOOL_OPTIONS[key[2:]]: False})
            elif key == "design":             # engine/policy.py: series | optin
                if val not in DESIGNS:
                    raise ValueError
                cfg = replace(cfg, design=val)
            elif key in INT_OPTIONS:
                n = int(val)
                if n < 0 or (key in ("nr_cpus", "page_size", "max_memcgs") and n < 1):
                    raise ValueError
                cfg = replace(cfg, **{key: n})
            else:
                raise MountError(f"unknown mount option {opt!r}")
        except ValueError:
            raise MountError(f"bad value in mount option {opt!r}") from None
    if cfg.page_size & (cfg.page_size - 1):
        raise MountError("page_size must be a power of two")
    return cfg, fuse


def _bool(val: str) -> bool:
    if val not in ("0", "1"):
        raise ValueError
    return val == "1"


KMEMFS_FSTYPE = "fuse.kmemfs"       # fuse + subtype=kmemfs, as serve() mounts it


class MountEntry(NamedTuple):
    fstype: str
    source: str


def mount_at(path: str):
    """The topmost mount whose mount point is `path` (a resolved path), from
    /proc/self/mountinfo, or None. The file system type and source follow the " - "."""
    found = None
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            left, sep, right = line.rstrip(b"\n").partition(b" - ")
            fields, tail = left.split(b" "), right.split(b" ")
            if sep and len(fields) >= 5 and len(tail) >= 2 and _unescape(fields[4]) == path:
                found = MountEntry(_unescape(tail[0]), _unescape(tail[1]))
    return found


def _unescape(field: bytes) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo (fs/proc_namespace.c)."""
    out, i = bytearray(), 0
    while i < len(field):
        if field[i:i + 1] == b"\\" and field[i + 1:i + 4].isdigit():
            out.append(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return os.fsdecode(bytes(out))


def require_kmemfs(mountpoint: str) -> None:
    """Refuse to touch a mount point unless a kmemfs is mounted there (issue 9 item 3)."""
    m = mount_at(mountpoint)
    if m is None:
        raise MountError(f"{mountpoint} is not a mount point")
    if m.fstype != KMEMFS_FSTYPE:
        raise MountError(f"{mountpoint} is a {m.fstype} mount (source {m.source}), not "
                         "kmemfs: left alone")


def check_mountpoint(mountpoint: str, nonempty: bool = False) -> str:
    """The resolved mount point, checked once; clear one-line errors. A symlink on the way
    is followed only if root owns it (then the mount goes on the resolved path); a stale
    kmemfs mount left by a killed daemon is cleaned first; a non-empty directory needs
    `-o nonempty`."""
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse is missing: load the fuse module or run on a host with FUSE")
    try:
        mountpoint = resolve(mountpoint, last_may_fail=True)
    except UnsafePath as e:
        raise MountError(str(e)) from None
    if is_stale(mountpoint):
        require_kmemfs(mountpoint)
        log.warning("%s: stale kmemfs mount (Transport endpoint is not connected): "
                    "detaching it (lazily)", mountpoint)
        unmount(mountpoint, lazy=True)
    try:
        st = os.lstat(mountpoint)
    except OSError as e:
        raise MountError(f"{mountpoint}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"{mountpoint}: not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint}: already a mount point (busy)")
    if not nonempty and os.listdir(mountpoint):
        raise MountError(f"{mountpoint}: directory not empty (-o nonempty mounts over it)")
    return mountpoint


def is_stale(mountpoint: str) -> bool:
    """A dead FUSE daemon's mount answers ENOTCONN. stat may still be served from the
    attribute cache for a moment, so also ask for something only the daemon can answer."""
    for probe in (os.stat, os.statvfs):
        try:
            probe(mountpoint)
        except OSError as e:
            if e.errno == errno.ENOTCONN:
                return True
            if probe is os.stat:
                return False
    return False


def unmount(mountpoint: str, lazy: bool = False) -> None:
    """fusermount3 -u (or -uz) on a kmemfs mount, after checking it is one."""
    require_kmemfs(mountpoint)
    r = subprocess.run(["fusermount3", "-uz" if lazy else "-u", mountpoint],
                       capture_output=True, text=True)
    if r.returncode:
        raise MountError(r.stderr.strip() or f"fusermount3 failed on {mountpoint}")


def daemon_pids(mountpoint: str) -> list:
    """Pids of kmemfs daemons serving `mountpoint` (from their command lines)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"kmemfs" in argv and b"mount" in argv and b"--foreground" in argv \
                and os.fsencode(mountpoint) in argv:
            out.append(int(p))
    return out


def state_path_of(pid: int):
    """The --state FILE a kmemfs daemon was started with (from its command line), or None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    for flag, value in zip(argv, argv[1:]):
        if flag == b"--state":
            try:    # a relative path is the daemon's: resolve it against its cwd
                return os.path.join(os.readlink(f"/proc/{pid}/cwd"), os.fsdecode(value))
            except OSError:
                return None
    return None


def wait_gone(pids, timeout: float) -> bool:
    import time
    deadline = time.monotonic() + timeout
    while any(_running(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _running(pid: int) -> bool:
    """Alive and not a zombie (a daemon whose parent has not reaped it yet has exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def build(config: Config, slabinfo=None):
    from ..cgroupfs.control import control_files
    engine = Engine(config, load_catalogue(slabinfo),
                    source=os.path.abspath(slabinfo) if slabinfo else "built-in 3.4.0-rc6")
    return CgroupFS(engine, special_files=control_files())


def open_state(path):
    """The --state file, resolved and checked once (kmemfs/fuse/safepath.py), or None."""
    from . import state
    if not path:
        return None
    try:
        return state.StateFile(path)
    except state.StateError as e:
        raise MountError(f"refusing the state file: {e}") from None


def build_or_restore(config, explicit_options: bool, slabinfo, state_file):
    """A fresh model, or the one saved in `state_file` (which then decides the config)."""
    from . import state
    from ..cgroupfs.control import control_files
    if state_file is None or not state_file.exists():
        try:
            return build(config, slabinfo)
        except EngineError as e:
            raise MountError(f"catalogue: {e.message}") from None
    try:
        saved = state_file.load()
    except state.StateError as e:
        raise MountError(f"refusing the state file: {e}") from None
    if slabinfo:
        raise MountError("--slabinfo conflicts with --state: the catalogue is in the state file")
    old = saved["engine"].config
    if explicit_options and config != old:
        diff = [f"{k}={v} (saved {getattr(old, k)})" for k, v in config.items()
                if getattr(old, k) != v]
        raise MountError(f"{state_file.path} was saved with other options: {', '.join(diff)}")
    log.info("restored the model from %s", state_file.path)
    return state.restore(saved, control_files())


def serve(mountpoint: str, fs: CgroupFS, fuse_opts=(), ready=None, state_file=None,
          save_interval: float = 0) -> bool:
    """Mount and serve until unmounted or SIGTERM/SIGINT; always unmounts (and saves).
    Returns False when the model could not be saved at the end (the daemon then exits 1)."""
    from .ops import Operations
    from . import follow
    tracer = None
    if "follow" in fuse_opts:            # before mounting: a refusal leaves nothing behind
        try:
            tracer = follow.start(fs, follow.buffer_kb(fuse_opts))
        except follow.FollowError as e:
            raise MountError(str(e)) from None
    saved = True
    try:
        ops = Operations(fs, mountpoint, page_cache="page_cache" in fuse_opts)
        opts = set(pyfuse3.default_options) | {"fsname=kmemfs", "subtype=kmemfs"}
        opts |= {o for o in fuse_opts
                 if o.partition("=")[0] not in ADAPTER_OPTIONS | {"nonempty"}}
        pyfuse3.init(ops, mountpoint, opts)
        log.info("mounted kmemfs at %s", mountpoint)
        if ready:
            ready()
        try:
            trio.run(_main, fs, state_file, save_interval, ops, tracer)
        finally:
            if tracer is not None:       # stop tracing first, whatever happened
                follow.stop(fs, tracer)
                tracer = None
            if state_file:
                saved = save(fs, state_file)
            fs.close()
            try:
                pyfuse3.close(unmount=True)
            except Exception:
                log.warning("unmount at close failed", exc_info=True)
            log.info("unmounted %s", mountpoint)
    finally:
        if tracer is not None:           # the mount itself failed
            follow.stop(fs, tracer)
    return saved


async def _main(fs, state_file, save_interval, ops, tracer=None):
    from . import follow
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_on_signal, ops)
        if state_file and save_interval > 0:
            nursery.start_soon(_save_every, fs, state_file, save_interval)
        if tracer is not None:
            nursery.start_soon(follow.pump, fs, ops, tracer)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _save_every(fs, state_file, interval):
    # Runs between requests on the trio thread, so each save is a consistent snapshot.
    while True:
        await trio.sleep(interval)
        save(fs, state_file)


def save(fs, state_file) -> bool:
    """Save; a failure is logged and reported as a `save_failed` event in .kmemfs/events
    (the file keeps its last good contents). Returns whether it worked."""
    try:
        state_file.save(fs)
    except Exception as e:      # a full disk, an I/O error, a model the schema lacks a field of
        log.error("saving the state to %s failed: %s", state_file.path, e, exc_info=True)
        fs.engine.emit("save_failed", path=state_file.path, error=str(e))
        return False
    log.debug("state saved to %s (event seq %d)", state_file.path, fs.engine.event_seq)
    return True


async def _on_signal(ops):
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for sig in signals:
            log.info("signal %s: unmounting", signal.Signals(sig).name)
            # pyfuse3.main() returns only once every request has been answered: writes
            # sleeping on an OOM end with EINTR first (issue 9 item 6).
            ops.interrupt_sleepers()
            pyfuse3.terminate()
            return
