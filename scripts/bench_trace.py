#!/usr/bin/env python3
"""Benchmark real-workload tracing: capture overhead, parse rate, trace-file read rate.

    .venv/bin/python scripts/bench_trace.py [--quick] [PART ...]  # parts: capture parse read replay

capture  the same workload untraced and under `kmemfs trace`, alternated, in one run (root +
         tracefs): COMMAND's own wall time traced / untraced (the header's run_ns), the whole
         `kmemfs trace` wall time / untraced, events recorded per second of workload, lost.
parse    tracefs text -> Events (kmemfs/trace/parse.py) on this kernel's real trace_pipe sample
         (tests/data/traces/trace_pipe.sample.gz), best of the repeats; target >= 300k lines/s.
read     trace file -> Events (format.read_trace), plain and gzip'ed, and their sizes.
replay   offline replay of the fixtures through the engine (kmemfs/trace/replay.py), both
         designs, beside the bare engine calls; target >= 200k events/s.

parse and read are CPU-bound and timed in CPU time (time.process_time), best of the repeats,
so other jobs on the machine disturb them less; capture is wall time.
Not part of the test suite.
"""
import argparse
import gzip
import io
import os
import subprocess
import sys
import tempfile
import time

import _bench as B
from kmemfs.trace import capture, parse
from kmemfs.trace import format as tformat

DATA = os.path.join(B.ROOT, "tests", "data", "traces")
PARSE_TARGET = 300_000
perf = time.perf_counter
cpu = time.process_time      # CPU-bound parts: CPU time, less disturbed by other jobs

# A file-system + fork workload of about a second untraced on a 2-vCPU VM.
WORKLOAD = ["sh", "-c", "i=0; while [ $i -lt {n} ]; do : > f$i; i=$((i+1)); done; "
            "j=0; while [ $j -lt {f} ]; do /bin/true; j=$((j+1)); done; rm -f f*"]


def bench_capture(reps, quick):
    why = capture.unavailable()
    if why:
        B.say(f"capture: skipped ({why})")
        return
    n, f = (1000, 50) if quick else (3000, 200)
    argv = [a.format(n=n, f=f) for a in WORKLOAD]
    plain, traced, total, rates, lost = [], [], [], [], 0
    with tempfile.TemporaryDirectory(prefix="kmemfs_bench_") as d:
        out = os.path.join(d, "t.trace")
        for _ in range(reps):
            t = perf()
            subprocess.run(argv, cwd=d, check=True)
            plain.append(perf() - t)
            t = perf()
            subprocess.run([sys.executable, "-m", "kmemfs", "trace", "-o", out,
                            "--free-tail", "1", "--", *argv], cwd=d, check=True,
                           stderr=subprocess.DEVNULL)
            total.append(perf() - t)
            h, it = tformat.read_trace(out)
            traced.append(h.run_ns / 1e9)
            rates.append(sum(1 for _ in it) / (h.run_ns / 1e9))
            lost += sum(c["lost"] for inst in h.lost.values() for c in inst.values())
    m = B.median
    B.table(f"capture: {n} files + {f} fork/exec ({reps} alternated runs, medians)",
            ["measure", "value", "spread"],
            [["untraced wall", f"{m(plain):.2f} s", B.spread(plain)],
             ["traced COMMAND wall", f"{m(traced):.2f} s", B.spread(traced)],
             ["overhead (traced / untraced)", f"{m(traced) / m(plain):.2f}x", ""],
             ["kmemfs trace wall (setup, 1 s tail, merge)", f"{m(total):.2f} s", B.spread(total)],
             ["events kept per s of workload", f"{m(rates):,.0f}", B.spread(rates)],
             ["events lost (all runs)", str(lost), ""]])


def bench_parse(reps, quick):
    with gzip.open(os.path.join(DATA, "trace_pipe.sample.gz"), "rt") as f:
        text = f.read()
    text *= 4 if quick else 20
    lines = text.split("\n")
    best = ref = float("inf")
    for _ in range(reps * 3):
        t = cpu()
        _, st = parse.parse_text(text)
        best = min(best, cpu() - t)
        t = cpu()
        for line in lines:                  # the machine's speed: one str.split per line
            line.split()
        ref = min(ref, cpu() - t)
    rate = st.lines / best
    B.table("parse: tracefs text -> Events (best of repeats, CPU time)",
            ["lines", "lines/s", "target", "headroom", "str.split() alone, lines/s"],
            [[f"{st.lines:,}", f"{rate:,.0f}", f"{PARSE_TARGET:,}",
              f"{rate / PARSE_TARGET:.2f}" + ("" if rate >= PARSE_TARGET else " FAIL"),
              f"{len(lines) / ref:,.0f}"]])


def bench_read(reps, quick):
    h, it = tformat.read_trace(os.path.join(DATA, "files.trace.gz"))
    evs = list(it) * (4 if quick else 20)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kmemfs_bench_") as d:
        for name in ("t.trace", "t.trace.gz"):
            p = os.path.join(d, name)
            t = cpu()
            tformat.write_trace(p, h, evs)
            w = cpu() - t
            best = float("inf")
            for _ in range(reps * 2):
                t = cpu()
                n = sum(1 for _ in tformat.read_trace(p)[1])
                best = min(best, cpu() - t)
            size = os.path.getsize(p) - len(h.to_json()) if name == "t.trace" else \
                os.path.getsize(p)
            rows.append([name, f"{n:,}", f"{size / n:.1f}", f"{n / best:,.0f}", f"{n / w:,.0f}"])
    B.table("read: trace file -> Events (best of repeats, CPU time)",
            ["file", "records", "bytes/record", "read records/s", "write records/s"], rows)


REPLAY_TARGET = 200_000


def bench_replay(reps, quick):
    """Offline replay (kmemfs/trace/replay.py Session.run: watermark merge, mapping, engine)
    of the three fixtures, each copy shifted in time and address so copies are independent;
    the events are in memory (reading is the `read` part). Beside it, in the same run, the
    floor: the same allocations and frees as bare engine calls (alloc_object/free_object)."""
    from kmemfs.trace.replay import Session, Setup, build
    copies = 4 if quick else 20
    evs, shift = [], 0
    for name in ("files", "forkloop", "sockets"):
        h, it = tformat.read_trace(os.path.join(DATA, f"{name}.trace.gz"))
        base = list(it)
        span = base[-1].time_ns - base[0].time_ns + 1_000_000
        for k in range(copies):
            evs += [e._replace(seq=len(evs) + i, time_ns=e.time_ns + shift,
                               ptr=e.ptr + (k << 40) if e.ptr else 0,
                               pid=e.pid + 100_000 * k, child=e.child + 100_000 * k if e.child else 0)
                    for i, e in enumerate(base)]
            shift += span
    rows = []
    for design in ("series", "optin"):
        best = floor = float("inf")
        j0 = B.cpu_jiffies()
        for _ in range(reps):
            fs, memcg = build(Setup(design=design), h)
            sess = Session(fs.engine, memcg)
            t = perf()
            sess.run(iter(evs))
            best = min(best, perf() - t)
            floor = min(floor, _engine_floor(build(Setup(design=design), h), sess, evs))
        rate = len(evs) / best
        rows.append([design, f"{len(evs):,}", f"{rate:,.0f}", f"{len(evs) / floor:,.0f}",
                     f"{best / floor:.2f}", f"{REPLAY_TARGET:,}",
                     f"{rate / REPLAY_TARGET:.2f}" + ("" if rate >= REPLAY_TARGET else " FAIL"),
                     B.steal_share(j0, B.cpu_jiffies())])
    B.table("replay: events/s through Session.run, best of repeats (floor: the bare engine calls;"
            " steal: the share of busy CPU time the host took from this VM during the runs)",
            ["design", "events", "events/s", "floor events/s", "x floor", "target", "headroom",
             "steal"], rows)


def _engine_floor(built, sess, evs):
    """The same allocations and frees as direct engine calls, kinds resolved beforehand."""
    fs, memcg = built
    e = fs.engine
    t = e.spawn(memcg, recipe=())[0]
    owner, live = t.objs, {}
    plan = []
    for ev in evs:
        if ev.op == "alloc":
            k = sess.kinds.get((ev[4], ev[6:12]))
            if k is not None and k.orig is not None:
                plan.append((ev.ptr, k))
        elif ev.op == "free":
            plan.append((ev.ptr, None))
    alloc, free = e.alloc_object, e.free_object
    start = perf()
    for ptr, k in plan:
        if k is None:
            o = live.pop(ptr, None)
            if o is not None:
                free(o[0], owner, o[1])
        else:
            c, slab, _ = alloc(k.orig, memcg, k.bits, k.irq, t, owner, k.accounted)
            if slab is not None:
                live[ptr] = (c, slab)
    return perf() - start


PARTS = {"capture": bench_capture, "parse": bench_parse, "read": bench_read,
         "replay": bench_replay}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller inputs")
    ap.add_argument("parts", nargs="*", choices=[[]] + list(PARTS), default=[],
                    metavar="PART", help=f"any of {', '.join(PARTS)} (default: all)")
    args = ap.parse_args()
    reps = 3 if args.quick else 7
    for name in args.parts or PARTS:
        PARTS[name](reps, args.quick)


if __name__ == "__main__":
    main()
