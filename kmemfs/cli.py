"""The `kmemfs` command."""
import argparse
import os
import sys
import textwrap

from .fuse import safepath

# Imports beyond these happen in the command that needs them: `kmemfs ctl` starts in tens of
# milliseconds because it loads neither pyfuse3/trio (the daemon) nor rich (top).

MOUNT_HELP = """\
Mount a fake cgroup v1 memory hierarchy at MOUNTPOINT. Its files read and write a model of
Linux 3.3 memcg with the Feb-2012 kernel-memory accounting series. The command returns once
the mount is ready; the daemon stays in the background unless --foreground.

options (-o, comma separated):
  acct_root           CONFIG_CGROUP_MEM_RES_CTLR_KMEM_ACCT_ROOT: root's kmem is accounted
  noswapaccount       swapaccount=0: no memory.memsw.* files, no memsw charges
  allow_other         let other users in; modes are then enforced (default_permissions)
  nonempty            mount over a directory that is not empty (refused otherwise)
  follow              (root, tracefs) host pids written to a tasks file get their real slab
                      allocations charged there live, frees uncharged, forks followed
                      (docs/trace.md); .kmemfs/config: follow exact | inexact lost=N
  follow_buffer_kb=N  tracefs buffer per CPU of each follow instance (default 65536)
  page_cache          serve read-only opens of cgroup files through the page cache (about 2x
                      faster sweeps; st_size is non-zero and mmap works, unlike the kernel's
                      files: docs/semantics.md)
  charge_batch=N      per-CPU charge stock of N pages (default 32, 3.3's CHARGE_BATCH): res
                      usage runs up to N-1 pages ahead; 0 = no stock, exact counters
  nr_cpus=N           CPUs the SLAB model assumes (free_limit, array caches); default 1
  numa                CONFIG_NUMA: a failing slab grow is charged three times (twice
                      GFP_THISNODE, i.e. NORETRY, then fallback_alloc); default off
  noboot_slabs        start the original caches empty instead of as the catalogue recorded
  noarray_caches      no SLAB array caches: frees reach the slabs at once
  max_memcgs=N        cap on cgroups (default 65535, CSS_ID_MAX): mkdir beyond is ENOSPC
  max_tasks=N         cap on simulated tasks (default 100000): spawn beyond is ENOSPC
  max_objects=N       cap on objects or pages one control command asks for (default
                      100000000): E2BIG beyond
  event_log_size=N    events kept in .kmemfs/events (default 100000)
  design=optin        charge only allocations marked accounted (mainline since 4.5) instead
                      of the series' everything-but-NOACCOUNT/NOFAIL/interrupt (design=series)
"""


def cmd_mount(args) -> int:
    from .fuse import daemon     # pyfuse3 and trio: only the commands that mount pay for them
    try:
        config, fuse_opts = daemon.parse_options(",".join(args.o or []))
        mp = daemon.check_mountpoint(os.path.abspath(args.mountpoint), "nonempty" in fuse_opts)
        if args.foreground:
            state_file = daemon.open_state(args.state)
            fs = daemon.build_or_restore(config, bool(args.o), args.slabinfo, state_file)
            saved = daemon.serve(mp, fs, fuse_opts, _ready_notifier(args.ready_fd), state_file,
                                 args.save_interval)
            return 0 if saved else 1
        return _background(args, mp)
    except daemon.MountError as e:
        if args.ready_fd is not None:
            os.write(args.ready_fd, f"{e}\n".encode())
        print(f"kmemfs: {e}", file=sys.stderr)
        return 1


def _ready_notifier(fd):
    """Tell the `kmemfs mount` that started us (through a pipe) that the mount is up."""
    if fd is None:
        return None

    def ready():
        os.write(fd, b"ready\n")
        os.close(fd)
    return ready


def _background(args, mp) -> int:
    import subprocess
    r, w = os.pipe()
    cmd = [sys.executable, "-m", "kmemfs", "mount", mp, "--foreground", "--ready-fd", str(w)]
    for o in args.o or []:
        cmd += ["-o", o]
    if args.slabinfo:
        cmd += ["--slabinfo", os.path.abspath(args.slabinfo)]
    if args.log:
        cmd += ["--log", os.path.abspath(args.log)]
    if args.state:
        cmd += ["--state", os.path.abspath(args.state), "--save-interval", str(args.save_interval)]
    if args.verbose:
        cmd += ["-v"]
    with open(os.devnull, "r+b") as null:
        # The daemon must not hold the caller's stdout/stderr open: it logs to --log only.
        proc = subprocess.Popen(cmd, stdin=null, stdout=null, stderr=null,
                                pass_fds=(w,), start_new_session=True, cwd="/")
    os.close(w)
    with os.fdopen(r) as f:
        msg = f.readline().strip()
    if msg == "ready":
        print(f"kmemfs mounted at {mp} (pid {proc.pid}); unmount with: {_me()} umount {mp}")
        return 0
    proc.wait()
    if msg:
        print(f"kmemfs: {msg}", file=sys.stderr)
    else:
        print(f"kmemfs: the daemon exited with status {proc.returncode} before mounting",
              file=sys.stderr)
    return 1


def _me() -> str:
    """How to call this kmemfs in a hint: `kmemfs` when that is on PATH, else the full path."""
    import shutil
    mine = os.path.join(os.path.dirname(sys.executable), "kmemfs")
    found = shutil.which("kmemfs")
    if found and os.path.realpath(found) == os.path.realpath(mine):
        return "kmemfs"
    return mine if os.path.exists(mine) else "kmemfs"


def cmd_umount(args) -> int:
    """Only a kmemfs mount is touched (issue 9 item 3); a lazy detach is always announced."""
    from .fuse import daemon
    mp = os.path.realpath(os.path.abspath(args.mountpoint))
    try:
        daemon.require_kmemfs(mp)
    except daemon.MountError as e:
        print(f"kmemfs: {e}", file=sys.stderr)
        return 1
    pids = daemon.daemon_pids(mp)
    saved_before = {p: _state_identity(p) for p in pids}
    try:
        if daemon.is_stale(mp):
            print(f"kmemfs: {mp}: stale mount (its daemon is gone): detaching it lazily",
                  file=sys.stderr)
            daemon.unmount(mp, lazy=True)
        else:
            try:
                daemon.unmount(mp)
            except daemon.MountError as e:
                if not args.lazy:
                    print(f"kmemfs: {e}; `kmemfs umount --lazy {mp}` detaches it anyway "
                          "(what is open there then fails)", file=sys.stderr)
                    return 1
                print(f"kmemfs: {e}: detaching it lazily (--lazy)", file=sys.stderr)
                daemon.unmount(mp, lazy=True)
                if not daemon.wait_gone(pids, timeout=5):
                    print(f"kmemfs: {mp} is detached; its daemon (pid {', '.join(map(str, pids))})"
                          " saves and exits once the last file open there is closed",
                          file=sys.stderr)
                    return 0
    except daemon.MountError as e:
        print(f"kmemfs: {e}", file=sys.stderr)
        return 1
    if not daemon.wait_gone(pids, timeout=30):   # it saves its state on the way out
        print(f"kmemfs: the daemon of {mp} is still running", file=sys.stderr)
        return 1
    failed = [path for path, before in saved_before.values()
              if path and before == _identity(path)]
    for path in failed:
        print(f"kmemfs: the daemon could not save the model to {path} (see its log and "
              ".kmemfs/events); the file keeps the last good save", file=sys.stderr)
    return 1 if failed else 0


def _state_identity(pid):
    """(the --state FILE of daemon `pid`, which file it is now): a save replaces the file
    by a new one (rename), so an unchanged identity after the daemon exits means the final
    save failed."""
    from .fuse import daemon
    path = daemon.state_path_of(pid)
    return path, _identity(path) if path else None


def _identity(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def cmd_ctl(args) -> int:
    from .tools.ctlclient import run_ctl
    return run_ctl(args.mountpoint, " ".join(args.command))


# ---------------------------------------------------------------------------- replay, compare

REPLAY_HELP = """\
Replay a trace made by `kmemfs trace` through the model (no root needed) and report what the
kernel-memory accounting would have done: objects and bytes charged, slab pages, per-cgroup
caches, dead caches after the cgroup is removed, and the first allocation a limit refuses
("under the series this workload would have failed here"). Every traced process becomes a
simulated task in --cg. With --into, the events go to a running kmemfs mount instead, so its
files, events, `kmemfs top` and `kmemfs record` follow the workload. See docs/trace.md.

example:
  kmemfs replay untar.trace --set memory.kmem.independent_kmem_limit=1 \\
                            --set memory.kmem.limit_in_bytes=2M
"""

COMPARE_HELP = """\
Replay a trace under both accounting designs and compare them: `series` (the Feb-2012
series: every allocation outside interrupt context, bar __GFP_NOACCOUNT and __GFP_NOFAIL)
and `optin` (mainline since 4.5: only the allocations marked accounted, NOFAIL forced past
the limit). Same cgroup, same limits (--set), two engines. See docs/trace.md.
"""


def _replay_options(p, design: bool) -> None:
    p.add_argument("trace", help="a trace file written by `kmemfs trace`")
    p.add_argument("--cg", default="/traced", metavar="PATH",
                   help="the cgroup the traced processes run in (made with its parents; "
                        "default /traced)")
    p.add_argument("--set", action="append", default=[], metavar="[PATH/]FILE=VALUE",
                   dest="sets", help="write a control file before the replay, in order, as "
                   "echo would: memory.limit_in_bytes=8M (in --cg) or /a/memory.use_hierarchy=1")
    p.add_argument("--catalogue", choices=("3.4", "host"), default="3.4",
                   help="caches: the built-in 3.4 dump (default; host names mapped onto it) "
                        "or the trace's own slabinfo")
    p.add_argument("--keep", action="store_true",
                   help="do not remove the cgroup at the end (no dead caches reported)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the report (matplotlib)")
    if design:
        p.add_argument("--design", choices=("series", "optin"),
                       help="which accounting rule (default series; with --into the mount's "
                            "own, -o design=)")


def _replay_report(args, designs) -> int:
    import json
    from .trace import compare, replay
    setup = replay.Setup(cg=args.cg, sets=tuple(args.sets), catalogue=args.catalogue,
                         remove_at_end=not args.keep)
    try:
        header, _ = replay.load(args.trace)
        rep = compare.run(header, lambda: replay.load(args.trace)[1], setup,
                          samples=400 if args.plot else 0, designs=designs)
    except (replay.ReplayError, ValueError) as e:
        print(f"kmemfs: {e}", file=sys.stderr)
        return 1
    if args.plot:
        compare.plot(rep, args.plot)
    if args.json:
        json.dump(rep, sys.stdout, indent=1)
        print()
    else:
        compare.render(rep, file=sys.stdout)
    return 0


def cmd_replay(args) -> int:
    if args.into:
        from .trace import into
        return into.main(args)
    return _replay_report(args, (args.design or "series",))


def cmd_compare(args) -> int:
    from .trace.compare import DESIGNS
    return _replay_report(args, DESIGNS)


def add_replay_parsers(sub) -> None:
    r = sub.add_parser("replay", help="replay a trace through the model (or into a mount)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=REPLAY_HELP)
    _replay_options(r, design=True)
    r.add_argument("--into", metavar="MOUNTPOINT",
                   help="drive a running kmemfs mount (its .kmemfs/ctl) instead of a private "
                        "model; --set writes that mount's files")
    r.add_argument("--speed", type=float, default=0, metavar="X",
                   help="with --into: play at X times the trace's pace (1 = as recorded); "
                        "default 0 = as fast as possible")
    r.set_defaults(fn=cmd_replay)
    c = sub.add_parser("compare", help="replay a trace under both accounting designs",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=COMPARE_HELP)
    _replay_options(c, design=False)
    c.set_defaults(fn=cmd_compare)


TRACE_HELP = """\
Run COMMAND and record its whole process tree's slab allocations (kmem:kmem_cache_alloc,
kmem:kmalloc), its forks and exits, and every free on the system (kmem:kmem_cache_free,
kmem:kfree: frees run in RCU callbacks and kworkers too), through private tracefs instances.
Root only. The trace file (docs/trace.md) is then read by `kmemfs replay` / `kmemfs compare`.
kmemfs trace exits with COMMAND's exit status (128+N if a signal N killed it).
"""


def cmd_trace(args) -> int:
    from .trace import capture
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        header = capture.run(argv, args.o, free_tail=args.free_tail, buffer_kb=args.buffer_kb)
    except capture.TraceError as e:
        print(f"kmemfs trace: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:               # Ctrl-C while the trace file was being written
        print("kmemfs trace: interrupted: trace not written", file=sys.stderr)
        return 130
    c = header.counts
    print(f"kmemfs trace: {args.o}: {c.get('alloc', 0)} allocations, {c.get('free', 0)} frees, "
          f"{c.get('fork', 0)} forks, {c.get('exit', 0)} exits"
          + ("; INEXACT: events were lost" if header.inexact else ""), file=sys.stderr)
    return header.exit_status if header.exit_status is not None else 1


def parse_with_command(parser, argv):
    """`kmemfs record MP --out F -- COMMAND...`, `kmemfs exec MP -- COMMAND...`: what follows
    the first `--` is the command, whatever the options before it (argparse alone would give
    it to the first positional that can take it)."""
    if "--" not in argv:
        return parser.parse_args(argv)
    i = argv.index("--")
    args = parser.parse_args(argv[:i])
    if args.cmd == "ctl":                      # a control command's own words
        return parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.error(f"'kmemfs {args.cmd}' takes no -- COMMAND")
    args.command = argv[i + 1:]
    return args


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="kmemfs", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A FUSE cgroup v1 memory controller that models kernel-memory accounting "
                    "(Linux 3.3 memcg + the Feb-2012 'memcg: Kernel Memory Accounting' series).",
        epilog="Run 'kmemfs COMMAND --help' for the manual of each command.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--log", metavar="FILE", help="log to FILE instead of stderr")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    m = sub.add_parser("mount", help="mount a kmemfs hierarchy",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=MOUNT_HELP)
    m.add_argument("mountpoint")
    m.add_argument("-o", action="append", metavar="OPTIONS", help="mount options (see above)")
    m.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground")
    m.add_argument("--slabinfo", metavar="FILE",
                   help="cache catalogue: any /proc/slabinfo 2.1 file (default: built-in 3.4 dump)")
    m.add_argument("--state", metavar="FILE",
                   help="restore the whole model from FILE if it exists, and save it there "
                        "atomically on unmount and every --save-interval seconds")
    m.add_argument("--save-interval", type=float, default=30.0, metavar="S",
                   help="seconds between periodic saves with --state (0: only at unmount; "
                        "default 30)")
    m.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    # SUPPRESS: `kmemfs --log F mount` must not be reset to None by the subcommand's default
    m.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging")
    m.add_argument("--log", metavar="FILE", default=argparse.SUPPRESS,
                   help="log to FILE instead of stderr")
    m.set_defaults(fn=cmd_mount)

    u = sub.add_parser("umount", help="unmount a kmemfs hierarchy",
                       description="Unmount the kmemfs at MOUNTPOINT (fusermount3 -u) and wait "
                                   "for its daemon to exit (it saves --state first). Anything "
                                   "else mounted there is left alone (exit 1). A stale kmemfs "
                                   "mount is detached lazily, and says so. Exit 1 also when the "
                                   "daemon could not save its state.")
    u.add_argument("mountpoint")
    u.add_argument("--lazy", "-l", action="store_true",
                   help="when the mount is busy, detach it lazily (umount -l) instead of failing")
    u.set_defaults(fn=cmd_umount)

    c = sub.add_parser("ctl", help="run control commands",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=textwrap.dedent("""\
                           Write a command to MOUNTPOINT/.kmemfs/ctl, print its result,
                           and exit non-zero with the errno text when it fails. With no
                           command, or '-', read commands from stdin, one per line (each its
                           own write and result; the status is 1 if any failed).
                           'help' lists the commands; see docs/ctl.md for the language, e.g.:
                             kmemfs ctl /tmp/kmemfs help
                             kmemfs ctl /tmp/kmemfs alloc dentry 100 cg=/web
                             kmemfs ctl /tmp/kmemfs status
                             printf 'spawn cg=/web\\ntasks\\n' | kmemfs ctl /tmp/kmemfs -"""))
    c.add_argument("mountpoint")
    c.add_argument("command", nargs=argparse.REMAINDER)
    c.set_defaults(fn=cmd_ctl)

    t = sub.add_parser("trace", help="record a command's kernel slab activity (root)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=TRACE_HELP,
                       usage="kmemfs trace [-o FILE] [--free-tail S] [--buffer-kb N] "
                             "-- COMMAND [ARGS...]")
    t.add_argument("-o", default="kmemfs.trace.gz", metavar="FILE",
                   help="the trace file (default kmemfs.trace.gz; gzip'ed when the name ends "
                        "in .gz, plain text otherwise)")
    t.add_argument("--free-tail", type=float, default=1.0, metavar="S",
                   help="keep recording frees S seconds after COMMAND exits, for RCU-deferred "
                        "frees (default 1)")
    t.add_argument("--buffer-kb", type=int, default=128 * 1024, metavar="N",
                   help="tracefs buffer per CPU and instance, in KiB (default 131072)")
    t.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    t.set_defaults(fn=cmd_trace)

    from .tools import record, top       # the "see it" commands: top, record, plot
    top.add_parsers(sub)
    record.add_parsers(sub)
    add_replay_parsers(sub)
    from . import exec as exec_cmd       # kmemfs as the system's hierarchy, for real tools
    exec_cmd.add_parser(sub)

    args = parse_with_command(p, sys.argv[1:] if argv is None else list(argv))
    if args.cmd in ("mount", "umount", "trace"):      # only the daemon's side logs
        import logging
        verbose = args.verbose or getattr(args, "verbose", False)
        stream = None
        if args.log:
            try:    # never through a user's symlink or directory (kmemfs/fuse/safepath.py)
                stream = safepath.open_log(args.log)
            except safepath.UnsafePath as e:
                print(f"kmemfs: refusing the log file: {e}", file=sys.stderr)
                return 1
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=stream,
                            format="%(asctime)s kmemfs[%(process)d] %(levelname)s %(message)s")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
