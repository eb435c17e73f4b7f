"""Shared bits of the benchmark scripts (scripts/bench_*.py): output, medians, profiles.

Not part of the test suite. Tables go through `rich` when stdout is a terminal and are plain
aligned lines otherwise (so a redirected run is easy to diff or paste into docs).
"""
import cProfile
import io
import os
import pstats
import statistics
import sys
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

try:
    if not sys.stdout.isatty():
        raise ImportError
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
    _console = Console()
except ImportError:
    _console = None


def median(xs):
    return statistics.median(xs)


def spread(xs) -> str:
    """min..max of the repeats, as a percentage around the median."""
    m = median(xs)
    if not m or len(xs) < 2:
        return ""
    return f"{(min(xs) / m - 1) * 100:+.0f}/{(max(xs) / m - 1) * 100:+.0f}%"


def cpu_jiffies():
    """(busy, steal) jiffies of /proc/stat's "cpu" line: on a VM, steal is time the host gave
    to someone else, which slows every timed run alike. Busy leaves out idle and iowait (an
    idle vCPU is not robbed), so one stolen CPU of one busy one reads 100%. (0, 0) where there
    is no such line."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    if len(v) < 8:
        return 0, 0
    return sum(v[:8]) - v[3] - v[4], v[7]      # guest time is already in user


def steal_share(before, after) -> str:
    """Steal as a share of the busy CPU time between two cpu_jiffies() readings."""
    busy = after[0] - before[0]
    return f"{(after[1] - before[1]) / busy * 100:.0f}%" if busy > 0 else "?"


def say(text: str = "") -> None:
    if _console is not None:
        _console.print(text, highlight=False)
    else:
        print(text, flush=True)


def table(title: str, columns, rows) -> None:
    rows = [[str(c) for c in r] for r in rows]
    if _console is not None:
        t = Table(title=title, title_justify="left")
        for i, c in enumerate(columns):
            t.add_column(c, justify="left" if i == 0 else "right")
        for r in rows:
            style = "red" if "FAIL" in r else None
            t.add_row(*r, style=style)
        _console.print(t)
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(columns)]
    print(f"\n{title}")
    line = lambda cells: "  ".join(  # noqa: E731
        (c.ljust(w) if i == 0 else c.rjust(w)) for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(columns))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    sys.stdout.flush()


class _PlainProgress:
    def __init__(self, label, total):
        self.label, self.total, self.n = label, total, 0

    def advance(self, k=1):
        self.n += k


@contextmanager
def progress(label: str, total: int):
    """A progress bar on a terminal; silent otherwise (the tables say what happened)."""
    if _console is None:
        yield _PlainProgress(label, total)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=_console, transient=True) as p:
        tid = p.add_task(label, total=total)

        class _P:
            def advance(self, k=1):
                p.advance(tid, k)
        yield _P()


def profile_text(fn, top: int = 15, sort: str = "tottime") -> str:
    """Run fn() under cProfile; the `top` lines of the profile, sorted by `sort`."""
    pr = cProfile.Profile()
    pr.enable()
    try:
        fn()
    finally:
        pr.disable()
    return stats_text(pstats.Stats(pr), top, sort)


def stats_text(st, top: int = 15, sort: str = "tottime", restrict=None) -> str:
    buf = io.StringIO()
    st.stream = buf
    st.sort_stats(sort)
    if restrict:   # match on full paths, before strip_dirs
        st.print_stats(restrict, top)
    else:
        st.print_stats(top)
    lines = [_short(ln) for ln in buf.getvalue().splitlines()]
    # keep the summary line and the table, drop pstats' preamble
    start = next((i for i, ln in enumerate(lines) if "function calls" in ln), 0)
    return "\n".join(ln for ln in lines[start:] if ln.strip())


def _short(line: str) -> str:
    """Paths in a pstats line shortened to the file name (strip_dirs would merge entries)."""
    i = line.find("/")
    if i < 0:
        return line
    j = line.rfind(":", i)
    head, path = line[:i], line[i:j if j > 0 else None]
    return head + os.path.basename(path) + (line[j:] if j > 0 else "")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_rate(r: float) -> str:
    return f"{r:,.0f}/s"
