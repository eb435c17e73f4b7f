"""`kmemfs exec MOUNTPOINT [--] COMMAND...`: run COMMAND with kmemfs as the system's cgroup v1
memory hierarchy, inside a private mount namespace (nothing outside it changes).

What unmodified tools look at, and what this puts there (docs: README "kmemfs exec"):
  /sys/fs/cgroup/memory      kmemfs, bind-mounted (systemd-cgtop, cgroupspy, scripts)
  /proc/slabinfo             kmemfs's global .kmemfs/slabinfo, bind-mounted (slabtop)
  /proc/mounts, /proc/self/mounts, /proc/self/mountinfo, /proc/thread-self/...
                             the real table of the namespace with the kmemfs line at
                             /sys/fs/cgroup/memory spelled `cgroup ... cgroup rw,memory`
                             (libcgroup: cgcreate, cgset, cgget, lscgroup, cgdelete, cgexec)

Why the mount table needs a small FUSE file system of its own: `/proc/mounts` is a symlink to
`self/mounts`, and `/proc/self` is a magic link that the kernel resolves per process to
`/proc/<pid>`. A file bind-mounted over `/proc/self/mounts` therefore covers one pid's file
only (the pid that resolved `self` when mounting): children, whose pids did not exist yet, see
the real table — which is why cgexec's children missed the fake table when done by hand. A
static copy of /proc cannot follow new pids either. So kmemfs exec mounts, over the `/proc/self`
and `/proc/thread-self` symlinks themselves (open_tree + move_mount, which do not follow them),
symlinks to directories of a small FUSE file system (`procself`, below) that sees each
caller's pid: there `mounts` and `mountinfo` are the caller's real table, rewritten, and every
other name is a symlink to the caller's real `/proc/<pid>/<name>` (so /proc/self/fd/N,
/proc/self/status ... stay the real, per-process files). /proc/mounts follows /proc/self.
Explicit /proc/<pid>/mounts paths stay real.
"""
import errno
import os
import signal
import stat
import sys

CGROUP_MEMORY = "/sys/fs/cgroup/memory"
LINK_NAMES = {"self": "self-link", "thread-self": "thread-self-link"}    # in procself's root

CLONE_NEWNS = 0x20000
MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 0x1000, 0x4000, 1 << 18, 2
SYS_open_tree, SYS_move_mount = 428, 429
OPEN_TREE_CLONE, AT_FDCWD, AT_SYMLINK_NOFOLLOW = 1, -100, 0x100
MOVE_MOUNT_F_EMPTY_PATH = 4


class ExecError(Exception):
    pass


def libc():
    """libc through ctypes, loaded on first use (not when `kmemfs` merely starts)."""
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


_libc = None


def _check(rc, what):
    if rc < 0:
        import ctypes
        e = ctypes.get_errno()
        raise ExecError(f"{what}: {os.strerror(e)}")
    return rc


def mount(source, target, fstype=None, flags=0, data=None):
    import ctypes
    _check(libc().mount(None if source is None else os.fsencode(source), os.fsencode(target),
                        None if fstype is None else os.fsencode(fstype), ctypes.c_ulong(flags),
                        None if data is None else os.fsencode(data)),
           f"mount {source} on {target}")


def mount_over_link(source, target):
    """Bind `source` (a symlink, not followed) over `target` (a symlink, not followed)."""
    fd = _check(libc().syscall(SYS_open_tree, AT_FDCWD, os.fsencode(source),
                              OPEN_TREE_CLONE | os.O_CLOEXEC | AT_SYMLINK_NOFOLLOW),
                f"open_tree {source}")
    try:
        _check(libc().syscall(SYS_move_mount, fd, b"", AT_FDCWD, os.fsencode(target),
                             MOVE_MOUNT_F_EMPTY_PATH), f"move_mount onto {target}")
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the mount table, rewritten
def _is_target(mountpoint: str) -> bool:
    return mountpoint.replace("\\040", " ") == CGROUP_MEMORY


def fake_mounts(text: str) -> str:
    """/proc/PID/mounts with kmemfs at /sys/fs/cgroup/memory named a cgroup v1 memory
    hierarchy; the real memory hierarchy it covers there is left out."""
    out = []
    for line in text.splitlines(keepends=True):
        f = line.split(" ")
        if len(f) >= 4 and _is_target(f[1]):
            if not f[2].startswith("fuse"):
                continue                       # the covered hierarchy
            ro = f[3].split(",")[0]
            line = f"cgroup {f[1]} cgroup {ro},nosuid,nodev,noexec,relatime,memory 0 0\n"
        out.append(line)
    return "".join(out)


def fake_mountinfo(text: str) -> str:
    """/proc/PID/mountinfo likewise: `... - cgroup cgroup rw,memory` (fstype, source, super
    options); the id, parent, device and mount options stay the real ones."""
    out = []
    for line in text.splitlines(keepends=True):
        head, sep, tail = line.partition(" - ")
        f = head.split(" ")
        if sep and len(f) >= 5 and _is_target(f[4]):
            if not tail.startswith("fuse"):
                continue
            line = f"{head} - cgroup cgroup rw,memory\n"
        out.append(line)
    return "".join(out)


REWRITE = {"mounts": fake_mounts, "mountinfo": fake_mountinfo}


# ------------------------------------------------------------------ procself: per-caller /proc/self
def serve_procself(mountpoint: str, ready_fd: int) -> None:
    """The FUSE file system behind /proc/self and /proc/thread-self (module docstring).
    Its root holds `self-link` and `thread-self-link`, whose targets depend on the caller
    (`<mp>/<tgid>` and `<mp>/t<tid>`: the last component is the pid, as in /proc), and the
    directories `<pid>` / `t<tid>` they point to. It never resolves /proc/self itself."""
    import pyfuse3
    import trio

    ROOT = pyfuse3.ROOT_INODE
    LINKS = {2: "self", 3: "thread-self"}
    keys, inodes = {}, {}      # ino -> key, key -> ino; key: (dir,) or (dir, name), dir: "123"/"t123"

    def callers(ctx):
        tid = ctx.pid
        with open(f"/proc/{tid}/status") as f:
            tgid = next(ln.split()[1] for ln in f if ln.startswith("Tgid:"))
        return tgid, str(tid)

    def base(d):
        """The real /proc directory behind `123` (a process) or `t123` (a thread)."""
        if not d.startswith("t"):
            return f"/proc/{d}"
        with open(f"/proc/{d[1:]}/status") as f:
            tgid = next(ln.split()[1] for ln in f if ln.startswith("Tgid:"))
        return f"/proc/{tgid}/task/{d[1:]}"

    def ino_of(key):
        if key not in inodes:
            inodes[key] = 16 + len(inodes)
            keys[inodes[key]] = key
        return inodes[key]

    def attr(ino, mode):
        a = pyfuse3.EntryAttributes()
        a.st_ino, a.st_mode, a.st_nlink = ino, mode, 1
        a.entry_timeout = a.attr_timeout = 0.0    # answers depend on the caller: no caching
        return a

    def mode_of(ino):
        if ino == ROOT or len(keys.get(ino, ("", ""))) == 1:
            return stat.S_IFDIR | 0o555
        if ino in LINKS or keys[ino][1] not in REWRITE:
            return stat.S_IFLNK | 0o777
        return stat.S_IFREG | 0o444

    class Ops(pyfuse3.Operations):
        async def getattr(self, ino, ctx=None):
            if ino != ROOT and ino not in LINKS and ino not in keys:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return attr(ino, mode_of(ino))

        async def lookup(self, parent, name, ctx=None):
            name = os.fsdecode(name)
            try:
                if parent == ROOT:
                    ino = next((i for i, d in LINKS.items() if LINK_NAMES[d] == name), None)
                    if ino is None:
                        if not name.lstrip("t").isdigit():
                            raise pyfuse3.FUSEError(errno.ENOENT)
                        os.stat(base(name))
                        ino = ino_of((name,))
                else:
                    d = keys[parent][0]
                    os.lstat(f"{base(d)}/{name}")
                    ino = ino_of((d, name))
            except OSError as e:
                raise pyfuse3.FUSEError(e.errno or errno.ENOENT) from None
            return await self.getattr(ino)

        async def readlink(self, ino, ctx):
            tgid, tid = callers(ctx)
            if ino in LINKS:
                return os.fsencode(f"{mountpoint}/{tgid if LINKS[ino] == 'self' else 't' + tid}")
            d, name = keys[ino]
            path = f"{base(d)}/{name}"
            if os.path.islink(path):          # exe, cwd, root: what the real one says
                return os.fsencode(os.readlink(path))
            return os.fsencode(path)          # fd/, status ...: the real entry

        async def open(self, ino, flags, ctx):
            key = keys.get(ino, ())
            if len(key) != 2 or key[1] not in REWRITE:
                raise pyfuse3.FUSEError(errno.EACCES)
            try:
                with open(f"{base(key[0])}/{key[1]}") as f:
                    text = REWRITE[key[1]](f.read())
            except OSError as e:
                raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
            fh = self.next_fh = self.next_fh + 1
            self.texts[fh] = text.encode()
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

        async def read(self, fh, off, size):
            return self.texts[fh][off:off + size]

        async def release(self, fh):
            self.texts.pop(fh, None)

        async def opendir(self, ino, ctx):
            fh = self.next_fh = self.next_fh + 1
            if ino == ROOT:
                self.listing[fh] = [(LINK_NAMES[d], i) for i, d in LINKS.items()]
            elif len(keys.get(ino, ())) == 1:
                d = keys[ino][0]
                try:
                    names = sorted(os.listdir(base(d)))
                except OSError as e:
                    raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
                self.listing[fh] = [(n, ino_of((d, n))) for n in names]
            else:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            return fh

        async def readdir(self, fh, start, token):
            for i, (name, ino) in enumerate(self.listing.get(fh, [])[start:], start):
                if not pyfuse3.readdir_reply(token, os.fsencode(name), attr(ino, mode_of(ino)),
                                             i + 1):
                    break

        async def releasedir(self, fh):
            self.listing.pop(fh, None)

    ops = Ops()
    ops.texts, ops.listing, ops.next_fh = {}, {}, 0
    pyfuse3.init(ops, mountpoint, {"fsname=kmemfs-procself", "subtype=kmemfs", "allow_other",
                                   "ro"})
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pyfuse3.main)
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:          # kmemfs exec is done: stop serving
                    nursery.cancel_scope.cancel()
                    break
    try:
        trio.run(main)
    finally:
        pyfuse3.close(unmount=True)


# ------------------------------------------------------------------ the command
def setup(kmemfs_mp: str, workdir: str) -> int:
    """In a fresh private mount namespace (already entered): the binds and the procself
    server. Returns the server's pid."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)    # mount --make-rprivate /, in here only
    if not os.path.isdir(CGROUP_MEMORY):
        # cgroup2 or nothing at /sys/fs/cgroup: a tmpfs with a memory directory, in here only
        mount("tmpfs", "/sys/fs/cgroup", "tmpfs", 0, "mode=755")
        os.mkdir(CGROUP_MEMORY)
    mount(kmemfs_mp, CGROUP_MEMORY, None, MS_BIND)
    mount(os.path.join(kmemfs_mp, ".kmemfs", "slabinfo"), "/proc/slabinfo", None, MS_BIND)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the procself server
        os.close(r)
        os.setsid()                # a ^C at the terminal is for COMMAND, not for the server
        try:
            serve_procself(workdir, w)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        if f.readline().strip() != "ready":
            raise ExecError("the /proc/self server did not start")
    for d, link in LINK_NAMES.items():
        mount_over_link(os.path.join(workdir, link), f"/proc/{d}")
    return pid


def run(args) -> int:
    mp = os.path.abspath(args.mountpoint)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        cmd = [os.environ.get("SHELL", "/bin/sh")]
    if not os.path.exists(os.path.join(mp, ".kmemfs", "ctl")):
        print(f"kmemfs exec: {mp} is not a kmemfs mount (no .kmemfs/ctl)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("kmemfs exec: needs root (a mount namespace and bind mounts)", file=sys.stderr)
        return 2
    # The FUSE server's mountpoint: a private directory, removed on the way out.
    base = "/run" if os.path.isdir("/run") else "/tmp"
    workdir = os.path.join(base, f"kmemfs-exec.{os.getpid()}")
    os.mkdir(workdir, 0o700)
    server = None
    try:
        _check(libc().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        server = setup(mp, workdir)
        import subprocess
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)   # the command gets the ^C
        try:
            rc = subprocess.call(cmd)
        except OSError as e:
            print(f"kmemfs exec: {cmd[0]}: {e.strerror}", file=sys.stderr)
            rc = 127
        finally:
            signal.signal(signal.SIGINT, old)
        return rc if rc >= 0 else 128 - rc
    except ExecError as e:
        print(f"kmemfs exec: {e}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            for d in LINK_NAMES:
                libc().umount2(os.fsencode(f"/proc/{d}"), MNT_DETACH)
            os.kill(server, signal.SIGTERM)
            os.waitpid(server, 0)
        libc().umount2(os.fsencode(workdir), MNT_DETACH)
        try:
            os.rmdir(workdir)
        except OSError:
            pass


def add_parser(sub):
    import argparse
    p = sub.add_parser(
        "exec", help="run a command that sees kmemfs as /sys/fs/cgroup/memory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + """

In a private mount namespace (nothing outside it changes, and it goes away with the command):
kmemfs at /sys/fs/cgroup/memory, its .kmemfs/slabinfo at /proc/slabinfo, and a mount table
(/proc/mounts, /proc/self/mounts, /proc/self/mountinfo, for every process in there) that
names it `cgroup /sys/fs/cgroup/memory cgroup rw,...,memory`. Unmodified tools then work on
kmemfs: cgcreate/cgset/cgget/lscgroup/cgdelete/cgexec (cgroup-tools), slabtop, systemd-cgtop,
cgroupspy. Not faked: /proc/PID/cgroup (the kernel's), and limits are not enforced on real
processes (only on what kmemfs's control plane allocates). Needs root.

examples:
  kmemfs exec /tmp/kmemfs -- cgcreate -g memory:web
  kmemfs exec /tmp/kmemfs -- cgset -r memory.kmem.independent_kmem_limit=1 web
  kmemfs exec /tmp/kmemfs -- slabtop -o
  kmemfs exec /tmp/kmemfs              # a shell""")
    p.add_argument("mountpoint", help="a kmemfs mount")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="the command and its arguments (default: $SHELL)")
    p.set_defaults(fn=run)
