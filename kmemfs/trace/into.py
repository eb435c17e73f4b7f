"""`kmemfs replay TRACE --into MOUNTPOINT`: feed a trace to a running kmemfs mount.

The events go through the mount's `.kmemfs/ctl` as `replay ev` lines, in batches, in time
order (the same watermark merge as offline); the daemon replays them into its own engine
with the same Session as an offline replay, so its files, events, `kmemfs top` and
`kmemfs record` follow the workload. These are ordinary ctl writes: the daemon serves
everything else between them, and a write whose event sleeps on a memcg OOM
(oom_kill_disable) waits, as any charge does, until the limit or oom_control changes.
Reads and writes of the mount only: no engine in this process.
"""
import errno
import os
import sys
import time

from ..tools.ctlclient import exchange_fd
from .replay import WINDOW_NS, ReplayError, load, ordered, to_wire, _word

BATCH_BYTES = 32768          # well under a FUSE write's size: a batch is one ctl write


def _mkdirs(mp: str, cg: str) -> None:
    path = mp
    for part in filter(None, cg.split("/")):
        path = os.path.join(path, part)
        try:
            os.mkdir(path)
        except FileExistsError:
            pass


def _write_setting(mp: str, cg: str, item: str) -> None:
    key, eq, value = item.partition("=")
    if not eq:
        raise ReplayError(f"--set {item!r}: FILE=VALUE")
    path = os.path.join(mp, key.lstrip("/")) if key.startswith("/") else \
        os.path.join(mp, cg.lstrip("/"), key)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise ReplayError(f"--set {item}: {errno.errorcode.get(e.errno, e.errno)}: "
                          f"{e.strerror}") from None


class Feeder:
    """One open ctl file and the batches written to it."""

    def __init__(self, mp: str):
        self.fd = os.open(os.path.join(mp, ".kmemfs", "ctl"), os.O_RDWR)
        self.lines, self.size = [], 0

    def send(self, lines) -> list:
        out, failed = exchange_fd(self.fd, ("\n".join(lines) + "\n").encode())
        results = out.decode(errors="replace").splitlines()
        if failed is not None:
            last = results[-1] if results else f"error: {failed.strerror}"
            raise ReplayError(f"the mount refused line {len(results)} of a batch: {last}")
        return results

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        if self.size >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.send(self.lines)
            self.lines, self.size = [], 0

    def close(self) -> None:
        os.close(self.fd)


def feed(mp: str, header, events, cg: str, speed: float = 0, window_ns: int = WINDOW_NS,
         progress=None) -> str:
    """Replay `events` into the mount; returns the `replay end` result line."""
    f = Feeder(mp)
    try:
        begin = f"replay begin{' inexact' if header.inexact else ''} cg={cg}"
        f.send([begin] + [f"replay alias {_word(a)} {_word(b)}"
                          for a, b in sorted(header.slub_aliases.items())])
        t_first = wall0 = None
        n = 0
        for ev in ordered(events, window_ns):
            if speed:
                if t_first is None:
                    t_first, wall0 = ev.time_ns, time.monotonic()
                due = wall0 + (ev.time_ns - t_first) / 1e9 / speed
                if due > time.monotonic() + 0.002:
                    f.flush()                     # what is due goes out before the pause
                    time.sleep(max(0.0, due - time.monotonic()))   # the flush took time
            f.add(to_wire(ev))
            n += 1
            if progress is not None and not n % 10000:
                progress(n)
        f.flush()
        return f.send(["replay end"])[-1]
    finally:
        f.close()


def main(args) -> int:
    mp = os.path.abspath(args.into)
    if not os.path.exists(os.path.join(mp, ".kmemfs", "ctl")):
        print(f"kmemfs: {mp} is not a kmemfs mount (no .kmemfs/ctl)", file=sys.stderr)
        return 1
    with open(os.path.join(mp, ".kmemfs", "config")) as f:
        design = dict(line.split(" ", 1) for line in f.read().splitlines()).get("design", "series")
    if args.design and args.design != design:
        print(f"kmemfs: {mp} models the {design} design; mount it with -o design={args.design}",
              file=sys.stderr)
        return 1
    if args.plot:
        print("kmemfs: --plot is for offline replays; use `kmemfs record` on the mount",
              file=sys.stderr)
        return 1
    try:
        header, events = load(args.trace)
        _mkdirs(mp, args.cg)
        for item in args.sets:
            _write_setting(mp, args.cg, item)
        line = feed(mp, header, events, args.cg, args.speed)
    except (ReplayError, OSError, ValueError) as e:
        print(f"kmemfs: {e}", file=sys.stderr)
        return 1
    fields = dict(w.split("=", 1) for w in line.split()[3:] if "=" in w)
    if args.json:
        import json
        print(json.dumps(fields, indent=1))
    else:
        print(f"replayed into {mp}{args.cg}: " + ", ".join(f"{k} {v}" for k, v in fields.items()
                                                        if k != "first_failure"))
        if "first_failure" in fields:
            seq, cache, model, gfp, site = fields["first_failure"].split(":", 4)
            print(f"under the mount's design this workload would have failed here: event {seq}: "
                  f"{cache} -> {model} {gfp} at {site} (+{int(fields['failures']) - 1} more)")
    return 0
