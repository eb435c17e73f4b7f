"""`kmemfs top`: a refreshing view of a cgroup v1 memory hierarchy, its kernel memory and the
kmemfs event log. Reads the mount through plain files only (works on a kernel's
/sys/fs/cgroup/memory too, without the kmem columns' values and the events pane)."""
import argparse
import collections
import os
import re
import select
import signal
import sys
import termios
import time
import tty

from . import cgread
from .cgread import fmt_bytes, is_unlimited

# rich is imported where it draws: `kmemfs ctl` shares this command's start-up and must not
# pay for it.

SORTS = ("name", "usage", "kmem", "failcnt", "tasks")
# The cgroups pane follows systemd-cgtop (m memory, p path, t tasks); u, K, f, n are ours.
KEY_SORT = {"m": "usage", "u": "usage", "K": "kmem", "f": "failcnt", "p": "name", "n": "name",
            "t": "tasks"}
# The caches pane follows slabtop's sort keys, as far as memory.kmem.slabinfo has the columns.
SLAB_SORTS = {"a": "active", "o": "objects", "s": "objsize", "c": "cache size", "u": "use",
              "n": "name"}
EVENT_STYLE = {
    "oom_kill": "bold red", "under_oom": "red", "charge_fail": "yellow", "reclaim": "cyan",
    "cache_create": "green", "cache_dead": "magenta", "cache_destroy": "dim magenta",
    "bypass": "blue", "uncharge_underflow": "bold yellow", "task_spawn": "dim",
    "task_exit": "dim", "independent_toggled": "bold yellow",
}
KEYS_LINE = {
    "cgroups": "[b]m[/]:memory [b]K[/]:kmem [b]f[/]:failcnt [b]p[/]:path [b]t[/]:tasks "
               "[b]r[/]:reverse [b]↑↓[/] [b]Tab[/]:caches [b]?[/]:help [b]q[/]:quit",
    "caches": "[b]c[/]:size [b]o[/]:objs [b]a[/]:active [b]u[/]:use [b]s[/]:objsize [b]n[/]:name "
              "[b]r[/] [b]↑↓[/]:scroll [b]Tab[/]:cgroups [b]?[/] [b]q[/]",
}
UNLIMITED = "∞"          # the one spelling: table, bars, help

KEYS_HELP = """\
keys (systemd-cgtop's where they overlap; slabtop's in the caches pane):
  Tab                     move the focus between the cgroups table and the caches pane
  ?  h                    this help (any key closes it)
  q  Q  Ctrl-C            quit
  r                       reverse the focused pane's order (a new sort key resets it)
  + -                     read more / less often (the interval, as systemd-cgtop)
cgroups table (focus on start):
  m (or u)  K  f  t       sort siblings by memory usage, kmem usage, failcnt, tasks (descending)
  p (or n)                sort by path: natural name order, g2 before g10
  up/down j/k  g/G        move the selection (the caches pane follows it); PgUp/PgDn a page
caches pane (slabtop keys):
  c  o  a  u  s  n        sort by cache size (num_objs x objsize, the default), objects,
                          active objects, use %, object size, name
  up/down j/k  g/G        scroll; PgUp/PgDn a page
"""

TOP_HELP = """\
Show a cgroup v1 memory hierarchy as a refreshing table, slabtop-like caches of the selected
cgroup, and the newest kmemfs events. Everything is read through the mount's files, so it
also works on a kernel's /sys/fs/cgroup/memory (the kmem columns then show "-").

the table, one row per cgroup (indented by depth, children under their parent):
  usage / limit     memory.usage_in_bytes against memory.limit_in_bytes, with a bar
  kmem / klimit     memory.kmem.usage_in_bytes against memory.kmem.limit_in_bytes
  ind               memory.kmem.independent_kmem_limit (1: kmem is not in usage)
  failcnt           memory.failcnt (red when non-zero)
  oom               under_oom from memory.oom_control
  tasks             number of entries in tasks
  An unlimited value (9223372036854775807) shows as "∞" (and no bar).

the panes:
  caches            the selected cgroup's memory.kmem.slabinfo, biggest first by cache size
                    = num_objs x objsize, with active/total objects and use %
  events            the last lines of MOUNTPOINT/.kmemfs/events (kmemfs only): time, type,
                    fields

""" + KEYS_HELP + """
examples:
  kmemfs top /tmp/kmemfs
  kmemfs top /tmp/kmemfs --sort kmem --interval 0.5
  kmemfs top /tmp/kmemfs --once --select /web      # one frame on stdout, for scripts
  kmemfs top /sys/fs/cgroup/memory --once
"""


def natural(name: str):
    """'g10' -> ['g', 10, '']: digits compare as numbers, so g2 sorts before g10."""
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", name))]


def basename(path: str) -> str:
    return path.rsplit("/", 1)[1]


class View:
    """Data of one screen: the cgroup rows, the selected cgroup's caches, recent events."""

    def __init__(self, mountpoint, sort="name", reverse=False, select="/"):
        self.mp = mountpoint
        self.sort, self.reverse = sort, reverse
        self.slab_sort, self.slab_reverse = "cache size", False
        self.selected = select
        self.focus = "cgroups"
        self.help = False
        self.interval = 1.0
        self.tree = {}
        self.rows = []              # [(path, depth)] in display order
        self.slabs = None           # [(name, active, num, objsize)] or None
        self.slab_top = 0           # first cache row shown (the caches pane scrolls)
        self.page = 10              # rows a PgUp/PgDn moves: set by the last drawing
        self.events = collections.deque(maxlen=400)
        self.tail = cgread.EventTail(mountpoint, start="end", backlog=16384)
        self.status = ""
        self.stamp = ""

    # --- data ----------------------------------------------------------------------------
    def refresh(self):
        try:
            os.stat(self.mp)
            self.status = ""
        except OSError as e:
            self.status = f"{self.mp}: {e.strerror}"
        self.tree = cgread.read_tree(self.mp)
        self.events.extend(self.tail.poll())
        self.stamp = time.strftime("%H:%M:%S")
        self.order()
        self.read_slabs()

    def order(self):
        children = collections.defaultdict(list)
        for path in self.tree:
            if path != "/":
                children[path.rsplit("/", 1)[0] or "/"].append(path)
        rows = []

        def visit(path, depth):
            rows.append((path, depth))
            for child in sorted(children.get(path, ()), key=self.key, reverse=self.reverse):
                visit(child, depth + 1)
        if "/" in self.tree:
            visit("/", 0)
        self.rows = rows
        paths = [p for p, _ in rows]
        if self.selected not in paths and rows:
            # the selected cgroup went away: select its nearest surviving ancestor
            sel = self.selected
            while sel not in paths and sel != "/":
                sel = sel.rsplit("/", 1)[0] or "/"
            self.selected = sel if sel in paths else paths[0]

    def key(self, path):
        c = self.tree[path]
        if self.sort == "name":
            return (0, natural(basename(path)))
        field = {"usage": "usage", "kmem": "kmem_usage", "failcnt": "failcnt",
                 "tasks": "tasks"}[self.sort]
        # descending numbers; the name breaks ties
        return (-(c.get(field) or 0), natural(basename(path)))

    def slab_key(self, row):
        name, act, num, size = row
        by = {"active": -act, "objects": -num, "objsize": -size, "cache size": -num * size,
              "use": -(act / num if num else 0), "name": 0}[self.slab_sort]
        return (by, natural(name))

    def read_slabs(self):
        text = cgread.read_text(os.path.join(self.mp, self.selected.lstrip("/"),
                                             "memory.kmem.slabinfo"))
        if text is None:
            self.slabs = None
            return
        try:
            rows = cgread.parse_memcg_slabinfo(text)
        except ValueError:
            rows = []
        self.slabs = sorted(rows, key=self.slab_key, reverse=self.slab_reverse)

    # --- keys ----------------------------------------------------------------------------
    def handle(self, key) -> bool:
        """Apply a key; False means quit."""
        if key in ("q", "Q", "\x03"):
            return False
        if self.help:                          # any other key closes the help screen
            self.help = False
            return True
        if key in ("?", "h"):
            self.help = True
        elif key == "\t":
            self.focus = "caches" if self.focus == "cgroups" else "cgroups"
        elif key in ("+", "-"):
            self.interval = min(max(self.interval * (2 if key == "+" else 0.5), 0.05), 60)
        elif self.focus == "caches":
            self.caches_key(key)
        else:
            self.cgroups_key(key)
        return True

    def steps(self, end):
        """Movement keys -> rows moved (a page is what the last drawing showed)."""
        return {"down": 1, "j": 1, "up": -1, "k": -1, "pgdn": self.page, "pgup": -self.page,
                "home": -end, "g": -end, "end": end, "G": end}

    def cgroups_key(self, key):
        paths = [p for p, _ in self.rows]
        i = paths.index(self.selected) if self.selected in paths else 0
        step = self.steps(len(paths))
        if key in KEY_SORT:
            if KEY_SORT[key] != self.sort:
                self.sort, self.reverse = KEY_SORT[key], False
            self.order()
        elif key == "r":
            self.reverse = not self.reverse
            self.order()
        elif key in step and paths:
            sel = paths[min(max(i + step[key], 0), len(paths) - 1)]
            if sel != self.selected:
                self.selected, self.slab_top = sel, 0
        else:
            return
        self.read_slabs()

    def caches_key(self, key):
        step = self.steps(1 << 30)                             # clamped when drawn
        if key in SLAB_SORTS:
            if SLAB_SORTS[key] != self.slab_sort:
                self.slab_sort, self.slab_reverse = SLAB_SORTS[key], False
            self.read_slabs()
        elif key == "r":
            self.slab_reverse = not self.slab_reverse
            self.read_slabs()
        elif key in step:
            self.slab_top = max(self.slab_top + step[key], 0)

    # --- rendering -----------------------------------------------------------------------
    @staticmethod
    def sort_label(sort, reverse):
        return sort + (" (reversed)" if reverse else "")

    def header(self):
        from rich.text import Text
        t = Text.assemble(("kmemfs top ", "bold"), (self.mp, "bold cyan"),
                          f"  {len(self.tree)} cgroups  sort: "
                          f"{self.sort_label(self.sort, self.reverse)}  {self.stamp}")
        if self.status:
            t.append(f"  {self.status}", style="bold red")
        return t

    def names(self, rows):
        return {path: ("▸ " if path == self.selected else "  ") + (
            "/" if path == "/" else "  " * depth + basename(path)) for path, depth in rows}

    def table(self, max_rows=None, width=140):
        from rich import box
        from rich.table import Table
        from rich.text import Text
        rows = self.rows
        if max_rows is not None and len(rows) > max_rows:
            paths = [p for p, _ in rows]
            i = paths.index(self.selected) if self.selected in paths else 0
            start = min(max(0, i - max_rows // 2), len(rows) - max_rows)
            rows = rows[start:start + max_rows]
        names = self.names(rows)
        # Widths: the names as wide as they are (at most a third), the numbers as they need,
        # the bars (drawn to their column's width) take what is left: nothing is wasted at
        # 160 columns, and below 100 the bars go so that nothing that matters is cut at 80.
        name_w = min(max([len(n) for n in names.values()] + [8]), max(width // 3, 10))
        bars_on = width >= 100
        t = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, padding=(0, 1))
        t.add_column("cgroup", no_wrap=True, min_width=name_w, overflow="ellipsis")
        num = dict(justify="right", no_wrap=True, min_width=6)
        t.add_column("usage", **num)
        t.add_column("limit", **num)
        if bars_on:
            t.add_column("usage/limit", no_wrap=True, ratio=1, min_width=9)
        t.add_column("kmem", **num)
        t.add_column("klimit", **num)
        if bars_on:
            t.add_column("kmem/klimit", no_wrap=True, ratio=1, min_width=9)
        t.add_column("ind", justify="center", no_wrap=True, min_width=3)
        t.add_column("failcnt", justify="right", no_wrap=True, min_width=7)
        t.add_column("oom", justify="center", no_wrap=True, min_width=3)
        t.add_column("tasks", justify="right", no_wrap=True, min_width=5)
        for path, depth in rows:
            c = self.tree[path]
            fc = c.get("failcnt")
            ind = c.get("independent")
            bars = ((Bar(c["usage"], c["limit"]),), (Bar(c["kmem_usage"], c["kmem_limit"]),)
                    ) if bars_on else ((), ())
            t.add_row(
                names[path], fmt_bytes(c["usage"], UNLIMITED), fmt_bytes(c["limit"], UNLIMITED),
                *bars[0], fmt_bytes(c["kmem_usage"], UNLIMITED),
                fmt_bytes(c["kmem_limit"], UNLIMITED), *bars[1],
                Text("-" if ind is None else str(ind), style="bold cyan" if ind else "dim"),
                Text("-" if fc is None else str(fc), style="bold red" if fc else ""),
                Text("OOM", style="bold white on red") if c.get("under_oom")
                else Text("-", style="dim"),
                "-" if c.get("tasks") is None else str(c["tasks"]),
                style="reverse" if path == self.selected else None)
        return t

    def pane_box(self, name):
        from rich import box
        return dict(box=box.HEAVY if self.focus == name else box.ROUNDED,
                    border_style="bold" if self.focus == name else "", title_align="left")

    def slab_pane(self, max_rows=15, width=60):
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text
        title = (f"caches of {self.selected} · sort: "
                 f"{self.sort_label(self.slab_sort, self.slab_reverse)}")
        if self.slabs is None:
            body = Text("no memory.kmem.slabinfo here (not a kernel with the kmem series)",
                        style="dim")
            return Panel(body, title=title, **self.pane_box("caches"))
        total_mem = sum(r[2] * r[3] for r in self.slabs)
        active = sum(r[1] for r in self.slabs)
        objs = sum(r[2] for r in self.slabs)
        max_rows = max(max_rows, 0)
        self.slab_top = min(self.slab_top, max(len(self.slabs) - max_rows, 0))
        shown = self.slabs[self.slab_top:self.slab_top + max_rows]
        # The name column first and never narrower than 12: the other columns give way
        # (objsize, then use %) on a narrow terminal.
        inner = width - 4                         # borders and the panel's padding
        cols = [("size", 6), ("active/total", 12), ("use", 4), ("objsize", 7)]
        name_w = min(max([len(r[0]) for r in shown] + [5]), 14)
        while cols and name_w + sum(w + 2 for _, w in cols) > inner:
            cols.pop()
        t = Table(box=None, expand=True, pad_edge=False, padding=(0, 1))
        t.add_column("cache", no_wrap=True, overflow="ellipsis", min_width=name_w, ratio=1)
        for c, _ in cols:
            t.add_column(c, justify="right", no_wrap=True)
        for name, act, num, size in shown:
            cells = {"size": fmt_bytes(num * size), "active/total": f"{act}/{num}",
                     "use": f"{100 * act // num}%" if num else "-", "objsize": str(size)}
            t.add_row(Text(name, style="magenta" if name.endswith("dead") else ""),
                      *(cells[c] for c, _ in cols))
        summary = Text(no_wrap=True, overflow="ellipsis")
        where = (f"  rows {self.slab_top + 1}-{self.slab_top + len(shown)} of {len(self.slabs)}"
                 if len(shown) < len(self.slabs) else "")
        summary.append(f"{len(self.slabs)} caches, {active}/{objs} objects active, "
                       f"{fmt_bytes(total_mem)}{where}", style="dim")
        return Panel(Group(summary, t), title=title, **self.pane_box("caches"))

    def events_pane(self, max_lines=10):
        from rich.panel import Panel
        from rich.text import Text
        if not self.tail.present:
            body = Text("no .kmemfs/events (not a kmemfs mount)", style="dim")
        else:
            body = Text(no_wrap=True, overflow="ellipsis")
            lines = list(self.events)[-max_lines:] if max_lines > 0 else []
            for line in lines:
                body.append(event_text(line) + "\n", style=EVENT_STYLE.get(
                    (cgread.parse_event(line) or (0, ""))[1], ""))
            if not lines:
                body.append("(no events yet)", style="dim")
            body.rstrip()
        return Panel(body, title="events", title_align="left", **{
            k: v for k, v in self.pane_box("events").items() if k != "title_align"})

    def help_screen(self):
        from rich.panel import Panel
        from rich.text import Text
        return Panel(Text(KEYS_HELP), title="kmemfs top: keys (any key closes)",
                     title_align="left", border_style="bold")

    def frame_once(self, width):
        from rich.console import Group
        return Group(self.header(), self.table(width=width),
                     self.slab_pane(width=width), self.events_pane())

    def screen(self, width, height):
        from rich.layout import Layout
        from rich.text import Text
        body = max(height - 2, 6)                     # header and keys lines
        lower = max(8, body // 3, body - (len(self.rows) + 3))   # the rest to the panes
        upper = max(body - lower, 4)
        table_rows = max(upper - 3, 1)              # SIMPLE_HEAD: header, rule, bottom pad
        layout = Layout()
        keys = Text.from_markup(KEYS_LINE[self.focus], style="dim")
        keys.no_wrap, keys.overflow = True, "ellipsis"
        if self.help:
            layout.split_column(Layout(self.header(), name="head", size=1),
                                Layout(self.help_screen(), name="help"))
            return layout
        layout.split_column(Layout(self.header(), name="head", size=1),
                            Layout(self.table(table_rows, width), name="table", size=upper),
                            Layout(name="lower", size=lower),
                            Layout(keys, name="keys", size=1))
        # narrow: the caches get 5/8 of the width, so their names keep room
        slab_w = width * 5 // 8 if width < 120 else width // 2
        self.page = max(lower - 5, 1)
        layout["lower"].split_row(
            Layout(self.slab_pane(lower - 5, slab_w), name="slabs", size=slab_w),
            Layout(self.events_pane(lower - 2), name="events"))
        return layout


def event_text(line: str) -> str:
    """'17 charge_fail time=2026-...T16:40:01.123456Z cgroup=/w' -> '16:40:01 charge_fail cgroup=/w'."""
    ev = cgread.parse_event(line)
    if ev is None:
        return line
    _, kind, fields = ev
    stamp = fields.pop("time", "")[11:19]
    return " ".join([stamp, kind] if stamp else [kind]) + "".join(
        f" {k}={v}" for k, v in fields.items())


class Bar:
    """'██████░░░░  60%' of value against limit, as wide as its table column (at most 45);
    nothing when unlimited or unknown (the limit column says ∞)."""

    def __init__(self, value, limit):
        self.value, self.limit = value, limit

    def __rich_console__(self, console, options):
        from rich.text import Text
        value, limit = self.value, self.limit
        if value is None or limit is None or is_unlimited(limit) or limit <= 0:
            return
        width = min(options.max_width, 45) - 5
        ratio = value / limit
        filled = min(width, round(ratio * width))
        style = "green" if ratio < 0.7 else "yellow" if ratio < 0.9 else "bold red"
        yield Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"),
                            f" {min(ratio, 9.99) * 100:3.0f}%")


class Keys:
    """Keys from the terminal in cbreak mode, without blocking; no-op without a tty."""

    SEQ = {b"\x1b[A": "up", b"\x1b[B": "down", b"\x1bOA": "up", b"\x1bOB": "down",
           b"\x1b[H": "home", b"\x1b[F": "end", b"\x1bOH": "home", b"\x1bOF": "end",
           b"\x1b[5~": "pgup", b"\x1b[6~": "pgdn"}

    def __init__(self, stream=None):
        self.stream = stream or sys.stdin
        self.fd, self.saved = None, None

    def __enter__(self):
        try:
            if self.stream.isatty():
                self.fd = self.stream.fileno()
                self.saved = termios.tcgetattr(self.fd)
                tty.setcbreak(self.fd)
        except (OSError, ValueError, termios.error):
            self.fd = None
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def wait(self, timeout):
        """Keys typed within timeout seconds (returns as soon as one arrives)."""
        if self.fd is None:
            time.sleep(max(timeout, 0))
            return []
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if not ready:
            return []
        data = os.read(self.fd, 64)
        keys = []
        while data:
            for seq, name in self.SEQ.items():
                if data.startswith(seq):
                    keys.append(name)
                    data = data[len(seq):]
                    break
            else:
                if data[:1] == b"\x1b":          # an unknown escape sequence: drop it
                    data = data[1:].lstrip(b"[O0123456789;")[1:]
                    continue
                keys.append(data[:1].decode(errors="replace"))
                data = data[1:]
        return keys


def terminal_size(console):
    """The terminal's real size, read every frame: it follows resizes, and a stale COLUMNS or
    LINES in the environment (which rich would prefer) does not squash the screen."""
    try:
        w, h = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError):
        return console.size
    console.size = (w, h)
    return console.size


def run(args) -> int:
    mp = os.path.abspath(args.mountpoint)
    if not os.path.isdir(mp):
        print(f"kmemfs top: {mp}: not a directory", file=sys.stderr)
        return 1
    if not os.path.exists(os.path.join(mp, "memory.usage_in_bytes")):
        print(f"kmemfs top: {mp}: no memory.usage_in_bytes (not a memory cgroup hierarchy)",
              file=sys.stderr)
        return 1
    from rich.console import Console
    from rich.live import Live
    select = "/" + (args.select or "").strip("/")
    view = View(mp, sort=args.sort, reverse=args.reverse, select=select)
    view.interval = max(args.interval, 0.05)
    view.refresh()
    if select not in view.tree:
        print(f"kmemfs top: --select {args.select}: no cgroup {select} under {mp}",
              file=sys.stderr)
        view.tail.close()
        return 2
    if args.once:
        width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 140))
        console = Console(width=width, highlight=False)
        console.print(view.frame_once(console.width))
        view.tail.close()
        return 0

    def on_term(signum, frame):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, on_term)
    console = Console(highlight=False)
    try:
        with Keys() as keys, Live(console=console, screen=True, auto_refresh=False,
                                  redirect_stdout=False, redirect_stderr=False) as live:
            next_read = time.monotonic() + view.interval
            while True:
                size = terminal_size(console)
                live.update(view.screen(size.width, size.height), refresh=True)
                now = time.monotonic()
                if now >= next_read:
                    view.refresh()
                    next_read = now + view.interval
                    continue
                for key in keys.wait(next_read - now):
                    if not view.handle(key):
                        return 0
                    next_read = min(next_read, time.monotonic() + view.interval)   # + / -
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)
        view.tail.close()


def add_parsers(sub):
    p = sub.add_parser("top", help="live view of cgroups, kmem, slabs and events",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=TOP_HELP)
    p.add_argument("mountpoint", help="a kmemfs mount (or any cgroup v1 memory hierarchy)")
    p.add_argument("--interval", "-i", type=float, default=1.0, metavar="S",
                   help="seconds between reads (default 1)")
    p.add_argument("--sort", "-s", choices=sorted(SORTS), default="name",
                   help="initial order of siblings (default name: natural order, g2 before "
                        "g10)")
    p.add_argument("--reverse", "-r", action="store_true", help="reverse the order")
    p.add_argument("--select", metavar="CGROUP",
                   help="initially selected cgroup, e.g. /web (default /)")
    p.add_argument("--once", action="store_true",
                   help="print one frame to stdout and exit (no terminal needed)")
    p.set_defaults(fn=run)

