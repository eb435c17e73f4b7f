#!/usr/bin/env python3
"""Idle and polling cost of the kmemfs daemon, from its utime+stime in /proc/PID/stat.

    scripts/bench_idle.py [--idle 10] [--poll 30] [--readers 50] [--interval 0.1] [MOUNTPOINT]

1. idle: nothing touches the mount for --idle seconds (must be ~0: no busy loop);
2. idle with a sleeper: one control command sleeps on a memcg OOM (oom_kill_disable=1) for
   --idle seconds — what the daemon spends watching for the writer's death;
3. polling: --readers threads each poll memory.usage_in_bytes of its own cgroup every
   --interval seconds (open, read, close) for --poll seconds.
Reports CPU seconds, % of one core and polls served per second.
"""
import argparse
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def measure(pid, seconds, during=None):
    """CPU seconds the daemon used over `seconds` (while `during`, if any, runs)."""
    before, t0 = harness.cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return harness.cpu_seconds(pid) - before, time.monotonic() - t0


def idle(mp, pid, seconds):
    cpu, wall = measure(pid, seconds)
    return {"seconds": round(wall, 1), "cpu_s": round(cpu, 3), "pct": round(100 * cpu / wall, 2)}


def idle_with_sleeper(mp, pid, seconds):
    """A ctl write sleeping on an OOM: the daemon must not spin while it waits."""
    g = os.path.join(mp, "bench-sleeper")
    os.mkdir(g)
    with open(os.path.join(g, "memory.limit_in_bytes"), "w") as f:
        f.write("1M")
    with open(os.path.join(g, "memory.oom_control"), "w") as f:
        f.write("1")
    ctl = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".venv", "bin", "kmemfs")
    cmd = [ctl if os.path.exists(ctl) else "kmemfs", "ctl", mp, "charge", "anon", "2M",
           "cg=/bench-sleeper"]
    writer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        sleeping = writer.poll() is None
        cpu, wall = measure(pid, seconds)
    finally:
        with open(os.path.join(g, "memory.limit_in_bytes"), "w") as f:
            f.write("-1")                      # relieve: the command completes
        writer.wait(30)
        os.rmdir(g)
    return {"seconds": round(wall, 1), "cpu_s": round(cpu, 3), "pct": round(100 * cpu / wall, 2),
            "writer_slept": sleeping}


def polling(mp, pid, readers, seconds, interval):
    dirs = []
    for i in range(readers):
        d = os.path.join(mp, f"bench-poll-{i}")
        os.mkdir(d)
        dirs.append(d)
    stop = threading.Event()
    polls, errors = [0] * readers, [0] * readers

    def reader(i):
        path = os.path.join(dirs[i], "memory.usage_in_bytes")
        nxt = time.monotonic()
        while not stop.is_set():
            try:
                with open(path, "rb", buffering=0) as f:
                    f.read(64)
                polls[i] += 1
            except OSError:
                errors[i] += 1
            nxt += interval
            stop.wait(max(0.0, nxt - time.monotonic()))

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(readers)]
    try:
        cpu0, t0 = harness.cpu_seconds(pid), time.monotonic()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(10)
        cpu, wall = harness.cpu_seconds(pid) - cpu0, time.monotonic() - t0
    finally:
        stop.set()
        for d in dirs:
            try:
                os.rmdir(d)
            except OSError:
                pass
    n = sum(polls)
    return {"readers": readers, "interval_s": interval, "seconds": round(wall, 1),
            "polls": n, "polls_per_s": round(n / wall), "expected_per_s": round(readers / interval),
            "errors": sum(errors), "cpu_s": round(cpu, 2), "pct": round(100 * cpu / wall, 1),
            "cpu_ms_per_poll": round(1000 * cpu / n, 3) if n else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mountpoint", nargs="?")
    p.add_argument("--idle", type=float, default=10.0)
    p.add_argument("--poll", type=float, default=30.0)
    p.add_argument("--readers", type=int, default=50)
    p.add_argument("--interval", type=float, default=0.1)
    a = p.parse_args(argv)
    with harness.kmemfs_mount(a.mountpoint) as (mp, pid):
        if pid is None:
            raise SystemExit("cannot find the daemon's pid (was it mounted with kmemfs mount?)")
        time.sleep(1.0)                        # let start-up settle
        r1 = idle(mp, pid, a.idle)
        print(f"idle: {r1['cpu_s']} CPU s over {r1['seconds']} s ({r1['pct']}% of a core)")
        r2 = idle_with_sleeper(mp, pid, a.idle)
        print(f"idle with a writer asleep on an OOM: {r2['cpu_s']} CPU s over {r2['seconds']} s "
              f"({r2['pct']}% of a core; writer slept: {r2['writer_slept']})")
        r3 = polling(mp, pid, a.readers, a.poll, a.interval)
        print(f"polling: {r3['readers']} readers every {r3['interval_s']} s for {r3['seconds']} s: "
              f"{r3['polls']} polls ({r3['polls_per_s']}/s of {r3['expected_per_s']}/s wanted, "
              f"{r3['errors']} errors); daemon {r3['cpu_s']} CPU s = {r3['pct']}% of a core, "
              f"{r3['cpu_ms_per_poll']} ms per poll (open+read+close)")
    return 0 if r1["pct"] < 1.0 and r3["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
