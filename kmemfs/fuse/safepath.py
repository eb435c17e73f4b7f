"""Paths the root daemon writes to (--state, --log) or mounts on, handed to it by a user.

The rule (issue 9 items 2 and 13): never through a symlink or a directory someone else
controls. A path is resolved once, component by component; a symlink on the way is followed
only if root (or the daemon's own user) owns it, and every directory of the resolved path must
belong to root (or the daemon's user) and be writable by nobody else unless it has the sticky
bit (as /tmp). Files are then created and opened relative to a descriptor of their directory
with O_NOFOLLOW, new files with O_EXCL, and refused unless they are plain files with one link
and a trusted owner, so nothing can be swapped in between the check and the use.
"""
import errno
import os
import secrets
import stat
from collections import deque

MAX_HOPS = 40   # MAXSYMLINKS of the kernel


class UnsafePath(Exception):
    """A one-line reason a path is refused."""


def trusted_uids() -> set:
    return {0, os.geteuid()}


def resolve(path: str, last_may_fail: bool = False) -> str:
    """The real absolute path, following only symlinks a trusted user owns. A missing last
    component is fine (a file still to be created); with `last_may_fail` so is an error on it
    (a stale FUSE mount point answers ENOTCONN: it is a mount root, never a symlink)."""
    parts = deque(p for p in os.path.abspath(path).split("/") if p)
    done, hops = "/", 0
    while parts:
        name = parts.popleft()
        if name in (".", ""):
            continue
        if name == "..":
            done = os.path.dirname(done)
            continue
        here = os.path.join(done, name)
        try:
            st = os.lstat(here)
        except OSError as e:
            if not parts and (e.errno == errno.ENOENT or last_may_fail):
                return here
            raise UnsafePath(f"{here}: {e.strerror}") from None
        if not stat.S_ISLNK(st.st_mode):
            done = here
            continue
        if st.st_uid not in trusted_uids():
            raise UnsafePath(f"{here} is a symlink owned by uid {st.st_uid}, not by root: "
                             "refusing to follow it")
        hops += 1
        if hops > MAX_HOPS:
            raise UnsafePath(f"{path}: too many levels of symbolic links")
        target = os.readlink(here)
        parts.extendleft(reversed(target.split("/")))
        if target.startswith("/"):
            done = "/"
    return done


def check_dirs(directory: str) -> None:
    """Every directory from / down to `directory` (a resolved path) is one only a trusted
    user can change: a trusted owner, and not writable by others unless sticky."""
    path = "/"
    for name in [""] + [p for p in directory.split("/") if p]:
        path = os.path.join(path, name)
        try:
            st = os.lstat(path)
        except OSError as e:
            raise UnsafePath(f"{path}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"{path}: not a directory")
        if st.st_uid not in trusted_uids():
            raise UnsafePath(f"{path} belongs to uid {st.st_uid}: only root may own the "
                             "directories of a path the daemon writes to")
        others = st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != 0)
        if others and not st.st_mode & stat.S_ISVTX:
            raise UnsafePath(f"{path} is writable by other users without the sticky bit")


def _check_file(fd: int, where: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(f"{where}: not a regular file")
    if st.st_uid not in trusted_uids():
        raise UnsafePath(f"{where} belongs to uid {st.st_uid}, not to root")
    if st.st_nlink != 1:
        raise UnsafePath(f"{where} has {st.st_nlink} hard links")


class SafeDir:
    """A checked directory, held open; files in it are named relative to it."""

    def __init__(self, path: str):
        """`path` is a file to live in this directory; resolved and checked here, once."""
        real = resolve(path)
        self.dir, self.name = os.path.split(real)
        self.path = real
        if not self.name:
            raise UnsafePath(f"{path}: names a directory, not a file")
        check_dirs(self.dir)
        try:
            self.fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                              | os.O_CLOEXEC)
        except OSError as e:
            raise UnsafePath(f"{self.dir}: {e.strerror}") from None

    def close(self) -> None:
        os.close(self.fd)

    def _open(self, flags: int, mode: int = 0o600) -> int:
        try:
            fd = os.open(self.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         mode, dir_fd=self.fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePath(f"{self.path} is a symlink: refusing to follow it") from None
            if e.errno == errno.ENXIO:      # O_NONBLOCK write-open of a FIFO nobody reads
                raise UnsafePath(f"{self.path}: not a regular file (a FIFO)") from None
            raise
        try:
            _check_file(fd, self.path)           # O_NONBLOCK: a planted FIFO cannot hang us
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def exists(self) -> bool:
        try:
            os.stat(self.name, dir_fd=self.fd, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False

    def read(self) -> bytes:
        with os.fdopen(self._open(os.O_RDONLY), "rb") as f:
            return f.read()

    def open_append(self):
        """A line-buffered text stream appending to the file (created 0600 if missing)."""
        return os.fdopen(self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", buffering=1)

    def temp_prefix(self) -> str:
        return f"{self.name}.tmp."

    def replace(self, data: bytes) -> None:
        """Atomically replace the file: a fresh temporary (O_EXCL|O_NOFOLLOW) in the same
        directory, fsync, rename over the file, fsync of the directory. On any failure the
        temporary is removed and the old file is left as it was."""
        tmp = f"{self.temp_prefix()}{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=self.fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass
            raise
        os.fsync(self.fd)

    def remove_stale_temps(self) -> list:
        """Temporaries a killed daemon left behind (plain files of ours named FILE.tmp.*)."""
        gone = []
        for entry in os.listdir(self.fd):
            if not entry.startswith(self.temp_prefix()):
                continue
            try:
                st = os.stat(entry, dir_fd=self.fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                    os.unlink(entry, dir_fd=self.fd)
                    gone.append(entry)
            except OSError:
                pass
        return gone


def open_log(path: str):
    """`--log FILE`: the stream logging writes to, opened as above."""
    d = SafeDir(path)
    try:
        return d.open_append()
    except OSError as e:
        raise UnsafePath(f"{d.path}: {e.strerror}") from None
    finally:
        d.close()
