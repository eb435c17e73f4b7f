#!/usr/bin/env python3
"""Fault checks of the kmemfs daemon, for docs/reliability.md:

  sigterm, sigint   the signal unmounts cleanly: time until unmounted and until the daemon exits
  kill9             kill -9 leaves a stale mount; `kmemfs mount` on it recovers
  inject            KMEMFS_INJECT_FAULT=read: every read handler raises; each read is EIO,
                    every other request is served, the daemon lives
  writer_killed     a control command asleep on a memcg OOM is killed (SIGKILL): the request
                    ends, the sleep is cancelled, invariants hold

    scripts/faults.py [CHECK...]        (all by default; needs FUSE, mounts in a temp dir)
"""
import errno
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Mount  # noqa: E402

KMEMFS = os.path.join(harness.ROOT, ".venv", "bin", "kmemfs")


def _kmemfs():
    return KMEMFS if os.path.exists(KMEMFS) else "kmemfs"


def _wait(pred, timeout=30.0, step=0.005):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(step)
    return time.monotonic() - t0


def signal_unmount(tmp, sig):
    """Send `sig` to a mounted daemon; seconds until the mount is gone and the daemon exits."""
    m = Mount(os.path.join(tmp, f"mnt-{sig.name}")).start()
    try:
        os.mkdir(m.p("busy"))                     # some state, so exit has work to do
        harness.ctl(m.path, "alloc dentry 1000 cg=/busy\n")
        t0 = time.monotonic()
        m.proc.send_signal(sig)
        unmounted = _wait(lambda: not harness.is_mounted(m.path))
        rc = m.proc.wait(30)
        exited = time.monotonic() - t0
        return {"signal": sig.name, "unmounted_s": None if unmounted is None else
                round(unmounted, 3), "exited_s": round(exited, 3), "exit_status": rc,
                "still_mounted": harness.is_mounted(m.path)}
    finally:
        m.stop()


def kill9_recover(tmp):
    """kill -9, then `kmemfs mount` on the same mount point (CLI, background daemon)."""
    mp = os.path.join(tmp, "mnt-kill9")
    os.makedirs(mp, exist_ok=True)
    out = {}
    run = lambda *a: subprocess.run([_kmemfs(), *a], capture_output=True, text=True,  # noqa
                                    timeout=60)
    r = run("mount", mp)
    out["first_mount"] = r.returncode
    try:
        pid = harness.daemon_pid(mp)
        os.mkdir(os.path.join(mp, "x"))
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not harness.alive(pid))
        try:
            os.statvfs(mp)
            out["stale_errno"] = "none"
        except OSError as e:
            out["stale_errno"] = errno.errorcode.get(e.errno, e.errno)
        t0 = time.monotonic()
        r = run("mount", mp)
        out["remount_status"] = r.returncode
        out["remount_s"] = round(time.monotonic() - t0, 2)
        if r.returncode:
            out["remount_stderr"] = r.stderr.strip()[-300:]
        out["listing_after"] = sorted(d for d in os.listdir(mp) if not d.startswith(("memory.",
                                                                                    "cgroup.")))
        out["check"] = harness.ctl(mp, "check\n").strip()
    finally:
        r = run("umount", mp)
        out["umount_status"] = r.returncode
        if harness.is_mounted(mp):
            subprocess.run(["fusermount3", "-uz", mp], capture_output=True)
    out["mounted_after"] = harness.is_mounted(mp)
    return out


def inject_read(tmp, n=200):
    """Every read handler raises (KMEMFS_INJECT_FAULT=read): n reads, each must be EIO, and
    everything else must keep working."""
    env = dict(os.environ, KMEMFS_INJECT_FAULT="read")
    m = Mount(os.path.join(tmp, "mnt-inject"), env=env).start()
    out = {"reads": n, "eio": 0, "other_errors": []}
    try:
        os.mkdir(m.p("g"))
        for i in range(n):
            path = m.p("g", "memory.usage_in_bytes") if i % 2 else m.p("memory.stat")
            try:
                with open(path, "rb", buffering=0) as f:
                    f.read(4096)
                out["other_errors"].append("read succeeded")
            except OSError as e:
                if e.errno == errno.EIO:
                    out["eio"] += 1
                else:
                    out["other_errors"].append(errno.errorcode.get(e.errno))
        # everything but read still works
        with open(m.p("g", "memory.limit_in_bytes"), "w") as f:
            f.write("64M")
        os.mkdir(m.p("g", "h"))
        os.rmdir(m.p("g", "h"))
        fd = os.open(m.p(".kmemfs", "ctl"), os.O_WRONLY)
        os.write(fd, b"alloc dentry 10 cg=/g\ncheck\n")
        os.close(fd)
        out["listdir_ok"] = "memory.stat" in os.listdir(m.p("g"))
        out["writes_ok"] = True
        out["daemon_alive"] = harness.alive(m.proc.pid)
        log = m.read_log()
        out["log_tracebacks"] = log.count("fault injected into read")
    finally:
        m.stop()
    return out


def writer_killed(tmp):
    """SIGKILL a control command asleep on a memcg OOM: it must end, the daemon live on."""
    m = Mount(os.path.join(tmp, "mnt-killed")).start()
    out = {}
    try:
        os.mkdir(m.p("w"))
        with open(m.p("w", "memory.limit_in_bytes"), "w") as f:
            f.write("1M")
        with open(m.p("w", "memory.oom_control"), "w") as f:
            f.write("1")
        w = subprocess.Popen([_kmemfs(), "ctl", m.path, "charge", "anon", "2M", "cg=/w"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        out["slept"] = w.poll() is None
        with open(m.p("w", "memory.oom_control")) as f:
            out["under_oom_while_asleep"] = f.read().split()[-1]
        t0 = time.monotonic()
        w.kill()
        w.wait(30)
        out["writer_gone_s"] = round(time.monotonic() - t0, 3)
        time.sleep(0.3)
        with open(m.p("w", "memory.oom_control")) as f:
            out["under_oom_after"] = f.read().split()[-1]
        out["check"] = harness.ctl(m.path, "check\n").strip()
        out["daemon_alive"] = harness.alive(m.proc.pid)
    finally:
        m.stop()
    return out


CHECKS = {
    "sigterm": lambda tmp: signal_unmount(tmp, signal.SIGTERM),
    "sigint": lambda tmp: signal_unmount(tmp, signal.SIGINT),
    "kill9": kill9_recover,
    "inject": inject_read,
    "writer_killed": writer_killed,
}


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(CHECKS)
    bad = 0
    with tempfile.TemporaryDirectory(prefix="kmemfs-faults-") as tmp:
        for name in names:
            try:
                r = CHECKS[name](tmp)
            except Exception as e:          # report and go on with the next check
                r = {"failed": f"{type(e).__name__}: {e}"}
                bad += 1
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
