"""Issue 5 item 4: --state restores the whole model; saves are atomic; bad files are refused."""
import os
import signal
import subprocess
import sys
import time

import pytest

from kmemfs.fuse import state
from kmemfs.cgroupfs.control import control_files
from kmemfs.engine import check
from mounting import ROOT, Mount, sh

pytestmark = pytest.mark.e2e

WORKLOAD = """
mkdir {mp}/a {mp}/a/b {mp}/c
echo 1 > {mp}/a/memory.use_hierarchy 2>/dev/null || true
echo 8M > {mp}/c/memory.limit_in_bytes
echo 1 > {mp}/c/memory.kmem.independent_kmem_limit
echo 1M > {mp}/c/memory.kmem.limit_in_bytes
echo 1 > {mp}/a/cgroup.clone_children
chmod 0640 {mp}/c/memory.stat
cat > {mp}/.kmemfs/ctl <<CMDS
alloc dentry 300 cg=/a/b
kmalloc 100 77 cg=/c
charge file 1M cg=/a
spawn cg=/c
touch 50 cg=/c
alloc size-64 10 cg=/c gfp=GFP_NOFS
CMDS
mkdir {mp}/gone; echo 'alloc dentry 25 cg=/gone' > {mp}/.kmemfs/ctl; rmdir {mp}/gone
mkdir {mp}/h; echo 1 > {mp}/h/memory.use_hierarchy; mkdir {mp}/h/x {mp}/h/y
echo 2M > {mp}/h/memory.soft_limit_in_bytes; echo 30 > {mp}/h/x/memory.swappiness
echo 3 > {mp}/h/x/memory.move_charge_at_immigrate; echo 1 > {mp}/h/y/notify_on_release
echo /bin/true > {mp}/release_agent; chown 65534:65534 {mp}/h/x/memory.limit_in_bytes
echo 1 > {mp}/h/memory.oom_control; echo 4M > {mp}/h/memory.limit_in_bytes
cat > {mp}/.kmemfs/ctl <<CMDS
charge anon 512K cg=/h/x
touch 40 cg=/h/y
unlink 10 cg=/h/y
alloc inode_cache 7 cg=/h/y gfp=GFP_NOWAIT
kmalloc 4000 3 cg=/h/x
CMDS
"""


def read_everything(mp) -> dict:
    """Every file of every cgroup (root's host-pid lists aside) and the control files."""
    out = {}
    for dirpath, dirs, files in os.walk(mp):
        for f in files:
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, mp)
            st = os.stat(p)
            out[rel + ":mode"] = st.st_mode
            if rel in ("tasks", "cgroup.procs") or not st.st_mode & 0o444:
                continue
            with open(p, "rb") as fh:
                out[rel] = fh.read()
    for f in ("slabinfo", "events", "config"):
        with open(os.path.join(mp, ".kmemfs", f), "rb") as fh:
            out[".kmemfs/" + f] = fh.read()
    return out




def mount_with_state(tmp_path, mounts, st, interval=0):
    m = Mount(tmp_path / "mnt", extra=["--state", str(st), "--save-interval", str(interval)])
    mounts.append(m)
    return m.start()


def test_restore_is_byte_identical(tmp_path, mounts):
    st = tmp_path / "model.state"
    m = mount_with_state(tmp_path, mounts, st)
    sh(WORKLOAD.format(mp=m.path), check=True)
    before = read_everything(m.path)
    m.stop()
    assert m.proc.returncode == 0, m.read_log()
    assert st.exists()
    m2 = mount_with_state(tmp_path, mounts, st)
    after = read_everything(m2.path)
    assert after.keys() == before.keys()
    for k in before:
        assert after[k] == before[k], k
    assert sh(f"echo check > {m2.path}/.kmemfs/ctl").returncode == 0
    # the restored model goes on: sequence numbers continue
    sh(f"mkdir {m2.path}/new && echo 'alloc dentry 1 cg=/new' > {m2.path}/.kmemfs/ctl", check=True)
    last = open(os.path.join(m2.path, ".kmemfs", "events")).read().splitlines()[-1]
    assert int(last.split()[0]) > int(before[".kmemfs/events"].splitlines()[-1].split()[0])


def test_kill_9_between_periodic_saves_restores_the_last_save(tmp_path, mounts):
    st = tmp_path / "model.state"
    m = mount_with_state(tmp_path, mounts, st, interval=0.2)
    sh(WORKLOAD.format(mp=m.path), check=True)
    done = time.time()
    deadline = time.monotonic() + 30
    while not (st.exists() and st.stat().st_mtime > done + 0.05):
        assert time.monotonic() < deadline, "no periodic save happened"
        time.sleep(0.05)
    saved = read_everything(m.path)
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait()
    m.stop()                     # clears the stale mount
    m2 = mount_with_state(tmp_path, mounts, st)
    after = read_everything(m2.path)
    for k in saved:
        assert after[k] == saved[k], k


def test_sigterm_saves_and_unmounts(tmp_path, mounts):
    st = tmp_path / "model.state"
    m = mount_with_state(tmp_path, mounts, st)
    sh(f"mkdir {m.path}/x && echo 'alloc dentry 3 cg=/x' > {m.path}/.kmemfs/ctl", check=True)
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=30) == 0
    assert not os.path.ismount(m.path)
    fs = state.restore(state.load(st), control_files())
    assert fs.engine.root.children["x"].kmem.usage == 4096
    assert check(fs.engine) == []


@pytest.mark.parametrize("damage,reason", [
    (lambda d: b"not a state at all", "not a kmemfs state file"),
    (lambda d: d[:-10], "checksum mismatch"),
    (lambda d: d.replace(b"KMEMFS-STATE %d" % state.VERSION, b"KMEMFS-STATE 9", 1),
     "format '9'"),
])
def test_corrupt_state_is_refused(tmp_path, damage, reason):
    st = tmp_path / "model.state"
    from kmemfs.fuse.daemon import build
    from kmemfs.engine import Config
    state.save(build(Config()), str(st))
    st.write_bytes(damage(st.read_bytes()))
    before = st.read_bytes()
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = subprocess.run([sys.executable, "-m", "kmemfs", "mount", str(mp), "--state", str(st)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert reason in r.stderr and "refusing the state file" in r.stderr
    assert not os.path.ismount(mp)
    assert st.read_bytes() == before          # never silently replaced


def test_other_options_than_saved_are_refused(tmp_path):
    st = tmp_path / "model.state"
    from kmemfs.fuse.daemon import build
    from kmemfs.engine import Config
    state.save(build(Config()), str(st))
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = subprocess.run([sys.executable, "-m", "kmemfs", "mount", str(mp), "--state", str(st),
                        "-o", "acct_root"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "acct_root=True (saved False)" in r.stderr
