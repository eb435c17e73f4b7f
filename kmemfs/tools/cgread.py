"""Reading a cgroup v1 memory hierarchy through plain files (for `top`, `record`, `plot`).

Nothing here imports the engine: the same code reads a kmemfs mount or a kernel's
/sys/fs/cgroup/memory (the kmem files and `.kmemfs/` are then simply absent). Cgroups may
vanish between the walk and the reads (rmdir): a read failing with ENOENT/ENODEV/ESTALE
means "gone", never an error.

On a kmemfs mount, read_tree() reads `.kmemfs/snapshot` instead: the whole tree in one
read (docs/ctl.md), with the same values a walk of the files gives, ~7 files x N cgroups
fewer round trips.
"""
import errno
import json
import os

GONE = (errno.ENOENT, errno.ENODEV, errno.ESTALE)


def is_unlimited(v) -> bool:
    # A kernel rounds RESOURCE_MAX down to a page (9223372036854771712): anything this big
    # is "no limit".
    return v is None or v >= 1 << 62


class Gone(Exception):
    """The cgroup was removed while we read it."""


def fmt_bytes(v, unlimited="∞") -> str:
    """1536 -> '1.5K'; RESOURCE_MAX -> '∞'; None -> '-'."""
    if v is None:
        return "-"
    if is_unlimited(v):
        return unlimited
    n = float(v)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            break
        n /= 1024
    if unit == "B":
        return f"{int(n)}B"
    return f"{n:.1f}{unit}" if abs(n) < 100 else f"{n:.0f}{unit}"


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        if not os.path.isdir(os.path.dirname(path)):
            raise Gone(path) from None
        return None                      # this hierarchy has no such file
    except OSError as e:
        if e.errno in GONE:
            raise Gone(path) from None
        return None                      # EACCES, EINVAL...: not readable here


def _int(path):
    text = _read(path)
    try:
        return int(text.split()[0]) if text else None
    except (ValueError, IndexError):
        return None


def parse_keyed(text) -> dict:
    """memory.stat / memory.oom_control: 'key value' lines -> {key: int}."""
    out = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def walk(mountpoint):
    """Cgroup paths ('/', '/a', '/a/b', ...) in tree order (pre-order, names sorted)."""
    out = []

    def visit(rel):
        out.append(rel)
        full = os.path.join(mountpoint, rel.lstrip("/"))
        try:
            names = sorted(e.name for e in os.scandir(full) if e.is_dir(follow_symlinks=False))
        except OSError:
            return                           # removed meanwhile (or unreadable)
        for name in names:
            visit(rel.rstrip("/") + "/" + name)
    visit("/")
    return out


# What read_cgroup() returns for each cgroup, in this order.
COUNTERS = ("usage", "limit", "max_usage", "failcnt", "kmem_usage", "kmem_limit", "independent",
            "memsw_usage", "memsw_limit", "memsw_failcnt", "cache", "rss", "under_oom",
            "oom_kill_disable", "tasks")


def read_cgroup(mountpoint, rel):
    """One cgroup's counters as a dict, or None when it disappeared. Values a hierarchy does
    not have (kmem on a plain kernel, memsw with swapaccount=0) are None."""
    d = os.path.join(mountpoint, rel.lstrip("/"))
    p = lambda name: os.path.join(d, name)          # noqa: E731
    try:
        stat = parse_keyed(_read(p("memory.stat")))
        oom = parse_keyed(_read(p("memory.oom_control")))
        tasks = _read(p("tasks"))
        return {
            "usage": _int(p("memory.usage_in_bytes")),
            "limit": _int(p("memory.limit_in_bytes")),
            "max_usage": _int(p("memory.max_usage_in_bytes")),
            "failcnt": _int(p("memory.failcnt")),
            "kmem_usage": _int(p("memory.kmem.usage_in_bytes")),
            "kmem_limit": _int(p("memory.kmem.limit_in_bytes")),
            "independent": _int(p("memory.kmem.independent_kmem_limit")),
            "memsw_usage": _int(p("memory.memsw.usage_in_bytes")),
            "memsw_limit": _int(p("memory.memsw.limit_in_bytes")),
            "memsw_failcnt": _int(p("memory.memsw.failcnt")),
            "cache": stat.get("cache"),
            "rss": stat.get("rss"),
            "under_oom": oom.get("under_oom"),
            "oom_kill_disable": oom.get("oom_kill_disable"),
            "tasks": None if tasks is None else len(tasks.split()),
        }
    except Gone:
        return None


SNAPSHOT_VERSION = 1


def read_snapshot(mountpoint):
    """`.kmemfs/snapshot` -> {"header": {...}, "cgroups": {path: {...}}, "caches": [{...}]},
    or None when the mount has none (a kernel's cgroupfs, an older kmemfs) or it cannot be
    read or parsed."""
    try:
        with open(os.path.join(mountpoint, ".kmemfs", "snapshot"), "rb") as f:
            data = f.read()
        rows = [json.loads(line) for line in data.splitlines()]
    except (OSError, ValueError):
        return None
    if not rows or rows[0].get("type") != "header" or rows[0].get("version") != SNAPSHOT_VERSION:
        return None
    return {"header": rows[0],
            "cgroups": {r["path"]: r for r in rows if r.get("type") == "cgroup"},
            "caches": [r for r in rows if r.get("type") == "cache"]}


def snapshot_tree(snap):
    """read_tree's dict from a read_snapshot() result."""
    return {path: {k: c.get(k) for k in COUNTERS} for path, c in snap["cgroups"].items()}


def read_tree(mountpoint, snapshot=True):
    """{path: counters} for every cgroup still there, in tree order: read_cgroup's keys,
    from `.kmemfs/snapshot` when the mount has one (snapshot=False: file by file)."""
    snap = read_snapshot(mountpoint) if snapshot else None
    if snap is not None:
        return snapshot_tree(snap)
    out = {}
    for rel in walk(mountpoint):
        c = read_cgroup(mountpoint, rel)
        if c is not None:
            out[rel] = c
    return out


def parse_memcg_slabinfo(text):
    """memory.kmem.slabinfo -> [(name, active_objs, num_objs, objsize)].

    Header `# name            <active_objs> <num_objs> <objsize>`, rows `%-17s %6lu %6lu %6u`.
    The name is everything before the last three fields (a cgroup name may hold spaces)."""
    rows = []
    for line in (text or "").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rsplit(None, 3)
        if len(parts) != 4:
            raise ValueError(f"bad memory.kmem.slabinfo row: {line!r}")
        name, active, num, size = parts
        rows.append((name, int(active), int(num), int(size)))
    return rows


def parse_slabinfo(text):
    """/proc/slabinfo 2.1 (and `.kmemfs/slabinfo`) -> list of dicts."""
    rows = []
    for line in (text or "").splitlines():
        if line.startswith(("slabinfo", "#")) or not line.strip():
            continue
        head, _, rest = line.partition(" : tunables")
        parts = head.rsplit(None, 5)
        slabdata = rest.partition(" : slabdata")[2].split()
        if len(parts) != 6 or len(slabdata) != 3:
            continue
        name, active, num, size, per_slab, pages = parts
        rows.append({"name": name, "active_objs": int(active), "num_objs": int(num),
                     "objsize": int(size), "objperslab": int(per_slab),
                     "pagesperslab": int(pages), "active_slabs": int(slabdata[0]),
                     "num_slabs": int(slabdata[1])})
    return rows


def read_text(path):
    """A whole file, or None if it cannot be read (gone, absent, not permitted)."""
    try:
        return _read(path)
    except Gone:
        return None


def parse_event(line):
    """'<seq> <type> k=v ...' -> (seq, type, {k: v}) with '\\040' unescaped; None if malformed."""
    parts = line.split()
    if len(parts) < 2 or not parts[0].isdigit():
        return None
    fields = {}
    for kv in parts[2:]:
        k, _, v = kv.partition("=")
        fields[k] = (v.replace("\\040", " ").replace("\\012", "\n")
                     .replace("\\134", "\\"))
    return int(parts[0]), parts[1], fields


class EventTail:
    """Reads `.kmemfs/events` on with a kept-open file: each poll() returns the new complete
    lines. start='end' skips the history except the last `backlog` bytes."""

    def __init__(self, mountpoint, start="end", backlog=8192):
        self.path = os.path.join(mountpoint, ".kmemfs", "events")
        self.buf = b""
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            self.fd = None
            return
        if start == "end":
            size = os.fstat(self.fd).st_size
            pos = max(0, size - backlog)
            os.lseek(self.fd, pos, os.SEEK_SET)
            self._skip_partial = pos > 0
        else:
            self._skip_partial = False

    @property
    def present(self):
        return self.fd is not None

    def poll(self):
        if self.fd is None:
            return []
        chunks = []
        try:
            while True:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError:
            return []
        data = self.buf + b"".join(chunks)
        *lines, self.buf = data.split(b"\n")
        if self._skip_partial and lines:
            lines = lines[1:]            # we started reading in the middle of a line
            self._skip_partial = False
        return [ln.decode(errors="replace") for ln in lines if ln]

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
