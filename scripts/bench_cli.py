"""Start-up cost of the `kmemfs` command, side by side in one run (docs/performance.md).

    .venv/bin/python scripts/bench_cli.py MOUNTPOINT [--repeats N]

Rows: a bare `python -c pass`; `kmemfs ctl MOUNTPOINT status` (one command through a mounted
kmemfs); and `python -c 'import <what kmemfs ctl loaded before the imports went lazy>'`
(pyfuse3/trio via kmemfs.fuse.daemon, and rich via kmemfs.tools.top's old module-level
imports) — the cost `kmemfs ctl` no longer pays. Wall-clock per run; min and median of the
repeats, and each median over bare Python's.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mountpoint")
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    py = os.path.join(BIN, "python")
    rows = {
        "python -c pass": [py, "-c", "pass"],
        "kmemfs ctl MP status": [os.path.join(BIN, "kmemfs"), "ctl", a.mountpoint, "status"],
        "import daemon + rich (old ctl)": [py, "-c", "import kmemfs.fuse.daemon, rich.console, "
                                           "rich.live, rich.layout, rich.table, rich.panel"],
    }
    times = {k: [] for k in rows}
    for _ in range(a.repeats):               # interleaved: load changes hit every row alike
        for name, cmd in rows.items():
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, cwd=ROOT)
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["python -c pass"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:32} min {min(ts) * 1e3:6.1f} ms   median {m * 1e3:6.1f} ms   "
              f"x{m / base:4.1f} of bare python")


if __name__ == "__main__":
    main()
