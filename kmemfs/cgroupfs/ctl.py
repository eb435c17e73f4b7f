"""The control language written to `.kmemfs/ctl` (docs/ctl.md): parsed, never evaluated.

    alloc CACHE [COUNT] [gfp=FLAGS] [irq=1] [acct=1]     free CACHE [COUNT]
    kmalloc SIZE [COUNT] [gfp=FLAGS] [irq=1] [acct=1]    kfree SIZE [COUNT]
    charge anon|file BYTES                      uncharge anon|file BYTES
    spawn                                       exit PID
    touch COUNT      unlink COUNT      drop_caches      reap      cache_reap      workqueue
    check
    replay begin|alias|ev|end ...               (a trace fed by `kmemfs replay --into`)
    help [VERB]      caches [NAME]      tasks      status           (answers in several lines)

Any command may end with `task=PID` (act as that task) and/or `cg=PATH` (charge that cgroup),
and `cpu=N` (run on CPU N of nr_cpus: its SLAB array caches; CPU 0 otherwise).
Without them the writer is the acting task: its pid, or the nearest ancestor process that is
in some cgroup's `tasks`, else the root cgroup.
"""
import difflib
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


def close_matches(word: str, choices) -> str:
    """' (did you mean: a, b?)' from difflib, or ''."""
    near = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean: {', '.join(near)}?)" if near else ""


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
        raise bad(f"unknown command {verb!r}" + close_matches(verb, COMMANDS)
                  + "; 'help' lists the commands")
    lo, hi, allowed = COMMANDS[verb][1:]
    if not lo <= len(args) <= hi:
        raise bad(f"{verb}: wrong number of arguments; usage: {SYNTAX[verb]}")
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
            # A path is always from the mount's root: `cg=web` is `cg=/web`.
            path = "/" + cmd.opts["cg"].strip("/")
            memcg = self.fs.by_path(path)
            if memcg is None:
                raise EngineError(errno.ENOENT, f"no cgroup {path!r} (cg= takes a path from "
                                  "the mount's root, e.g. cg=/web/api)")
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

    def original(self, name: str):
        """An original cache by name; a copy's name or a typo is answered with what to write."""
        e = self.engine
        if name in e.originals:
            return e.originals[name]
        copy = next((c for c in e.caches if c.name == name), None)
        if copy is not None and copy.orig is not None:
            where = f" cg={copy.memcg.path()}" if copy.memcg is not None else ""
            raise bad(f"no cache named {name!r}: it is a copy of {copy.orig.name}; alloc names "
                      "the original and the charged cgroup chooses the copy, e.g. "
                      f"alloc {copy.orig.name}{where}")
        raise bad(f"no cache named {name!r}" + close_matches(name, e.originals)
                  + "; 'caches' lists them")

    def cmd_alloc(self, cmd, a):
        count = self.count(cmd.args[1]) if len(cmd.args) > 1 else 1
        return self._alloc(self.original(cmd.args[0]), count, cmd, a, "alloc")

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
        e = self.engine
        if cmd.args[0] not in e.originals and all(c.name != cmd.args[0] for c in e.caches):
            self.original(cmd.args[0])          # raises, with the close matches
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


    # ------------------------------------------------------------------ discovery
    def cmd_help(self, cmd, a):
        if cmd.args:
            verb = cmd.args[0]
            if verb not in SYNTAX:
                raise bad(f"no command {verb!r}" + close_matches(verb, SYNTAX))
            return [f"ok help {verb}", SYNTAX[verb], HELP[verb]]
        return (["ok help commands=" + ",".join(SYNTAX)]
                + [f"{SYNTAX[v]:<44} {HELP[v]}" for v in SYNTAX]
                + [FLAGS_HELP, "any command may end with task=PID and/or cg=PATH "
                   "(docs/ctl.md)"])

    def cmd_caches(self, cmd, a):
        """The catalogue (original caches) with geometry and their live copies."""
        e = self.engine
        origs = [self.original(cmd.args[0])] if cmd.args else list(e.originals.values())
        out = [f"ok caches originals={len(origs)} copies="
               f"{sum(len(o.children) for o in origs)}"]
        for o in origs:
            out.append(f"{o.name} objsize={o.objsize} objperslab={o.num} pagesperslab={o.pages}"
                       f" active_objs={o.active_objs} slabs={o.nr_slabs}")
            for c in o.children:
                out.append(f"  {c.name} cgroup={c.memcg.path() if c.memcg else '-'}"
                           f" dead={int(c.dead)} active_objs={c.active_objs} slabs={c.nr_slabs}")
        return out

    def cmd_tasks(self, cmd, a):
        ts = list(self.engine.tasks.values())
        return [f"ok tasks count={len(ts)} simulated={sum(t.simulated for t in ts)}"] + [
            f"pid={t.pid} cgroup={t.memcg.path()} simulated={int(t.simulated)}"
            f" rss={t.rss_total()}" + (f" comm={t.comm}" if t.comm else "") for t in ts]

    def cmd_status(self, cmd, a):
        e = self.engine
        copies = [c for c in e.caches if c.orig is not None]
        out = [f"ok status cgroups={e.nr_memcgs} tasks={len(e.tasks)} "
               f"simulated={e.nr_simulated} originals={len(e.originals)} "
               f"copies={sum(not c.dead for c in copies)} dead={sum(c.dead for c in copies)} "
               f"queued={len(e.create_queue)} under_oom={e.nr_under_oom} events={e.event_seq}",
               f"acting cgroup={a.memcg.path()}" + (f" task={a.task.pid}" if a.task else "")]
        for m in e.root.walk():
            if "independent_toggled" in m.quirks:
                out.append(f"warning cgroup={m.path()}: independent_kmem_limit was flipped with "
                           "kernel memory charged; usage_in_bytes no longer adds up")
        return out


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
    "help": (Executor.cmd_help, 0, 1, set()),
    "caches": (Executor.cmd_caches, 0, 1, set()),
    "tasks": (Executor.cmd_tasks, 0, 0, set()),
    "status": (Executor.cmd_status, 0, 0, set()),
}

SYNTAX = {
    "alloc": "alloc CACHE [COUNT] [gfp=FLAGS] [irq=1]", "free": "free CACHE [COUNT]",
    "kmalloc": "kmalloc SIZE [COUNT] [gfp=FLAGS] [irq=1]", "kfree": "kfree SIZE [COUNT]",
    "charge": "charge anon|file BYTES", "uncharge": "uncharge anon|file BYTES",
    "spawn": "spawn", "exit": "exit PID", "touch": "touch COUNT [gfp=FLAGS]",
    "unlink": "unlink COUNT", "drop_caches": "drop_caches", "reap": "reap",
    "workqueue": "workqueue", "check": "check", "help": "help [COMMAND]",
    "caches": "caches [CACHE]", "tasks": "tasks", "status": "status",
}
HELP = {
    "alloc": "COUNT objects of an original cache; the charged cgroup chooses its copy",
    "free": "free objects the acting cgroup holds (an original name or a copy name)",
    "kmalloc": "COUNT objects from the smallest size-N cache that fits SIZE",
    "kfree": "free objects of the size-N cache that fits SIZE",
    "charge": "user pages: anon (the task's rss) or file (page cache); BYTES takes K/M/G",
    "uncharge": "give user pages back", "spawn": "a simulated task: fork's objects",
    "exit": "a simulated task exits", "touch": "create files: a dentry and an inode each",
    "unlink": "remove files (the dentry stays negative)",
    "drop_caches": "free unused dentries and inodes", "reap": "destroy empty slabs",
    "workqueue": "run the queued cache creations", "check": "run the invariant checker",
    "help": "this list, or one command's syntax", "caches": "the catalogue and its copies",
    "tasks": "tasks kmemfs knows", "status": "counts, the acting cgroup, warnings",
}
FLAGS_HELP = ("FLAGS: GFP_KERNEL (default), GFP_NOFS, GFP_NOIO, GFP_ATOMIC or GFP_NOWAIT, "
              "optionally |__GFP_NOACCOUNT |__GFP_NOFAIL |__GFP_NORETRY")


def error_line(e: EngineError) -> str:
    return f"error: {ERRNAME.get(e.errno, e.errno)}: {e.message}"
