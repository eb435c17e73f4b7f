"""The cgroup filesystem, independent of FUSE: inodes, lookup, readdir, open/read/write with
per-open buffers, mkdir/rmdir/rename, and every errno decision (3.3 kernel/cgroup.c).

Inode numbers: the root directory is 1, the hidden control directory 2 and its files 3..;
a memcg with id k has directory inode k<<6 (root: 1) and file inodes (k<<6)|(index+1).
"""
import errno
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Optional

from ..engine import Engine, EngineError, render
from . import parse
from .files import BY_NAME, FILES, INDEX, CFType
from .host import Host

ROOT_INO = 1
CTL_DIR_INO = 2
CTL_DIR = ".kmemfs"
NAME_MAX = 255


def encode(text: str) -> bytes:
    """Names are bytes to the kernel: a cgroup called b'\\xff' reads back as b'\\xff'."""
    return text.encode("utf-8", "surrogateescape")


@dataclass
class Request:
    """Who is asking: the FUSE request's context."""
    pid: int = 0
    uid: int = 0
    gid: int = 0


@dataclass
class Attr:
    ino: int
    mode: int
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    size: int = 0
    time_ns: int = 0


@dataclass
class Handle:
    ino: int
    memcg: object = None
    cft: Optional[CFType] = None
    special: Optional[object] = None     # a control-plane file
    snapshot: Optional[bytes] = None
    state: dict = field(default_factory=dict)


class CgroupFS:
    def __init__(self, engine: Engine, host: Host = None, special_files=None):
        self.engine = engine
        self.host = host or Host()
        self.memcgs = {engine.root.id: engine.root}
        self.handles = {}
        self.next_fh = 1
        self.release_agent = ""
        self.clone_children = {}
        self.overrides = {}                  # ino -> (mode, uid, gid) from chmod/chown
        self.mtime = time.time_ns()
        self.events = {}                     # memcg id -> [Registration]
        self.import_eventfd = None           # set by the adapter: (pid, fd) -> EventFd
        self.resolve_fd = None               # set by the adapter: (pid, fd) -> path in mount
        self.seen_event = engine.event_seq
        # The control plane's files: name -> object with mode, read(fs, h), write(fs, h, data, req)
        self.special = dict(special_files or {})
        self.special_ino = {name: CTL_DIR_INO + 1 + i for i, name in enumerate(self.special)}
        self.special_name = {i: name for name, i in self.special_ino.items()}

    # ------------------------------------------------------------------ inode mapping
    @staticmethod
    def dir_ino(memcg) -> int:
        return ROOT_INO if memcg.is_root else memcg.id << 6

    def file_ino(self, memcg, cft: CFType) -> int:
        return (memcg.id << 6) | (INDEX[cft.name] + 1)

    def resolve(self, ino: int):
        """ino -> (memcg, cft or None) for cgroup nodes, or ("ctl", name) for the control plane."""
        if ino == ROOT_INO:
            return self.engine.root, None
        if ino == CTL_DIR_INO:
            return "ctl", None
        if ino in self.special_name:
            return "ctl", self.special_name[ino]
        memcg = self.memcgs.get(ino >> 6)
        idx = ino & 63
        if memcg is None or (idx == 0 and memcg.is_root):
            raise EngineError(errno.ENOENT, "no such inode")
        if idx == 0:
            return memcg, None
        if idx > len(FILES) or not FILES[idx - 1].exists_in(memcg, self.engine.config):
            raise EngineError(errno.ENOENT, "no such inode")
        return memcg, FILES[idx - 1]

    def _attr(self, ino: int, mode: int, nlink: int = 1) -> Attr:
        if ino in self.overrides:
            mode_bits, uid, gid = self.overrides[ino]
            return Attr(ino, stat.S_IFMT(mode) | mode_bits, nlink, uid, gid, 0, self.mtime)
        return Attr(ino, mode, nlink, 0, 0, 0, self.mtime)

    def getattr(self, ino: int) -> Attr:
        memcg, cft = self.resolve(ino)
        if memcg == "ctl":
            if cft is None:
                return self._attr(ino, stat.S_IFDIR | 0o755, 2)
            sp = self.special[cft]
            a = self._attr(ino, stat.S_IFREG | sp.mode)
            a.size = sp.size(self) if hasattr(sp, "size") else 0
            return a
        if cft is None:
            return self._attr(ino, stat.S_IFDIR | 0o755, 2 + len(memcg.children))
        return self._attr(ino, stat.S_IFREG | cft.file_mode)

    def setattr(self, ino: int, mode=None, uid=None, gid=None) -> Attr:
        """chmod/chown work as on the kernel's cgroupfs (simple_setattr); truncate is a no-op."""
        a = self.getattr(ino)
        if mode is not None or uid is not None or gid is not None:
            self.overrides[ino] = (stat.S_IMODE(a.mode if mode is None else mode),
                                   a.uid if uid is None else uid, a.gid if gid is None else gid)
        return self.getattr(ino)

    # ------------------------------------------------------------------ directories
    def _dir(self, ino: int):
        memcg, cft = self.resolve(ino)
        if cft is not None:
            raise EngineError(errno.ENOTDIR, "not a directory")
        return memcg

    def lookup(self, parent_ino: int, name: str) -> Attr:
        if len(os.fsencode(name)) > NAME_MAX:        # cgroup_lookup
            raise EngineError(errno.ENAMETOOLONG, "name longer than 255 bytes")
        memcg = self._dir(parent_ino)
        if memcg == "ctl":
            if name not in self.special:
                raise EngineError(errno.ENOENT, name)
            return self.getattr(self.special_ino[name])
        if name == CTL_DIR and memcg.is_root and self.special:
            return self.getattr(CTL_DIR_INO)
        child = memcg.children.get(name)
        if child is not None:
            return self.getattr(self.dir_ino(child))
        cft = BY_NAME.get(name)
        if cft is None or not cft.exists_in(memcg, self.engine.config):
            raise EngineError(errno.ENOENT, name)
        return self.getattr(self.file_ino(memcg, cft))

    def readdir(self, ino: int) -> list:
        """(name, Attr) pairs: control files, then child cgroups. `.kmemfs` is not listed."""
        memcg = self._dir(ino)
        if memcg == "ctl":
            return [(n, self.getattr(i)) for n, i in self.special_ino.items()]
        out = [(c.name, self.getattr(self.file_ino(memcg, c))) for c in FILES
               if c.exists_in(memcg, self.engine.config)]
        out += [(n, self.getattr(self.dir_ino(c))) for n, c in memcg.children.items()]
        return out

    def _check_name(self, memcg, name: str) -> None:
        if len(os.fsencode(name)) > NAME_MAX:
            raise EngineError(errno.ENAMETOOLONG, "name longer than 255 bytes")
        if name in (".", "..") or name in memcg.children or (
                name in BY_NAME and BY_NAME[name].exists_in(memcg, self.engine.config)) or (
                memcg.is_root and name == CTL_DIR and self.special):
            raise EngineError(errno.EEXIST, f"{name} exists")

    def mkdir(self, parent_ino: int, name: str, req: Request = None) -> Attr:
        memcg = self._dir(parent_ino)
        if memcg == "ctl":
            raise EngineError(errno.EPERM, "the control directory holds no cgroups")
        self._check_name(memcg, name)
        child = self.engine.mkdir(memcg, name)
        self.memcgs[child.id] = child
        if self.clone_children.get(memcg.id):          # cgroup_create copies the flag
            self.clone_children[child.id] = 1
        return self.getattr(self.dir_ino(child))

    def rmdir(self, parent_ino: int, name: str) -> list:
        """Returns the event registrations the removal dropped: cgroup_rmdir signals them
        only once the directory is gone, so the caller calls notify_removed() after it has
        answered the rmdir (a listener that wakes must find the cgroup gone)."""
        memcg = self._dir(parent_ino)
        if memcg == "ctl" or (memcg.is_root and name == CTL_DIR and self.special):
            raise EngineError(errno.EBUSY if memcg != "ctl" else errno.ENOTDIR, name)
        child = memcg.children.get(name)
        if child is None:
            if name in BY_NAME and BY_NAME[name].exists_in(memcg, self.engine.config):
                raise EngineError(errno.ENOTDIR, f"{name} is a control file")
            raise EngineError(errno.ENOENT, name)
        self.prune_tasks()
        self.engine.rmdir(child)
        del self.memcgs[child.id]
        self.after_change()
        return self.events.pop(child.id, [])

    @staticmethod
    def notify_removed(regs) -> None:
        for reg in regs:
            reg.eventfd.signal()
            reg.eventfd.close()

    def rename(self, old_parent: int, old: str, new_parent: int, new: str) -> None:
        """cgroup_rename: ENOTDIR for a file, EEXIST onto a name, EIO across parents."""
        memcg = self._dir(old_parent)
        if memcg == "ctl" or (memcg.is_root and old == CTL_DIR):
            raise EngineError(errno.EPERM, "the control directory cannot be renamed")
        child = memcg.children.get(old)
        if child is None:
            if old in BY_NAME:
                raise EngineError(errno.ENOTDIR, f"{old} is a control file")
            raise EngineError(errno.ENOENT, old)
        target = self._dir(new_parent)
        if target == "ctl":
            raise EngineError(errno.EIO, "rename across directories")
        try:
            self._check_name(target, new)
        except EngineError as e:
            if e.errno == errno.EEXIST and target is memcg and new == old:
                return
            raise
        if target is not memcg:
            raise EngineError(errno.EIO, "rename across directories")
        self.engine.rename(child, new)

    # ------------------------------------------------------------------ files
    def open(self, ino: int, req: Request = None) -> int:
        memcg, cft = self.resolve(ino)
        if cft is None:
            raise EngineError(errno.EISDIR, "is a directory")
        h = Handle(ino, memcg if memcg != "ctl" else None, cft if memcg != "ctl" else None,
                   self.special[cft] if memcg == "ctl" else None)
        if h.special is not None and hasattr(h.special, "open"):
            h.special.open(self, h, req or Request())
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = h
        return fh

    def release(self, fh: int) -> None:
        self.handles.pop(fh, None)

    def handle(self, fh: int) -> Handle:
        h = self.handles.get(fh)
        if h is None:
            raise EngineError(errno.EBADF, "stale file handle")
        return h

    def read(self, fh: int, off: int, size: int) -> bytes:
        """seq_file style: the text is made at offset 0 and later offsets read that snapshot."""
        h = self.handle(fh)
        if h.special is not None:
            return h.special.read(self, h, off, size)
        if h.memcg.removed:
            raise EngineError(errno.ENODEV, "the cgroup was removed")
        if h.cft.read is None:
            raise EngineError(errno.EINVAL, "file is write-only")
        if off == 0 or h.snapshot is None:
            h.snapshot = encode(h.cft.read(self, h.memcg))
        return h.snapshot[off:off + size]

    def write(self, fh: int, off: int, data: bytes, req: Request = None):
        """One write(2): parsed as the cgroup core parses it, then handed to the file's handler.
        Returns the byte count, or a Pending the caller must await (control plane only)."""
        h = self.handle(fh)
        req = req or Request()
        if h.special is not None:
            return h.special.write(self, h, data, req)
        if h.memcg.removed:
            raise EngineError(errno.ENODEV, "the cgroup was removed")
        cft = h.cft
        if cft.write is None:
            raise EngineError(errno.EINVAL, "file is read-only")
        if cft.kind == "u64":
            value = parse.write_u64(data)
        elif cft.kind == "string":
            value = parse.write_string(data, cft.max_write_len)
        else:
            value = None
        try:
            cft.write(self, h.memcg, value, req)
        finally:
            self.after_change()
        return len(data)

    # ------------------------------------------------------------------ tasks
    def prune_tasks(self) -> None:
        """A host process that exited leaves its cgroup, and its anon charges go with it."""
        for pid, t in list(self.engine.tasks.items()):
            if not t.simulated and not self.host.exists(pid):
                self.engine.exit_task(pid, "host_exit")

    def tasks_read(self, memcg, threads: bool) -> str:
        self.prune_tasks()
        if memcg.is_root:
            elsewhere = {p for p, t in self.engine.tasks.items() if not t.memcg.is_root}
            pids = set(self.host.tids() if threads else self.host.pids()) - elsewhere
            pids |= set(memcg.tasks)
        else:
            pids = {p if threads or memcg.tasks[p].simulated else self.host.tgid(p)
                    for p in memcg.tasks}
        return "".join(f"{p}\n" for p in sorted(pids))

    def tasks_write(self, memcg, pid: int, req: Request) -> None:
        """attach_task_by_pid: 0 is the writer; an unknown pid is ESRCH (spec 8.1)."""
        pid = pid or req.pid
        t = self.engine.tasks.get(pid)
        if t is not None and not t.simulated and not self.host.exists(pid):
            self.engine.exit_task(pid, "host_exit")
            t = None
        if t is None and (pid >= 1 << 31 or not self.host.exists(pid)):
            raise EngineError(errno.ESRCH, f"no process {pid}")
        self.engine.attach(memcg, pid, comm="" if t else self.host.comm(pid))

    def set_release_agent(self, s: bytes) -> None:
        self.release_agent = s.decode(errors="surrogateescape")

    def force_empty(self, memcg) -> None:
        self.prune_tasks()
        self.engine.force_empty(memcg, host_tasks=memcg.is_root)

    # ------------------------------------------------------------------ events (spec 8.1)
    def event_control(self, memcg, s: bytes, req: Request) -> None:
        """cgroup_write_event_control: "<event_fd> <fd> [args]"."""
        efd, i = parse.simple_strtoull(s, 10)
        if s[i:i + 1] != b" ":
            raise EngineError(errno.EINVAL, "expected '<event_fd> <fd> [args]'")
        rest = s[i + 1:]
        cfd, j = parse.simple_strtoull(rest, 10)
        if rest[j:j + 1] not in (b" ", b""):
            raise EngineError(errno.EINVAL, "expected '<event_fd> <fd> [args]'")
        args = rest[j + 1:]
        if self.import_eventfd is None or self.resolve_fd is None:
            raise EngineError(errno.EINVAL, "event notification is not available here")
        eventfd = self.import_eventfd(req.pid, efd)
        try:
            ino = self.resolve_fd(req.pid, cfd)
            try:
                _, cft = self.resolve(ino)
            except EngineError:
                raise EngineError(errno.EINVAL, "fd is not a cgroup control file") from None
            if not isinstance(cft, CFType) or cft.event is None:
                raise EngineError(errno.EINVAL, "that file does not take events")
            threshold = None
            if cft.event in ("usage", "memsw"):
                threshold = parse.memparse_write_strategy(args, self.engine.page)
            regs = self.events.setdefault(memcg.id, [])
            # mem_cgroup_usage_register_event checks the existing thresholds first, and
            # counts a new one equal to usage as not yet crossed (entries[i] < usage).
            if threshold is not None:
                self._check_thresholds(memcg, [r for r in regs if r.kind == cft.event])
            usage = self._usage(memcg, cft.event)
            reg = Registration(cft.event, threshold, eventfd, usage - 1, memcg.threshold_checks)
            regs.append(reg)
            if cft.event == "oom" and memcg.under_oom:
                eventfd.signal()
        except Exception:
            eventfd.close()
            raise

    def _usage(self, memcg, kind: str) -> int:
        return render.usage(self.engine, memcg, memsw=(kind == "memsw"))

    def after_change(self) -> None:
        """Signal thresholds crossed in either direction, and OOM to oom_control listeners
        of the memcg and its subtree (mem_cgroup_oom_notify)."""
        log = self.special.get("events")
        if log is not None:
            log.sync(self.engine)        # stamps the new events with the time they happened
        if not self.events:
            self.seen_event = self.engine.event_seq
            return
        for mid, regs in self.events.items():
            memcg = self.memcgs.get(mid)
            if memcg is not None:
                self._check_thresholds(memcg, [r for r in regs if r.kind != "oom" and
                                               r.checks != memcg.threshold_checks])
        for _, kind, f in self.engine.events_since(self.seen_event):
            if kind in ("under_oom", "oom_kill"):
                top = self.by_path(f["cgroup"])
                for m in (top.tree() if top is not None else ()):
                    for reg in self.events.get(m.id, ()):
                        if reg.kind == "oom":
                            reg.eventfd.signal()
        self.seen_event = self.engine.event_seq

    def _check_thresholds(self, memcg, regs) -> None:
        """__mem_cgroup_threshold: signal the thresholds crossed since the last look. After
        a change it runs only where the engine's memcg_check_events ran (page charge,
        uncharge and move paths, never slab charges: issue 10 item 6)."""
        for reg in regs:
            now = self._usage(memcg, reg.kind)
            t = reg.threshold
            if (reg.last < t <= now) or (now < t <= reg.last):
                reg.eventfd.signal()
            reg.last, reg.checks = now, memcg.threshold_checks

    def by_path(self, path: str):
        m = self.engine.root
        for part in filter(None, path.split("/")):
            m = m.children.get(part)
            if m is None:
                return None
        return m

    def close(self) -> None:
        for regs in self.events.values():
            for reg in regs:
                reg.eventfd.close()
        self.events.clear()


@dataclass
class Registration:
    kind: str
    threshold: Optional[int]
    eventfd: object
    last: int
    checks: int = 0       # the memcg's threshold_checks when last looked at
