"""`kmemfs exec`: unmodified tools (cgroup-tools, procps' slabtop, systemd-cgtop, cgroupspy)
run on kmemfs as the system's cgroup v1 memory hierarchy, inside a private mount namespace;
nothing outside changes. The tools are the ones scripts/setup installs."""
import glob
import os
import shutil
import subprocess
import sys
import time

import pytest

from mounting import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0,
                                                  reason="kmemfs exec needs root")]
KMEMFS = [sys.executable, "-m", "kmemfs"]


def kexec(mnt, script, **kw):
    return subprocess.run(KMEMFS + ["exec", mnt.path, "--", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, **kw)


def need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/setup installs them)")


def outside_view():
    """What a process outside sees of the places exec touches."""
    mounts = open("/proc/self/mounts").read().splitlines()
    mine = [ln for ln in mounts if any(p in ln.split(" ")[1] for p in
            ("/sys/fs/cgroup/memory", "/proc/self", "/proc/thread-self", "/proc/slabinfo",
             "kmemfs-exec"))]
    fm = subprocess.run(["findmnt", "-n", "/sys/fs/cgroup/memory"], capture_output=True,
                        text=True).stdout
    return mine, fm, open("/proc/slabinfo").read().splitlines()[:2], os.readlink("/proc/self")


def test_tables_inside_and_nothing_changes_outside(mnt, tmp_path):
    """Inside: /proc/mounts, /proc/self/mounts, /proc/self/mountinfo, and a grandchild's
    (a new pid), name kmemfs `cgroup ... memory`; /proc/self stays each process's own.
    Outside, during and after: the same mounts, findmnt and /proc/slabinfo as before."""
    before = outside_view()
    ready, go = tmp_path / "ready", tmp_path / "go"
    script = ("grep ' /sys/fs/cgroup/memory ' /proc/mounts; "
              "grep ' /sys/fs/cgroup/memory ' /proc/self/mounts; "
              "grep ' /sys/fs/cgroup/memory ' /proc/self/mountinfo; "
              "sh -c 'grep \" /sys/fs/cgroup/memory \" /proc/thread-self/mountinfo; "
              "echo child $$; exec readlink /proc/self'; "
              "findmnt -n -o FSTYPE,OPTIONS /sys/fs/cgroup/memory; "
              "ls /sys/fs/cgroup/memory/.kmemfs/ctl; head -1 /proc/slabinfo; "
              f"touch {ready}; while [ ! -e {go} ]; do sleep 0.05; done")
    p = subprocess.Popen(KMEMFS + ["exec", mnt.path, "--", "sh", "-c", script], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
            time.sleep(0.05)
        assert outside_view() == before                 # while the command runs
    finally:
        go.touch()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    lines = out.splitlines()
    table = "cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0"
    assert lines[0] == lines[1] == table
    for info in lines[2:4]:
        assert info.endswith(" /sys/fs/cgroup/memory rw,nosuid,nodev,relatime - cgroup cgroup "
                             "rw,memory"), info
    assert lines[5].rsplit("/", 1)[1] == lines[4].split()[1]   # /proc/self is one's pid
    assert lines[6].split() == ["cgroup", "rw,nosuid,nodev,relatime,memory"]
    assert lines[7] == "/sys/fs/cgroup/memory/.kmemfs/ctl"
    assert lines[8] == "slabinfo - version: 2.1"
    assert outside_view() == before                      # after
    assert not glob.glob("/run/kmemfs-exec.*") and not glob.glob("/tmp/kmemfs-exec.*")


def test_exit_status_and_default_errors(mnt, tmp_path):
    assert kexec(mnt, "exit 7").returncode == 7
    r = subprocess.run(KMEMFS + ["exec", str(tmp_path), "--", "true"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a kmemfs mount" in r.stderr


def test_cgroup_tools(mnt):
    """libcgroup finds the hierarchy in /proc/mounts: cgcreate, cgset (kmem files too),
    cgget, lscgroup, cgexec (its command and that command's children), cgdelete."""
    need("cgcreate", "cgset", "cgget", "lscgroup", "cgexec", "cgdelete")
    r = kexec(mnt, "cgcreate -g memory:web/api && "
                   "cgset -r memory.limit_in_bytes=64M web && "
                   "cgset -r memory.kmem.independent_kmem_limit=1 web/api && "
                   "cgset -r memory.kmem.limit_in_bytes=8M web/api && "
                   "cgget -n -v -r memory.limit_in_bytes web && "
                   "cgget -n -v -r memory.kmem.limit_in_bytes web/api && "
                   "lscgroup memory:/ && "
                   r"""cgexec -g memory:web/api sh -c 'grep -c "memory cgroup rw" /proc/mounts;"""
                   r""" sh -c "grep -c \"cgroup cgroup rw,memory\" /proc/self/mountinfo"'""")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == [str(64 << 20), str(8 << 20)]
    assert {"memory:/", "memory:/web", "memory:/web/api"} <= set(lines[2:5])
    assert int(open(mnt.p("web", "memory.limit_in_bytes")).read()) == 64 << 20
    assert open(mnt.p("web", "api", "memory.kmem.independent_kmem_limit")).read() == "1\n"
    # cgexec's command and that command's child (new pids) see the hierarchy
    assert lines[5:7] == ["1", "1"]
    r = kexec(mnt, "cgdelete -r memory:web")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(mnt.p("web"))


def test_slabtop_reads_kmemfs_slabinfo(mnt):
    need("slabtop")
    os.mkdir(mnt.p("web"))
    with open(mnt.p(".kmemfs", "ctl"), "w") as f:
        f.write("alloc dentry 5000 cg=/web\n")
    r = kexec(mnt, "slabtop -o -s o")
    assert r.returncode == 0, r.stderr
    assert "Active / Total Objects" in r.stdout
    row = next(ln for ln in r.stdout.splitlines() if ln.rstrip().endswith("dentry(web)"))
    assert row.split()[:2] == ["5000", "5000"]          # OBJS ACTIVE of the copy


def test_systemd_cgtop(mnt):
    need("systemd-cgtop")
    for d in ("web", "web/api"):
        os.mkdir(mnt.p(d))
    with open(mnt.p(".kmemfs", "ctl"), "w") as f:
        f.write("charge file 3M cg=/web/api\n")
    r = kexec(mnt, "systemd-cgtop -b -n 1 --order=memory -m")
    if r.returncode != 0:
        pytest.skip(f"systemd-cgtop cannot run here: {r.stderr.strip()[:200]}")
    rows = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.startswith("/")}
    assert "/web/api" in rows and "3.0M" in rows["/web/api"], r.stdout


def test_cgroupspy_default_paths(mnt):
    """cgroupspy with its defaults (root /sys/fs/cgroup) walks and writes kmemfs."""
    pytest.importorskip("cgroupspy")
    os.mkdir(mnt.p("web"))
    code = ("from cgroupspy.trees import Tree\n"
            "t = Tree(groups=['memory'])\n"
            "print(sorted(n.path.decode() for n in t.walk()))\n"
            "web = t.get_node_by_path('/memory/web').controller\n"
            "web.limit_in_bytes = 5 * 1024 * 1024\n"
            "print(web.limit_in_bytes)\n")
    r = subprocess.run(KMEMFS + ["exec", mnt.path, "--", sys.executable, "-c", code], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["['/', '/memory', '/memory/web']", str(5 << 20)]
    assert int(open(mnt.p("web", "memory.limit_in_bytes")).read()) == 5 << 20
