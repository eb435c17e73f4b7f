"""`-o follow`: the daemon's trio task between the tracefs pipes (trace/live.py) and the
model (trace/follow.py Follower). Everything runs on the trio thread, between requests: the
pipes are non-blocking and waited on with trio.lowlevel.wait_readable; a pid written to a
`tasks` file reaches set_event_pid inside that write (a tracefs write, no sleeping), so the
process is traced once the write returns.
"""
import logging
import os
import time

import trio

from ..cgroupfs.host import Host
from ..trace import capture
from ..trace.capture import TraceError
from ..trace.follow import Follower
from ..trace.live import DEFAULT_BUFFER_KB, LiveTracer

log = logging.getLogger("kmemfs")
TICK = 0.02            # seconds: the longest a free waits to be read (the alloc pipe wakes us)
LOST_EVERY = 1.0       # seconds between looks at the kernel's lost counters
MAX_DRAIN = 8 << 20    # bytes read from one pipe per round, so requests get their turn


class FollowError(Exception):
    pass


def buffer_kb(fuse_opts) -> int:
    """-o follow_buffer_kb=N, else live.DEFAULT_BUFFER_KB."""
    for o in fuse_opts:
        if o.startswith("follow_buffer_kb="):
            return int(o.partition("=")[2])
    return DEFAULT_BUFFER_KB


def start(fs, buffer_kb: int = None) -> LiveTracer:
    """Create the instances (nothing is traced until a pid is followed) and hang a Follower
    on the file system. Raises FollowError with a one-line reason."""
    me = os.getpid()
    host = Host()
    try:
        tracer = LiveTracer(buffer_kb or DEFAULT_BUFFER_KB,
                            log=lambda msg: log.info("follow: %s", msg)).open()
    except TraceError as e:
        raise FollowError(f"-o follow: {e}") from None
    if tracer.clock != "mono":
        log.warning("follow: trace_clock %s is not CLOCK_MONOTONIC: the watermark follows the "
                    "newest event read instead of the clock", tracer.clock)
    try:
        with open("/proc/slabinfo") as f:
            slabinfo = f.read()
    except OSError:
        slabinfo = ""
    fs.follow = Follower(fs.engine, tracer, is_me=lambda pid: host.tgid(pid) == me,
                         aliases=capture.slub_aliases(slabinfo=slabinfo))
    log.info("follow: tracing through %s (instances kmemfs_%d_follow_*)", tracer.tfs.path, me)
    return tracer


def stop(fs, tracer) -> None:
    fs.follow = None
    try:
        tracer.close()
    except TraceError as e:
        log.error("follow: %s", e)


def _drain(fd, feed) -> bool:
    """Read what the pipe holds now into feed(bytes); False when cut at MAX_DRAIN."""
    n = 0
    while n < MAX_DRAIN:
        try:
            data = os.read(fd, capture.READ_CHUNK)
        except BlockingIOError:
            return True
        except InterruptedError:
            continue
        if not data:
            return True
        feed(data)
        n += len(data)
    return False


async def pump(fs, ops, tracer) -> None:
    """Read, merge, apply, forever (cancelled at unmount). A failure stops the following,
    not the mount: logged, a follow_error event, `follow inexact` in .kmemfs/config."""
    try:
        await _pump(fs, ops, tracer)
    except Exception as e:
        log.exception("follow: stopped")
        fs.follow.error(f"following stopped: {type(e).__name__}: {e}")
        try:
            tracer.close()
        except TraceError as e2:
            log.error("follow: %s", e2)
        fs.after_change()


async def _pump(fs, ops, tracer) -> None:
    f = fs.follow
    m = f.merger
    mono = tracer.clock == "mono"
    next_lost = time.monotonic() + LOST_EVERY
    timeout = TICK
    held = []              # free text waiting for the allocations before it to be read
    while True:
        with trio.move_on_after(timeout):
            await trio.lowlevel.wait_readable(tracer.alloc_fd)
        # The free pipe first, then the alloc pipe: every free read has its object's
        # allocation (committed before it) read by then, so the pre-filter can trust
        # what was pushed. Once a pipe reads empty, every record stamped before that moment
        # (less the window: reserve-to-commit) has been read: the watermark.
        whole_f = _drain(tracer.free_fd, held.append)
        t_free = time.monotonic_ns()
        whole_a = _drain(tracer.alloc_fd, f.feed_alloc)
        if whole_a:
            for data in held:
                f.feed_free(data)
            held.clear()
        upto = t_free if mono else max(m.newest_a, m.newest_f)
        if not whole_f or held:
            upto = min(upto, m.newest_f)
        if not whole_a:
            upto = min(upto, m.newest_a)
        if f.release(upto - f.window_ns):
            fs.after_change()
            ops.kick()
            if ops.open_cached:           # -o page_cache: long-held fds see the new counters
                await ops._refresh_open()
        if time.monotonic() >= next_lost:
            next_lost = time.monotonic() + LOST_EVERY
            if f.set_lost(tracer.lost()):
                log.warning("follow: %d events lost: the model is inexact", f.lost)
                fs.after_change()
        oldest = m.oldest_alloc_ns()
        if not (whole_a and whole_f):
            timeout = 0
        elif oldest is not None:       # wake when the oldest waiting allocation is due
            timeout = min(TICK, max(0, oldest + f.window_ns - time.monotonic_ns()) / 1e9)
        else:
            timeout = TICK
        await trio.sleep(0)           # requests between rounds
