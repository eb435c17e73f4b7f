"""`kmemfs record`: sample every cgroup's counters and the event log into JSON lines;
`kmemfs plot`: draw a recording as per-cgroup timelines (matplotlib, Agg).

Recording format, one JSON object per line:
  {"type": "header", "version": 1, "mountpoint": ..., "interval": S, "page_size": 4096,
   "wall_start": unix time, "kmemfs": true}
  {"type": "sample", "t": seconds since start (monotonic clock),
   "cgroups": {"/": {...}, "/web": {"usage": ..., "limit": ..., "kmem_usage": ...,
               "kmem_limit": ..., "independent": 0|1, "failcnt": ..., "memsw_usage": ...,
               "memsw_limit": ..., "memsw_failcnt": ..., "cache": ..., "rss": ...,
               "under_oom": 0|1, "oom_kill_disable": 0|1, "tasks": N, "max_usage": ...}},
   "dead": {"dentry(web)dead": pages, ...},         # from .kmemfs/slabinfo: num_slabs*pagesperslab
   "partial": true}                                 # only when --duration cut the sweep short
  {"type": "event", "t": ..., "seq": N, "kind": "oom_kill", "fields": {"cgroup": "/web", ...}}
   (t from the event's own wall-clock `time` field when it has one, else when it was read)
  {"type": "end", "t": ..., "samples": N, "events": M,
   "reason": "duration"|"signal"|"command" (COMMAND exited)}
Counters a hierarchy lacks are null (kmem on a plain kernel, memsw with noswapaccount).
"""
import argparse
import json
import os
import signal
import sys
import time

from . import cgread
from .top import natural

RECORD_HELP = """\
Sample every cgroup of MOUNTPOINT each --interval seconds into a JSON-lines file, until
--duration seconds have passed, COMMAND (after --) exits, or SIGINT/SIGTERM (Ctrl-C) arrives.
Every line is flushed as it is written, so a recorder stopped early or killed still leaves a
usable recording. --duration is a deadline: a sweep still running then stops and its sample
is marked "partial". A sweep that takes longer than --interval is reported on stderr (the
samples are then that far apart).

each sample holds, per cgroup: memory usage/limit/max_usage/failcnt, memory.kmem usage/limit
and independent_kmem_limit, memsw usage/limit/failcnt (when present), cache and rss from
memory.stat, under_oom and oom_kill_disable, the number of tasks; plus the pages of every dead
cache (rows of .kmemfs/slabinfo ending in "dead": num_slabs x pagesperslab). New lines of
.kmemfs/events (read on with a kept-open file) become event objects at the time the event
happened (its time= field). Times "t" are seconds since the start.

examples:
  kmemfs record /tmp/kmemfs --out run.jsonl -- scripts/examples/02-dependent-reclaim-oom.sh /tmp/kmemfs
  kmemfs plot run.jsonl --out run.png
  (they run as written in sh, from the repository; kmemfs is on PATH after scripts/run)

  kmemfs record /tmp/kmemfs --interval 0.05 --out run.jsonl --duration 30
  kmemfs record /tmp/kmemfs --out run.jsonl & rec=$!     # in the background, in any sh
  sleep 1; bash scripts/examples/01-independent-limit.sh /tmp/kmemfs; kill $rec; wait $rec
"""

PLOT_HELP = """\
Draw a recording made by 'kmemfs record' as a PNG: one panel per cgroup (the busiest ones
when there are more than --max), against time in seconds, memory in MiB. Values are drawn
as steps: a sample's value holds until the next sample.

  filled, stacked   user memory (cache + rss from memory.stat) and kernel memory
                    (memory.kmem.usage_in_bytes) on top of it
  black line        memory.usage_in_bytes (equals the stack top in dependent mode)
  dashed lines      memory.limit_in_bytes (red) and memory.kmem.limit_in_bytes (purple),
                    always inside the panel's scale; an unlimited one is named in the
                    panel's title ("limit ∞")
  purple line       kmem usage alone, when independent_kmem_limit is 1 (compare it with
                    the kmem limit)
  red triangles     samples where memory.failcnt went up
  purple crosses    kmem charges refused (charge_fail counter=kmem events)
  red vertical      OOM kills (oom_kill events), labelled along the line with the victim's
                    pid (kills closer than 2% of the time span share a label: "(+N)")
  grey dotted       rmdir: the first sample without the cgroup
  grey dash-dot     pages still held by the cgroup's dead caches after rmdir
  blue ticks        events of a cgroup that no sample saw (it lived between two samples)

examples:
  kmemfs plot run.jsonl --out run.png
  kmemfs plot run.jsonl --out web.png --cgroup /web --cgroup /jail --share-y
"""

MiB = 1 << 20


# --- record --------------------------------------------------------------------------------
def dead_pages(mountpoint, caches=None):
    """{dead cache: slab pages} from .kmemfs/slabinfo, or from the snapshot's caches."""
    if caches is None:
        text = cgread.read_text(os.path.join(mountpoint, ".kmemfs", "slabinfo"))
        if text is None:
            return None
        caches = cgread.parse_slabinfo(text)
    return {r["name"]: r["num_slabs"] * r["pagesperslab"]
            for r in caches if r["name"].endswith("dead")}


def page_size(mountpoint):
    text = cgread.read_text(os.path.join(mountpoint, ".kmemfs", "config")) or ""
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == "page_size" and v.strip().isdigit():
            return int(v)
    return os.sysconf("SC_PAGE_SIZE")


def sweep(mountpoint, deadline=None, snapshot=True):
    """Every cgroup's counters and the dead caches' pages (None on a kernel's cgroupfs):
    on kmemfs one read of `.kmemfs/snapshot`, elsewhere cgread's walk file by file, stopping
    at `deadline` (monotonic). Returns (tree, dead, complete)."""
    snap = cgread.read_snapshot(mountpoint) if snapshot else None
    if snap is not None:
        return cgread.snapshot_tree(snap), dead_pages(mountpoint, snap["caches"]), True
    tree = {}
    for rel in cgread.walk(mountpoint):
        if deadline is not None and time.monotonic() >= deadline:
            return tree, None, False
        c = cgread.read_cgroup(mountpoint, rel)
        if c is not None:
            tree[rel] = c
    return tree, dead_pages(mountpoint), True


def event_time(fields, wall_start, fallback):
    """Seconds since the start from an event's `time=2026-...Z` field, else `fallback`."""
    import datetime
    try:
        stamp = datetime.datetime.strptime(fields["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    except (KeyError, ValueError):
        return fallback
    wall = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
    return round(max(wall - wall_start, 0.0), 4)


def record(mountpoint, out, interval=0.1, duration=None, stop=None, warn=None, started=None):
    """Record until `duration` seconds or stop() returns a reason ("signal", "command");
    started() is called once the first sample is written (to start the workload then).
    Returns (samples, events)."""
    stop = stop or (lambda: False)
    warn = warn or (lambda msg: print(f"kmemfs record: {msg}", file=sys.stderr))
    tail = cgread.EventTail(mountpoint, start="end", backlog=0)
    n_samples = n_events = 0
    slow, slowest = 0, 0.0
    t0, wall_start = time.monotonic(), time.time()
    end = None if duration is None else t0 + duration
    reason = "signal"
    with open(out, "w") as f:
        def put(obj):
            f.write(json.dumps(obj, separators=(",", ":")) + "\n")
            f.flush()

        def events(t):
            nonlocal n_events
            for line in tail.poll():
                ev = cgread.parse_event(line)
                if ev:
                    put({"type": "event", "t": event_time(ev[2], wall_start, t), "seq": ev[0],
                         "kind": ev[1], "fields": ev[2]})
                    n_events += 1
        put({"type": "header", "version": 1, "mountpoint": mountpoint, "interval": interval,
             "page_size": page_size(mountpoint), "wall_start": wall_start,
             "kmemfs": tail.present})
        tick = 0
        try:
            while True:
                start = time.monotonic()
                t = round(start - t0, 4)
                events(t)
                tree, dead, complete = sweep(mountpoint, end)
                sample = {"type": "sample", "t": t, "cgroups": tree}
                if dead is not None:
                    sample["dead"] = dead
                if not complete:
                    sample["partial"] = True
                put(sample)
                n_samples += 1
                if n_samples == 1 and started is not None:
                    started()
                took = time.monotonic() - start
                if took > interval:
                    slow, slowest = slow + 1, max(slowest, took)
                    if slow == 1:
                        warn(f"a sweep of {len(tree)} cgroups took {took:.2f} s, longer than "
                             f"--interval {interval:g} s: samples are that far apart")
                if end is not None and (not complete or time.monotonic() >= end):
                    reason = "duration"
                    break
                tick = max(tick + 1, int((time.monotonic() - t0) / interval))
                deadline = t0 + tick * interval
                if end is not None:
                    deadline = min(deadline, end)
                while not stop():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    time.sleep(min(left, 0.05))
                why = stop()
                if why:
                    reason = why if isinstance(why, str) else "signal"
                    break
        finally:
            events(round(time.monotonic() - t0, 4))
            put({"type": "end", "t": round(time.monotonic() - t0, 4), "samples": n_samples,
                 "events": n_events, "reason": reason})
            tail.close()
            if slow > 1:
                warn(f"{slow} of {n_samples} sweeps took longer than --interval (slowest "
                     f"{slowest:.2f} s)")
    return n_samples, n_events


def cmd_record(args) -> int:
    mp = os.path.abspath(args.mountpoint)
    if not os.path.exists(os.path.join(mp, "memory.usage_in_bytes")):
        print(f"kmemfs record: {mp}: not a memory cgroup hierarchy", file=sys.stderr)
        return 1
    if args.interval <= 0:
        print("kmemfs record: --interval must be > 0", file=sys.stderr)
        return 2
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    stopped = []
    handler = lambda signum, frame: stopped.append(signum)       # noqa: E731
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    child, rc, failed = None, 0, []

    def start():                         # after the first sample: it shows the state before
        nonlocal child
        import subprocess
        try:
            child = subprocess.Popen(command)
        except OSError as e:
            failed.append(f"{command[0]}: {e.strerror}")

    def done():
        if stopped:
            return "signal"
        return "command" if failed or (child is not None and child.poll() is not None) else None
    try:
        n, m = record(mp, args.out, args.interval, args.duration, stop=done,
                      started=start if command else None)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if child is not None:
            if child.poll() is None:
                child.terminate()
            rc = child.wait()
    if failed:
        print(f"kmemfs record: {failed[0]}", file=sys.stderr)
        rc = 127
    print(f"kmemfs record: {n} samples, {m} events -> {args.out}", file=sys.stderr)
    return rc if rc >= 0 else 128 - rc


# --- plot ----------------------------------------------------------------------------------
def load(path):
    header, samples, events = {}, [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue               # a recorder killed mid-line
            kind = obj.get("type")
            if kind == "header":
                header = obj
            elif kind == "sample":
                samples.append(obj)
            elif kind == "event":
                events.append(obj)
            elif kind == "end":
                header["end_t"] = obj.get("t")
    return header, samples, events


def event_cgroups(events):
    """Cgroups named by events, in order of first mention."""
    seen = {}
    for e in events:
        p = e["fields"].get("cgroup")
        if p and p.startswith("/"):
            seen.setdefault(p, e["t"])
    return seen


def choose_cgroups(samples, events=(), wanted=None, limit=6):
    """The panels: `wanted` (each must have been recorded: ValueError), else the busiest
    cgroups, counting those that lived only between two samples (seen in events)."""
    order = []
    peak = {}
    for s in samples:
        for path, c in s["cgroups"].items():
            if path not in peak:
                order.append(path)
                peak[path] = 0
            peak[path] = max(peak[path], (c.get("usage") or 0) + (c.get("kmem_usage") or 0),
                             (c.get("failcnt") or 0))
    for path in event_cgroups(events):
        if path not in peak:
            order.append(path)
            peak[path] = 0
    if wanted:
        unknown = [p for p in wanted if p not in peak]
        if unknown:
            raise ValueError(f"no cgroup {', '.join(unknown)} in the recording (it has: "
                             f"{', '.join(sorted(peak)[:12])}{' ...' if len(peak) > 12 else ''})")
        return list(wanted)
    paths = [p for p in order if p != "/"] or [p for p in order if p == "/"]
    if len(paths) > limit:
        keep = set(sorted(paths, key=lambda p: -peak[p])[:limit])
        paths = [p for p in paths if p in keep]
    return sorted(paths, key=lambda p: [natural(part) for part in p.split("/")])


def mark_times(ax, times, labels, color, span):
    """Vertical lines at `times`, labelled along the line (rotated, so neighbours do not
    overlap); marks closer than 2% of the span share one label."""
    groups = []
    for t, lab in sorted(zip(times, labels)):
        if groups and t - groups[-1][0] < 0.02 * max(span, 1e-9):
            groups[-1][1].append(lab)
        else:
            groups.append((t, [lab]))
    for t, labs in groups:
        text = labs[0] if len(labs) == 1 else f"{labs[0]} (+{len(labs) - 1})"
        ax.annotate(text, (t, 0.98), xycoords=("data", "axes fraction"), xytext=(2, 0),
                    textcoords="offset points", rotation=90, va="top", ha="left", fontsize=7.5,
                    color=color, zorder=6,
                    bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.85))


def plot(path, out, wanted=None, limit=6, title=None, share_y=False):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    header, samples, events = load(path)
    if not samples:
        raise ValueError(f"{path}: no samples")
    page = header.get("page_size", 4096)
    paths = choose_cgroups(samples, events, wanted, limit)
    if not paths:
        raise ValueError(f"{path}: no cgroups in the recording")
    n_samples = len(samples)
    end_t = header.get("end_t")
    if isinstance(end_t, (int, float)) and end_t > samples[-1]["t"]:
        samples = samples + [{**samples[-1], "t": end_t}]   # the last step lasts to the end
    ts = np.array([s["t"] for s in samples], dtype=float)
    dead_map = {}
    for e in events:
        if e["kind"] == "cache_dead" and "cache" in e["fields"]:
            dead_map[e["fields"]["cache"]] = e["fields"].get("cgroup")
    mentioned = event_cgroups(events)
    step = dict(drawstyle="steps-post")          # a value holds until the next sample

    def series(p, key, scale=MiB):
        out = np.full(len(samples), np.nan)
        for i, s in enumerate(samples):
            c = s["cgroups"].get(p)
            if c is not None:
                v = c.get(key)
                out[i] = np.nan if v is None else v / scale
        return out

    def present(p):
        return np.array([p in s["cgroups"] for s in samples])

    n = len(paths)
    fig, axes = plt.subplots(n, 1, figsize=(11, 1.1 + 2.6 * n), sharex=True, squeeze=False,
                             sharey=share_y, layout="constrained")
    axes = axes[:, 0]
    duration = ts[-1] - ts[0] if len(ts) > 1 else 0
    tops = []
    for ax, p in zip(axes, paths):
        here = present(p)
        user = np.nan_to_num(series(p, "cache")) + np.nan_to_num(series(p, "rss"))
        kmem = np.nan_to_num(series(p, "kmem_usage"))
        user[~here] = np.nan
        kmem[~here] = np.nan
        usage = series(p, "usage")
        ax.fill_between(ts, 0, user, color="#7fb3d5", alpha=0.85, lw=0, step="post",
                        label="user memory (cache + rss)")
        ax.fill_between(ts, user, user + kmem, color="#f0b27a", alpha=0.9, lw=0, step="post",
                        label="kernel memory (kmem usage)")
        ax.plot(ts, usage, color="black", lw=1.0, label="memory.usage_in_bytes", **step)
        top = np.nanmax(np.concatenate([user + kmem, usage, [0]]))
        notes = []
        limit_v = series(p, "limit", 1)
        klimit_v = series(p, "kmem_limit", 1)
        for vals, style, label, name in (
                (limit_v, dict(color="#c0392b", ls="--", lw=1.4), "memory limit", "limit"),
                (klimit_v, dict(color="#8e44ad", ls=(0, (5, 2, 1, 2)), lw=1.4), "kmem limit",
                 "kmem limit")):
            shown = np.array([np.nan if (np.isnan(v) or cgread.is_unlimited(int(v))) else v / MiB
                              for v in vals])
            finite = shown[~np.isnan(shown)]
            if not len(finite):
                notes.append(f"{name} ∞")
                continue
            ax.plot(ts, shown, label=label, **style, **step)   # the scale includes it
            top = max(top, np.nanmax(shown))
        indep = series(p, "independent", 1)
        if np.nanmax(np.nan_to_num(indep)) >= 1:
            kalone = kmem.copy()
            kalone[np.nan_to_num(indep) < 1] = np.nan
            ax.plot(ts, kalone, color="#8e44ad", lw=1.3, label="kmem usage (independent)",
                    **step)
        # failcnt increments
        fc = series(p, "failcnt", 1)
        inc = np.zeros(len(fc), dtype=bool)
        inc[1:] = np.nan_to_num(np.diff(fc)) > 0
        level = user + kmem                      # the stack top
        if inc.any():
            ax.scatter(ts[inc], level[inc], marker="v", color="#c0392b", s=22, zorder=5,
                       label="memory.failcnt went up")
        # refused kmem charges (no kmem failcnt in this series: events are the only sign)
        kf = sorted({e["t"] for e in events if e["kind"] == "charge_fail"
                     and e["fields"].get("counter") == "kmem" and e["fields"].get("cgroup") == p})
        if kf:
            idx = np.clip(np.searchsorted(ts, kf, side="right") - 1, 0, len(ts) - 1)
            ax.scatter(kf, np.nan_to_num(level[idx]), marker="x", color="#8e44ad", s=26,
                       zorder=5, label="kmem charge refused")
        # dead caches' pages: the owner from the cache_dead event, else by the name in "()"
        name = p.rsplit("/", 1)[1]
        dead = np.zeros(len(samples))
        for i, s in enumerate(samples):
            for cache, pages in (s.get("dead") or {}).items():
                owner = dead_map.get(cache)
                if owner == p or (owner is None and cache.endswith(f"({name})dead")):
                    dead[i] += pages * page / MiB
        if dead.any():
            d = dead.copy()
            first = int(np.argmax(dead > 0))
            d[:first] = np.nan
            ax.plot(ts, d, color="#566573", ls="-.", lw=1.6, label="dead caches' pages", **step)
            top = max(top, np.nanmax(d))
        # rmdir: the cgroup's last sample, when it is gone before the end
        gone = [ts[i + 1] for i in np.flatnonzero(here[:-1] & ~here[1:])]
        for j, t in enumerate(gone):
            ax.axvline(t, color="#566573", ls=":", lw=1.2, label="rmdir" if j == 0 else None)
        mark_times(ax, gone, ["rmdir"] * len(gone), "#566573", duration)
        # OOM kills
        kills = [e for e in events if e["kind"] == "oom_kill" and e["fields"].get("cgroup") == p
                 and e["fields"].get("pid", "0") != "0"]
        for j, e in enumerate(kills):
            ax.axvline(e["t"], color="#e74c3c", lw=1.2, alpha=0.8,
                       label="OOM kill" if j == 0 else None)
        mark_times(ax, [e["t"] for e in kills],
                   [f"OOM kill pid {e['fields'].get('pid')}" for e in kills], "#c0392b", duration)
        # a cgroup no sample saw: it lived between two samples; its events show where
        if not here.any() and p in mentioned:
            evs = [e["t"] for e in events if e["fields"].get("cgroup") == p]
            ax.scatter(evs, np.zeros(len(evs)), marker="|", s=80, color="#2e86c1", zorder=5,
                       label="events of a cgroup between samples")
            notes.append(f"lived between samples: {len(evs)} events, no sample")
        tops.append(top)
        ax.set_ylabel("MiB")
        mode = ("independent" if np.nanmax(np.nan_to_num(indep)) >= 1 else "dependent"
                if not np.all(np.isnan(indep)) else "")
        fcmax = np.nanmax(np.nan_to_num(fc)) if len(fc) else 0
        t = f"{p}" + (f"  ({mode} kmem)" if mode else "") + f"   failcnt {int(fcmax)}"
        if kills:
            t += f", {len(kills)} OOM kill" + ("s" if len(kills) > 1 else "")
        if notes:
            t += "   [" + ", ".join(notes) + "]"
        ax.set_title(t, loc="left", fontsize=10)
        ax.grid(True, alpha=0.3)
    for ax, top in zip(axes, tops):
        ax.set_ylim(0, max(max(tops) if share_y else top, 0.01) * 1.12)
    axes[-1].set_xlabel("time (s)")
    if duration:
        axes[-1].set_xlim(0, ts[-1])
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center", ncol=4,
               fontsize=8.5, frameon=False)
    fig.suptitle(title or f"kmemfs record of {header.get('mountpoint', '?')}: {n_samples} "
                 f"samples every {header.get('interval', '?')} s over {duration:.1f} s",
                 fontsize=11.5)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return paths


def cmd_plot(args) -> int:
    try:
        paths = plot(args.recording, args.out, args.cgroup, args.max, args.title, args.share_y)
    except (OSError, ValueError) as e:
        print(f"kmemfs plot: {e}", file=sys.stderr)
        return 1
    print(f"kmemfs plot: {', '.join(paths)} -> {args.out}", file=sys.stderr)
    return 0


def add_parsers(sub):
    r = sub.add_parser("record", help="sample every cgroup's counters and events to JSON lines",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=RECORD_HELP)
    r.add_argument("mountpoint", help="a kmemfs mount (or any cgroup v1 memory hierarchy)")
    r.add_argument("--interval", "-i", type=float, default=0.1, metavar="S",
                   help="seconds between samples (default 0.1)")
    r.add_argument("--out", "-o", required=True, metavar="FILE", help="the JSON-lines file")
    r.add_argument("--duration", "-d", type=float, metavar="S",
                   help="stop S seconds after the start, even mid-sweep (default: when "
                        "COMMAND exits, or at SIGINT/SIGTERM)")
    r.add_argument("command", nargs="*", metavar="-- COMMAND",
                   help="run COMMAND and record until it exits; its exit status is ours")
    r.set_defaults(fn=cmd_record)

    p = sub.add_parser("plot", help="draw a recording as per-cgroup timelines (PNG)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=PLOT_HELP)
    p.add_argument("recording", help="a JSON-lines file from 'kmemfs record'")
    p.add_argument("--out", "-o", required=True, metavar="PNG", help="the image to write")
    p.add_argument("--cgroup", action="append", metavar="PATH",
                   help="plot this cgroup (repeatable; default: the busiest ones)")
    p.add_argument("--max", type=int, default=6, metavar="N",
                   help="at most N panels when choosing automatically (default 6)")
    p.add_argument("--title", help="the figure's title")
    p.add_argument("--share-y", action="store_true",
                   help="one MiB scale for every panel (default: each panel its own, "
                        "limits included)")
    p.set_defaults(fn=cmd_plot)
