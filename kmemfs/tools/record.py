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
   "dead": {"dentry(web)dead": pages, ...}}         # from .kmemfs/slabinfo: num_slabs*pagesperslab
  {"type": "event", "t": ..., "seq": N, "kind": "oom_kill", "fields": {"cgroup": "/web", ...}}
  {"type": "end", "t": ..., "samples": N, "events": M, "reason": "duration"|"signal"}
Counters a hierarchy lacks are null (kmem on a plain kernel, memsw with noswapaccount).
"""
import argparse
import json
import os
import signal
import sys
import time

from . import cgread

RECORD_HELP = """\
Sample every cgroup of MOUNTPOINT each --interval seconds into a JSON-lines file, until
--duration seconds have passed or SIGINT/SIGTERM (Ctrl-C) arrives; the file is complete and
flushed after every line, so a killed recorder still leaves a usable recording.

each sample holds, per cgroup: memory usage/limit/max_usage/failcnt, memory.kmem usage/limit
and independent_kmem_limit, memsw usage/limit/failcnt (when present), cache and rss from
memory.stat, under_oom and oom_kill_disable, the number of tasks; plus the pages of every dead
cache (rows of .kmemfs/slabinfo ending in "dead": num_slabs x pagesperslab). New lines of
.kmemfs/events (read on with a kept-open file) become event objects stamped with the time
they were seen. Times "t" are seconds since the start on the monotonic clock.

examples:
  kmemfs record /tmp/kmemfs --interval 0.1 --out run.jsonl --duration 30
  kmemfs record /tmp/kmemfs --out run.jsonl & sh scripts/examples/02-dependent-reclaim-oom.sh \\
      /tmp/kmemfs; kill %1
  kmemfs plot run.jsonl --out run.png
"""

PLOT_HELP = """\
Draw a recording made by 'kmemfs record' as a PNG: one panel per cgroup (the busiest ones
when there are more than --max), against time in seconds, memory in MiB:

  filled, stacked   user memory (cache + rss from memory.stat) and kernel memory
                    (memory.kmem.usage_in_bytes) on top of it
  black line        memory.usage_in_bytes (equals the stack top in dependent mode)
  dashed lines      memory.limit_in_bytes (red) and memory.kmem.limit_in_bytes (purple)
  purple line       kmem usage alone, when independent_kmem_limit is 1 (compare it with
                    the kmem limit)
  red triangles     samples where memory.failcnt went up
  purple crosses    kmem charges refused (charge_fail counter=kmem events)
  red vertical      OOM kills (oom_kill events), labelled with the victim's pid
  grey dash-dot     pages still held by the cgroup's dead caches after rmdir

examples:
  kmemfs plot run.jsonl --out run.png
  kmemfs plot run.jsonl --out web.png --cgroup /web --cgroup /jail
"""

MiB = 1 << 20


# --- record --------------------------------------------------------------------------------
def dead_pages(mountpoint):
    text = cgread.read_text(os.path.join(mountpoint, ".kmemfs", "slabinfo"))
    if text is None:
        return None
    return {r["name"]: r["num_slabs"] * r["pagesperslab"]
            for r in cgread.parse_slabinfo(text) if r["name"].endswith("dead")}


def page_size(mountpoint):
    text = cgread.read_text(os.path.join(mountpoint, ".kmemfs", "config")) or ""
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == "page_size" and v.strip().isdigit():
            return int(v)
    return os.sysconf("SC_PAGE_SIZE")


def record(mountpoint, out, interval=0.5, duration=None, stop=None):
    """Record until `duration` seconds or stop() is true. Returns (samples, events)."""
    stop = stop or (lambda: False)
    tail = cgread.EventTail(mountpoint, start="end", backlog=0)
    n_samples = n_events = 0
    t0 = time.monotonic()
    reason = "signal"
    with open(out, "w") as f:
        def put(obj):
            f.write(json.dumps(obj, separators=(",", ":")) + "\n")
            f.flush()
        put({"type": "header", "version": 1, "mountpoint": mountpoint, "interval": interval,
             "page_size": page_size(mountpoint), "wall_start": time.time(),
             "kmemfs": tail.present})
        tick = 0
        try:
            while True:
                t = round(time.monotonic() - t0, 4)
                for line in tail.poll():
                    ev = cgread.parse_event(line)
                    if ev:
                        put({"type": "event", "t": t, "seq": ev[0], "kind": ev[1],
                             "fields": ev[2]})
                        n_events += 1
                sample = {"type": "sample", "t": t, "cgroups": cgread.read_tree(mountpoint)}
                dead = dead_pages(mountpoint)
                if dead is not None:
                    sample["dead"] = dead
                put(sample)
                n_samples += 1
                if duration is not None and t >= duration:
                    reason = "duration"
                    break
                tick += 1
                deadline = t0 + tick * interval
                if duration is not None:
                    deadline = min(deadline, t0 + duration)
                while not stop():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    time.sleep(min(left, 0.05))
                if stop():
                    break
        finally:
            for line in tail.poll():
                ev = cgread.parse_event(line)
                if ev:
                    put({"type": "event", "t": round(time.monotonic() - t0, 4), "seq": ev[0],
                         "kind": ev[1], "fields": ev[2]})
                    n_events += 1
            put({"type": "end", "t": round(time.monotonic() - t0, 4), "samples": n_samples,
                 "events": n_events, "reason": reason})
            tail.close()
    return n_samples, n_events


def cmd_record(args) -> int:
    mp = os.path.abspath(args.mountpoint)
    if not os.path.exists(os.path.join(mp, "memory.usage_in_bytes")):
        print(f"kmemfs record: {mp}: not a memory cgroup hierarchy", file=sys.stderr)
        return 1
    if args.interval <= 0:
        print("kmemfs record: --interval must be > 0", file=sys.stderr)
        return 2
    stopped = []
    handler = lambda signum, frame: stopped.append(signum)       # noqa: E731
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        n, m = record(mp, args.out, args.interval, args.duration, stop=lambda: bool(stopped))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    print(f"kmemfs record: {n} samples, {m} events -> {args.out}", file=sys.stderr)
    return 0


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
    return header, samples, events


def choose_cgroups(samples, wanted=None, limit=6):
    order = []
    peak = {}
    for s in samples:
        for path, c in s["cgroups"].items():
            if path not in peak:
                order.append(path)
                peak[path] = 0
            peak[path] = max(peak[path], (c.get("usage") or 0) + (c.get("kmem_usage") or 0),
                             (c.get("failcnt") or 0))
    if wanted:
        return [p for p in wanted if p in peak]
    paths = [p for p in order if p != "/"] or [p for p in order if p == "/"]
    if len(paths) > limit:
        keep = set(sorted(paths, key=lambda p: -peak[p])[:limit])
        paths = [p for p in paths if p in keep]
    return sorted(paths, key=lambda p: p.split("/"))


def plot(path, out, wanted=None, limit=6, title=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    header, samples, events = load(path)
    if not samples:
        raise ValueError(f"{path}: no samples")
    page = header.get("page_size", 4096)
    paths = choose_cgroups(samples, wanted, limit)
    if not paths:
        raise ValueError(f"{path}: none of the cgroups asked for was recorded")
    ts = np.array([s["t"] for s in samples], dtype=float)
    dead_map = {}
    for e in events:
        if e["kind"] == "cache_dead" and "cache" in e["fields"]:
            dead_map[e["fields"]["cache"]] = e["fields"].get("cgroup")

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
                             layout="constrained")
    axes = axes[:, 0]
    duration = ts[-1] - ts[0] if len(ts) > 1 else 0
    for ax, p in zip(axes, paths):
        here = present(p)
        user = np.nan_to_num(series(p, "cache")) + np.nan_to_num(series(p, "rss"))
        kmem = np.nan_to_num(series(p, "kmem_usage"))
        user[~here] = np.nan
        kmem[~here] = np.nan
        usage = series(p, "usage")
        ax.fill_between(ts, 0, user, color="#7fb3d5", alpha=0.85, lw=0,
                        label="user memory (cache + rss)")
        ax.fill_between(ts, user, user + kmem, color="#f0b27a", alpha=0.9, lw=0,
                        label="kernel memory (kmem usage)")
        ax.plot(ts, usage, color="black", lw=1.0, label="memory.usage_in_bytes")
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
            if top > 0 and finite.max() > 6 * top:
                notes.append(f"{name} {cgread.fmt_bytes(int(finite.max() * MiB))}")
                continue
            ax.plot(ts, shown, label=label, **style)
            top = max(top, np.nanmax(shown))
        indep = series(p, "independent", 1)
        if np.nanmax(np.nan_to_num(indep)) >= 1:
            kalone = kmem.copy()
            kalone[np.nan_to_num(indep) < 1] = np.nan
            ax.plot(ts, kalone, color="#8e44ad", lw=1.3, label="kmem usage (independent)")
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
            idx = np.clip(np.searchsorted(ts, kf), 0, len(ts) - 1)
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
            ax.plot(ts, d, color="#566573", ls="-.", lw=1.6, label="dead caches' pages")
            top = max(top, np.nanmax(d))
        # rmdir: the cgroup's last sample, when it is gone before the end
        gone = np.flatnonzero(here[:-1] & ~here[1:])
        for j, i in enumerate(gone):
            ax.axvline(ts[i + 1], color="#566573", ls=":", lw=1.2,
                       label="rmdir" if j == 0 else None)
            ax.annotate("rmdir", (ts[i + 1], 0.5), xycoords=("data", "axes fraction"),
                        xytext=(3, 0), textcoords="offset points", fontsize=8, color="#566573")
        # OOM kills
        kills = [e for e in events if e["kind"] == "oom_kill" and e["fields"].get("cgroup") == p
                 and e["fields"].get("pid", "0") != "0"]
        for j, e in enumerate(kills):
            ax.axvline(e["t"], color="#e74c3c", lw=1.2, alpha=0.8,
                       label="OOM kill" if j == 0 else None)
            ax.annotate(f"OOM kill pid {e['fields'].get('pid')}", (e["t"], 1), xycoords=(
                "data", "axes fraction"), xytext=(3, -3 - 11 * (j % 3)),
                textcoords="offset points", va="top", fontsize=8, color="#c0392b")
        ax.set_ylim(0, max(top, 0.01) * 1.18)
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
    axes[-1].set_xlabel("time (s)")
    if duration:
        axes[-1].set_xlim(ts[0], ts[-1])
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center", ncol=4,
               fontsize=8.5, frameon=False)
    fig.suptitle(title or f"kmemfs record of {header.get('mountpoint', '?')}: {len(samples)} "
                 f"samples every {header.get('interval', '?')} s over {duration:.1f} s",
                 fontsize=11.5)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return paths


def cmd_plot(args) -> int:
    try:
        paths = plot(args.recording, args.out, args.cgroup, args.max, args.title)
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
    r.add_argument("--interval", "-i", type=float, default=0.5, metavar="S",
                   help="seconds between samples (default 0.5)")
    r.add_argument("--out", "-o", required=True, metavar="FILE", help="the JSON-lines file")
    r.add_argument("--duration", "-d", type=float, metavar="S",
                   help="stop after S seconds (default: at SIGINT/SIGTERM)")
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
    p.set_defaults(fn=cmd_plot)
