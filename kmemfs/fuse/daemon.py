"""Mounting: options, the stale-mount check, the trio main loop and clean shutdown."""
import errno
import logging
import os
import signal
import subprocess
from dataclasses import replace

import pyfuse3
import trio

from ..cgroupfs.tree import CgroupFS
from ..engine import Config, Engine, EngineError, load_catalogue

log = logging.getLogger("kmemfs")


class MountError(Exception):
    """A one-line reason the mount cannot go ahead."""


BOOL_OPTIONS = {"acct_root": "acct_root", "boot_slabs": "boot_slabs"}
INT_OPTIONS = {"charge_batch", "nr_cpus", "page_size", "max_memcgs", "vm_swappiness",
               "event_log_size", "max_tasks", "max_objects"}
FUSE_OPTIONS = {"allow_other"}


def parse_options(text: str):
    """`-o acct_root,noswapaccount,allow_other,charge_batch=32` -> (Config, fuse options)."""
    cfg, fuse = Config(), set()
    for opt in filter(None, (text or "").split(",")):
        key, _, val = opt.partition("=")
        try:
            if key in FUSE_OPTIONS and not val:
                fuse.add(key)
            elif key == "noswapaccount" and not val:
                cfg = replace(cfg, swap_account=False)
            elif key == "swapaccount":
                cfg = replace(cfg, swap_account=_bool(val))
            elif key in BOOL_OPTIONS:
                cfg = replace(cfg, **{BOOL_OPTIONS[key]: _bool(val) if val else True})
            elif key.startswith("no") and key[2:] in BOOL_OPTIONS and not val:
                cfg = replace(cfg, **{BOOL_OPTIONS[key[2:]]: False})
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


def check_mountpoint(mountpoint: str) -> None:
    """Clear one-line errors; a stale mount left by a killed daemon is cleaned first."""
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse is missing: load the fuse module or run on a host with FUSE")
    if _stale(mountpoint):
        log.warning("%s: stale mount (Transport endpoint is not connected): cleaning it",
                    mountpoint)
        unmount(mountpoint, lazy=True)
    try:
        os.stat(mountpoint)
    except OSError as e:
        raise MountError(f"{mountpoint}: {e.strerror}") from None
    if not os.path.isdir(mountpoint):
        raise MountError(f"{mountpoint}: not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint}: already a mount point (busy)")


def _stale(mountpoint: str) -> bool:
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
    args = ["fusermount3", "-uz" if lazy else "-u", mountpoint]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode and not lazy:
        r2 = subprocess.run(["fusermount3", "-uz", mountpoint], capture_output=True, text=True)
        if r2.returncode:
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


def wait_gone(pids, timeout: float) -> bool:
    import time
    deadline = time.monotonic() + timeout
    while any(os.path.exists(f"/proc/{p}") for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def build(config: Config, slabinfo=None):
    from ..cgroupfs.control import control_files
    engine = Engine(config, load_catalogue(slabinfo),
                    source=os.path.abspath(slabinfo) if slabinfo else "built-in 3.4.0-rc6")
    return CgroupFS(engine, special_files=control_files())


def build_or_restore(config, explicit_options: bool, slabinfo, state_path):
    """A fresh model, or the one saved in `state_path` (which then decides the config)."""
    from . import state
    from ..cgroupfs.control import control_files
    if not state_path or not os.path.exists(state_path):
        try:
            return build(config, slabinfo)
        except EngineError as e:
            raise MountError(f"catalogue: {e.message}") from None
    try:
        saved = state.load(state_path)
    except state.StateError as e:
        raise MountError(f"refusing the state file: {e}") from None
    if slabinfo:
        raise MountError("--slabinfo conflicts with --state: the catalogue is in the state file")
    old = saved["engine"].config
    if explicit_options and config != old:
        diff = [f"{k}={v} (saved {getattr(old, k)})" for k, v in config.items()
                if getattr(old, k) != v]
        raise MountError(f"{state_path} was saved with other options: {', '.join(diff)}")
    log.info("restored the model from %s", state_path)
    return state.restore(saved, control_files())


def serve(mountpoint: str, fs: CgroupFS, fuse_opts=(), ready=None, state_path=None,
          save_interval: float = 0) -> None:
    """Mount and serve until unmounted or SIGTERM/SIGINT; always unmounts (and saves)."""
    from .ops import Operations
    ops = Operations(fs, mountpoint)
    opts = set(pyfuse3.default_options) | {"fsname=kmemfs", "subtype=kmemfs"} | set(fuse_opts)
    pyfuse3.init(ops, mountpoint, opts)
    log.info("mounted kmemfs at %s", mountpoint)
    if ready:
        ready()
    try:
        trio.run(_main, fs, state_path, save_interval, ops)
    finally:
        if state_path:
            _save(fs, state_path)
        fs.close()
        try:
            pyfuse3.close(unmount=True)
        except Exception:
            log.warning("unmount at close failed", exc_info=True)
        log.info("unmounted %s", mountpoint)


async def _main(fs, state_path, save_interval, ops):
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_on_signal, ops)
        if state_path and save_interval > 0:
            nursery.start_soon(_save_every, fs, state_path, save_interval)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _save_every(fs, path, interval):
    # Runs between requests on the trio thread, so each save is a consistent snapshot.
    while True:
        await trio.sleep(interval)
        _save(fs, path)


def _save(fs, path) -> None:
    from . import state
    try:
        state.save(fs, path)
        log.debug("state saved to %s (event seq %d)", path, fs.engine.event_seq)
    except Exception:
        log.exception("saving the state to %s failed", path)


async def _on_signal(ops):
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for sig in signals:
            log.info("signal %s: unmounting", signal.Signals(sig).name)
            # pyfuse3.main() returns only once every request has been answered: writes
            # sleeping on an OOM end with EINTR first (issue 9 item 6).
            ops.interrupt_sleepers()
            pyfuse3.terminate()
            return
