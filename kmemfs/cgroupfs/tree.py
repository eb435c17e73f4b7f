"""The cgroup filesystem, independent of FUSE: inodes, lookup, readdir, open/read/write with
per-open buffers, mkdir/rmdir/rename, and every errno decision (3.3 kernel/cgroup.c).

Inode numbers: the root directory is 1, the hidden control directory 2 and its files 3..;
a memcg with id k has directory inode k<<6 (root: 1) and file inodes (k<<6)|(index+1).
Each kernel lookup of `.kmemfs/ctl` gets an inode of its own (PRIVATE_INO + n, never cached):
the kernel serialises writes to one FUSE inode, so one ctl writer sleeping on an OOM would
otherwise hold every other writer in D state (issue 9 item 5).
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
PRIVATE_INO = 1 << 48        # per-lookup ctl inodes; memcg inodes stay below 2^22
MAX_HANDLES_PER_UID = 4096   # open files a non-root user may hold (issue 9 item 10): ENFILE
MAX_EVENTS_PER_UID = 1024    # event registrations a non-root user may hold (item 9): ENOSPC
HOST_VIEWS = {"tasks", "cgroup.procs"}   # list host processes: never a shared snapshot


def encode(text: str) -> bytes:
    """Names are bytes to the kernel: a cgroup called b'\\xff' reads back as b'\\xff'."""
    return text.encode("utf-8", "surrogateescape")


@dataclass
class Request:
    """Who is asking: the FUSE request's context (uid/gid are the caller's fsuid/fsgid).
    `pidfd` (set by the adapter at open for files that act on the writer's behalf) pins the
    opener: a pid reused after it exited can never stand for it."""
    pid: int = 0
    uid: int = 0
    gid: int = 0
    pidfd: Optional[int] = None


@dataclass
class Attr:
    ino: int
    mode: int
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    size: int = 0
    time_ns: int = 0
    cache: bool = True       # False: the kernel must not cache the entry (per-lookup ctl)


@dataclass
class Handle:
    ino: int
    memcg: object = None
    cft: Optional[CFType] = None
    special: Optional[object] = None     # a control-plane file
    snapshot: Optional[bytes] = None
    state: dict = field(default_factory=dict)
    req: Request = field(default_factory=Request)


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
        # `-o follow` (trace/follow.py Follower): attached(pid) after a tasks write,
        # follows(pid), status(), stats(); None when not following
        self.follow = None
        self.seen_event = engine.event_seq
        # The control plane's files: name -> object with mode, read(fs, h), write(fs, h, data, req)
        self.special = dict(special_files or {})
        self.special_ino = {name: CTL_DIR_INO + 1 + i for i, name in enumerate(self.special)}
        self.special_name = {i: name for name, i in self.special_ino.items()}
        self.private = {}                    # per-lookup ctl inode -> kernel lookup count
        self.next_private = PRIVATE_INO
        self.version = 0                     # bumped by every change: snapshots are shared
        self.snapshots = {}                  # ino -> (version, bytes) last rendered
        self.open_by_uid = {}                # uid -> open handles
        self.events_held = {}                # uid -> event registrations

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
        if ino in self.private:
            return "ctl", "ctl"
        memcg = self.memcgs.get(ino >> 6)
        idx = ino & 63
        if memcg is None or (idx == 0 and memcg.is_root):
            raise EngineError(errno.ENOENT, "no such inode")
        if idx == 0:
            return memcg, None
        if idx > len(FILES) or not FILES[idx - 1].exists_in(memcg, self.engine.config):
            raise EngineError(errno.ENOENT, "no such inode")
        return memcg, FILES[idx - 1]

    def _private_ino(self) -> int:
        """A fresh inode for one kernel lookup of `.kmemfs/ctl` (forgotten by forget())."""
        ino = self.next_private
        self.next_private += 1
        self.private[ino] = 1
        return ino

    def forget(self, ino: int, n: int) -> None:
        if ino in self.private:
            self.private[ino] -= n
            if self.private[ino] <= 0:
                del self.private[ino]

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
            a = self._attr(self.special_ino[cft], stat.S_IFREG | sp.mode)
            a.ino, a.cache = ino, ino not in self.private
            a.size = sp.size(self) if hasattr(sp, "size") else 0
            return a
        if cft is None:
            return self._attr(ino, stat.S_IFDIR | 0o755, 2 + len(memcg.children))
        return self._attr(ino, stat.S_IFREG | cft.file_mode)

    def setattr(self, ino: int, mode=None, uid=None, gid=None) -> Attr:
        """chmod/chown work as on the kernel's cgroupfs (simple_setattr); truncate is a no-op."""
        a = self.getattr(ino)
        if ino in self.private:             # chmod of ctl holds for every later lookup
            ino = self.special_ino["ctl"]
        if mode is not None or uid is not None or gid is not None:
            self.overrides[ino] = (stat.S_IMODE(a.mode if mode is None else mode),
                                   a.uid if uid is None else uid, a.gid if gid is None else gid)
        return self.getattr(a.ino)

    # ------------------------------------------------------------------ directories
    def _dir(self, ino: int):
        memcg, cft = self.resolve(ino)
        if cft is not None:
            raise EngineError(errno.ENOTDIR, "not a directory")
        return memcg

    def lookup(self, parent_ino: int, name: str, kernel: bool = False) -> Attr:
        """`kernel`: the kernel's lookup, which it will forget() (per-lookup ctl inodes)."""
        if len(os.fsencode(name)) > NAME_MAX:        # cgroup_lookup
            raise EngineError(errno.ENAMETOOLONG, "name longer than 255 bytes")
        memcg = self._dir(parent_ino)
        if memcg == "ctl":
            if name not in self.special:
                raise EngineError(errno.ENOENT, name)
            if kernel and name == "ctl":
                return self.getattr(self._private_ino())
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

    def readdir(self, ino: int, start: int = 0):
        """(name, Attr) pairs from index `start`: control files, then child cgroups. `.kmemfs`
        is not listed. The kernel counts each entry it takes as a lookup (readdirplus), so ctl
        gets a private inode, made only when its entry is reached (forget() one not taken)."""
        memcg = self._dir(ino)
        if memcg == "ctl":
            return ((n, self.lookup(CTL_DIR_INO, n, kernel=True))
                    for n in list(self.special_ino)[start:])
        out = [(c.name, self.getattr(self.file_ino(memcg, c))) for c in FILES
               if c.exists_in(memcg, self.engine.config)]
        out += [(n, self.getattr(self.dir_ino(c))) for n, c in memcg.children.items()]
        return iter(out[start:])

    def _check_name(self, memcg, name: str) -> None:
        if len(os.fsencode(name)) > NAME_MAX:
            raise EngineError(errno.ENAMETOOLONG, "name longer than 255 bytes")
        if name in (".", "..") or name in memcg.children or (
                name in BY_NAME and BY_NAME[name].exists_in(memcg, self.engine.config)) or (
                memcg.is_root and name == CTL_DIR and self.special):
            raise EngineError(errno.EEXIST, f"{name} exists")

    def mkdir(self, parent_ino: int, name: str, req: Request = None, mode: int = 0o755) -> Attr:
        """cgroup_mkdir. The directory takes the mode mkdir(2) asked for (umask applied by the
        VFS) and it and its files belong to the creator: 3.3 cgroup_new_inode gives every
        inode current_fsuid()/current_fsgid(), and cgroup_populate_dir runs as the creator."""
        memcg = self._dir(parent_ino)
        if memcg == "ctl":
            raise EngineError(errno.EPERM, "the control directory holds no cgroups")
        self._check_name(memcg, name)
        child = self.engine.mkdir(memcg, name)
        self.memcgs[child.id] = child
        self.version += 1
        if self.clone_children.get(memcg.id):          # cgroup_create copies the flag
            self.clone_children[child.id] = 1
        req = req or Request()
        mode = stat.S_IMODE(mode)
        if (mode, req.uid, req.gid) != (0o755, 0, 0):
            self.overrides[self.dir_ino(child)] = (mode, req.uid, req.gid)
        if (req.uid, req.gid) != (0, 0):
            for cft in FILES:
                if cft.exists_in(child, self.engine.config):
                    self.overrides[self.file_ino(child, cft)] = (cft.file_mode, req.uid, req.gid)
        return self.getattr(self.dir_ino(child))

    def _drop_overrides(self, memcg) -> None:
        """chmod/chown of a removed cgroup go with it: its memcg id (and so its inode
        numbers) may be reused by a later mkdir, which must start with the defaults."""
        base = memcg.id << 6
        for ino in range(base, base + 64):
            self.overrides.pop(ino, None)
            self.snapshots.pop(ino, None)

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
        self._drop_overrides(child)
        self.after_change()
        regs = self.events.pop(child.id, [])
        for reg in regs:
            self.events_held[reg.uid] -= 1
        return regs

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
        self.version += 1

    # ------------------------------------------------------------------ files
    def open(self, ino: int, req: Request = None) -> int:
        """A handle per open file. A non-root user holds at most MAX_HANDLES_PER_UID of them:
        ENFILE, the daemon's file table for that user is full (docs/reliability.md)."""
        memcg, cft = self.resolve(ino)
        if cft is None:
            raise EngineError(errno.EISDIR, "is a directory")
        req = req or Request()
        held = self.open_by_uid.get(req.uid, 0)
        if req.uid and held >= MAX_HANDLES_PER_UID:
            raise EngineError(errno.ENFILE, f"uid {req.uid} holds {held} open kmemfs files")
        h = Handle(ino, memcg if memcg != "ctl" else None, cft if memcg != "ctl" else None,
                   self.special[cft] if memcg == "ctl" else None, req=req)
        if h.special is not None and hasattr(h.special, "open"):
            h.special.open(self, h, req)
        self.open_by_uid[req.uid] = held + 1
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = h
        return fh

    def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is not None:
            n = self.open_by_uid.get(h.req.uid, 1) - 1
            if n > 0:
                self.open_by_uid[h.req.uid] = n
            else:
                self.open_by_uid.pop(h.req.uid, None)

    def handle(self, fh: int) -> Handle:
        h = self.handles.get(fh)
        if h is None:
            raise EngineError(errno.EBADF, "stale file handle")
        return h

    def snapshot(self, h: Handle, off: int, render_fn, shared: bool = True) -> bytes:
        """seq_file: the text is made at the first read (or a read at offset 0) and later
        offsets read that snapshot. Handles that read at the same model version share one
        rendering, so N open handles cost one copy, not N (issue 9 item 10)."""
        if off == 0 or h.snapshot is None:
            version, text = self.snapshots.get(h.ino, (None, None)) if shared else (0, None)
            if version != self.version or text is None:
                text = encode(render_fn())
                if shared:
                    self.snapshots[h.ino] = (self.version, text)
            h.snapshot = text
        return h.snapshot

    def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.handle(fh)
        if h.special is not None:
            return h.special.read(self, h, off, size)
        if h.memcg.removed:
            raise EngineError(errno.ENODEV, "the cgroup was removed")
        if h.cft.read is None:
            raise EngineError(errno.EINVAL, "file is write-only")
        return self.snapshot(h, off, lambda: h.cft.read(self, h.memcg),
                             h.cft.name not in HOST_VIEWS)[off:off + size]

    def write(self, fh: int, off: int, data: bytes, req: Request = None):
        """One write(2): parsed as the cgroup core parses it, then handed to the file's handler.
        Returns the byte count, or a Pending the caller must await (control plane only)."""
        h = self.handle(fh)
        req = req or h.req
        if h.special is not None:
            return h.special.write(self, h, off, data, req)
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
                self._host_exit(pid)
                self.version += 1

    def _host_exit(self, pid: int) -> None:
        """A followed process's kernel objects outlive it until the trace shows their frees;
        another's (what ctl commands allocated for it) go with it."""
        keep = self.follow is not None and self.follow.follows(pid)
        self.engine.exit_task(pid, "host_exit", keep_objects=keep)

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
        """attach_task_by_pid: 0 is the writer; an unknown pid is ESRCH (3.3.8 kernel/cgroup.c); a
        writer whose euid is not 0 may move only a task whose uid or suid is its euid (EACCES)."""
        given, pid = pid, pid or req.pid
        t = self.engine.tasks.get(pid)
        if t is not None and not t.simulated and not self.host.exists(pid):
            self._host_exit(pid)
            t = None
        if t is None and (pid >= 1 << 31 or not self.host.exists(pid)):
            raise EngineError(errno.ESRCH, f"no process {pid}")
        if given:
            euid = self.writer_euid(req)
            tcred = (0, 0, 0) if t is not None and t.simulated else self.host.creds(pid)
            if euid and (tcred is None or euid not in (tcred[0], tcred[2])):
                raise EngineError(errno.EACCES, f"euid {euid} may not move pid {pid}")
        self.engine.attach(memcg, pid, comm="" if t else self.host.comm(pid))
        if self.follow is not None:
            self.follow.attached(pid)

    def writer_euid(self, req: Request) -> int:
        """The writer's euid, read from /proc as it is now (3.3 checks current_cred() at the
        write). The writer is the opener, pinned by its pidfd: if it has exited, whoever
        writes on its file now cannot be known, and is refused. Simulated tasks belong to
        root (only root's ctl makes them)."""
        if not req.pid:
            return req.uid
        if req.pidfd is not None and self.host.exited(req.pidfd):
            raise EngineError(errno.EACCES, f"the process that opened this file ({req.pid}) "
                              "has exited")
        cred = self.host.creds(req.pid)
        if req.pidfd is not None and self.host.exited(req.pidfd):
            raise EngineError(errno.EACCES, f"pid {req.pid} exited while checked")
        return cred[1] if cred is not None else req.uid

    def set_release_agent(self, s: bytes) -> None:
        self.release_agent = s.decode(errors="surrogateescape")

    def force_empty(self, memcg) -> None:
        self.prune_tasks()
        self.engine.force_empty(memcg, host_tasks=memcg.is_root)

    # ------------------------------------------------------------------ events (kernel/cgroup.c)
    def event_control(self, memcg, s: bytes, req: Request) -> None:
        """cgroup_write_event_control: "<event_fd> <fd> [args]". The fds are the writer's
        (the opener's, through the pidfd taken at open: a reused pid is never asked). As in
        3.3.8 the control file may be of another cgroup (the event registers on this one)
        and the writer needs read permission on it. A non-root user holds at most
        MAX_EVENTS_PER_UID registrations (ENOSPC)."""
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
        held = self.events_held.get(req.uid, 0)
        if req.uid and held >= MAX_EVENTS_PER_UID:
            raise EngineError(errno.ENOSPC, f"uid {req.uid} holds {held} event registrations")
        eventfd = self.import_eventfd(req, efd)
        try:
            ino = self.resolve_fd(req.pid, cfd)
            try:
                _, cft = self.resolve(ino)
            except EngineError:
                raise EngineError(errno.EINVAL, "fd is not a cgroup control file") from None
            if not isinstance(cft, CFType):
                raise EngineError(errno.EINVAL, "fd is not a cgroup control file")
            if not self.may_read(self.getattr(ino), req):     # inode_permission(MAY_READ)
                raise EngineError(errno.EACCES, f"no read permission on {cft.name}")
            if cft.event is None:
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
            reg = Registration(cft.event, threshold, eventfd, usage - 1,
                               checks=memcg.threshold_checks, uid=req.uid)
            regs.append(reg)
            self.events_held[req.uid] = held + 1
            if cft.event == "oom" and memcg.under_oom:
                eventfd.signal()
        except Exception:
            eventfd.close()
            raise

    @staticmethod
    def may_read(a: Attr, req: Request) -> bool:
        """generic_permission for MAY_READ with the caller's fsuid/fsgid (root may)."""
        if req.uid == 0:
            return True
        if req.uid == a.uid:
            return bool(a.mode & 0o400)
        if req.gid == a.gid:
            return bool(a.mode & 0o040)
        return bool(a.mode & 0o004)

    def _usage(self, memcg, kind: str) -> int:
        return render.usage(self.engine, memcg, memsw=(kind == "memsw"))

    def after_change(self) -> None:
        """Signal thresholds crossed in either direction, and OOM to oom_control listeners
        of the memcg and its subtree (mem_cgroup_oom_notify)."""
        self.version += 1
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
        self.events_held.clear()


@dataclass
class Registration:
    kind: str
    threshold: Optional[int]
    eventfd: object
    last: int
    checks: int = 0       # the memcg's threshold_checks when last looked at
    uid: int = 0          # who registered it (a per-uid cap: docs/reliability.md)
