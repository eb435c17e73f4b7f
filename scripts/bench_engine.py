#!/usr/bin/env python3
"""Benchmark the kmemfs engine alone (no FUSE, no trio) against its performance targets.

    .venv/bin/python scripts/bench_engine.py [--quick] [--profile]

Each benchmark is repeated and the median reported; the "headroom" column is how many times
better than its target the median is (>= 1.0 passes). A benchmark that misses its target is
run once more under cProfile and the top of the profile is printed (--profile: for all).
Not part of the test suite.
"""
import argparse
import gc
import time
import tracemalloc

import _bench as B
from kmemfs.engine import GFP_KERNEL, Engine
from kmemfs.engine import render
from kmemfs.cgroupfs.tree import CgroupFS

perf = time.perf_counter


def fresh():
    """A booted engine (catalogue loaded, boot slabs filled) and one non-root memcg, no limit."""
    e = Engine()
    return e, e.mkdir(e.root, "bench")


# ---------------------------------------------------------------------------- benchmarks
def bench_alloc_bulk(reps: int, n: int = 1_000_000):
    """One alloc() call of n size-32 objects in a fresh non-root memcg."""
    times, slabs = [], 0
    for _ in range(reps):
        e, m = fresh()
        c = e.cache("size-32")
        t = perf()
        r = e.alloc(c, n, m)
        times.append(perf() - t)
        assert r.ok and r.done == n, (r.status, r.done)
        slabs = r.cache.nr_slabs
        del e, m, r
    def again():
        e, m = fresh()
        e.alloc(e.cache("size-32"), n, m)
    return times, slabs, again


def bench_pairs(reps: int, n: int):
    """n single-object alloc + free pairs; returns pairs/s per repeat."""
    e, m = fresh()
    c = e.cache("size-32")
    used = e.alloc(c, 1, m).cache      # creates the per-memcg copy and its first slab
    e.free(used, m.pool, 1)
    pool, alloc, free = m.pool, e.alloc, e.free
    rates = []
    for _ in range(reps):
        t = perf()
        for _ in range(n):
            alloc(c, 1, m)
            free(used, pool, 1)
        rates.append(n / (perf() - t))
    def again():
        for _ in range(n):
            alloc(c, 1, m)
            free(used, pool, 1)
    return rates, again


def bench_memcgs(reps: int, n: int = 10_000):
    """Create n memcgs under root, then remove them; rates of each."""
    names = [f"m{i}" for i in range(n)]
    mk, rm = [], []
    for _ in range(reps):
        e = Engine()
        root, mkdir, rmdir = e.root, e.mkdir, e.rmdir
        gc.collect()
        t = perf()
        ms = [mkdir(root, name) for name in names]
        mk.append(n / (perf() - t))
        t = perf()
        for m in ms:
            rmdir(m)
        rm.append(n / (perf() - t))
        assert not root.children
    def again():
        e = Engine()
        for m in [e.mkdir(e.root, name) for name in names]:
            e.rmdir(m)
    return mk, rm, again


def build_copies(total: int = 10_000):
    """An engine with `total` per-cgroup cache copies: as many cgroups as needed, each with a
    GFP_KERNEL allocation in every original cache (the last one in fewer)."""
    e = Engine()
    origs = list(e.originals.values())
    made, i = 0, 0
    while made < total:
        m = e.mkdir(e.root, f"cg{i}")
        i += 1
        for c in origs[:total - made]:
            r = e.alloc(c, 1, m, GFP_KERNEL)
            assert r.ok and r.cache.is_copy, (c.name, r.status)
        made += min(len(origs), total - made)
    return e, i


def bench_slabinfo(reps: int):
    e, ncg = build_copies()
    ncaches = len(e.caches)
    assert ncaches - len(e.originals) == 10_000
    render.slabinfo(e)                 # warm
    times = []
    for _ in range(reps):
        t = perf()
        text = render.slabinfo(e)
        times.append(perf() - t)
    root_times = []
    for _ in range(reps):
        t = perf()
        render.memcg_slabinfo(e, e.root)
        root_times.append(perf() - t)
    return times, root_times, ncaches, ncg, len(text), lambda: [render.slabinfo(e)
                                                               for _ in range(5)]


def bench_memory(n: int = 10_000):
    """tracemalloc: bytes traced while creating n memcgs (no cache created in any)."""
    e = Engine()
    names = [f"m{i}" for i in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ms = [e.mkdir(e.root, name) for name in names]
    after = tracemalloc.get_traced_memory()[0]
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    top = snap.filter_traces([tracemalloc.Filter(True, "*kmemfs*")]).statistics("lineno")[:6]
    engine_bytes = (after - before) / n
    del ms, snap
    # the same through the cgroupfs layer (what the daemon keeps per cgroup)
    fs = CgroupFS(Engine())
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for name in names:
        fs.mkdir(1, name)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    fs_bytes = (after - before) / n
    return engine_bytes, fs_bytes, top


# ---------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller loops")
    ap.add_argument("--profile", action="store_true",
                    help="print a cProfile of every benchmark, not only of those that miss")
    args = ap.parse_args()
    reps = 3 if args.quick else 7
    npairs = 50_000 if args.quick else 200_000

    rows, profiles = [], []

    def row(name, value, target, headroom, extra="", again=None, spread=""):
        ok = headroom >= 1.0
        rows.append([name, value, target, f"{headroom:.2f}x", B.verdict(ok), spread, extra])
        if again is not None and (args.profile or not ok):
            profiles.append((name, B.profile_text(again)))

    B.say(f"kmemfs engine benchmarks ({'quick' if args.quick else 'full'} run, {reps} repeats, "
          f"medians)")
    with B.progress("engine benchmarks", 5) as p:
        times, slabs, again = bench_alloc_bulk(reps)
        t = B.median(times)
        row("alloc 1,000,000 objects (one call)", B.fmt_time(t), "<= 0.5 s", 0.5 / t,
            f"{slabs:,} slabs, {t / slabs * 1e9:,.0f} ns/slab", again, B.spread(times))
        p.advance()

        rates, again = bench_pairs(reps, npairs)
        r = B.median(rates)
        row("alloc+free pairs (1 object each)", B.fmt_rate(r), ">= 200,000/s", r / 200_000,
            f"{1e9 / r:,.0f} ns/pair", again, B.spread(rates))
        p.advance()

        mk, rm, again = bench_memcgs(reps)
        row("mkdir 10,000 memcgs", B.fmt_rate(B.median(mk)), ">= 50,000/s",
            B.median(mk) / 50_000, f"{1e9 / B.median(mk):,.0f} ns each", again, B.spread(mk))
        row("rmdir 10,000 memcgs", B.fmt_rate(B.median(rm)), ">= 50,000/s",
            B.median(rm) / 50_000, f"{1e9 / B.median(rm):,.0f} ns each", again, B.spread(rm))
        p.advance()

        times, root_times, ncaches, ncg, size, again = bench_slabinfo(reps * 2 + 1)
        t = B.median(times)
        row(f"render slabinfo ({ncaches:,} caches)", B.fmt_time(t), "<= 50 ms", 0.050 / t,
            f"{ncg} cgroups, {size / 1e6:.1f} MB text", again, B.spread(times))
        tr = B.median(root_times)
        rows.append(["  (info) root memory.kmem.slabinfo", B.fmt_time(tr), "-", "-", "-",
                     B.spread(root_times), f"ratio to slabinfo {tr / t:.2f}"])
        p.advance()

        eng, fsb, top = bench_memory()
        row("memory per memcg (no caches)", f"{eng:,.0f} B", "<= 8 KiB", 8192 / eng,
            "tracemalloc over 10,000 mkdirs")
        rows.append(["  (info) + cgroupfs layer (CgroupFS.mkdir)", f"{fsb:,.0f} B", "-", "-",
                     "-", "", f"ratio to engine {fsb / eng:.2f}"])
        p.advance()

    B.table("engine vs targets", ["benchmark", "median", "target", "headroom", "result",
                                  "spread", "notes"], rows)
    B.say("\nper-memcg memory, biggest kmemfs allocation sites over 10,000 mkdirs:")
    for st in top:
        fr = st.traceback[0]
        B.say(f"  {fr.filename.split('kmemfs/', 1)[-1]}:{fr.lineno}  "
              f"{st.size / 10_000:,.0f} B/memcg  ({st.count / 10_000:.1f} blocks)")
    for name, text in profiles:
        B.say(f"\ncProfile of {name!r} (top by tottime):\n{text}")
    failed = [r[0] for r in rows if r[4] == "FAIL"]
    B.say(f"\n{len(failed)} target(s) missed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
