"""Issue 5 item 5: modes enforced for other users with allow_other; caps answer
ENOSPC / E2BIG instead of exhausting the daemon."""
import os
import shutil
import tempfile

import pytest

from mounting import Mount, sh

pytestmark = pytest.mark.e2e


def as_nobody(script: str):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another user")
    return sh(f"setpriv --reuid=65534 --regid=65534 --clear-groups bash -c {script!r}")


@pytest.fixture
def public_mount():
    """A mount under a directory other users can traverse (pytest's tmp dirs are 0700)."""
    base = tempfile.mkdtemp(prefix="kmemfs-perm-", dir="/tmp")
    os.chmod(base, 0o755)
    mounts = []

    def make(options=()):
        m = Mount(os.path.join(base, "mnt"), options)
        mounts.append(m)
        return m.start()
    yield make
    for m in mounts:
        m.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_other_users_read_but_cannot_write(public_mount):
    """3.3.8 kernel/cgroup.c cgroup_file_mode: 0644 files are readable by all, writable by the
    owner (root) only; ctl is 0600; the cgroup directories are root's 0755."""
    m = public_mount(options=["allow_other"])
    sh(f"mkdir {m.path}/a", check=True)
    r = as_nobody(f"cat {m.path}/a/memory.usage_in_bytes {m.path}/a/memory.kmem.slabinfo")
    assert r.returncode == 0 and r.stdout.startswith("0\n# name")
    for target in ("a/memory.limit_in_bytes", "a/memory.kmem.independent_kmem_limit",
                   "a/tasks", ".kmemfs/ctl"):
        r = as_nobody(f"echo 1 > {m.path}/{target}")
        assert r.returncode != 0 and "Permission denied" in r.stderr, target
    r = as_nobody(f"cat {m.path}/.kmemfs/ctl")
    assert "Permission denied" in r.stderr
    r = as_nobody(f"mkdir {m.path}/a/b")
    assert "Permission denied" in r.stderr
    assert not os.path.exists(f"{m.path}/a/b")
    # chown delegates a cgroup, as on the kernel (simple_setattr)
    sh(f"chown nobody {m.path}/a/memory.limit_in_bytes", check=True)
    r = as_nobody(f"echo 8M > {m.path}/a/memory.limit_in_bytes && cat {m.path}/a/memory.limit_in_bytes")
    assert r.returncode == 0 and r.stdout == "8388608\n"


def test_without_allow_other_other_users_are_kept_out(public_mount):
    m = public_mount()
    r = as_nobody(f"cat {m.path}/memory.usage_in_bytes")
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_caps(mount_factory):
    """max_memcgs (CSS_ID_MAX in 3.3) -> ENOSPC; max_tasks -> ENOSPC; max_objects -> E2BIG."""
    m = mount_factory(options=["max_memcgs=3", "max_tasks=2", "max_objects=1000"])
    r = sh(f"cd {m.path} && mkdir a && mkdir b && mkdir c")
    assert r.returncode != 0 and "No space left on device" in r.stderr
    assert os.path.isdir(f"{m.path}/b") and not os.path.exists(f"{m.path}/c")
    ctl = f"{m.path}/.kmemfs/ctl"
    assert sh(f"echo spawn > {ctl} && echo spawn > {ctl}").returncode == 0
    r = sh(f"exec 3<>{ctl}; echo spawn >&3; cat <&3")
    assert "error: ENOSPC" in r.stdout and "max_tasks=2" in r.stdout
    r = sh(f"exec 3<>{ctl}; echo 'alloc dentry 1001' >&3; cat <&3")
    assert "error: E2BIG" in r.stdout
    r = sh(f"exec 3<>{ctl}; echo 'charge anon 5M' >&3; cat <&3")
    assert "error: E2BIG" in r.stdout
    assert sh(f"echo 'alloc dentry 1000' > {ctl}").returncode == 0
