"""Mounting: options, the stale-mount check, the trio main loop and clean shutdown."""
import errno
import logging
import os
import signal
import subprocess
from dataclasses import replace

import pyfuse3
import trio

from .cgroupfs.tree import CgroupFS
from .engine import Config, Engine, EngineError, load_catalogue

log = logging.getLogger("kmemfs")


class MountError(Exception):
    """A one-line reason the mount cannot go ahead."""


BOOL_OPTIONS = {"acct_root": "acct_root", "boot_slabs": "boot_slabs"}
INT_OPTIONS = {"charge_batch", "nr_cpus", "page_size", "max_memcgs", "vm_swappiness",
               "event_log_size"}
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
    try:
        os.stat(mountpoint)
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise MountError(f"{mountpoint}: {e.strerror}") from None
        log.warning("%s: stale mount (Transport endpoint is not connected): cleaning it",
                    mountpoint)
        unmount(mountpoint, lazy=True)
    if not os.path.isdir(mountpoint):
        raise MountError(f"{mountpoint}: not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint}: already a mount point (busy)")


def unmount(mountpoint: str, lazy: bool = False) -> None:
    args = ["fusermount3", "-uz" if lazy else "-u", mountpoint]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode and not lazy:
        r2 = subprocess.run(["fusermount3", "-uz", mountpoint], capture_output=True, text=True)
        if r2.returncode:
            raise MountError(r.stderr.strip() or f"fusermount3 failed on {mountpoint}")


def build(config: Config, slabinfo=None):
    from .cgroupfs.control import control_files
    engine = Engine(config, load_catalogue(slabinfo),
                    source=os.path.abspath(slabinfo) if slabinfo else "built-in 3.4.0-rc6")
    return CgroupFS(engine, special_files=control_files())


def serve(mountpoint: str, fs: CgroupFS, fuse_opts=(), ready=None) -> None:
    """Mount and serve until unmounted or SIGTERM/SIGINT; always unmounts."""
    from .fuseops import Operations
    ops = Operations(fs, mountpoint)
    opts = set(pyfuse3.default_options) | {"fsname=kmemfs", "subtype=kmemfs"} | set(fuse_opts)
    pyfuse3.init(ops, mountpoint, opts)
    log.info("mounted kmemfs at %s", mountpoint)
    if ready:
        ready()
    try:
        trio.run(_main)
    finally:
        fs.close()
        try:
            pyfuse3.close(unmount=True)
        except Exception:
            log.warning("unmount at close failed", exc_info=True)
        log.info("unmounted %s", mountpoint)


async def _main():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_on_signal, nursery)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _on_signal(nursery):
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for sig in signals:
            log.info("signal %s: unmounting", signal.Signals(sig).name)
            pyfuse3.terminate()
            return


def catalogue_error(e: EngineError) -> MountError:
    return MountError(f"catalogue: {e.message}")
