"""Mount a real kmemfs in a subprocess for end-to-end tests; always unmount."""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Mount:
    def __init__(self, path, options=(), slabinfo=None, extra=(), env=None):
        self.path = str(path)
        self.extra = list(extra)
        self.env = env
        self.options = list(options)
        self.slabinfo = slabinfo
        self.proc = None
        self.log = os.path.join(os.path.dirname(self.path), "kmemfs.log")

    def start(self):
        os.makedirs(self.path, exist_ok=True)
        cmd = [sys.executable, "-m", "kmemfs", "mount", self.path, "--foreground",
               "--log", self.log]
        if self.options:
            cmd += ["-o", ",".join(self.options)]
        if self.slabinfo:
            cmd += ["--slabinfo", str(self.slabinfo)]
        cmd += self.extra
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, env=self.env)
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"kmemfs exited with {self.proc.returncode}: {self.read_log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("kmemfs did not mount within 30 s")
            time.sleep(0.02)
        return self

    def read_log(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def p(self, *parts):
        return os.path.join(self.path, *parts)

    def stop(self):
        """fusermount3 -u, then -uz, then make sure the daemon is gone."""
        if os.path.ismount(self.path) or is_stale(self.path):
            if subprocess.run(["fusermount3", "-u", self.path], capture_output=True).returncode:
                subprocess.run(["fusermount3", "-uz", self.path], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def is_stale(path) -> bool:
    """The mount point answers stat with an error: a dead daemon's mount."""
    try:
        os.stat(path)
        return False
    except OSError:
        return True


def sh(script: str, cwd=None, check=False, env=None):
    """Run a shell snippet; returns CompletedProcess with text output."""
    r = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                       timeout=120, env=env)
    if check and r.returncode:
        raise AssertionError(f"{script!r} failed ({r.returncode}): {r.stderr}")
    return r
