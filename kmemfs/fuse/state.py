"""Saving and restoring the whole model (`kmemfs mount --state FILE`).

The file is a header line, a SHA-256 line and a pickle of the engine plus the file system's
own settings. Loading uses an unpickler that only admits kmemfs's engine classes and a few
containers, so a state file cannot run code; a corrupt, truncated or foreign file is refused
with the reason, never silently replaced. Saving is atomic: a temporary file in the same
directory, fsync, rename, fsync of the directory.
"""
import hashlib
import io
import os
import pickle

MAGIC = b"KMEMFS-STATE"
VERSION = 2     # 2: Memcg.threshold_checks, Task.memdie
ALLOWED = {("collections", "deque"), ("builtins", "set"), ("builtins", "frozenset"),
           ("copyreg", "_reconstructor"), ("builtins", "object")}


class StateError(Exception):
    pass


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("kmemfs.engine.") or (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise StateError(f"refers to {module}.{name}, which a kmemfs state never holds")


def snapshot(fs) -> dict:
    return {"engine": fs.engine, "release_agent": fs.release_agent,
            "clone_children": dict(fs.clone_children), "overrides": dict(fs.overrides)}


def dumps(fs) -> bytes:
    payload = pickle.dumps(snapshot(fs), protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.sha256(payload).hexdigest().encode()
    return b"%s %d\n%s\n" % (MAGIC, VERSION, digest) + payload


def save(fs, path: str) -> None:
    data = dumps(fs)
    path = os.path.abspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def loads(data: bytes, source: str = "state file") -> dict:
    header, _, rest = data.partition(b"\n")
    digest, _, payload = rest.partition(b"\n")
    magic, _, version = header.partition(b" ")
    if magic != MAGIC:
        raise StateError(f"{source}: not a kmemfs state file")
    if version != str(VERSION).encode():
        raise StateError(f"{source}: state format {version.decode(errors='replace')!r}, "
                         f"this kmemfs reads format {VERSION}")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise StateError(f"{source}: checksum mismatch (the file is truncated or corrupt)")
    try:
        state = _Unpickler(io.BytesIO(payload)).load()
    except StateError as e:
        raise StateError(f"{source}: {e}") from None
    except Exception as e:
        raise StateError(f"{source}: cannot decode the model ({type(e).__name__}: {e})") from None
    from ..engine import Engine
    if not isinstance(state, dict) or not isinstance(state.get("engine"), Engine):
        raise StateError(f"{source}: holds no kmemfs model")
    return state


def load(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise StateError(f"{path}: {e.strerror}") from None
    return loads(data, path)


def restore(state: dict, special_files):
    """A CgroupFS over the restored engine. Writers that slept on an OOM are gone."""
    from ..cgroupfs.tree import CgroupFS
    engine = state["engine"]
    for m in engine.root.walk():
        m.under_oom = 0
    engine.nr_under_oom = 0
    fs = CgroupFS(engine, special_files=special_files)
    fs.memcgs = {m.id: m for m in engine.root.walk()}
    fs.release_agent = state["release_agent"]
    fs.clone_children = state["clone_children"]
    fs.overrides = state["overrides"]
    return fs
