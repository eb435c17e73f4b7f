#!/usr/bin/env python3
"""kmemfs's own cost per FUSE request, without FUSE: the adapter's handlers (kmemfs/fuse/ops.py
Operations) driven from trio in process, on a model of 1,000 cgroups.

    .venv/bin/python scripts/bench_handlers.py [--n 5000]

For each of the 6 files of bench_fs.py's sweep (d): open, read, the read at EOF, release, as
the kernel sends them (default mode); then open + release with -o page_cache (the data comes
from the page cache). What a sweep costs above the pyfuse3 floor that kmemfs's code can explain
(docs/performance.md). No root, no mount.
"""
import argparse
import os
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import trio  # noqa: E402

from kmemfs.engine.config import Config  # noqa: E402
from kmemfs.fuse import daemon  # noqa: E402
from kmemfs.fuse.ops import Operations  # noqa: E402

FILES = ("memory.usage_in_bytes", "memory.limit_in_bytes", "memory.max_usage_in_bytes",
         "memory.failcnt", "memory.kmem.usage_in_bytes", "memory.stat")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="repeats per file (default 5000)")
    n = ap.parse_args().n
    fs = daemon.build(Config())
    root = fs.dir_ino(fs.engine.root)
    for i in range(1000):
        fs.mkdir(root, f"s{i}")
    d = fs.lookup(root, "s5").ino
    inos = {f: fs.lookup(d, f).ino for f in FILES}
    ctx = types.SimpleNamespace(pid=os.getpid(), uid=0, gid=0, umask=0)

    async def run(ops, reads):
        out = {}
        for name, ino in inos.items():
            t = time.perf_counter()
            for _ in range(n):
                fi = await ops.open(ino, os.O_RDONLY, ctx)
                if reads:
                    await ops.read(fi.fh, 0, 131072)
                    await ops.read(fi.fh, 4096, 131072)
                await ops.release(fi.fh)
            out[name] = (time.perf_counter() - t) / n * 1e6
        return out

    plain = trio.run(run, Operations(fs, "/nonexistent"), True)
    cached = trio.run(run, Operations(fs, "/nonexistent", page_cache=True), False)
    print(f"{'file':28} {'4 requests':>12} {'-o page_cache: 2':>18}")
    for name in FILES:
        print(f"{name:28} {plain[name]:10.1f} us {cached[name]:16.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
