"""`kmemfs top`: a refreshing view of a cgroup v1 memory hierarchy, its kernel memory and the
kmemfs event log. Reads the mount through plain files only (works on a kernel's
/sys/fs/cgroup/memory too, without the kmem columns' values and the events pane)."""
import argparse
import collections
import os
import select
import signal
import sys
import termios
import time
import tty

from rich import box
from rich.console import Console, Group
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from . import cgread
from .cgread import fmt_bytes, is_unlimited

SORTS = ("name", "usage", "kmem", "failcnt", "tasks")
KEY_SORT = {"n": "name", "u": "usage", "m": "kmem", "K": "kmem", "f": "failcnt", "t": "tasks"}
EVENT_STYLE = {
    "oom_kill": "bold red", "under_oom": "red", "charge_fail": "yellow", "reclaim": "cyan",
    "cache_create": "green", "cache_dead": "magenta", "cache_destroy": "dim magenta",
    "bypass": "blue", "uncharge_underflow": "bold yellow", "task_spawn": "dim",
    "task_exit": "dim",
}
KEYS_LINE = ("sort [b]u[/]:usage [b]m[/],[b]K[/]:kmem [b]f[/]:failcnt [b]n[/]:name [b]t[/]:tasks "
             "[b]r[/]:reverse   select [b]↑↓[/],[b]jk[/]   [b]q[/]:quit")

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
  An unlimited value (9223372036854775807) shows as "∞".

the panes:
  slabs             the selected cgroup's memory.kmem.slabinfo, biggest caches first by
                    memory = num_objs x objsize, with active/total objects and use %
  events            the last lines of MOUNTPOINT/.kmemfs/events (kmemfs only)

keys:
  u  m (or K)  f  n  t    sort siblings by usage, kmem, failcnt (descending), name, tasks
  r                       reverse the order
  up/down, j/k            move the selection (the slabs pane follows it)
  g / G                   first / last cgroup
  q, Ctrl-C               quit

examples:
  kmemfs top /tmp/kmemfs
  kmemfs top /tmp/kmemfs --sort kmem --interval 0.5
  kmemfs top /tmp/kmemfs --once --select /web      # one frame on stdout, for scripts
  kmemfs top /sys/fs/cgroup/memory --once
"""


class View:
    """Data of one screen: the cgroup rows, the selected cgroup's caches, recent events."""

    def __init__(self, mountpoint, sort="name", reverse=False, select="/"):
        self.mp = mountpoint
        self.sort, self.reverse = sort, reverse
        self.selected = select
        self.tree = {}
        self.rows = []              # [(path, depth)] in display order
        self.slabs = None           # [(name, active, num, objsize)] or None
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
            return (0, path.rsplit("/", 1)[1])
        field = {"usage": "usage", "kmem": "kmem_usage", "failcnt": "failcnt",
                 "tasks": "tasks"}[self.sort]
        # descending numbers; the name breaks ties
        return (-(c.get(field) or 0), path.rsplit("/", 1)[1])

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
        self.slabs = sorted(rows, key=lambda r: (-r[2] * r[3], r[0]))

    # --- keys ----------------------------------------------------------------------------
    def handle(self, key) -> bool:
        """Apply a key; False means quit."""
        if key in ("q", "Q", "\x03"):
            return False
        paths = [p for p, _ in self.rows]
        i = paths.index(self.selected) if self.selected in paths else 0
        if key in KEY_SORT:
            self.sort = KEY_SORT[key]
            self.order()
        elif key == "r":
            self.reverse = not self.reverse
            self.order()
        elif key in ("down", "j") and paths:
            self.selected = paths[min(i + 1, len(paths) - 1)]
        elif key in ("up", "k") and paths:
            self.selected = paths[max(i - 1, 0)]
        elif key in ("home", "g") and paths:
            self.selected = paths[0]
        elif key in ("end", "G") and paths:
            self.selected = paths[-1]
        else:
            return True
        self.read_slabs()
        return True

    # --- rendering -----------------------------------------------------------------------
    def header(self):
        arrow = "↑" if self.reverse else "↓"
        t = Text.assemble(("kmemfs top ", "bold"), (self.mp, "bold cyan"),
                          f"  {len(self.tree)} cgroups  sort: {self.sort} {arrow}  {self.stamp}")
        if self.status:
            t.append(f"  {self.status}", style="bold red")
        return t

    def table(self, max_rows=None, width=140):
        # narrow terminals: shorter bars, then none; numbers are never cut
        bw = 10 if width >= 128 else 4 if width >= 108 else 0
        t = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, padding=(0, 1))
        t.add_column("cgroup", no_wrap=True, ratio=1, min_width=10, overflow="ellipsis")
        num = dict(justify="right", no_wrap=True, min_width=6)
        t.add_column("usage", **num)
        t.add_column("limit", **num)
        if bw:
            t.add_column("usage/limit", no_wrap=True, min_width=bw + 5)
        t.add_column("kmem", **num)
        t.add_column("klimit", **num)
        if bw:
            t.add_column("kmem/klimit", no_wrap=True, min_width=bw + 5)
        t.add_column("ind", justify="center", no_wrap=True, min_width=3)
        t.add_column("failcnt", justify="right", no_wrap=True, min_width=7)
        t.add_column("oom", justify="center", no_wrap=True, min_width=3)
        t.add_column("tasks", justify="right", no_wrap=True, min_width=5)
        rows = self.rows
        if max_rows is not None and len(rows) > max_rows:
            paths = [p for p, _ in rows]
            i = paths.index(self.selected) if self.selected in paths else 0
            start = min(max(0, i - max_rows // 2), len(rows) - max_rows)
            rows = rows[start:start + max_rows]
        for path, depth in rows:
            c = self.tree[path]
            name = ("▸ " if path == self.selected else "  ") + (
                "/" if path == "/" else "  " * depth + path.rsplit("/", 1)[1])
            fc = c.get("failcnt")
            ind = c.get("independent")
            bars = ((bar(c["usage"], c["limit"], bw),), (bar(c["kmem_usage"], c["kmem_limit"], bw),)
                    ) if bw else ((), ())
            t.add_row(
                name, fmt_bytes(c["usage"]), fmt_bytes(c["limit"]), *bars[0],
                fmt_bytes(c["kmem_usage"]), fmt_bytes(c["kmem_limit"]), *bars[1],
                Text("-" if ind is None else str(ind), style="bold cyan" if ind else "dim"),
                Text("-" if fc is None else str(fc), style="bold red" if fc else ""),
                Text("OOM", style="bold white on red") if c.get("under_oom")
                else Text("-", style="dim"),
                "-" if c.get("tasks") is None else str(c["tasks"]),
                style="reverse" if path == self.selected else None)
        return t

    def slab_pane(self, max_rows=15):
        title = f"slabs of {self.selected}"
        if self.slabs is None:
            body = Text("no memory.kmem.slabinfo here (not a kernel with the kmem series)",
                        style="dim")
            return Panel(body, title=title, title_align="left", box=box.ROUNDED)
        total_mem = sum(r[2] * r[3] for r in self.slabs)
        active = sum(r[1] for r in self.slabs)
        objs = sum(r[2] for r in self.slabs)
        t = Table(box=None, expand=True, pad_edge=False, padding=(0, 1))
        t.add_column("active/total", justify="right", no_wrap=True)
        t.add_column("use", justify="right", no_wrap=True)
        t.add_column("objsize", justify="right", no_wrap=True)
        t.add_column("memory", justify="right", no_wrap=True)
        t.add_column("cache", no_wrap=True, overflow="ellipsis", ratio=1)
        for name, act, num, size in self.slabs[:max(max_rows, 0)]:
            t.add_row(f"{act}/{num}", f"{100 * act // num}%" if num else "-", str(size),
                      fmt_bytes(num * size),
                      Text(name, style="magenta" if name.endswith("dead") else ""))
        more = len(self.slabs) - max(max_rows, 0)
        summary = Text(no_wrap=True, overflow="ellipsis")
        summary.append(f"{len(self.slabs)} caches, {active}/{objs} objects active, "
                       f"{fmt_bytes(total_mem)} in objects"
                       + (f"  (+{more} more)" if more > 0 else ""), style="dim")
        return Panel(Group(summary, t), title=title, title_align="left", box=box.ROUNDED)

    def events_pane(self, max_lines=10):
        if not self.tail.present:
            body = Text("no .kmemfs/events (not a kmemfs mount)", style="dim")
        else:
            body = Text(no_wrap=True, overflow="ellipsis")
            lines = list(self.events)[-max_lines:] if max_lines > 0 else []
            for line in lines:
                ev = cgread.parse_event(line)
                body.append(line + "\n", style=EVENT_STYLE.get(ev[1], "") if ev else "")
            if not lines:
                body.append("(no events yet)", style="dim")
            body.rstrip()
        return Panel(body, title="events", title_align="left", box=box.ROUNDED)

    def frame_once(self, width):
        return Group(self.header(), self.table(width=width), self.slab_pane(),
                     self.events_pane())

    def screen(self, width, height):
        lower = max(8, min(height // 2, 16))
        upper = max(height - lower - 2, 4)
        table_rows = max(upper - 3, 1)              # SIMPLE_HEAD: header, rule, bottom pad
        layout = Layout()
        layout.split_column(Layout(self.header(), name="head", size=1),
                            Layout(self.table(table_rows, width), name="table", size=upper),
                            Layout(name="lower", size=lower),
                            Layout(Text.from_markup(KEYS_LINE, style="dim"), name="keys",
                                   size=1))
        layout["lower"].split_row(Layout(self.slab_pane(lower - 5), name="slabs"),
                                  Layout(self.events_pane(lower - 2), name="events"))
        return layout


def bar(value, limit, width=10) -> Text:
    """'██████░░░░ 60%' of value against limit; empty when unlimited or unknown."""
    if value is None or limit is None:
        return Text("")
    if is_unlimited(limit) or limit <= 0:
        return Text("max".rjust(width + 5), style="dim")
    ratio = value / limit
    filled = min(width, round(ratio * width))
    style = "green" if ratio < 0.7 else "yellow" if ratio < 0.9 else "bold red"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"),
                         f" {min(ratio, 9.99) * 100:3.0f}%")


class Keys:
    """Keys from the terminal in cbreak mode, without blocking; no-op without a tty."""

    SEQ = {b"\x1b[A": "up", b"\x1b[B": "down", b"\x1bOA": "up", b"\x1bOB": "down",
           b"\x1b[H": "home", b"\x1b[F": "end", b"\x1bOH": "home", b"\x1bOF": "end"}

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
    select = "/" + (args.select or "").strip("/")
    interval = max(args.interval, 0.05)
    view = View(mp, sort=args.sort, reverse=args.reverse, select=select)
    view.refresh()
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
            next_read = time.monotonic() + interval
            while True:
                size = terminal_size(console)
                live.update(view.screen(size.width, size.height), refresh=True)
                now = time.monotonic()
                if now >= next_read:
                    view.refresh()
                    next_read = now + interval
                    continue
                for key in keys.wait(next_read - now):
                    if not view.handle(key):
                        return 0
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
                   help="initial order of siblings (default name)")
    p.add_argument("--reverse", "-r", action="store_true", help="reverse the order")
    p.add_argument("--select", metavar="CGROUP",
                   help="initially selected cgroup, e.g. /web (default /)")
    p.add_argument("--once", action="store_true",
                   help="print one frame to stdout and exit (no terminal needed)")
    p.set_defaults(fn=run)

