#!/usr/bin/env python3
"""Daemon memory under the open-handle attack (issue 9 item 10): a user opens N handles on
`.kmemfs/slabinfo`, reads one byte from each (so each takes its snapshot) and holds them.
Prints the daemon's RSS before, while they are held, and how many opens failed (errno).

    scripts/handle_rss.py [--handles 30000] [--user nobody|root] [--file .kmemfs/slabinfo]

It mounts its own kmemfs (allow_other) under a directory other users can traverse and always
unmounts it. Run it from another checkout to measure that checkout's daemon.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from mounting import Mount  # noqa: E402

PER_PROCESS = 10000

HOLDER = """
import errno, os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds, errors = [], {}
for _ in range(int(sys.argv[2])):
    try:
        fd = os.open(sys.argv[1], os.O_RDONLY)
    except OSError as e:
        errors[errno.errorcode[e.errno]] = errors.get(errno.errorcode[e.errno], 0) + 1
        continue
    fds.append(fd)
    os.read(fd, 1)
print(len(fds), " ".join(f"{k}={v}" for k, v in errors.items()) or "-", flush=True)
sys.stdin.readline()
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--handles", type=int, default=30000)
    ap.add_argument("--user", default="nobody", choices=["nobody", "root"])
    ap.add_argument("--file", default=".kmemfs/slabinfo")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("handle_rss: needs root (it mounts, and acts as nobody)", file=sys.stderr)
        return 2
    base = tempfile.mkdtemp(prefix="kmemfs-rss-", dir="/tmp")
    os.chmod(base, 0o755)
    m = Mount(os.path.join(base, "mnt"), ["allow_other"])
    try:
        m.start()
        pid = m.proc.pid
        open(m.p(args.file)).read()                        # warm: one rendering
        before = rss_mb(pid)
        py = "/usr/bin/python3" if args.user == "nobody" else sys.executable
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] \
            if args.user == "nobody" else []
        holders, left = [], args.handles
        while left > 0:                  # several processes: RLIMIT_NOFILE's hard limit
            n = min(left, PER_PROCESS)
            left -= n
            holders.append(subprocess.Popen(drop + [py, "-c", HOLDER, m.p(args.file), str(n)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            text=True))
        opened, errors = 0, []
        for h in holders:
            n, err = h.stdout.readline().split()
            opened += int(n)
            errors += [] if err == "-" else [err]
        held = rss_mb(pid)
        for h in holders:
            h.stdin.write("\n")
            h.stdin.close()
            h.wait()
        print(f"{args.user} opened {args.handles} x {args.file} ({len(holders)} processes): "
              f"{opened} held, failed: {' '.join(errors) or 'none'}; "
              f"daemon RSS {before:.1f} MB before, {held:.1f} MB while held")
    finally:
        m.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
