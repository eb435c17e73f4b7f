"""cgroup.event_control through the mount (3.3.8 cgroup_write_event_control,
Documentation/cgroups/memory.txt): usage thresholds, OOM notification, and the signal at rmdir,
reaching unmodified clients."""
import os
import shutil
import subprocess

import pytest

from mounting import sh

pytestmark = pytest.mark.e2e


@pytest.fixture
def mnt(mount_factory):
    """Exact counters (charge_batch=0: no per-CPU stock), so thresholds sit at known bytes."""
    return mount_factory(options=["charge_batch=0"])


def ctl(m, command):
    sh(f"echo '{command}' > {m.p('.kmemfs', 'ctl')}", check=True)


def fired(efd) -> int:
    try:
        return os.eventfd_read(efd)
    except BlockingIOError:
        return 0


@pytest.fixture
def registered(mnt):
    """register(cgroup, file, args) -> a non-blocking eventfd registered on it."""
    fds = []

    def register(cg, name, args=""):
        efd = os.eventfd(0, os.EFD_NONBLOCK)
        target = os.open(mnt.p(cg, name), os.O_RDONLY)
        ec = os.open(mnt.p(cg, "cgroup.event_control"), os.O_WRONLY)
        fds.extend((efd, target, ec))
        os.write(ec, f"{efd} {target} {args}".strip().encode())
        return efd
    yield register
    for fd in fds:
        os.close(fd)


def test_usage_threshold_fires_when_crossed_either_way(mnt, registered):
    """3.3.8 mem_cgroup_usage_register_event: "<event_fd> <fd> <threshold>" on
    memory.usage_in_bytes; the eventfd is signalled each time usage crosses the threshold, up or
    down."""
    os.mkdir(mnt.p("a"))
    efd = registered("a", "memory.usage_in_bytes", "1M")
    ctl(mnt, "charge file 512K cg=/a")
    assert fired(efd) == 0
    ctl(mnt, "charge file 600K cg=/a")                # 1112K: crossed upwards
    assert fired(efd) == 1
    ctl(mnt, "charge file 4K cg=/a")
    assert fired(efd) == 0
    ctl(mnt, "uncharge file 1M cg=/a")                # crossed downwards
    assert fired(efd) == 1


def test_memsw_threshold(mnt, registered):
    """3.3.8 mm/memcontrol.c: memcg_check_events (-> mem_cgroup_threshold) runs from
    __mem_cgroup_commit_charge, __mem_cgroup_uncharge_common and mem_cgroup_move_account
    only; the series' slab charge (memcg_charge_kmem -> __mem_cgroup_try_charge, "[PATCH
    07/10]", 27 Feb 2012) never calls it. A kmem charge over the threshold is seen at the
    next page event."""
    os.mkdir(mnt.p("a"))
    efd = registered("a", "memory.memsw.usage_in_bytes", "8K")
    ctl(mnt, "alloc dentry 100 cg=/a")                # 5 slab pages, kmem charged to memsw too
    assert fired(efd) == 0
    ctl(mnt, "charge file 4K cg=/a")                  # a page charge looks at thresholds
    assert fired(efd) == 1
    ctl(mnt, "free dentry 100 cg=/a")
    ctl(mnt, "reap")                                  # slab uncharge: res down, not memsw
    assert fired(efd) == 0


def test_usage_threshold_ignores_slab_charges_until_a_page_event(mnt, registered):
    """3.3.8 mm/memcontrol.c memcg_check_events callers (page charge, uncharge, move) vs the
    slab path (kmem_getpages -> memcg_charge_kmem, "[PATCH 05/10] memcg: Slab accounting.",
    27 Feb 2012): crossing by slab pages fires nothing, up or down, until a page event; a
    threshold registered at exactly the current usage counts as not yet crossed
    (mem_cgroup_usage_register_event: `entries[i].threshold < usage`)."""
    os.mkdir(mnt.p("a"))
    efd = registered("a", "memory.usage_in_bytes", "8K")
    ctl(mnt, "alloc dentry 100 cg=/a")                # 5 pages of slab: 20K
    assert fired(efd) == 0
    ctl(mnt, "free dentry 100 cg=/a")
    ctl(mnt, "reap")                                  # back to 0 by slab uncharges only
    assert fired(efd) == 0
    ctl(mnt, "alloc dentry 100 cg=/a")
    ctl(mnt, "charge file 4K cg=/a")                  # the page event sees 24K > 8K
    assert fired(efd) == 1
    ctl(mnt, "uncharge file 4K cg=/a")
    assert fired(efd) == 0
    at = registered("a", "memory.usage_in_bytes", "20K")   # usage is exactly 20K
    ctl(mnt, "charge file 4K cg=/a")
    assert fired(at) == 1 and fired(efd) == 0


def test_oom_notification_on_kill_and_on_sleep(mnt, registered):
    """3.3.8 mem_cgroup_oom_register_event: listeners hear every memcg OOM, a kill or a sleeping
    charge."""
    os.mkdir(mnt.p("a"))
    efd = registered("a", "memory.oom_control")
    # 17 pages: a fork's 15 (with signal_cache's off-slab descriptor) + 2 of anon fit
    sh(f"echo 68K > {mnt.p('a', 'memory.limit_in_bytes')}", check=True)
    pid = sh(f"exec 3<>{mnt.p('.kmemfs/ctl')}; echo 'spawn cg=/a' >&3; cat <&3").stdout
    pid = pid.split("pid=")[1].split()[0]
    ctl(mnt, f"charge anon 8K task={pid}")
    assert fired(efd) == 0
    r = sh(f"echo 'alloc size-4096 100 cg=/a' > {mnt.p('.kmemfs/ctl')}")
    assert r.returncode != 0                          # the OOM killer took the task; then ENOMEM
    assert fired(efd) >= 1
    assert "oom_kill" in open(mnt.p(".kmemfs", "events")).read()


def test_bad_registrations(mnt):
    """cgroup_write_event_control errors: EBADF for fds that are not open, EINVAL for a
    file that takes no events or an fd that is not an eventfd."""
    os.mkdir(mnt.p("a"))
    ec = os.open(mnt.p("a", "cgroup.event_control"), os.O_WRONLY)
    stat_fd = os.open(mnt.p("a", "memory.stat"), os.O_RDONLY)
    efd = os.eventfd(0)
    try:
        for data, err in ((f"9999 {stat_fd}", "EBADF"), (f"{efd} 9999", "EBADF"),
                          (f"{efd} {stat_fd}", "EINVAL"), (f"{stat_fd} {stat_fd}", "EINVAL")):
            with pytest.raises(OSError) as e:
                os.write(ec, data.encode())
            assert e.value.errno == getattr(__import__("errno"), err), data
    finally:
        for fd in (ec, stat_fd, efd):
            os.close(fd)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_unmodified_c_listener(mnt, tmp_path):
    """A listener in C written against the 3.x interface (eventfd, cgroup.event_control,
    blocking read) hears a threshold crossing, an OOM, and the rmdir of its cgroup."""
    exe = tmp_path / "event_listener"
    src = os.path.join(os.path.dirname(__file__), "data", "event_listener.c")
    subprocess.run(["cc", "-O", "-o", str(exe), src], check=True)
    os.mkdir(mnt.p("a"))
    usage = subprocess.Popen([str(exe), mnt.p("a", "memory.usage_in_bytes"), "64K"],
                             stdout=subprocess.PIPE, text=True)
    oom = subprocess.Popen([str(exe), mnt.p("a", "memory.oom_control")],
                           stdout=subprocess.PIPE, text=True)
    try:
        for p in (usage, oom):
            assert p.stdout.readline() == "registered\n"
        sh(f"echo 128K > {mnt.p('a', 'memory.limit_in_bytes')}", check=True)
        ctl(mnt, "charge file 100K cg=/a")
        assert usage.stdout.readline().startswith("event ")
        r = sh(f"echo 'alloc size-4096 100 cg=/a' > {mnt.p('.kmemfs/ctl')}")
        assert r.returncode != 0                      # no task to kill: ENOMEM
        assert oom.stdout.readline().startswith("event ")
    finally:
        r = sh(f"rmdir {mnt.p('a')}")                 # cgroup_rmdir signals every listener
    assert r.returncode == 0, r.stderr
    for p in (usage, oom):
        try:
            out, _ = p.communicate(timeout=30)
        finally:
            if p.poll() is None:                      # never leave a listener behind
                p.kill()
                p.wait()
        assert "cgroup removed" in out
