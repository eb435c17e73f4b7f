"""The `kmemfs` command."""
import argparse
import logging
import os
import subprocess
import sys
import textwrap

from .fuse import daemon

log = logging.getLogger("kmemfs")

MOUNT_HELP = """\
Mount a fake cgroup v1 memory hierarchy at MOUNTPOINT. Its files read and write a model of
Linux 3.3 memcg with the Feb-2012 kernel-memory accounting series. The command returns once
the mount is ready; the daemon stays in the background unless --foreground.

options (-o, comma separated):
  acct_root           CONFIG_CGROUP_MEM_RES_CTLR_KMEM_ACCT_ROOT: root's kmem is accounted
  noswapaccount       swapaccount=0: no memory.memsw.* files, no memsw charges
  allow_other         let other users in; modes are then enforced (default_permissions)
  page_cache          serve read-only opens of cgroup files through the page cache (about 2x
                      faster sweeps; st_size is non-zero and mmap works, unlike the kernel's
                      files: docs/semantics.md)
  charge_batch=N      per-CPU charge stock of N pages (3.3 uses 32); 0 (default) = exact
  nr_cpus=N           CPUs the SLAB model assumes (free_limit); default 1
  noboot_slabs        start the original caches empty instead of as the catalogue recorded
  max_memcgs=N        cap on cgroups (default 65535, CSS_ID_MAX): mkdir beyond is ENOSPC
  max_tasks=N         cap on simulated tasks (default 100000): spawn beyond is ENOSPC
  max_objects=N       cap on objects or pages one control command asks for (default
                      100000000): E2BIG beyond
  event_log_size=N    events kept in .kmemfs/events (default 100000)
"""


def cmd_mount(args) -> int:
    mp = os.path.abspath(args.mountpoint)
    try:
        config, fuse_opts = daemon.parse_options(",".join(args.o or []))
        daemon.check_mountpoint(mp)
        if args.foreground:
            fs = daemon.build_or_restore(config, bool(args.o), args.slabinfo, args.state)
            daemon.serve(mp, fs, fuse_opts, _ready_notifier(args.ready_fd), args.state,
                         args.save_interval)
            return 0
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
        print(f"kmemfs mounted at {mp} (pid {proc.pid}); unmount with: kmemfs umount {mp}")
        return 0
    proc.wait()
    if msg:
        print(f"kmemfs: {msg}", file=sys.stderr)
    else:
        print(f"kmemfs: the daemon exited with status {proc.returncode} before mounting",
              file=sys.stderr)
    return 1


def cmd_umount(args) -> int:
    mp = os.path.abspath(args.mountpoint)
    if not os.path.ismount(mp):
        try:
            os.stat(mp)
        except OSError:
            pass            # stale: fall through to fusermount3 -uz
        else:
            print(f"kmemfs: {mp} is not mounted", file=sys.stderr)
            return 1
    pids = daemon.daemon_pids(mp)
    try:
        daemon.unmount(mp)
    except daemon.MountError as e:
        print(f"kmemfs: {e}", file=sys.stderr)
        return 1
    if not daemon.wait_gone(pids, timeout=30):   # it saves its state on the way out
        print(f"kmemfs: the daemon of {mp} is still running", file=sys.stderr)
        return 1
    return 0


def cmd_ctl(args) -> int:
    from .tools.ctlclient import run_ctl
    return run_ctl(args.mountpoint, " ".join(args.command))


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
    m.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    m.add_argument("--log", metavar="FILE", help="log to FILE instead of stderr")
    m.set_defaults(fn=cmd_mount)

    u = sub.add_parser("umount", help="unmount a kmemfs hierarchy",
                       description="Unmount MOUNTPOINT (fusermount3 -u; a stale mount is "
                                   "detached lazily). The daemon then exits.")
    u.add_argument("mountpoint")
    u.set_defaults(fn=cmd_umount)

    c = sub.add_parser("ctl", help="run one control command",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=textwrap.dedent("""\
                           Write one command to MOUNTPOINT/.kmemfs/ctl, print its result line,
                           and exit non-zero with the errno text when it fails.
                           See docs/ctl.md for the language, e.g.:
                             kmemfs ctl /tmp/kmemfs alloc dentry 100 cg=/web
                             kmemfs ctl /tmp/kmemfs spawn cg=/web"""))
    c.add_argument("mountpoint")
    c.add_argument("command", nargs=argparse.REMAINDER)
    c.set_defaults(fn=cmd_ctl)

    from .tools import record, top       # the "see it" commands: top, record, plot
    top.add_parsers(sub)
    record.add_parsers(sub)

    args = p.parse_args(argv)
    verbose = args.verbose or getattr(args, "verbose", False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        filename=args.log, format="%(asctime)s kmemfs[%(process)d] %(levelname)s %(message)s")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
