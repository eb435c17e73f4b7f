"""The control language written to `.kmemfs/ctl` (docs/ctl.md): parsed, never evaluated.

    alloc CACHE [COUNT] [gfp=FLAGS] [irq=1] [acct=1]     free CACHE [COUNT]
    kmalloc SIZE [COUNT] [gfp=FLAGS] [irq=1] [acct=1]    kfree SIZE [COUNT]
    charge anon|file BYTES                      uncharge anon|file BYTES
    spawn                                       exit PID
    touch COUNT      unlink COUNT      drop_caches      reap      cache_reap      workqueue
    check
    replay begin|alias|ev|end ...               (a trace fed by `kmemfs replay --into`)

Any command may end with `task=PID` (act as that task) and/or `cg=PATH` (charge that cgroup),
and `cpu=N` (run on CPU N of nr_cpus: its SLAB array caches; CPU 0 otherwise).
Without them the writer is the acting task: its pid, or the nearest ancestor process that is
in some cgroup's `tasks`, else the root cgroup.
"""
import errno
from dataclasses import dataclass, field

from ..engine import EngineError, check as check_invariants, parse_gfp
from ..engine.gfp import GFP_KERNEL, gfp_name
from . import parse

MAX_LINE = 4096
OPTIONS = {"task", "cg", "gfp", "irq", "cpu", "acct"}
ERRNAME = {errno.EINVAL: "EINVAL", errno.ENOENT: "ENOENT", errno.ESRCH: "ESRCH",
           errno.ENOMEM: "ENOMEM", errno.E2BIG: "E2BIG", errno.EINTR: "EINTR",
           errno.ENOSPC: "ENOSPC", errno.ENODEV: "ENODEV", errno.EBUSY: "EBUSY",
           errno.EIO: "EIO"}


def bad(message: str) -> EngineError:
    return EngineError(errno.EINVAL, message)


@dataclass
class Command:
    verb: str
    args: list
    opts: dict
    text: str


def parse_line(line: str) -> Command:
    words = line.split()
    if not words:
        raise bad("empty command")
    verb, args, opts = words[0], [], {}
    for w in words[1:]:
        key, eq, val = w.partition("=")
        if eq:
            if key not in OPTIONS:
                raise bad(f"unknown option {key!r}")
            if key in opts:
                raise bad(f"option {key} given twice")
            opts[key] = val
        elif opts:
            raise bad(f"argument {w!r} after options")
        else:
            args.append(w)
    if verb not in COMMANDS:
        raise bad(f"unknown command {verb!r}")
    lo, hi, allowed = COMMANDS[verb][1:]
    if not lo <= len(args) <= hi:
        raise bad(f"{verb}: wrong number of arguments")
    extra = set(opts) - allowed - {"task", "cg", "cpu"}
    if extra:
        raise bad(f"{verb} takes no {', '.join(sorted(extra))}=")
    return Command(verb, args, opts, line.strip())


def number(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 20:   # not '²': int() refuses it
        raise bad(f"{what} must be a decimal number, not {text!r}")
    return int(text)


def capped(n: int, cap: int, what: str) -> int:
    if n > cap:
        raise EngineError(errno.E2BIG, f"{what} {n} is over the per-command cap {cap} "
                          "(mount option max_objects)")
    return n


def bytes_arg(text: str) -> int:
    """BYTES with an optional K/M/G suffix (memparse, no page rounding)."""
    val, i = parse.memparse(text.encode())
    if i != len(text) or not text[:1].isdigit():
        raise bad(f"bad size {text!r}")
    return val


@dataclass
class Actor:
    memcg: object
    task: object          # engine Task or None


class Blocked(Exception):
    """A charge sleeps on a memcg OOM: `retry()` re-issues what is left of the command."""

    def __init__(self, memcg, retry):
        super().__init__()
        self.memcg = memcg
        self.retry = retry


@dataclass
class Executor:
    fs: object
    results: list = field(default_factory=list)
    replay: object = None          # the replay Session of this open ctl file

    @property
    def engine(self):
        return self.fs.engine

    def count(self, text: str, what: str = "COUNT") -> int:
        return capped(number(text, what), self.engine.config.max_objects, what)

    def size(self, text: str) -> int:
        n = bytes_arg(text)
        capped(-(-n // self.engine.page), self.engine.config.max_objects, "pages")
        return n

    # ------------------------------------------------------------------ who acts
    def actor(self, cmd: Command, req) -> Actor:
        e = self.engine
        task = None
        if "task" in cmd.opts:
            pid = number(cmd.opts["task"], "task")
            task = e.tasks.get(pid)
            if task is None and not self.fs.host.exists(pid):
                raise EngineError(errno.ESRCH, f"no task {pid}")
        if "cg" in cmd.opts:
            memcg = self.fs.by_path(cmd.opts["cg"])
            if memcg is None or not cmd.opts["cg"].startswith("/"):
                raise EngineError(errno.ENOENT, f"no cgroup {cmd.opts['cg']!r}")
            return Actor(memcg, task)
        if task is not None:
            return Actor(task.memcg, task)
        if "task" in cmd.opts:
            return Actor(e.root, None)      # a host process in no cgroup of ours: root
        pid, seen = req.pid, set()
        while pid > 1 and pid not in seen:
            seen.add(pid)
            t = e.tasks.get(pid)
            if t is not None:
                return Actor(t.memcg, t)
            pid = self.fs.host.ppid(pid)
        return Actor(e.root, None)

    # ------------------------------------------------------------------ running
    def run(self, cmd: Command, req) -> str:
        fn = COMMANDS[cmd.verb][0]
        if cmd.verb == "replay" and cmd.args[0] != "begin":
            # its session's simulated tasks act, not the writer
            return self._on_cpu(self._cpu(cmd), lambda: fn(self, cmd, None))
        self.fs.prune_tasks()
        cpu = self._cpu(cmd)
        return self._on_cpu(cpu, lambda: fn(self, cmd, self.actor(cmd, req)))

    def _cpu(self, cmd) -> int:
        if "cpu" not in cmd.opts:
            return 0
        n = number(cmd.opts["cpu"], "cpu")
        if n >= self.engine.config.nr_cpus:
            raise bad(f"cpu={n}: the model has nr_cpus={self.engine.config.nr_cpus}")
        return n

    def _on_cpu(self, cpu: int, fn):
        """Run fn with the engine on `cpu`; a retry after an OOM sleep runs there too."""
        e = self.engine
        e.cpu = cpu
        try:
            return fn()
        except Blocked as b:
            retry = b.retry
            b.retry = lambda: self._on_cpu(cpu, retry)
            raise
        finally:
            e.cpu = 0

    def _gfp(self, cmd):
        return parse_gfp(cmd.opts["gfp"]) if "gfp" in cmd.opts else GFP_KERNEL

    def _flag(self, cmd, name) -> bool:
        v = cmd.opts.get(name, "0")
        if v not in ("0", "1"):
            raise bad(f"{name} takes 0 or 1")
        return v == "1"

    def _irq(self, cmd) -> bool:
        return self._flag(cmd, "irq")

    def _alloc(self, orig, count, cmd, a: Actor, verb: str):
        gfp, irq = self._gfp(cmd), self._irq(cmd)
        acct = self._flag(cmd, "acct")     # marked __GFP_ACCOUNT: what design=optin charges
        done = [0]

        def attempt():
            r = self.engine.alloc(orig, count - done[0], a.memcg, gfp, irq, task=a.task,
                                  accounted=acct)
            done[0] += r.done
            return r

        def finish(r):
            where = f"cache={r.cache.name} count={done[0]} cgroup={a.memcg.path()} gfp={gfp_name(gfp)}"
            if r.status == "wait":
                raise Blocked(r.wait_on, lambda: finish(attempt()))
            if r.status == "ok" and done[0] == count:
                return f"ok {verb} {where}"
            raise EngineError(errno.ENOMEM, f"{verb} {where}: allocated {done[0]} of {count}"
                              + (" (the acting task was OOM-killed)" if r.status == "killed" else ""))
        return finish(attempt())

    def cmd_alloc(self, cmd, a):
        count = self.count(cmd.args[1]) if len(cmd.args) > 1 else 1
        return self._alloc(self.engine.cache(cmd.args[0]), count, cmd, a, "alloc")

    def cmd_kmalloc(self, cmd, a):
        size = self.size(cmd.args[0])
        count = self.count(cmd.args[1]) if len(cmd.args) > 1 else 1
        cache = self.engine.kmalloc_cache(size)
        if cache is None:    # ZERO_SIZE_PTR: it succeeds, with nothing allocated or charged
            return (f"ok kmalloc cache=ZERO_SIZE_PTR count={count} cgroup={a.memcg.path()} "
                    f"gfp={gfp_name(self._gfp(cmd))}")
        return self._alloc(cache, count, cmd, a, "kmalloc")

    def _free(self, name, count, a, verb):
        n = self.engine.free_named(name, count, a.memcg)
        if n < count:
            raise EngineError(errno.EINVAL, f"{verb} {name}: freed {n} of {count}: "
                              f"{a.memcg.path()} holds no more")
        return f"ok {verb} cache={name} count={n} cgroup={a.memcg.path()}"

    def cmd_free(self, cmd, a):
        count = self.count(cmd.args[1]) if len(cmd.args) > 1 else 1
        return self._free(cmd.args[0], count, a, "free")

    def cmd_kfree(self, cmd, a):
        size = self.size(cmd.args[0])
        count = self.count(cmd.args[1]) if len(cmd.args) > 1 else 1
        cache = self.engine.kmalloc_cache(size)
        if cache is None:    # kfree(ZERO_SIZE_PTR) does nothing
            return f"ok kfree cache=ZERO_SIZE_PTR count={count} cgroup={a.memcg.path()}"
        return self._free(cache.name, count, a, "kfree")

    def _kind(self, cmd):
        if cmd.args[0] not in ("anon", "file"):
            raise bad("charge takes anon or file")
        return cmd.args[0]

    def cmd_charge(self, cmd, a):
        kind, nbytes = self._kind(cmd), self.size(cmd.args[1])
        page = self.engine.page
        done = [0]

        def attempt():
            r = self.engine.charge_user(a.memcg, kind, nbytes - done[0] * page, a.task)
            done[0] += r.done
            return r

        def finish(r):
            if r.status == "wait":
                raise Blocked(r.wait_on, lambda: finish(attempt()))
            if r.status != "ok":
                raise EngineError(errno.ENOMEM, f"charge {kind}: charged {done[0]} of "
                                  f"{-(-nbytes // page)} pages to {a.memcg.path()}")
            return f"ok charge {kind} pages={done[0]} cgroup={a.memcg.path()}"
        return finish(attempt())

    def cmd_uncharge(self, cmd, a):
        kind, nbytes = self._kind(cmd), self.size(cmd.args[1])
        n = self.engine.uncharge_user(a.memcg, kind, nbytes, a.task)
        return f"ok uncharge {kind} pages={n} cgroup={a.memcg.path()}"

    def cmd_spawn(self, cmd, a):
        def attempt():
            t, r = self.engine.spawn(a.memcg, parent=a.task)
            if t is not None:
                return f"ok spawn pid={t.pid} cgroup={a.memcg.path()}"
            if r.status == "wait":
                raise Blocked(r.wait_on, attempt)
            raise EngineError(errno.ENOMEM, f"spawn: {r.cache.name if r.cache else '?'} "
                              f"allocation failed in {a.memcg.path()} (fork fails with ENOMEM)")
        return attempt()

    def cmd_exit(self, cmd, a):
        pid = number(cmd.args[0], "PID")
        t = self.engine.tasks.get(pid)
        if t is None or not t.simulated:
            raise EngineError(errno.ESRCH, f"no simulated task {pid}")
        self.engine.exit_task(pid)
        return f"ok exit pid={pid}"

    def cmd_touch(self, cmd, a):
        count = self.count(cmd.args[0])
        gfp = self._gfp(cmd)
        done = [0]

        def attempt():
            r = self.engine.touch(a.memcg, count - done[0], gfp, a.task)
            done[0] += r.done
            return r

        def finish(r):
            if r.status == "wait":
                raise Blocked(r.wait_on, lambda: finish(attempt()))
            if done[0] < count:
                raise EngineError(errno.ENOMEM, f"touch: created {done[0]} of {count} files "
                                  f"in {a.memcg.path()}")
            return f"ok touch files={done[0]} cgroup={a.memcg.path()}"
        return finish(attempt())

    def cmd_unlink(self, cmd, a):
        n = self.engine.unlink(a.memcg, self.count(cmd.args[0]))
        return f"ok unlink files={n} cgroup={a.memcg.path()}"

    def cmd_drop_caches(self, cmd, a):
        return f"ok drop_caches objects={self.engine.drop_caches()}"

    def cmd_reap(self, cmd, a):
        return f"ok reap slabs={self.engine.reap()}"

    def cmd_cache_reap(self, cmd, a):
        return f"ok cache_reap slabs={self.engine.cache_reap()}"

    def cmd_workqueue(self, cmd, a):
        made = self.engine.run_workqueue()
        return f"ok workqueue created={len(made)}" + "".join(f" {c.name}" for c in made)

    def cmd_replay(self, cmd, a):
        """A trace fed line by line (docs/ctl.md, kmemfs/trace/replay.py Session)."""
        from ..trace import replay as _replay
        sub, args = cmd.args[0], cmd.args[1:]
        shape = {"begin": (0, 1), "alias": (2, 2), "ev": (len(_replay.WIRE), len(_replay.WIRE)),
                 "end": (0, 0)}
        if sub not in shape or not shape[sub][0] <= len(args) <= shape[sub][1]:
            raise bad(f"replay {sub}: wrong number of arguments" if sub in shape else
                      "replay takes begin, alias, ev or end")
        if sub == "begin":
            if args and args[0] != "inexact":
                raise bad("replay begin takes only 'inexact'")
            self.replay = _replay.Session(self.engine, a.memcg, {}, inexact=bool(args))
            self.replay.blocked = self._replay_blocked
            return f"ok replay begin cgroup={a.memcg.path()} design={self.engine.policy.name}"
        if self.replay is None:
            raise bad("replay: no 'replay begin' on this open file")
        if sub == "alias":
            self.replay.mapper.aliases[args[0]] = args[1]
            return "ok replay alias"
        if sub == "ev":
            try:
                ev = _replay.from_wire(args)
            except ValueError as e:
                raise bad(f"replay ev: {e}") from None
            self.replay.feed(ev)
            return "ok replay"
        return "ok replay end " + _replay.summary(self.replay.finish())

    def _replay_blocked(self, r, ev):
        # The event sleeps on its memcg's OOM (oom_kill_disable) like any charge: the write
        # waits for the limit or oom_control to change, then the event is fed again.
        def retry():
            self.replay.feed(ev)
            return "ok replay"
        raise Blocked(r.wait_on, retry)

    def cmd_check(self, cmd, a):
        bad_ = check_invariants(self.engine)
        if bad_:
            raise EngineError(errno.EIO, f"{len(bad_)} invariant(s) violated: " + "; ".join(bad_[:5]))
        return "ok check invariants=hold"


# verb -> (method, min args, max args, options besides task/cg)
COMMANDS = {
    "alloc": (Executor.cmd_alloc, 1, 2, {"gfp", "irq", "acct"}),
    "free": (Executor.cmd_free, 1, 2, set()),
    "kmalloc": (Executor.cmd_kmalloc, 1, 2, {"gfp", "irq", "acct"}),
    "kfree": (Executor.cmd_kfree, 1, 2, set()),
    "charge": (Executor.cmd_charge, 2, 2, set()),
    "uncharge": (Executor.cmd_uncharge, 2, 2, set()),
    "spawn": (Executor.cmd_spawn, 0, 0, set()),
    "exit": (Executor.cmd_exit, 1, 1, set()),
    "touch": (Executor.cmd_touch, 1, 1, {"gfp"}),
    "unlink": (Executor.cmd_unlink, 1, 1, set()),
    "drop_caches": (Executor.cmd_drop_caches, 0, 0, set()),
    "reap": (Executor.cmd_reap, 0, 0, set()),
    "cache_reap": (Executor.cmd_cache_reap, 0, 0, set()),
    "workqueue": (Executor.cmd_workqueue, 0, 0, set()),
    "check": (Executor.cmd_check, 0, 0, set()),
    "replay": (Executor.cmd_replay, 1, 20, set()),
}


def error_line(e: EngineError) -> str:
    return f"error: {ERRNAME.get(e.errno, e.errno)}: {e.message}"
