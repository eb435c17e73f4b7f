#!/usr/bin/env python3
"""Benchmark `kmemfs mount -o follow` (root + tracefs): latency, CPU, the rate held without loss.

    .venv/bin/python scripts/bench_follow.py [--quick] [--rates 200,1000,...] [--seconds S]

For each rate, a fresh `-o follow` mount, a cgroup /bench, and a workload (a Python child
written to /bench/tasks before it starts) that creates and removes files in a fresh directory
at that many files per second for S seconds (0 = as fast as it can). Reported per rate:

  events/s     followed events applied per second of workload (allocs + frees + forks + exits)
  lost         the kernel's dropped/overrun counts of both instances (.kmemfs/config)
  lat p50/p99  from the tracepoint's timestamp (trace_clock mono) to the moment the daemon had
               applied the event to the model (time.monotonic_ns, the same clock), over the
               events applied (follow_stats in .kmemfs/config; sampled up to 1,024 per batch)
  daemon CPU   the daemon's utime+stime over the run (/proc/PID/stat), as a share of one CPU,
               and per event applied; beside it the workload's own CPU time
  idle CPU     the daemon with one followed process that does nothing (system-wide frees only)

Not part of the test suite.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import _bench as B
from kmemfs.trace import capture

sys.path.insert(0, os.path.join(B.ROOT, "tests"))
from mounting import Mount                  # noqa: E402  (the tests' mount helper)

TICK = os.sysconf("SC_CLK_TCK")
# A file create (dentry, inode, filp, names_cache, ...) and its unlink, `rate` a second.
WORKLOAD = r"""
import os, sys, time
rate, secs, d = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
sys.stdin.readline()
t0 = time.monotonic(); n = 0
while True:
    now = time.monotonic()
    if now - t0 >= secs:
        break
    if rate and n > (now - t0) * rate:
        time.sleep(min(0.005, n / rate - (now - t0)))
        continue
    p = f"{d}/f{n}"
    open(p, "w").close()
    if n >= 100:
        os.unlink(f"{d}/f{n - 100}")
    n += 1
print(n)
"""


def cpu_of(pid: int, split: bool = False):
    """utime+stime in seconds (split: the pair)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    u, s = int(fields[11]) / TICK, int(fields[12]) / TICK
    return (u, s) if split else u + s


def config(m) -> dict:
    with open(m.p(".kmemfs", "config")) as f:
        rows = dict(line.split(" ", 1) for line in f.read().splitlines())
    stats = dict(w.split("=") for w in rows["follow_stats"].split())
    return {"follow": rows["follow"], **{k: int(v) for k, v in stats.items()}}


def one_rate(rate: float, secs: float, work: str, buffer_kb: int = 0):
    opts = ["follow"] + ([f"follow_buffer_kb={buffer_kb}"] if buffer_kb else [])
    m = Mount(os.path.join(work, "mnt"), opts)
    m.start()
    d = tempfile.mkdtemp(prefix="files_", dir=work)
    try:
        os.mkdir(m.p("bench"))
        child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.Popen([sys.executable, "-c", WORKLOAD, str(rate), str(secs), d],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        with open(m.p("bench", "tasks"), "w") as f:
            f.write(f"{p.pid}\n")
        (u0, s0), t0 = cpu_of(m.proc.pid, True), time.monotonic()
        p.stdin.write("go\n")
        p.stdin.close()
        files = int(p.stdout.read() or 0)
        p.wait()
        t_work = time.monotonic() - t0
        # the daemon catches up: applied stops growing
        last, deadline = -1, time.monotonic() + 120
        while time.monotonic() < deadline:
            c = config(m)
            if c["applied"] == last and c["pending"] < 1000:
                break
            last = c["applied"]
            time.sleep(0.5)
        t_all = time.monotonic() - t0
        u1, s1 = cpu_of(m.proc.pid, True)
        child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wcpu = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
        c = config(m)
        dcpu = u1 - u0 + s1 - s0              # includes the catch-up
        return dict(rate=rate, files=files, secs=t_work, catchup=t_all - t_work,
                    events=c["applied"], lost=int(c["follow"].split("lost=")[1].split()[0])
                    if "lost=" in c["follow"] else 0,
                    p50=c["latency_p50_us"], p99=c["latency_p99_us"], mx=c["latency_max_us"],
                    dcpu=dcpu, sys=s1 - s0, wcpu=wcpu)
    finally:
        m.stop()
        shutil.rmtree(d, ignore_errors=True)


def idle(secs: float, work: str) -> float:
    m = Mount(os.path.join(work, "mnt"), ["follow"])
    m.start()
    try:
        os.mkdir(m.p("bench"))
        p = subprocess.Popen(["sleep", str(secs + 5)])
        try:
            with open(m.p("bench", "tasks"), "w") as f:
                f.write(f"{p.pid}\n")
            time.sleep(0.5)
            c0 = cpu_of(m.proc.pid)
            time.sleep(secs)
            return (cpu_of(m.proc.pid) - c0) / secs
        finally:
            p.kill()
            p.wait()
    finally:
        m.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rates", default="", help="files/s, comma separated (0 = max)")
    ap.add_argument("--seconds", type=float, default=0)
    ap.add_argument("--loss-rates", default="", help="files/s for the loss search")
    ap.add_argument("--loss-buffer-kb", type=int, default=2048,
                    help="follow_buffer_kb of the loss search (small: loss shows in seconds)")
    a = ap.parse_args()
    why = capture.unavailable()
    if why:
        B.say(f"bench_follow: skipped ({why})")
        return 0
    rates = [float(r) for r in a.rates.split(",")] if a.rates else \
        ([200, 0] if a.quick else [100, 500, 2000, 0])
    loss_rates = [float(r) for r in a.loss_rates.split(",")] if a.loss_rates else \
        ([500, 2000] if a.quick else [500, 1000, 1500, 2000, 3000, 0])
    secs = a.seconds or (2 if a.quick else 5)
    rows, loss_rows = [], []
    with tempfile.TemporaryDirectory(prefix="kmemfs_bench_follow_") as work:
        B.say(f"idle: following one sleeping process for {secs:.0f} s ...")
        idle_cpu = idle(secs, work)
        for r in rates:
            B.say(f"rate {r or 'max'} files/s for {secs:.0f} s ...")
            x = one_rate(r, secs, work)
            t = x["secs"] + x["catchup"]
            rows.append([f"{r:.0f}" if r else "max", f"{x['files'] / x['secs']:,.0f}",
                         f"{x['events'] / x['secs']:,.0f}", f"{x['events'] / t:,.0f}",
                         x["lost"], f"{x['p50'] / 1000:.1f}", f"{x['p99'] / 1000:.1f}",
                         f"{x['catchup']:.1f}", f"{x['dcpu'] / t * 100:.0f}%",
                         f"{x['sys'] / max(x['dcpu'], 1e-9) * 100:.0f}%",
                         f"{x['dcpu'] / max(1, x['events']) * 1e6:.1f}",
                         f"{x['wcpu'] / x['secs'] * 100:.0f}%"])
        loss_secs = 2 * secs
        for r in loss_rates:
            B.say(f"loss search: {r or 'max'} files/s for {loss_secs:.0f} s, "
                  f"follow_buffer_kb={a.loss_buffer_kb} ...")
            x = one_rate(r, loss_secs, work, a.loss_buffer_kb)
            loss_rows.append([f"{r:.0f}" if r else "max", f"{x['events'] / x['secs']:,.0f}",
                              x["lost"], f"{x['catchup']:.1f}"])
    B.table(f"-o follow: {secs:.0f} s per rate, one followed workload "
            f"({os.cpu_count()} CPUs; idle daemon {idle_cpu * 100:.1f}% of a CPU)",
            ["files/s asked", "files/s done", "events/s made", "events/s applied", "lost",
             "lat p50 ms", "lat p99 ms", "catch-up s", "daemon CPU", "of it sys",
             "µs CPU/event", "workload CPU"], rows)
    B.table(f"loss search: {loss_secs:.0f} s per rate, follow_buffer_kb={a.loss_buffer_kb}",
            ["files/s asked", "events/s made", "lost", "catch-up s"], loss_rows)
    held = [r for r in loss_rows if r[2] == 0]
    B.say(f"highest event rate with 0 lost: {held[-1][1] if held else 'none'} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
