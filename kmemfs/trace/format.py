"""The kmemfs trace file: one JSON header line, then one tab-separated record per event.

    {"format": "kmemfs-trace", "version": 1, "fields": [...], "kernel_release": ..., ...}
    7212001000<TAB>9132<TAB>alloc<TAB>filp<TAB>ffff8881050a7480<TAB>184<TAB>192<TAB>GFP_KERNEL<TAB>task<TAB>1<TAB>alloc_empty_file+0x3c/0x110<TAB>0<TAB>bash
    ...

Records are in time order (capture merges its two tracefs instances; see capture.merge), so
`seq` is the line's index after the header and is not stored. The file may be gzip'ed (a
name ending in .gz; the reader looks at the magic, not the name). docs/trace.md documents
every field. Pure: no host I/O beyond the file handed in.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
from typing import IO, Iterable, Iterator, NamedTuple

FORMAT = "kmemfs-trace"
VERSION = 1

GZIP_LEVEL = 1      # ~10 bytes/record at 300 MB/s; level 6 saves a quarter at 1/6 the speed

OPS = ("alloc", "free", "fork", "exit")
CONTEXTS = ("task", "softirq", "hardirq", "nmi")
_OPS, _CONTEXTS, _FLAGS = frozenset(OPS), frozenset(CONTEXTS), frozenset(("0", "1"))


class Event(NamedTuple):
    """One traced event.

    context is where the event ran, from the tracepoint's flags column: "softirq" also covers
    task context with bottom halves disabled, as 3.3's in_softirq() does (both live in
    SOFTIRQ_MASK of preempt_count, so 3.3's in_interrupt() is true for both).
    cache is "" for kmalloc/kfree events, which carry no cache name.
    """
    seq: int            # index in the file (0 = first record)
    time_ns: int        # trace clock (header.clock), microsecond resolution in tracefs text
    pid: int
    op: str             # alloc | free | fork | exit
    cache: str          # host cache name, "" for kmalloc/kfree
    ptr: int            # object address (fork/exit: 0)
    bytes_req: int
    bytes_alloc: int
    gfp: str            # the tracepoint's symbolic gfp text, e.g. "GFP_KERNEL|__GFP_ACCOUNT"
    context: str        # task | softirq | hardirq | nmi
    accounted: bool     # what today's opt-in kernel charged (kmalloc: __GFP_ACCOUNT set)
    call_site: str      # symbol+off/size [module]
    child: int          # fork: the child's pid, else 0
    comm: str


FIELDS = Event._fields[1:]   # seq is the position, not stored


@dataclasses.dataclass
class Header:
    """What the host looked like and how the capture went."""
    kernel_release: str = ""
    page_size: int = 4096
    boot_id: str = ""
    slab_allocator: str = "SLUB"          # SLUB | SLAB
    slab_merge: bool = True               # SLUB merges compatible caches (no slab_nomerge)
    slabinfo: str = ""                    # the host's /proc/slabinfo at the start
    slub_aliases: dict = dataclasses.field(default_factory=dict)  # alias name -> cache name
    lost: dict = dataclasses.field(default_factory=dict)  # instance -> cpu -> {lost, overrun}
    argv: list = dataclasses.field(default_factory=list)
    exit_status: int | None = None
    inexact: bool = False                 # events were lost (or the capture was cut short)
    clock: str = "mono"                   # trace_clock of both instances
    time_resolution_ns: int = 1000        # tracefs text prints microseconds
    free_tail_s: float = 0.0
    buffer_size_kb: int = 0
    root_pid: int = 0                     # COMMAND's pid
    tracer_pid: int = 0
    start_ns: int = 0                     # COMMAND released (CLOCK_MONOTONIC = trace clock)
    end_ns: int = 0                       # tracing stopped, after the free tail
    run_ns: int = 0                       # COMMAND's wall time: release to exit
    counts: dict = dataclasses.field(default_factory=dict)  # op -> records written
    notes: list = dataclasses.field(default_factory=list)   # why inexact, dropped lines, ...
    extra: dict = dataclasses.field(default_factory=dict)   # keys this version doesn't know

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        return json.dumps({"format": FORMAT, "version": VERSION, "fields": list(FIELDS),
                           **d, **extra}, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "Header":
        d = json.loads(line)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise TraceFormatError("not a kmemfs trace (no kmemfs-trace header)")
        if d.get("version") != VERSION:
            raise TraceFormatError(f"kmemfs trace version {d.get('version')!r}, "
                                   f"this kmemfs reads version {VERSION}")
        if d.get("fields") != list(FIELDS):
            raise TraceFormatError(f"unexpected record fields {d.get('fields')!r}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names | {"format", "version", "fields"}}
        return cls(**known, extra=extra)


class TraceFormatError(ValueError):
    pass


_CLEAN = str.maketrans("\t\n\r", "   ")


def encode(ev: Event) -> str:
    """One record line (no newline). Tabs/newlines in comm or call_site become spaces."""
    comm, cs = ev.comm, ev.call_site
    if not comm.isprintable():
        comm = comm.translate(_CLEAN)
    if not cs.isprintable():
        cs = cs.translate(_CLEAN)
    return (f"{ev.time_ns}\t{ev.pid}\t{ev.op}\t{ev.cache}\t{ev.ptr:x}\t{ev.bytes_req}\t"
            f"{ev.bytes_alloc}\t{ev.gfp}\t{ev.context}\t{1 if ev.accounted else 0}\t"
            f"{cs}\t{ev.child}\t{comm}")


def _refuse(f, seq: int) -> None:
    """The fields that take one of a few words (replay dispatches on op): anything else is
    a corrupt record, named, never a replay's traceback."""
    if f[2] not in OPS:
        raise TraceFormatError(f"record {seq}: op {f[2]!r}, expected one of {', '.join(OPS)}")
    if f[8] not in CONTEXTS:
        raise TraceFormatError(f"record {seq}: context {f[8]!r}, "
                               f"expected one of {', '.join(CONTEXTS)}")
    raise TraceFormatError(f"record {seq}: accounted {f[9]!r}, expected 0 or 1")


def decode(line: str, seq: int) -> Event:
    f = line.rstrip("\n").split("\t")
    if len(f) != len(FIELDS):
        raise TraceFormatError(f"record {seq}: {len(f)} fields, expected {len(FIELDS)}")
    if f[2] not in _OPS or f[8] not in _CONTEXTS or f[9] not in _FLAGS:
        _refuse(f, seq)
    try:
        return Event(seq, int(f[0]), int(f[1]), f[2], f[3], int(f[4], 16), int(f[5]),
                     int(f[6]), f[7], f[8], f[9] == "1", f[10], int(f[11]), f[12])
    except ValueError as e:
        raise TraceFormatError(f"record {seq}: {e}") from None


def _open_text(path_or_file, mode: str) -> IO[str]:
    if mode == "r":
        if isinstance(path_or_file, (str, os.PathLike)):
            raw = open(path_or_file, "rb")
        else:
            raw = path_or_file
            if isinstance(raw, io.TextIOBase):
                return raw
        head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
        if head == b"\x1f\x8b":
            raw = gzip.GzipFile(fileobj=raw, mode="rb")
        return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="\n")
    if isinstance(path_or_file, (str, os.PathLike)):
        raw = open(path_or_file, "wb")
        if os.fspath(path_or_file).endswith(".gz"):
            raw = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
        return io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
    return path_or_file


def read_trace(path_or_file) -> tuple[Header, Iterator[Event]]:
    """(header, events in file order). The iterator reads lazily; a truncated last record
    (no newline, wrong field count) ends the iteration instead of raising."""
    f = _open_text(path_or_file, "r")
    first = f.readline()
    if not first:
        raise TraceFormatError("empty file: not a kmemfs trace")
    try:
        header = Header.from_json(first)
    except json.JSONDecodeError:
        raise TraceFormatError("not a kmemfs trace (the first line is not JSON)") from None
    return header, _records(f)


def _records(f: IO[str]) -> Iterator[Event]:
    new = tuple.__new__
    n = len(FIELDS)
    ops, contexts, flags = _OPS, _CONTEXTS, _FLAGS       # locals: read on every record
    seq = 0
    for line in f:
        r = line.split("\t")
        if len(r) != n or line[-1:] != "\n":
            if line.endswith("\n"):
                decode(line, seq)               # raises, naming the record
            try:
                ev = decode(line, seq)          # a complete record that only lacks its newline
            except TraceFormatError:
                return                          # a capture cut short mid-record
            yield ev
            return
        if r[2] not in ops or r[8] not in contexts or r[9] not in flags:
            _refuse(r, seq)
        try:
            yield new(Event, (seq, int(r[0]), int(r[1]), r[2], r[3], int(r[4], 16), int(r[5]),
                              int(r[6]), r[7], r[8], r[9] == "1", r[10], int(r[11]),
                              r[12][:-1]))
        except ValueError as e:
            raise TraceFormatError(f"record {seq}: {e}") from None
        seq += 1


def write_trace(path_or_file, header: Header, events: Iterable[Event]) -> int:
    """Write header + events (in the order given); returns the number of records."""
    f = _open_text(path_or_file, "w")
    n = 0
    try:
        f.write(header.to_json() + "\n")
        write = f.write
        for ev in events:
            write(encode(ev) + "\n")
            n += 1
    finally:
        if f is not path_or_file:
            f.close()
        else:
            f.flush()
    return n
