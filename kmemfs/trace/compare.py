"""`kmemfs compare TRACE`: one trace under both designs (engine/policy.py), side by side.

The same events, the same cgroup and limits, two engines that differ only in Config.design.
The report is a dict (`--json` prints it); `render` makes the text tables and `plot` a PNG.
"""
from __future__ import annotations

import dataclasses
import io

from ..engine import policy
from .replay import Setup, replay

DESIGNS = ("series", "optin")
REFUSED = "refused by the limit"
TOP = 12


def run(header, events, setup: Setup, samples: int = 400, designs=DESIGNS) -> dict:
    """events: a list, or a callable returning a fresh iterator (a trace read once per
    design, so a big one is never held in memory)."""
    fresh = events if callable(events) else (lambda: iter(events))
    outs = {d: replay(header, fresh(), dataclasses.replace(setup, design=d), samples)
            for d in designs}
    return report(header, setup, outs)


def report(header, setup: Setup, outs: dict) -> dict:
    designs = {}
    for d, o in outs.items():
        s = o.stats
        f = s.first_failure
        designs[d] = {
            "objects": s.objects, "bytes": s.bytes,
            "charged_objects": s.charged_objects, "charged_bytes": s.charged_bytes,
            "peak_live_charged_bytes": s.peak_live_charged_bytes,
            "final_live_charged_bytes": s.live_charged_bytes,
            "slab_bytes_charged_peak": o.kmem_peak, "slab_bytes_charged_final": o.kmem_final,
            "caches_created": o.caches_created,
            "dead_caches": o.dead_caches, "dead_cache_bytes": o.dead_bytes,
            "rmdir": o.removed or "ok",
            "failures": s.failures,
            "first_failure": dataclasses.asdict(f) if f else None,
            "oom_kills": [{"pid": p, "comm": c} for p, c in s.killed],
            "timeline": o.timeline,
        }
    s0 = next(iter(outs.values())).stats
    counts = {k: getattr(s0, k) for k in (
        "events", "allocs", "frees", "forks", "exits", "unmatched_frees", "reused_live",
        "reordered", "late", "dropped_memcg_only", "dropped_unmapped")}
    for d, o in outs.items():
        counts[f"dropped_killed_{d}"] = o.stats.dropped_killed
        counts[f"refused_frees_{d}"] = o.stats.refused_frees
    return {
        "trace": {"command": list(header.argv), "kernel_release": header.kernel_release,
                  "start_ns": next(iter(outs.values())).start_ns or 0,
                  "exit_status": header.exit_status, "inexact": s0.inexact, **counts},
        "setup": {"cg": setup.cg, "sets": list(setup.sets), "catalogue": setup.catalogue},
        "designs": designs,
        "caches": differing(outs),
    }


def differing(outs: dict, top: int = TOP) -> list:
    """Caches ordered by how much more one design charged than the other, with why."""
    if set(outs) != set(DESIGNS):
        return []
    a, b = (outs[d].stats.caches for d in DESIGNS)
    rows = []
    for name in set(a) | set(b):
        ca, cb = a.get(name), b.get(name)
        x = ca.charged_bytes if ca else 0
        y = cb.charged_bytes if cb else 0
        if x == y:
            continue
        c = ca or cb
        why = dict(sorted(c.why.items(), key=lambda kv: -kv[1]))
        if c.flagged:
            why[policy.UNMAPPED] = c.bytes
        if not why:        # both designs charge these; a limit refused more under one
            why[REFUSED] = abs(x - y)
        rows.append({"cache": name, "series_bytes": x, "optin_bytes": y, "diff": x - y,
                     "objects": c.objects, "hosts": dict(c.hosts), "why": why})
    rows.sort(key=lambda r: (-abs(r["diff"]), r["cache"]))
    return rows[:top]


# ---------------------------------------------------------------------------- text

def size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def failure_text(d: dict) -> str:
    f = d["first_failure"]
    if f is None:
        return "none"
    more = d["failures"] - 1
    return (f"event {f['seq']}: {f['cache'] or 'kmalloc'} -> {f['model_cache']} "
            f"{f['gfp']} at {f['call_site']}" + (f" (+{more} more)" if more else ""))


TITLES = {"series": "series (track all, Feb 2012)", "optin": "optin (marked only, 4.5+)"}

ROWS = (
    ("objects allocated", lambda d: f"{d['objects']:,}"),
    ("bytes allocated", lambda d: size(d["bytes"])),
    ("objects charged", lambda d: f"{d['charged_objects']:,}"),
    ("bytes charged (over the run)", lambda d: size(d["charged_bytes"])),
    ("live charged bytes, peak", lambda d: size(d["peak_live_charged_bytes"])),
    ("live charged bytes, final", lambda d: size(d["final_live_charged_bytes"])),
    ("slab pages charged, peak", lambda d: size(d["slab_bytes_charged_peak"])),
    ("slab pages charged, final", lambda d: size(d["slab_bytes_charged_final"])),
    ("per-cgroup caches created", lambda d: f"{d['caches_created']}"),
    ("dead caches after rmdir", lambda d: f"{d['dead_caches']} ({size(d['dead_cache_bytes'])})"
     if d["rmdir"] == "ok" else d["rmdir"]),
    ("OOM kills", lambda d: f"{len(d['oom_kills'])}"),
    ("first failure", failure_text),
)


def render(rep: dict, file=None, width: int = 110) -> str:
    """The report as text tables (rich; plain characters when not on a terminal)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    buf = io.StringIO()
    con = Console(file=file or buf, width=width, highlight=False,
                  force_terminal=None if file is not None else False)
    tr, su = rep["trace"], rep["setup"]
    cmd = " ".join(tr["command"]) or "?"
    limits = ", ".join(su["sets"]) or "no limits"
    con.print(f"trace of: {cmd}  (kernel {tr['kernel_release'] or '?'}; {tr['events']:,} events)")
    con.print(f"replayed into {su['cg']} with {limits}; catalogue {su['catalogue']}")
    if tr["inexact"]:
        con.print("INEXACT: " + "; ".join(tr["inexact"]))
    shown = [d for d in DESIGNS if d in rep["designs"]]
    t = Table(box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("")
    for d in shown:
        t.add_column(TITLES[d], justify="right", overflow="fold")
    for label, fn in ROWS:
        t.add_row(label, *(fn(rep["designs"][d]) for d in shown))
    con.print(t)
    for d in shown:
        if rep["designs"][d]["first_failure"] is not None:
            con.print(f"under the {d} design this workload would have failed here: "
                      + failure_text(rep["designs"][d]))
    if rep["caches"]:
        c = Table(box=box.SIMPLE_HEAD, title="caches that differ most (bytes charged over the run)",
                  title_justify="left")
        for col, j in (("cache", "left"), ("series", "right"), ("optin", "right"),
                       ("why", "left"), ("host names", "left")):
            c.add_column(col, justify=j, overflow="fold")
        for r in rep["caches"]:
            why = ", ".join(f"{k} {size(v)}" for k, v in r["why"].items())
            hosts = ", ".join(h or "kmalloc" for h in list(r["hosts"])[:3])
            c.add_row(r["cache"], size(r["series_bytes"]), size(r["optin_bytes"]), why, hosts)
        con.print(c)
    notes = [f"{tr[k]:,} {label}" for k, label in (
        ("unmatched_frees", "frees of objects allocated before the trace (ignored)"),
        ("reused_live", "allocations at a live pointer (its free was lost)"),
        ("reordered", "frees just before their allocation in the same clock tick"),
        ("late", "records beyond the watermark"),
        ("dropped_memcg_only", "allocations of today's memcg itself (dropped)"),
        ("dropped_unmapped", "allocations larger than any size-N (dropped)")) if tr[k]]
    notes += [f"{tr['dropped_killed_' + d]:,} events of OOM-killed tasks dropped ({d})"
              for d in shown if tr["dropped_killed_" + d]]
    notes += [f"{tr['refused_frees_' + d]:,} frees of allocations the model refused ({d})"
              for d in shown if tr["refused_frees_" + d]]
    for n in notes:
        con.print("  " + n)
    return buf.getvalue()


# ---------------------------------------------------------------------------- plot

COLORS = {"series": "#d35400", "optin": "#2471a3"}


def plot(rep: dict, out: str, title: str = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    MiB = 1 << 20
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8.2), layout="constrained",
                                      gridspec_kw={"height_ratios": [1.1, 1]})
    shown = [d for d in DESIGNS if d in rep["designs"]]
    for d in shown:
        tl = rep["designs"][d]["timeline"]
        if not tl:
            continue
        ts = [p[0] / 1e9 for p in tl]
        top.plot(ts, [p[2] / MiB for p in tl], color=COLORS[d], lw=1.8,
                 label=f"{d}: slab pages charged")
        top.plot(ts, [p[1] / MiB for p in tl], color=COLORS[d], lw=1.0, ls="--",
                 label=f"{d}: live charged objects")
    t0 = rep["trace"]["start_ns"]
    for i, d in enumerate(shown):
        f = rep["designs"][d]["first_failure"]
        if f is not None:
            x = (f["time_ns"] - t0) / 1e9
            top.axvline(x, color=COLORS[d], lw=1, ls=":")
            more = rep["designs"][d]["failures"] - 1
            tl = rep["designs"][d]["timeline"]
            right = x > (tl[-1][0] / 1e9 if tl else 0) / 2
            top.annotate(f" {d}: first ENOMEM, event {f['seq']} ({f['cache'] or 'kmalloc'})"
                         + (f", +{more:,} more " if more else " "), xy=(x, 0.05 + 0.07 * i),
                         xycoords=("data", "axes fraction"), color=COLORS[d], fontsize=8.5,
                         ha="right" if right else "left")
    top.set_ylabel("MiB")
    top.set_xlabel("trace time (s)")
    top.grid(True, alpha=0.3)
    top.legend(fontsize=8.5, loc="upper left", frameon=False)
    top.set_title("charged to " + rep["setup"]["cg"] + (" under " + ", ".join(rep["setup"]["sets"])
                  if rep["setup"]["sets"] else ""), loc="left", fontsize=10)

    rows = rep["caches"][:10][::-1]
    ys = range(len(rows))
    h = 0.38
    KiB = 1024        # a log axis: names_cache's tens of MiB and a few KiB on one chart
    bottom.barh([y + h / 2 for y in ys], [r["series_bytes"] / KiB for r in rows], h,
                color=COLORS["series"], label="series")
    bottom.barh([y - h / 2 for y in ys], [r["optin_bytes"] / KiB for r in rows], h,
                color=COLORS["optin"], label="optin")
    if rows:
        bottom.set_xscale("log")
    bottom.set_yticks(list(ys))
    bottom.set_yticklabels([f"{r['cache']}  ({next(iter(r['why']), '')})" for r in rows],
                           fontsize=8.5)
    bottom.set_xlabel("KiB charged over the run (log scale)")
    bottom.set_title("caches that differ most between the designs (and why)", loc="left",
                     fontsize=10)
    bottom.grid(True, axis="x", alpha=0.3)
    bottom.legend(fontsize=8.5, frameon=False, loc="lower right")
    cmd = " ".join(rep["trace"]["command"]) or "trace"
    fig.suptitle(title or f"kmemfs compare: {cmd}" +
                 ("  [INEXACT]" if rep["trace"]["inexact"] else ""), fontsize=11.5)
    fig.savefig(out, dpi=110)
    plt.close(fig)
