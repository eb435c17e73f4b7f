"""The FUSE adapter: pyfuse3 requests -> the cgroupfs layer. Thin on purpose.

Every handler maps EngineError to its errno and any other exception to EIO plus a log line,
so one bad request never takes the mount down. Files are opened with direct_io and report
st_size 0, like the kernel's cgroupfs, so nothing is served from the page cache; with
`-o page_cache` a read-only open of a cgroup file may be (docs/semantics.md).

Entries and attributes are cached by the kernel for a long time: it sees every change to the
tree itself (mkdir, rmdir, rename, chmod/chown). What changes without such a request has a
zero attribute timeout (the event log's growing st_size) or is invalidated.
"""
import collections
import ctypes
import errno
import logging
import os
import select
import stat
import threading

import pyfuse3
import trio

from ..cgroupfs.host import Host
from ..cgroupfs.tree import CTL_DIR_INO, Attr, CgroupFS, Request, encode
from ..engine import EngineError

log = logging.getLogger("kmemfs")
TIMEOUT = 86400.0      # entry/attr cache lifetime (seconds): see the module docstring
SYS_pidfd_getfd = 438
PIDFD_THREAD = os.O_EXCL
SIGNAL_POLL = 0.2     # seconds between looks at a waiting writer's pending signals
HOST_FILES = ("tasks", "cgroup.procs")
ACTS_FOR_WRITER = {"tasks", "cgroup.procs", "cgroup.event_control"}


def _fuse_errors(fn):
    name = fn.__name__

    async def wrapper(self, *args):
        try:
            if name in self.faults:
                raise RuntimeError(f"fault injected into {name} (KMEMFS_INJECT_FAULT)")
            return await fn(self, *args)
        except EngineError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        except pyfuse3.FUSEError:
            raise
        except Exception:
            log.exception("%s%r failed", fn.__name__, args[:2])
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            self.kick()
    wrapper.__name__ = fn.__name__
    return wrapper


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


def _cacheable_file(cft) -> bool:
    """A readable cgroup file (not a control-plane one) whose text depends on the model only:
    tasks and cgroup.procs list host processes, which come and go without a request."""
    return cft is not None and cft.read is not None and cft.name not in HOST_FILES


def _req(ctx) -> Request:
    return Request(ctx.pid, ctx.uid, ctx.gid) if ctx is not None else Request()


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, fs: CgroupFS, mountpoint: str, page_cache: bool = False):
        super().__init__()
        self.fs = fs
        self.mountpoint = os.path.abspath(mountpoint)
        # Control-plane files whose st_size moves on its own (the event log): never cached.
        self.volatile = {fs.special_ino[n] for n, sp in fs.special.items() if hasattr(sp, "size")}
        self.page_cache = page_cache
        # ino -> (fs.version, text): the text the kernel's page cache holds, and the model
        # version it was rendered at (the same version renders the same text: no re-render)
        self.cached = {}
        self.open_cached = collections.Counter()   # ino -> open handles reading through it
        self.gone = set()                        # open_cached inodes of removed cgroups
        self.wake = trio.Event()
        self.wake_seq = fs.engine.oom_wake_seq
        self.stopping = False       # SIGTERM/SIGINT: sleeping writes end with EINTR
        # Testing aid: handler names that raise, to prove one failure stays one EIO.
        self.faults = set(filter(None, os.environ.get("KMEMFS_INJECT_FAULT", "").split(",")))
        fs.import_eventfd = import_eventfd
        fs.resolve_fd = self.resolve_fd

    # ------------------------------------------------------------------ helpers
    def interrupt_sleepers(self) -> None:
        """Shutdown: every write sleeping on an OOM (and any that would) ends with EINTR, so
        the main loop can return and the daemon save and unmount."""
        self.stopping = True
        self.wake.set()
        self.wake = trio.Event()

    def kick(self) -> None:
        """Wake writers sleeping on a memcg OOM when memcg_oom_recover ran."""
        if self.fs.engine.oom_wake_seq != self.wake_seq:
            self.wake_seq = self.fs.engine.oom_wake_seq
            self.wake.set()
            self.wake = trio.Event()

    def entry(self, a) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = a.ino
        e.st_mode = a.mode
        e.st_nlink = a.nlink
        e.st_uid, e.st_gid = a.uid, a.gid
        e.st_size = a.size
        if self.page_cache and self._cacheable(a.ino):
            e.st_size = len(self._cached(a.ino))
        e.st_blksize = 4096
        e.st_blocks = 0
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = a.time_ns
        # A per-lookup ctl inode must not be cached at all (tree.py private); the events
        # file's growing st_size must be current (tail -f); everything else the kernel sees
        # change itself, so it may keep it long.
        e.entry_timeout = TIMEOUT if a.cache else 0
        e.attr_timeout = TIMEOUT if a.cache and a.ino not in self.volatile else 0
        e.generation = 0
        return e

    # ------------------------------------------------------------------ -o page_cache
    def _cacheable(self, ino: int) -> bool:
        """`ino` is a cacheable cgroup file (_cacheable_file)."""
        if ino & 63 == 0 or ino <= CTL_DIR_INO or ino in self.fs.special_name \
                or ino in self.fs.private:
            return False
        try:
            _, cft = self.fs.resolve(ino)
        except EngineError:
            return False
        return _cacheable_file(cft)

    def _render(self, ino: int) -> bytes:
        memcg, cft = self.fs.resolve(ino)
        return encode(cft.read(self.fs, memcg))

    def _cached(self, ino: int) -> bytes:
        """What the kernel gets for `ino`: the text it was last told about (its st_size
        is this length), rendered now if it was told nothing yet."""
        if ino not in self.cached:
            self.cached[ino] = (self.fs.version, self._render(ino))
        return self.cached[ino][1]

    def _current(self, ino: int) -> bytes:
        """The text of `ino` at the model's current version: the cached one if the model
        has not changed since it was rendered (a sweep of an idle tree renders nothing)."""
        version, text = self.cached.get(ino, (None, None))
        return text if version == self.fs.version else self._render(ino)

    async def _invalidate(self, inos, attr_only: bool) -> None:
        """Drop the kernel's attributes (and page cache) of `inos`. In a thread: dropping
        pages waits for page locks that a READ in flight to this very daemon may hold."""
        def run():
            for ino in inos:
                try:
                    pyfuse3.invalidate_inode(ino, attr_only)
                except OSError:          # ENOENT: the kernel has already forgotten it
                    pass
        if inos:
            await trio.to_thread.run_sync(run)

    async def _refresh_open(self) -> None:
        """After a request that may have changed the model: inodes that have open
        page-cached handles get their new text, and lose the kernel's copy of the old one,
        before the request is answered (a long-held fd re-reading at 0 sees the change)."""
        stale = []
        for ino in self.open_cached:
            if ino in self.gone:
                continue
            try:
                new = self._current(ino)
            except EngineError:          # its cgroup was removed: reads must reach us (ENODEV)
                self.gone.add(ino)
                stale.append(ino)
                continue
            if new != self.cached[ino][1]:
                stale.append(ino)
            self.cached[ino] = (self.fs.version, new)
        await self._invalidate(stale, attr_only=False)

    def resolve_fd(self, pid: int, fd: int) -> int:
        """The inode of a client's open fd, found by its path (never by stat: that would call
        back into this very daemon)."""
        try:
            path = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            raise EngineError(errno.EBADF, f"fd {fd} of pid {pid} is not open") from None
        rel = os.path.relpath(path, self.mountpoint)
        if rel.startswith(".."):
            raise EngineError(errno.EINVAL, f"{path} is not in this cgroup mount")
        ino = pyfuse3.ROOT_INODE
        for part in filter(lambda p: p not in (".", ""), rel.split("/")):
            ino = self.fs.lookup(ino, part).ino
        return ino

    # ------------------------------------------------------------------ metadata
    @_fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        name = _name(name)
        if name == ".":
            return self.entry(self.fs.getattr(parent_inode))
        if name == "..":
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.entry(self.fs.lookup(parent_inode, name, kernel=True))

    async def forget(self, inode_list):
        # The kernel dropped these inodes, and their page cache with them.
        for ino, n in inode_list:
            self.fs.forget(ino, n)
            if ino not in self.open_cached:
                self.cached.pop(ino, None)

    @_fuse_errors
    async def getattr(self, inode, ctx=None):
        if inode in self.gone:
            # A removed cgroup's file, still open and page-cached: its attributes as they
            # were (st_size > 0), so that a read reaches us and fails with ENODEV.
            h = next(h for h in self.fs.handles.values() if h.ino == inode)
            return self.entry(Attr(inode, stat.S_IFREG | h.cft.file_mode,
                                   size=len(self.cached[inode][1]), time_ns=self.fs.mtime))
        return self.entry(self.fs.getattr(inode))

    @_fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        mode = attr.st_mode if fields.update_mode else None
        uid = attr.st_uid if fields.update_uid else None
        gid = attr.st_gid if fields.update_gid else None
        return self.entry(self.fs.setattr(inode, mode, uid, gid))

    @_fuse_errors
    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s

    # ------------------------------------------------------------------ directories
    @_fuse_errors
    async def opendir(self, inode, ctx):
        self.fs.getattr(inode)
        return inode

    @_fuse_errors
    async def readdir(self, fh, start_id, token):
        for i, (name, a) in enumerate(self.fs.readdir(fh, start_id), start=start_id + 1):
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self.entry(a), i):
                self.fs.forget(a.ino, 1)          # not taken: the kernel will not forget it
                break

    async def releasedir(self, fh):
        pass

    @_fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        return self.entry(self.fs.mkdir(parent_inode, _name(name), _req(ctx), mode))

    @_fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        regs = self.fs.rmdir(parent_inode, _name(name))
        await self._refresh_open()         # the parent took the pages: its files changed
        if regs:
            trio.lowlevel.spawn_system_task(self._notify_removed, parent_inode, name, regs)

    async def _notify_removed(self, parent_inode, name, regs):
        # 3.3 signals only once the directory is gone. An entry invalidation takes the
        # parent's lock, which the rmdir(2) caller holds until it has dropped the dentry:
        # when it returns (in a thread: it blocks), a woken listener finds the cgroup gone.
        try:
            await trio.to_thread.run_sync(pyfuse3.invalidate_entry, parent_inode, name)
        except OSError:
            pass
        self.fs.notify_removed(regs)

    @_fuse_errors
    async def rename(self, parent_old, name_old, parent_new, name_new, flags, ctx):
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)
        self.fs.rename(parent_old, _name(name_old), parent_new, _name(name_new))

    async def create(self, parent_inode, name, mode, flags, ctx):
        raise pyfuse3.FUSEError(errno.EACCES)     # no ->create on cgroup directories

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def unlink(self, parent_inode, name, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def symlink(self, parent_inode, name, target, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    # ------------------------------------------------------------------ files
    @_fuse_errors
    async def open(self, inode, flags, ctx):
        req = _req(ctx)
        fh = self.fs.open(inode, req)
        # FUSE write requests carry no caller (pyfuse3 passes none): the opener stands for
        # the writer, pinned by a pidfd where the write acts for it (its fds, creds, signals).
        h = self.fs.handle(fh)
        if (h.special is not None and h.special.mode & 0o200) or \
                (h.cft is not None and h.cft.name in ACTS_FOR_WRITER):
            req.pidfd = _pidfd(req.pid)
        if not (self.page_cache and flags & os.O_ACCMODE == os.O_RDONLY
                and _cacheable_file(h.cft)):
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        # -o page_cache: the text as of this open; the kernel keeps its pages if unchanged.
        try:
            new = self._current(inode)
        except BaseException:
            self.fs.release(fh)
            raise
        old = self.cached.get(inode, (None, None))[1]
        self.cached[inode] = (self.fs.version, new)
        h.state["cached"] = True
        self.open_cached[inode] += 1
        if old is None or len(old) != len(new):
            await self._invalidate([inode], attr_only=True)   # st_size is the new length
        return pyfuse3.FileInfo(fh=fh, direct_io=False, keep_cache=old == new)

    @_fuse_errors
    async def read(self, fh, off, size):
        h = self.fs.handle(fh)
        if not h.state.get("cached"):
            data = self.fs.read(fh, off, size)
            if h.memcg is not None and self.open_cached:
                await self._refresh_open()     # reading tasks prunes exited host processes
            return data
        if h.memcg.removed:
            raise EngineError(errno.ENODEV, "the cgroup was removed")
        return self._cached(h.ino)[off:off + size]

    @_fuse_errors
    async def write(self, fh, off, buf):
        req = self.fs.handle(fh).req
        try:
            result = self.fs.write(fh, off, buf, req)
            if not isinstance(result, int):
                result = await self._wait(result, req)
        finally:
            if self.open_cached:
                await self._refresh_open()
        return result

    async def _wait(self, pending, req: Request) -> int:
        """A charge sleeps on a memcg OOM (oom_kill_disable=1): wait for memcg_oom_recover,
        then retry. A signal for the writer ends the wait with EINTR, as it ends the kernel's
        sleep. pyfuse3 passes no FUSE_INTERRUPT, and the kernel keeps even a SIGKILLed writer
        waiting for our reply, so while (and only while) a writer waits its pending signals
        are looked at every SIGNAL_POLL seconds. Shutdown ends the wait with EINTR too."""
        try:
            while not isinstance(pending, int):
                if self.stopping:
                    pending.cancel()
                    raise pyfuse3.FUSEError(errno.EINTR)
                with trio.move_on_after(SIGNAL_POLL):
                    await self.wake.wait()
                    if not self.stopping:
                        pending = pending.resume()
                    continue
                if _signal_pending(req):
                    pending.cancel()
                    raise pyfuse3.FUSEError(errno.EINTR)
            return pending
        except BaseException:
            if not isinstance(pending, int) and not pending.done:
                pending.cancel()
            raise

    @_fuse_errors
    async def release(self, fh):
        h = self.fs.handles.get(fh)
        if h is not None and h.req.pidfd is not None:
            os.close(h.req.pidfd)
        if h is not None and h.state.get("cached"):
            self.open_cached[h.ino] -= 1
            if not self.open_cached[h.ino]:
                del self.open_cached[h.ino]
                if h.ino in self.gone:
                    self.gone.discard(h.ino)
                    self.cached.pop(h.ino, None)
        self.fs.release(fh)

    # No flush(): pyfuse3's default answers ENOSYS, after which the kernel stops sending FLUSH
    # (fc->no_flush) and close(2) returns 0 without a round trip. A no-op flush cost every
    # close one more request (~+35% on open+read+close, scripts/bench_fs.py). Writes are
    # synchronous (direct_io), so there is never anything to flush or to report at close.

    async def fsync(self, fh, datasync):
        pass


def _pidfd(pid: int):
    if not pid:
        return None
    for flags in (PIDFD_THREAD, 0):
        try:
            return os.pidfd_open(pid, flags)
        except OSError:
            continue
    return None


def _signal_pending(req: Request) -> bool:
    """The writer has an unblocked signal queued (SigPnd/ShdPnd minus SigBlk in
    /proc/PID/status), or is gone."""
    pid = req.pid
    if not pid:
        return False
    if req.pidfd is not None and Host().exited(req.pidfd):
        return True
    pending = blocked = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith((b"SigPnd:", b"ShdPnd:")):
                    pending |= int(line.split()[1], 16)
                elif line.startswith(b"SigBlk:"):
                    blocked = int(line.split()[1], 16)
    except FileNotFoundError:
        return True
    except (OSError, ValueError, IndexError):
        return False
    return bool(pending & ~blocked)


_libc = ctypes.CDLL(None, use_errno=True)


class EventFd:
    """The daemon's duplicate of a client's eventfd, signalled as eventfd_signal does: never
    blocking. The duplicate shares the client's open file (pidfd_getfd), so it cannot be
    given O_NONBLOCK of its own (the client's blocking read would then fail with EAGAIN).
    Instead a counter that cannot take 1 more (poll: not writable) is left saturated, as
    eventfd_signal clamps it; otherwise the write runs in a short-lived thread of this
    eventfd, so a counter filled meanwhile by the client blocks that thread, not the daemon
    (it finishes when the client reads). The fd is closed by whoever uses it last."""

    def __init__(self, fd: int):
        self.fd = fd
        self.lock = threading.Lock()
        self.pending = 0
        self.busy = False          # a delivery thread owns the fd
        self.closed = False

    def signal(self) -> None:
        with self.lock:
            if self.closed or not _writable(self.fd):
                return
            self.pending += 1
            if self.busy:
                return
            self.busy = True
        threading.Thread(target=self._deliver, name="eventfd-signal", daemon=True).start()

    def _deliver(self) -> None:
        while True:
            with self.lock:
                n, self.pending = self.pending, 0
                if not n:
                    self.busy = False
                    if self.closed:
                        os.close(self.fd)
                    return
            try:
                os.eventfd_write(self.fd, n)
            except OSError:
                log.warning("eventfd signal failed", exc_info=True)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if self.busy:
                return                 # _deliver closes it when its write returns
        os.close(self.fd)


def _writable(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLOUT)
    return any(ev & select.POLLOUT for _, ev in p.poll(0))


def import_eventfd(req: Request, fd: int) -> EventFd:
    """Duplicate the writer's eventfd with pidfd_getfd (opening /proc/PID/fd/N of an
    eventfd fails with ENXIO), through the pidfd taken when it opened the file: if that
    process has exited, its pid may name another process now, and nothing is taken. The
    fd's kind is checked first: a duplicate of a file in this very mount could only be
    closed by a FLUSH to this daemon, which is busy answering this request."""
    pidfd = req.pidfd if req.pidfd is not None else _pidfd(req.pid)
    if pidfd is None or Host().exited(pidfd):
        raise EngineError(errno.EBADF, f"the process that opened the file ({req.pid}) is gone")
    try:
        if _fd_kind(f"/proc/{req.pid}/fd/{fd}") is None:
            raise EngineError(errno.EBADF, f"fd {fd} of pid {req.pid} is not open")
        if _fd_kind(f"/proc/{req.pid}/fd/{fd}") != EVENTFD:
            raise EngineError(errno.EINVAL, f"fd {fd} is not an eventfd")
        new = _libc.syscall(SYS_pidfd_getfd, pidfd, fd, 0)
        if new < 0:
            err = ctypes.get_errno()
            raise EngineError(errno.EBADF if err in (errno.EBADF, errno.ESRCH) else err,
                              os.strerror(err))
    finally:
        if pidfd != req.pidfd:
            os.close(pidfd)
    if _fd_kind(f"/proc/self/fd/{new}") != EVENTFD:      # swapped under us meanwhile
        threading.Thread(target=os.close, args=(new,), daemon=True).start()
        raise EngineError(errno.EINVAL, f"fd {fd} is not an eventfd")
    return EventFd(new)


EVENTFD = "anon_inode:[eventfd]"


def _fd_kind(link: str):
    try:
        return os.readlink(link)
    except OSError:
        return None
