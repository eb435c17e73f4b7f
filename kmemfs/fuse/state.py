"""Saving and restoring the whole model (`kmemfs mount --state FILE`).

The file is plain data, never code: a header line `KMEMFS-STATE 2`, a SHA-256 line (it only
catches accidents), then JSON. The JSON holds one table per engine class: every object of the
model as a record of its fields, references between objects as indices into the tables. What
each field may hold is written down once, in SCHEMA below, and everything is checked against it
on load, field by field: the file can only name classes and fields the schema lists, a value of
the wrong type is refused, then the object graph is checked (the cgroup tree is a tree, counter
chains end) and so are the model's invariants (`engine.check`). Saving checks the model against
the same schema, so a field someone adds to an engine class without adding it here makes every
save fail loudly, naming it (and tests/test_safety_state.py fails first).

Format 1 was a pickle and is refused unread: unpickling a file can run code.

Encoding and decoding walk the object graph with a work list, not recursion, so any tree the
daemon accepts can be saved (a 1,000-level tree broke the pickle). Where the file lives, and
how it is written without following anyone's symlink, is kmemfs/fuse/safepath.py.
"""
import dataclasses
import hashlib
import json
from collections import deque

from ..engine import Config, Engine, Memcg, Task, check
from ..engine.memcg import COUNTED
from ..engine.res_counter import ResCounter
from ..engine.slab import ArrayCache, KmemCache, Owner, Slab
from .safepath import SafeDir, UnsafePath

MAGIC = b"KMEMFS-STATE"
VERSION = 2


class StateError(Exception):
    pass


class _Bad(Exception):
    """A value that does not fit the schema; where it is grows as it propagates."""

    def at(self, where: str) -> "_Bad":
        msg = str(self)
        return _Bad(where + (msg if msg[:1] in ".[" else " " + msg))


# ---------------------------------------------------------------------------------- types
class _Type:
    def encode(self, v, refs):
        raise NotImplementedError

    def decode(self, v, objs):
        raise NotImplementedError


class _Exact(_Type):
    def __init__(self, *types):
        self.types = types

    def encode(self, v, refs):
        if type(v) not in self.types:
            raise _Bad(f"holds a {type(v).__name__}, the schema says "
                       f"{'/'.join(t.__name__ for t in self.types)}")
        return v

    decode = encode


INT, STR, BOOL = _Exact(int), _Exact(str), _Exact(bool)
NONE = _Exact(type(None))
SCALAR = _Exact(int, str, bool, type(None))


class Opt(_Type):
    def __init__(self, t):
        self.t = t

    def encode(self, v, refs):
        return None if v is None else self.t.encode(v, refs)

    def decode(self, v, objs):
        return None if v is None else self.t.decode(v, objs)


class Ref(_Type):
    """Another object of the model: saved as its index in the table of its class."""
    def __init__(self, cls):
        self.cls = cls

    def encode(self, v, refs):
        if type(v) is not self.cls:
            raise _Bad(f"holds a {type(v).__name__}, the schema says {self.cls.__name__}")
        return refs(v)

    def decode(self, v, objs):
        table = objs[self.cls]
        if type(v) is not int or not 0 <= v < len(table):
            raise _Bad(f"{v!r} is no {self.cls.__name__} of this file")
        return table[v]


def _list(v, want):
    if type(v) is not want:
        raise _Bad(f"holds a {type(v).__name__}, the schema says {want.__name__}")
    return v


def _each(t, items, code):
    out = []
    for i, x in enumerate(items):
        try:
            out.append(code(t, x))
        except _Bad as e:
            raise e.at(f"[{i}]") from None
    return out


class List(_Type):
    def __init__(self, t, kind=list):
        self.t, self.kind = t, kind

    def encode(self, v, refs):
        return _each(self.t, _list(v, self.kind), lambda t, x: t.encode(x, refs))

    def decode(self, v, objs):
        return self.kind(_each(self.t, _list(v, list), lambda t, x: t.decode(x, objs)))


class Row(_Type):
    """A fixed-length list or tuple with a type per position."""
    def __init__(self, *ts, kind=tuple):
        self.ts, self.kind = ts, kind

    def _zip(self, v, want, code):
        if type(v) is not want or len(v) != len(self.ts):
            raise _Bad(f"is not a {len(self.ts)}-{want.__name__}")
        out = []
        for i, (t, x) in enumerate(zip(self.ts, v)):
            try:
                out.append(code(t, x))
            except _Bad as e:
                raise e.at(f"[{i}]") from None
        return out

    def encode(self, v, refs):
        return self._zip(v, self.kind, lambda t, x: t.encode(x, refs))

    def decode(self, v, objs):
        return self.kind(self._zip(v, list, lambda t, x: t.decode(x, objs)))


class Dict(_Type):
    """A dict in insertion order (which the model relies on): a list of [key, value] pairs."""
    def __init__(self, k, v):
        self.pair = Row(k, v, kind=list)

    def encode(self, v, refs):
        return _each(self.pair, _list(v, dict).items(), lambda t, kv: t.encode(list(kv), refs))

    def decode(self, v, objs):
        out = dict(_each(self.pair, _list(v, list), lambda t, kv: t.decode(kv, objs)))
        if len(out) != len(v):
            raise _Bad("repeats a key")
        return out


class Keys(_Type):
    """An ordered set kept as a dict of keys to None."""
    def __init__(self, k):
        self.k = k

    def encode(self, v, refs):
        if any(x is not None for x in _list(v, dict).values()):
            raise _Bad("is an ordered set with a value that is not None")
        return _each(self.k, v, lambda t, x: t.encode(x, refs))

    def decode(self, v, objs):
        out = dict.fromkeys(_each(self.k, _list(v, list), lambda t, x: t.decode(x, objs)))
        if len(out) != len(v):
            raise _Bad("repeats a key")
        return out


class StrSet(_Type):
    def encode(self, v, refs):
        return sorted(_each(STR, _list(v, set), lambda t, x: t.encode(x, refs)))

    def decode(self, v, objs):
        return set(_each(STR, _list(v, list), lambda t, x: t.decode(x, objs)))


class Frozen(_Type):
    """A frozen dataclass of plain fields (Config): its fields and their annotated types are
    the schema, so a new option is saved and checked with no change here."""
    PLAIN = {int: INT, str: STR, bool: BOOL}

    def __init__(self, cls):
        self.cls = cls

    def fields(self):
        out = {}
        for f in dataclasses.fields(self.cls):
            if f.type not in self.PLAIN:
                raise _Bad(f".{f.name} has type {f.type}, which the state schema cannot save")
            out[f.name] = self.PLAIN[f.type]
        return out

    def encode(self, v, refs):
        if type(v) is not self.cls:
            raise _Bad(f"holds a {type(v).__name__}, the schema says {self.cls.__name__}")
        return _record(self.fields(), lambda name: getattr(v, name), refs)

    def decode(self, v, objs):
        return self.cls(**_fields_of(self.fields(), v, objs))


def _record(fields, get, refs) -> dict:
    out = {}
    for name, t in fields.items():
        try:
            out[name] = t.encode(get(name), refs)
        except _Bad as e:
            raise e.at(f".{name}") from None
    return out


def _fields_of(fields, v, objs) -> dict:
    if type(v) is not dict:
        raise _Bad("is not a record")
    if v.keys() != fields.keys():
        missing, extra = sorted(fields.keys() - v.keys()), sorted(v.keys() - fields.keys())
        raise _Bad(f"has fields {extra} the schema does not know" if extra else
                   f"lacks the fields {missing}")
    out = {}
    for name, t in fields.items():
        try:
            out[name] = t.decode(v[name], objs)
        except _Bad as e:
            raise e.at(f".{name}") from None
    return out


class Empty(_Type):
    """`()`: the engine's "looked up, there is none" (distinct from None, "not looked up")."""
    def encode(self, v, refs):
        if v != () or type(v) is not tuple:
            raise _Bad(f"holds {type(v).__name__}, the schema says ()")
        return None

    def decode(self, v, objs):
        if v is not None:
            raise _Bad(f"{v!r} is not ()")
        return ()


class OneOf(_Type):
    """The first of several types that takes the value, saved as [its index, the value]."""
    def __init__(self, *ts):
        self.ts = ts

    def encode(self, v, refs):
        for i, t in enumerate(self.ts):
            try:
                return [i, t.encode(v, refs)]
            except _Bad:
                continue
        raise _Bad(f"holds a {type(v).__name__}, which none of the schema's choices takes")

    def decode(self, v, objs):
        if type(v) is not list or len(v) != 2 or type(v[0]) is not int \
                or not 0 <= v[0] < len(self.ts):
            raise _Bad("is not a [choice, value] pair")
        return self.ts[v[0]].decode(v[1], objs)


# ---------------------------------------------------------------------------------- schema
RUN = Row(Ref(Slab), INT, INT, kind=list)        # [slab, count, seq] (engine/slab.py Owner)
EVENT = Row(INT, STR, Dict(STR, SCALAR))          # (seq, kind, fields)

SCHEMA = {
    Engine: {
        "config": Frozen(Config), "catalogue_source": STR, "page": INT, "root": Ref(Memcg),
        "pre_memcg_kmem_bytes": INT, "events": List(EVENT, kind=deque), "event_seq": INT,
        "caches": Keys(Ref(KmemCache)), "originals": Dict(STR, Ref(KmemCache)),
        "free_ids": List(INT), "create_queue": Keys(Row(Ref(Memcg), Ref(KmemCache))),
        "tasks": Dict(INT, Ref(Task)), "next_pid": INT, "nr_simulated": INT, "alloc_seq": INT,
        "stock": Row(Opt(Ref(Memcg)), INT, kind=list), "oom_wake_seq": INT,
        "nr_under_oom": INT, "nr_memcgs": INT, "boot": Ref(Owner), "_waiting": Opt(Ref(Memcg)),
        "cache_serial": INT, "kmalloc": List(Row(INT, Ref(KmemCache))), "last_memcg_id": INT,
        "cpu": INT,
    },
    Memcg: {
        "name": STR, "parent": Opt(Ref(Memcg)), "children": Dict(STR, Ref(Memcg)),
        "res": Ref(ResCounter), "memsw": Ref(ResCounter), "kmem": Ref(ResCounter),
        "tcp": Ref(ResCounter), "use_hierarchy": BOOL, "swappiness": INT,
        "oom_kill_disable": BOOL, "under_oom": INT, "move_charge_at_immigrate": INT,
        "independent_kmem_limit": BOOL,
        "slabs": Dict(INT, Ref(KmemCache)), "tasks": Dict(INT, Ref(Task)),
        "local": Row(*[INT] * len(COUNTED), kind=list),   # subtree: derived, rebuilt on load
        "pool": Ref(Owner), "dcache": Ref(Owner), "files": Dict(STR, INT),
        "oom_wake_seq": INT, "removed": BOOL, "kmem_leaked": INT, "quirks": StrSet(),
        "notify_on_release": BOOL, "id": INT, "kmem_in_res": INT, "kmem_in_memsw": INT,
        "threshold_checks": INT,
    },
    ResCounter: {
        "usage": INT, "max_usage": INT, "limit": INT, "soft_limit": INT, "failcnt": INT,
        "parent": Opt(Ref(ResCounter)), "owner": Opt(Ref(Memcg)),
    },
    Task: {
        "pid": INT, "memcg": Ref(Memcg), "simulated": BOOL, "rss": Dict(Ref(Memcg), INT),
        "objs": Ref(Owner), "comm": STR, "memdie": BOOL,
    },
    Owner: {"runs": Dict(Ref(KmemCache), List(RUN)), "label": STR, "memcg": Opt(Ref(Memcg))},
    KmemCache: {
        "name": STR, "objsize": INT, "num": INT, "pages": INT, "limit": INT,
        "batchcount": INT, "shared": INT, "id": INT, "memcg": Opt(Ref(Memcg)),
        "orig": Opt(Ref(KmemCache)), "children": List(Ref(KmemCache)), "dead": BOOL,
        "destroyed": BOOL, "free_limit": INT, "partial": Keys(Ref(Slab)),
        "free": Keys(Ref(Slab)), "nr_slabs": INT, "active_objs": INT, "free_objects": INT,
        "holders": Keys(Ref(Owner)), "serial": INT,
        "arrays": List(Ref(ArrayCache)), "shared_array": Opt(Ref(ArrayCache)),
        "free_touched": BOOL, "off_slab": BOOL, "slab_size": INT,
        "slabp_cache": OneOf(NONE, Empty(), Ref(KmemCache)),
    },
    ArrayCache: {"runs": List(Row(Ref(Slab), INT, kind=list), kind=deque), "avail": INT,
                 "limit": INT, "batchcount": INT, "touched": BOOL},
    Slab: {"inuse": INT, "mgmt": OneOf(NONE, Empty(), Row(Ref(KmemCache), Ref(Slab)))},
}
NAMES = {cls: cls.__name__ for cls in SCHEMA}
CLASSES = {name: cls for cls, name in NAMES.items()}

# The file system's own settings (kmemfs/cgroupfs/tree.py CgroupFS), beside the engine.
FS_FIELDS = {"release_agent": STR, "clone_children": Dict(INT, INT),
             "overrides": Dict(INT, Row(INT, INT, INT))}


def instance_fields(obj) -> set:
    """Every attribute an object holds: its slots (all classes of its MRO) and its __dict__."""
    names = set(getattr(obj, "__dict__", ()))
    for k in type(obj).__mro__:
        slots = k.__dict__.get("__slots__", ())
        names.update((slots,) if isinstance(slots, str) else slots)
    return {n for n in names if n not in ("__dict__", "__weakref__") and hasattr(obj, n)}


# Derived from saved fields, rebuilt on load: never saved.
DERIVED = {Memcg: {"subtree"}}


def unsaved_fields(obj) -> list:
    """Attributes of `obj` the schema would not save (or would save but obj lacks)."""
    want = SCHEMA[type(obj)].keys()
    have = instance_fields(obj) - DERIVED.get(type(obj), set())
    return sorted(f"{type(obj).__name__}.{n}" for n in have ^ want)


# ---------------------------------------------------------------------------------- saving
def encode(fs) -> dict:
    """The model as plain data. Walks the object graph with a work list (no recursion)."""
    tables = {cls: [] for cls in SCHEMA}
    index = {}
    todo = deque()

    def refs(obj):
        i = index.get(id(obj))
        if i is None:
            table = tables[type(obj)]
            i = index[id(obj)] = len(table)
            table.append(None)
            todo.append(obj)
        return i

    engine = fs.engine
    try:
        if type(engine) is not Engine:
            raise _Bad(f"the file system holds a {type(engine).__name__}, not an Engine")
        refs(engine)
        checked = set()
        while todo:
            obj = todo.popleft()
            cls = type(obj)
            if cls not in checked or hasattr(obj, "__dict__"):
                bad = unsaved_fields(obj)
                if bad:
                    raise _Bad(f"{', '.join(bad)}: not in the state schema "
                               "(kmemfs/fuse/state.py SCHEMA), so it would not be saved")
                checked.add(cls)
            try:
                tables[cls][index[id(obj)]] = _record(SCHEMA[cls],
                                                      lambda n: getattr(obj, n), refs)
            except _Bad as e:
                raise e.at(f"{NAMES[cls]} #{index[id(obj)]}") from None
        fs_fields = _record(FS_FIELDS, lambda n: getattr(fs, n), refs)
    except _Bad as e:
        raise StateError(f"cannot save the model: {e}") from None
    return {"fs": fs_fields, "objects": {NAMES[c]: t for c, t in tables.items()}}


def dumps(fs) -> bytes:
    payload = json.dumps(encode(fs), ensure_ascii=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(payload).hexdigest().encode()
    return b"%s %d\n%s\n" % (MAGIC, VERSION, digest) + payload


# ---------------------------------------------------------------------------------- loading
def _no_duplicates(pairs):
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _Bad("a JSON object repeats a key")
    return d


def decode(doc) -> dict:
    """Plain data -> {"engine": Engine, ...}, checked field by field against SCHEMA."""
    if type(doc) is not dict or doc.keys() != {"fs", "objects"}:
        raise _Bad("the top level is not {fs, objects}")
    tables = doc["objects"]
    if type(tables) is not dict or tables.keys() != CLASSES.keys():
        raise _Bad(f"the object tables are not exactly {sorted(CLASSES)}")
    objs = {}
    for name, cls in CLASSES.items():
        if type(tables[name]) is not list:
            raise _Bad(f"the {name} table is not a list")
        objs[cls] = [cls.__new__(cls) for _ in tables[name]]   # no __init__: fields follow
    if len(objs[Engine]) != 1:
        raise _Bad("there is not exactly one Engine")
    for cls, made in objs.items():
        fields = SCHEMA[cls]
        for i, (obj, rec) in enumerate(zip(made, tables[NAMES[cls]])):
            try:
                for name, value in _fields_of(fields, rec, objs).items():
                    setattr(obj, name, value)
            except _Bad as e:
                raise e.at(f"{NAMES[cls]} #{i}") from None
    engine = objs[Engine][0]
    for m in objs[Memcg]:                    # the subtree sums (memcg.py) are derived
        m.subtree = list(m.local)
    engine.events = deque(engine.events, maxlen=engine.config.event_log_size)
    try:
        fs = _fields_of(FS_FIELDS, doc["fs"], objs)
    except _Bad as e:
        raise e.at("fs") from None
    _check_config(engine.config)
    _check_graph(engine, objs)
    engine.root.rebuild_subtree()
    _check_fs(fs)
    bad = check(engine)
    if bad:
        raise _Bad(f"the model breaks its invariants: {'; '.join(bad[:3])}")
    return dict(fs, engine=engine)


def _check_config(cfg) -> None:
    values = dict(cfg.items())
    if any(type(v) is int and v < 0 for v in values.values()):
        raise _Bad("a negative option in config")
    if cfg.page_size < 1 or cfg.page_size & (cfg.page_size - 1) or cfg.nr_cpus < 1 \
            or cfg.max_memcgs < 1:
        raise _Bad("config: page_size, nr_cpus or max_memcgs out of range")


def _check_graph(engine, objs) -> None:
    """What the types cannot say and the invariant checker assumes: a tree and finite chains."""
    root = engine.root
    if root.parent is not None or root.removed:
        raise _Bad("the root cgroup has a parent or is removed")
    if root.id != 1:
        raise _Bad(f"the root cgroup has id {root.id}, not 1")
    seen, stack, ids = {id(root)}, [root], set()
    while stack:
        m = stack.pop()
        if m.id in ids:
            raise _Bad(f"cgroup id {m.id} appears twice")
        if not 1 <= m.id <= engine.last_memcg_id:     # inode numbers derive from ids
            raise _Bad(f"cgroup id {m.id} is out of range 1..{engine.last_memcg_id}")
        ids.add(m.id)
        for name, c in m.children.items():
            if c.parent is not m or c.name != name or id(c) in seen or c.removed:
                raise _Bad(f"the cgroup tree is not a tree at {m.path()!r} / {name!r}")
            seen.add(id(c))
            stack.append(c)
    for cls, step in ((Memcg, "parent"), (ResCounter, "parent"), (KmemCache, "orig")):
        bound = len(objs[cls])
        for obj in objs[cls]:
            n, o = 0, obj
            while o is not None:
                o, n = getattr(o, step), n + 1
                if n > bound:
                    raise _Bad(f"a {cls.__name__} {step} chain loops")
    for c in objs[KmemCache]:
        if c.orig is not None and c.orig.orig is not None:
            raise _Bad(f"cache {c.name!r} is a copy of a copy")
        if c.num < 1 or c.pages < 1:
            raise _Bad(f"cache {c.name!r} has no objects or pages per slab")
        for ac in c.arrays + ([c.shared_array] if c.shared_array else []):
            if not 0 <= ac.avail <= ac.limit or sum(n for _, n in ac.runs) != ac.avail \
                    or any(n < 1 for _, n in ac.runs):
                raise _Bad(f"cache {c.name!r} has an array cache whose entries do not add up")


def _check_fs(fs) -> None:
    for ino, (mode, uid, gid) in fs["overrides"].items():
        if not 0 <= mode <= 0o7777 or not 0 <= uid < 2**32 - 1 or not 0 <= gid < 2**32 - 1:
            raise _Bad(f"fs.overrides: inode {ino} has mode or owner out of range")


def loads(data: bytes, source: str = "state file") -> dict:
    header, _, rest = data.partition(b"\n")
    digest, _, payload = rest.partition(b"\n")
    magic, _, version = header.partition(b" ")
    if magic != MAGIC:
        raise StateError(f"{source}: not a kmemfs state file")
    if version == b"1":
        raise StateError(f"{source}: state format 1 is a Python pickle, which this kmemfs never "
                         "loads (unpickling can run code); it was not read. Remove the file "
                         "to start a fresh model")
    if version != str(VERSION).encode():
        raise StateError(f"{source}: state format {version.decode(errors='replace')!r}, "
                         f"this kmemfs reads format {VERSION}")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise StateError(f"{source}: checksum mismatch (the file is truncated or corrupt)")
    try:
        doc = json.loads(payload, object_pairs_hook=_no_duplicates)
        return decode(doc)
    except _Bad as e:
        raise StateError(f"{source}: {e}") from None
    except (ValueError, RecursionError) as e:
        raise StateError(f"{source}: not valid JSON ({e})") from None


class StateFile:
    """The --state FILE: resolved and checked once (kmemfs/fuse/safepath.py), held open by
    its directory; a killed daemon's temporaries are removed."""

    def __init__(self, path: str):
        try:
            self.dir = SafeDir(path)
        except UnsafePath as e:
            raise StateError(str(e)) from None
        self.path = self.dir.path
        self.dir.remove_stale_temps()

    def exists(self) -> bool:
        return self.dir.exists()

    def load(self) -> dict:
        try:
            data = self.dir.read()
        except UnsafePath as e:
            raise StateError(str(e)) from None
        except OSError as e:
            raise StateError(f"{self.path}: {e.strerror}") from None
        return loads(data, self.path)

    def save(self, fs) -> None:
        """Raises StateError (the model does not fit the schema) or OSError (the disk); the
        file keeps its last good contents either way."""
        self.dir.replace(dumps(fs))

    def close(self) -> None:
        self.dir.close()


def load(path: str) -> dict:
    f = StateFile(path)
    try:
        return f.load()
    finally:
        f.close()


def save(fs, path: str) -> None:
    f = StateFile(path)
    try:
        f.save(fs)
    finally:
        f.close()


def restore(state: dict, special_files):
    """A CgroupFS over the restored engine. Writers that slept on an OOM are gone."""
    from ..cgroupfs.tree import CgroupFS
    engine = state["engine"]
    for m in engine.root.walk():
        m.under_oom = 0
    engine.nr_under_oom = 0
    engine._waiting = None
    fs = CgroupFS(engine, special_files=special_files)
    fs.memcgs = {m.id: m for m in engine.root.walk()}
    fs.release_agent = state["release_agent"]
    fs.clone_children = state["clone_children"]
    fs.overrides = state["overrides"]
    return fs
