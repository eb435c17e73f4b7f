"""The hidden control directory `.kmemfs/`: ctl, slabinfo, events, config (issue 4), and
snapshot: the whole tree in one read, for kmemfs's own tools (issue 13)."""
import bisect
import datetime
import errno
import json

from ..engine import EngineError, render
from .ctl import Blocked, Executor, error_line, parse_line, MAX_LINE
from .tree import encode


MAX_WRITE = 1 << 20          # the kernel's FUSE write size: fc->max_write, 256 pages
PAGE = 4096
MAX_UNREAD = 16 << 20        # results kept for a reader that does not read (oldest dropped)


class CtlFile:
    """Commands in, one result line per command out (read back on the same open file).

    Writes: only complete lines run. The kernel cuts a write(2) over MAX_WRITE into several
    requests at consecutive offsets (the first may be up to a page shorter when the buffer is
    not page-aligned); a request that long whose last line has no newline keeps that line
    for the next request at the following offset, which completes it. If a command fails in
    such a continuation, the kernel turns the write(2) into a short write and a client that
    retries (stdio) sends the same bytes again at the same offset: those are answered with
    the same error without running anything twice.

    Reads: a stream by offset. A read continues where the last one ended, whatever the file
    offset (writes on the same file move it too); a read at an offset inside the last read's
    range re-reads from there (bash `read` seeks back over what it did not use). Results
    before the last read are dropped, so memory stays bounded over any number of commands."""
    mode = 0o600

    def open(self, fs, h, req):
        h.state.update(out=bytearray(), base=0, cursor=0, last=None, tail=b"", next_off=None,
                       guard=None, executor=Executor(fs))

    def read(self, fs, h, off, size):
        st = h.state
        last = st["last"]
        if last is not None and last[0] <= off <= last[1]:
            st["cursor"] = last[2] + (off - last[0])
        cursor = max(st["cursor"], st["base"])
        out = st["out"]
        del out[:cursor - st["base"]]
        st["base"] = cursor
        chunk = bytes(out[:size])
        st["last"] = (off, off + len(chunk), cursor)
        st["cursor"] = cursor + len(chunk)
        return chunk

    def write(self, fs, h, off, data, req):
        st = h.state
        guard, st["guard"] = st["guard"], None
        if guard is not None and off == guard[0] and data.startswith(guard[1]):
            raise EngineError(guard[2].errno, guard[2].message)      # a retry: not run again
        follows = off == st["next_off"]           # the rest of a split write(2)
        st["next_off"] = off + len(data) if len(data) > MAX_WRITE - PAGE else None
        tail, st["tail"] = (st["tail"] if follows else b""), b""
        continued = st["next_off"] is not None and not data.endswith(b"\n")
        text = (tail + data).decode("utf-8", "surrogateescape")
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        if continued:
            st["tail"] = encode(lines.pop())
        # (line, bytes of this request consumed once the line has run)
        cmds, end = [], -len(tail)
        for ln in lines:
            end += len(encode(ln)) + 1
            if ln.strip() and not ln.lstrip().startswith("#"):
                if len(encode(ln)) > MAX_LINE:              # bytes, as docs/ctl.md says
                    st["tail"] = b""
                    raise EngineError(errno.E2BIG, f"a command line is longer than {MAX_LINE} bytes")
                cmds.append((ln, min(max(end, 0), len(data))))
        if len(st["tail"]) > MAX_LINE and not st["tail"].lstrip().startswith(b"#"):
            st["tail"] = b""
            raise EngineError(errno.E2BIG, f"a command line is longer than {MAX_LINE} bytes")
        retry = (off, data) if follows else None
        return run_lines(fs, h, cmds, 0, len(data), req, retry)


def emit(h, text: str) -> None:
    """Append one result line to the handle's stream; a reader that never reads keeps only
    the last MAX_UNREAD bytes."""
    st = h.state
    out = st["out"]
    out += encode(text)
    extra = len(out) - MAX_UNREAD
    if extra > 0:
        extra = out.find(b"\n", extra - 1) + 1 or len(out)      # whole lines
        del out[:extra]
        st["base"] += extra
        st["cursor"] = max(st["cursor"], st["base"])


def fail(h, e, cmds, k, retry) -> None:
    """Record a failed command. In a continuation of a split write(2), remember the bytes up
    to the failed line: the client's retry of them is answered with the same error."""
    emit(h, result_line(error_line(e)))
    if retry is not None:
        off, data = retry
        h.state["guard"] = (off, data[:cmds[k][1]], e)


def run_lines(fs, h, cmds, i, nbytes, req, retry=None):
    """Run cmds[i:] in order, stopping at the first error (whose errno fails the write)."""
    ex = h.state["executor"]
    for k in range(i, len(cmds)):
        try:
            emit(h, result_line(ex.run(parse_line(cmds[k][0]), req)))
        except Blocked as b:
            fs.after_change()
            return Pending(fs, h, b, cmds, k, nbytes, req, retry)
        except EngineError as e:
            fail(h, e, cmds, k, retry)
            fs.after_change()
            raise
        fs.after_change()
    return nbytes


def result_line(text) -> str:
    """One line per command: a newline inside (a cgroup name may hold one) is written
    `\\012`, as in the event log. The discovery verbs (help, caches, ...) answer a list:
    their `ok` line, then detail lines indented by two spaces."""
    if isinstance(text, list):
        return result_line(text[0]) + "".join("  " + result_line(t) for t in text[1:])
    return text.replace("\n", "\\012") + "\n"


class Pending:
    """A ctl write sleeping in mem_cgroup_handle_oom. The caller waits until the engine's
    oom_wake_seq moves, then calls resume(); cancel() when the writer is gone."""

    def __init__(self, fs, h, blocked, cmds, k, nbytes, req, retry):
        self.fs, self.h, self.blocked = fs, h, blocked
        self.cmds, self.k, self.nbytes, self.req, self.retry = cmds, k, nbytes, req, retry
        self.done = False

    @property
    def memcg(self):
        return self.blocked.memcg

    def resume(self):
        self.fs.engine.end_oom_wait(self.blocked.memcg)
        try:
            line = self.blocked.retry()
        except Blocked as b:
            self.blocked = b
            self.fs.after_change()
            return self
        except EngineError as e:
            self.done = True
            fail(self.h, e, self.cmds, self.k, self.retry)
            self.fs.after_change()
            raise
        self.done = True
        emit(self.h, result_line(line))
        self.fs.after_change()
        return run_lines(self.fs, self.h, self.cmds, self.k + 1, self.nbytes, self.req,
                         self.retry)

    def cancel(self):
        if not self.done:
            self.done = True
            self.fs.engine.end_oom_wait(self.blocked.memcg)
            emit(self.h, "error: EINTR: the writer went away while the charge waited on "
                         "the OOM killer\n")
            self.fs.after_change()


class EventsFile:
    """The engine's event log as text. Byte offsets are stable for the daemon's life and
    st_size grows, so a reader that keeps it open (tail -f) reads only new events."""
    mode = 0o444

    def __init__(self):
        self.offsets, self.lines = [], []
        self.end = 0          # bytes ever emitted
        self.seq = 0          # last engine event formatted

    def sync(self, engine):
        """Format the new events. Each is stamped here with the wall clock, as a `time` field
        kept in the engine's own record (so a saved state restores it): the engine stays
        deterministic, and the file system calls this after every change (after_change)."""
        now = None
        for seq, kind, fields in engine.events_since(self.seq):
            if "time" not in fields:
                now = now or wall_clock()
                fields["time"] = now
            # the time goes last: `<seq> <type> cgroup=...` stays what scripts grep for
            line = (f"{seq} {kind}"
                    + "".join(f" {k}={_esc(v)}" for k, v in fields.items() if k != "time")
                    + f" time={fields['time']}\n")
            line = encode(line)
            self.offsets.append(self.end)
            self.lines.append(line)
            self.end += len(line)
            self.seq = seq
        drop = len(self.lines) - engine.config.event_log_size
        if drop > 0:
            del self.offsets[:drop], self.lines[:drop]

    def size(self, fs):
        self.sync(fs.engine)
        return self.end

    def read(self, fs, h, off, size):
        self.sync(fs.engine)
        i = max(bisect.bisect_right(self.offsets, off) - 1, 0)
        if not self.lines:
            return b""
        start = self.offsets[i]
        out, n = [], 0
        for line in self.lines[i:]:
            out.append(line)
            n += len(line)
            if n >= size + (off - start):
                break
        data = b"".join(out)
        skip = max(off - start, 0)
        return data[skip:skip + size]

    def write(self, fs, h, off, data, req):
        raise EngineError(errno.EINVAL, "read-only file")


def wall_clock() -> str:
    """UTC, ISO 8601 with microseconds: 2026-12-02T16:40:01.123456Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _esc(v) -> str:
    return str(v).replace("\\", "\\134").replace(" ", "\\040").replace("\n", "\\012")


class SnapshotFile:
    mode = 0o444

    def __init__(self, render_fn):
        self.render = render_fn

    def read(self, fs, h, off, size):
        return fs.snapshot(h, off, lambda: self.render(fs))[off:off + size]

    def write(self, fs, h, off, data, req):
        raise EngineError(errno.EINVAL, "read-only file")


def _config(fs) -> str:
    rows = fs.engine.config.items() + [("catalogue", fs.engine.catalogue_source),
                                       ("caches", len(fs.engine.originals))]
    if fs.follow is not None:          # -o follow: exact, or inexact lost=N (docs/trace.md)
        rows += [("follow", fs.follow.status()), ("follow_stats", fs.follow.stats())]
    return "".join(f"{k} {int(v) if isinstance(v, bool) else v}\n" for k, v in rows)


SNAPSHOT_VERSION = 1


def _snapshot(fs) -> str:
    """JSON lines (docs/ctl.md): a header, one line per cgroup in tree order (pre-order,
    names sorted, as a walk of the directories gives them), then one line per cache, newest
    first as in slabinfo. Every value is what the cgroup's own file shows at this moment."""
    e = fs.engine
    swap = e.config.swap_account
    fs.prune_tasks()
    root_tasks = fs.tasks_read(e.root, threads=True).count("\n")
    cgroups = []
    stack = [e.root]
    while stack:
        m = stack.pop()
        cgroups.append(m)
        stack.extend(m.children[n] for n in sorted(m.children, reverse=True))
    lines = [{"type": "header", "version": SNAPSHOT_VERSION, "page_size": e.page,
              "swap_account": swap, "event_seq": e.event_seq, "cgroups": len(cgroups),
              "caches": len(e.caches)}]
    for m in cgroups:
        stat = m.stat()
        lines.append({
            "type": "cgroup", "path": m.path(),
            "usage": render.usage(e, m), "limit": m.res.limit, "max_usage": m.res.max_usage,
            "failcnt": m.res.failcnt, "soft_limit": m.res.soft_limit,
            "memsw_usage": render.usage(e, m, memsw=True) if swap else None,
            "memsw_limit": m.memsw.limit if swap else None,
            "memsw_max_usage": m.memsw.max_usage if swap else None,
            "memsw_failcnt": m.memsw.failcnt if swap else None,
            "kmem_usage": m.kmem.usage, "kmem_limit": m.kmem.limit,
            "independent": int(m.independent_kmem_limit),
            "tcp_usage": m.tcp.usage, "tcp_limit": m.tcp.limit,
            "cache": stat["cache"], "rss": stat["rss"],
            "kernel_bypassed_memory": stat["kernel_bypassed_memory"],
            "use_hierarchy": int(m.use_hierarchy), "oom_kill_disable": int(m.oom_kill_disable),
            "under_oom": int(m.under_oom > 0), "swappiness": e.swappiness(m),
            "move_charge_at_immigrate": m.move_charge_at_immigrate,
            "notify_on_release": int(m.notify_on_release),
            "tasks": root_tasks if m.is_root else len(m.tasks),
        })
    for c in e.caches_newest_first():
        lines.append({"type": "cache", "name": c.name,
                      "cgroup": None if c.memcg is None else c.memcg.path(),
                      "dead": bool(c.dead), "active_objs": c.active_objs,
                      "num_objs": c.nr_slabs * c.num, "objsize": c.objsize,
                      "objperslab": c.num, "pagesperslab": c.pages,
                      "active_slabs": c.active_slabs, "num_slabs": c.nr_slabs})
    return "".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines)


def control_files() -> dict:
    return {
        "ctl": CtlFile(),
        "slabinfo": SnapshotFile(lambda fs: render.slabinfo(fs.engine)),
        "events": EventsFile(),
        "config": SnapshotFile(_config),
        "snapshot": SnapshotFile(_snapshot),
    }
