"""Parse tracefs text output (trace_pipe / trace) of the kmem and sched events into Events.

A line is, by kernel/trace/trace_output.c (trace_print_context, lat_print_generic):

    <comm, %16s>-<pid, %-7d> [<cpu, %03d>] <flags> <secs>.<usecs>: <event>: <fields>
                bash-9132    [000] .N.1.   473.003400: kmem_cache_alloc: call_site=... ptr=...

The comm is at most 15 characters (TASK_COMM_LEN) and may hold spaces and '-', so the fast
path cuts it positionally (16 columns, then '-'); lines of another width fall back to the
last '-' before the " [cpu]" column. Fields are split on spaces and cut at fixed key widths;
a call site in a module ("fn+0x1/0x2 [mod]") adds a token and takes the slow key=value path.
The flags column's third character is the hardirq/softirq state ('.', 's', 'h', 'H', 'z',
'Z'); the first is 'b'/'D' when bottom halves are disabled (softirq for 3.3, see Event).
Pure: strings in, Events out.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

from .format import Event


@dataclasses.dataclass
class ParseStats:
    lines: int = 0
    events: int = 0
    lost: dict = dataclasses.field(default_factory=dict)     # cpu -> events the kernel lost
    null_frees: int = 0          # kfree(NULL) / kfree(ZERO_SIZE_PTR): ignored
    failed_allocs: int = 0       # ptr NULL/ZERO_SIZE_PTR: the host allocation failed or was 0 bytes
    skipped: int = 0             # comments, blank lines, other events
    malformed: int = 0
    truncated: int = 0           # an unterminated last line, dropped

    def merge(self, other: "ParseStats") -> None:
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, dict):
                for k, v in b.items():
                    a[k] = a.get(k, 0) + v
            else:
                setattr(self, f.name, a + b)


ZERO_SIZE_PTR = 16      # include/linux/slab.h: ((void *)16); NULL and this are no objects

_HARDSOFT = {".": "task", "s": "softirq", "h": "hardirq", "H": "hardirq",
             "z": "nmi", "Z": "nmi"}


def context_of(flags: str) -> str:
    """The flags column -> task | softirq | hardirq | nmi."""
    if len(flags) < 3:
        return "task"
    ctx = _HARDSOFT.get(flags[2], "task")
    if ctx == "task" and flags[0] in "bD":      # TRACE_FLAG_BH_OFF: in_softirq() in 3.3
        return "softirq"
    return ctx


def _time_ns(ts: str) -> int:
    """'473.003400:' -> ns. Clocks not counted in ns (counter, x86-tsc) print an integer."""
    secs, dot, frac = ts.rstrip(":").partition(".")
    if not dot:
        return int(secs)
    return int(secs) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


def _kv(fields: str) -> dict:
    """Slow path: key=value tokens; a token without '=' belongs to the previous value."""
    out, key = {}, None
    for tok in fields.split(" "):
        k, eq, v = tok.partition("=")
        if eq and k.isidentifier():
            key = k
            out[k] = v
        elif key is not None:
            out[key] += " " + tok
    return out


class Parser:
    """Incremental parser: feed() text chunks (any split), get Events; close() at the end."""

    def __init__(self, seq0: int = 0):
        self.seq = seq0
        self.stats = ParseStats()
        self._tail = ""
        self._ctx: dict[str, str] = {}

    def feed(self, text: str) -> list[Event]:
        if self._tail:
            text = self._tail + text
        end = text.rfind("\n")
        if end < 0:
            self._tail = text
            return []
        self._tail = text[end + 1:]
        return self.parse_lines(text[:end].split("\n"))

    def close(self) -> list[Event]:
        """A last line without its newline is a record cut short: count and drop it."""
        if self._tail.strip():
            self.stats.truncated += 1
            self.stats.lines += 1
        self._tail = ""
        return []

    def parse_lines(self, lines: Iterable[str]) -> list[Event]:
        """Complete lines (no newlines) -> Events. The hot loop: kept flat on purpose."""
        out = []
        append = out.append
        new = tuple.__new__
        ctx_memo = self._ctx
        seq = seq0 = self.seq
        n = 0
        for line in lines:
            n += 1
            f = line.split()
            # comm-pid [cpu] flags secs.usecs: event: key=value ...  with the comm in the
            # %16s column and no space in it (else _odd_line)
            if line[16:17] == "-" and f[1][:1] == "[":
                comm = line[:16].lstrip()
                pid_s = f[0][len(comm) + 1:]
                rest = line
            else:
                rest = self._odd_line(line)
                if rest is None:
                    continue
                comm, rest = rest
                f = rest.split()
                pid_s = f[0]
            try:
                flags, ts, name = f[2], f[3], f[4]
                ctx = ctx_memo.get(flags)
                if ctx is None:
                    ctx = ctx_memo[flags] = context_of(flags)
                if ts[-8:-7] == ".":
                    t = int(ts[:-8]) * 1_000_000_000 + int(ts[-7:-1]) * 1000
                else:
                    t = _time_ns(ts)
                n_f = len(f)
                if name == "kmem_cache_alloc:" and n_f == 13:
                    ptr = int(f[6][4:], 16)
                    if ptr <= ZERO_SIZE_PTR:
                        self.stats.failed_allocs += 1
                        continue
                    ev = (seq, t, int(pid_s), "alloc", f[7][5:], ptr, int(f[8][10:]),
                          int(f[9][12:]), f[10][10:], ctx, f[12] == "accounted=true",
                          f[5][10:], 0, comm)
                elif name == "kmalloc:" and n_f == 12:
                    ptr = int(f[6][4:], 16)
                    if ptr <= ZERO_SIZE_PTR:
                        self.stats.failed_allocs += 1
                        continue
                    ev = (seq, t, int(pid_s), "alloc", "", ptr, int(f[7][10:]),
                          int(f[8][12:]), f[9][10:], ctx, f[11] == "accounted=true",
                          f[5][10:], 0, comm)
                elif (name == "kmem_cache_free:" and n_f == 8) or (name == "kfree:" and n_f == 7):
                    ptr = int(f[6][4:], 16)
                    if ptr <= ZERO_SIZE_PTR:
                        self.stats.null_frees += 1
                        continue
                    ev = (seq, t, int(pid_s), "free", f[7][5:] if n_f == 8 else "", ptr, 0, 0,
                          "", ctx, False, f[5][10:], 0, comm)
                else:
                    ev = self._other(seq, t, pid_s, ctx, name, rest, comm)
                    if ev is None:
                        continue
            except (ValueError, IndexError, KeyError):
                self.stats.malformed += 1
                continue
            append(new(Event, ev))
            seq += 1
        self.stats.lines += n
        self.stats.events += seq - seq0
        self.seq = seq
        return out

    def _odd_line(self, line: str):
        """Not the standard comm column: a comment, a lost-events marker, another width."""
        if not line.strip() or line[0] == "#":
            self.stats.skipped += 1
            return None
        if line.startswith("CPU:") and "[LOST " in line:
            try:
                cpu = int(line[4:line.index(" ")])
                n = int(line[line.index("[LOST ") + 6:].split(" ", 1)[0])
            except ValueError:
                self.stats.malformed += 1
                return None
            self.stats.lost[cpu] = self.stats.lost.get(cpu, 0) + n
            return None
        cut = line.find(" [")
        comm, dash, pid = line[:cut].strip().rpartition("-") if cut > 0 else ("", "", "")
        if not dash or not pid.isdigit():
            self.stats.malformed += 1
            return None
        return comm, pid + line[cut:]

    def _other(self, seq, t, pid_s, ctx, name, rest, comm):
        """Events with a token count the fast path doesn't expect: a module call site
        ("fn+0x1/0x2 [mod]"), fork/exit (their comms may hold spaces), other events."""
        fields = rest.split(": ", 2)[2] if rest.count(": ") >= 2 else ""
        if name == "sched_process_fork:":
            child = int(fields[fields.rfind(" child_pid=") + 11:])
            return (seq, t, int(pid_s), "fork", "", 0, 0, 0, "", ctx, False, "", child, comm)
        if name == "sched_process_exit:":
            return (seq, t, int(pid_s), "exit", "", 0, 0, 0, "", ctx, False, "", 0, comm)
        if name in ("kmem_cache_alloc:", "kmalloc:"):
            d = _kv(fields)
            ptr = int(d["ptr"], 16)
            if ptr <= ZERO_SIZE_PTR:
                self.stats.failed_allocs += 1
                return None
            return (seq, t, int(pid_s), "alloc", d.get("name", ""), ptr, int(d["bytes_req"]),
                    int(d["bytes_alloc"]), d["gfp_flags"], ctx, d.get("accounted") == "true",
                    d["call_site"], 0, comm)
        if name in ("kmem_cache_free:", "kfree:"):
            d = _kv(fields)
            ptr = int(d["ptr"], 16)
            if ptr <= ZERO_SIZE_PTR:
                self.stats.null_frees += 1
                return None
            return (seq, t, int(pid_s), "free", d.get("name", ""), ptr, 0, 0, "", ctx, False,
                    d["call_site"], 0, comm)
        self.stats.skipped += 1
        return None


def parse_lines(lines: Iterable[str]) -> tuple[list[Event], ParseStats]:
    """Parse complete lines (trailing newlines optional)."""
    p = Parser()
    return p.parse_lines(line.rstrip("\n") for line in lines), p.stats


def parse_text(text: str) -> tuple[list[Event], ParseStats]:
    """Parse tracefs text; an unterminated last line is a record cut short (dropped)."""
    p = Parser()
    out = p.feed(text)
    p.close()
    return out, p.stats


def iter_file(f, stats: ParseStats | None = None, chunk: int = 1 << 20) -> Iterator[Event]:
    """Events of a text file object read in chunks; stats (if given) gets the counts."""
    p = Parser()
    while data := f.read(chunk):
        yield from p.feed(data)
    p.close()
    if stats is not None:
        stats.merge(p.stats)
