#!/usr/bin/env python3
"""Benchmark real-workload tracing: capture overhead, parse rate, trace-file read rate.

    .venv/bin/python scripts/bench_trace.py [--quick] [PART ...]     # parts: capture parse read

capture  the same workload untraced and under `kmemfs trace`, alternated, in one run (root +
         tracefs): COMMAND's own wall time traced / untraced (the header's run_ns), the whole
         `kmemfs trace` wall time / untraced, events recorded per second of workload, lost.
parse    tracefs text -> Events (kmemfs/trace/parse.py) on this kernel's real trace_pipe sample
         (tests/data/traces/trace_pipe.sample.gz), best of the repeats; target >= 300k lines/s.
read     trace file -> Events (format.read_trace), plain and gzip'ed, and their sizes.
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
    best = float("inf")
    for _ in range(reps):
        t = perf()
        _, st = parse.parse_text(text)
        best = min(best, perf() - t)
    rate = st.lines / best
    B.table("parse: tracefs text -> Events (best of repeats)", ["lines", "lines/s", "target",
                                                                 "headroom"],
            [[f"{st.lines:,}", f"{rate:,.0f}", f"{PARSE_TARGET:,}",
              f"{rate / PARSE_TARGET:.2f}" + ("" if rate >= PARSE_TARGET else " FAIL")]])


def bench_read(reps, quick):
    h, it = tformat.read_trace(os.path.join(DATA, "files.trace.gz"))
    evs = list(it) * (4 if quick else 20)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kmemfs_bench_") as d:
        for name in ("t.trace", "t.trace.gz"):
            p = os.path.join(d, name)
            t = perf()
            tformat.write_trace(p, h, evs)
            w = perf() - t
            best = float("inf")
            for _ in range(reps):
                t = perf()
                n = sum(1 for _ in tformat.read_trace(p)[1])
                best = min(best, perf() - t)
            size = os.path.getsize(p) - len(h.to_json()) if name == "t.trace" else \
                os.path.getsize(p)
            rows.append([name, f"{n:,}", f"{size / n:.1f}", f"{n / best:,.0f}", f"{n / w:,.0f}"])
    B.table("read: trace file -> Events (best of repeats)",
            ["file", "records", "bytes/record", "read records/s", "write records/s"], rows)


PARTS = {"capture": bench_capture, "parse": bench_parse, "read": bench_read}


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
