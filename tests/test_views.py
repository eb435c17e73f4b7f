"""The "see it" tools against a real mount: `kmemfs top` (one frame and live in tmux),
`kmemfs record` + `kmemfs plot`, the third-party cgroupspy library, and the
memory.kmem.slabinfo format."""
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from kmemfs.tools import cgread
from kmemfs.engine import RESOURCE_MAX
from mounting import ROOT, sh

pytestmark = pytest.mark.e2e
KMEMFS = [sys.executable, "-m", "kmemfs"]


def ctl(mnt, *lines):
    with open(mnt.p(".kmemfs", "ctl"), "w") as f:
        f.write("".join(line + "\n" for line in lines))


def populate(mnt):
    """/a (2M limit, 100 dentries), /a/c, /b (1M page cache)."""
    for d in ("a", "b", "a/c"):
        os.mkdir(mnt.p(d))
    with open(mnt.p("a", "memory.limit_in_bytes"), "w") as f:
        f.write("2M")
    ctl(mnt, "alloc dentry 100 cg=/a", "charge file 1M cg=/b")


def kmemfs(*args, **kw):
    env = dict(os.environ, COLUMNS="160")
    return subprocess.run(KMEMFS + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env, **kw)


def tmux_session(tmp_path, width, height, cmd):
    """`cmd` in a private tmux server of width x height: (screen, wait_for, send); call
    send.kill() in a finally."""
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock")]    # a private server, removed after
    subprocess.run(tmux + ["new-session", "-d", "-s", "top", "-x", str(width), "-y",
                           str(height), cmd], check=True)

    def screen():
        return subprocess.run(tmux + ["capture-pane", "-p", "-t", "top"], capture_output=True,
                              text=True).stdout

    def wait_for(pred, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = screen()
            if pred(s):
                return s
            time.sleep(0.1)
        raise AssertionError(f"timed out; screen:\n{screen()}")

    def send(*keys):
        subprocess.run(tmux + ["send-keys", "-t", "top", *keys], check=True)
    send.kill = lambda: subprocess.run(tmux + ["kill-server"], capture_output=True)
    return screen, wait_for, send


# --- top -------------------------------------------------------------------------------------
def test_top_once_shows_rows_and_numbers(mnt):
    populate(mnt)
    r = kmemfs("top", mnt.path, "--once", "--select", "/a")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row = {m.group(1): line for line in lines
           if (m := re.match(r"^\W*?(/|[a-z])\s{2,}\d", line.lstrip(" ▸")))}
    assert set(row) == {"/", "a", "b", "c"}, r.stdout
    # tree order with indentation: /, a, c (under a), b
    names = [re.match(r"^[ ▸]*(\S+)", ln).group(1) for ln in lines if ln in row.values()]
    assert names == ["/", "a", "c", "b"]
    indent = {k: len(re.match(r"^[ ▸]*", v).group(0)) for k, v in row.items()}
    assert indent["/"] < indent["a"] < indent["c"] and indent["a"] == indent["b"]
    # numbers: 100 dentries = 5 slabs of 20 = 20480 bytes, kmem and (dependent) usage
    assert int(open(mnt.p("a", "memory.kmem.usage_in_bytes")).read()) == 20480
    a = row["a"].split()
    assert a[:3] == ["▸", "a", "20.0K"], row["a"]       # selected, usage
    assert "2.0M" in a and "∞" in a and "max" not in a    # limit; kmem limit: one spelling
    assert "1.0M" in row["b"].split()
    # the slabs pane of /a and the events pane
    assert "caches of /a" in r.stdout
    assert re.search(r"dentry\(a\)\s+18\.8K\s+100/100\s+100%\s+192", r.stdout)
    assert re.search(r"\d\d:\d\d:\d\d cache_create cache=dentry\(a\) cgroup=/a", r.stdout)


def test_top_survives_cgroups_disappearing(mnt):
    from kmemfs.tools.top import View
    populate(mnt)
    v = View(mnt.path, select="/a/c")
    v.refresh()
    assert v.selected == "/a/c" and v.slabs == []
    os.rmdir(mnt.p("a", "c"))
    assert cgread.read_cgroup(mnt.path, "/a/c") is None      # gone, not an error
    v.refresh()
    assert v.selected == "/a" and [p for p, _ in v.rows] == ["/", "/a", "/b"]
    assert v.slabs[0][0] == "dentry(a)"
    v.handle("u")                                             # sort by usage: b (1M) first
    assert [p for p, _ in v.rows] == ["/", "/b", "/a"]
    v.tail.close()


def test_top_live_in_tmux(mnt, tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    populate(mnt)
    cmd = (f"cd {ROOT} && {sys.executable} -m kmemfs top {mnt.path} --interval 0.3; "
           "echo EXITED rc=$?; sleep 60")
    screen, wait_for, send = tmux_session(tmp_path, 150, 40, cmd)

    def order(s):
        return [m.group(1) for m in re.finditer(r"^[ ▸]+(/|[a-z])\s{2,}\d", s, re.M)]

    try:
        s = wait_for(lambda s: "sort: name" in s and len(order(s)) == 4)
        assert order(s) == ["/", "a", "c", "b"]
        assert "caches of /" in s and "events" in s and "q:quit" in s
        send("u")
        s = wait_for(lambda s: "sort: usage" in s)
        assert order(s) == ["/", "b", "a", "c"]                  # b (1M) before a (20K)
        send("j", "j")
        s = wait_for(lambda s: "caches of /a" in s)
        assert "dentry(a)" in s
        # a new event shows up in the events pane on the next refresh
        ctl(mnt, "alloc inode_cache 5 cg=/b")
        wait_for(lambda s: "cache=inode_cache(b)" in s)
        send("q")
        wait_for(lambda s: "EXITED rc=0" in s)
    finally:
        send.kill()


def test_top_natural_order_and_select_errors(mnt):
    """Names sort as people count (g2 before g10); --select of a missing cgroup is an error."""
    from kmemfs.tools.top import View, natural
    for g in ("g10", "g2", "g1"):
        os.mkdir(mnt.p(g))
    assert sorted(["g10", "g2", "g1", "a"], key=natural) == ["a", "g1", "g2", "g10"]
    v = View(mnt.path)
    v.refresh()
    assert [p for p, _ in v.rows] == ["/", "/g1", "/g2", "/g10"]
    v.handle("r")
    assert [p for p, _ in v.rows] == ["/", "/g10", "/g2", "/g1"] and v.reverse
    v.handle("m")                           # a new sort key resets reverse
    assert v.sort == "usage" and not v.reverse
    v.tail.close()
    r = kmemfs("top", mnt.path, "--once", "--select", "/nope")
    assert r.returncode == 2 and "no cgroup /nope" in r.stderr and r.stdout == ""


def test_top_caches_pane_sorts_and_scrolls(mnt):
    """Tab moves the focus to the caches pane; slabtop's keys sort it; j/k scroll it."""
    from kmemfs.tools.top import View, natural
    ctl(mnt, "alloc dentry 100", "alloc size-64 1000", "alloc task_struct 3")
    v = View(mnt.path)
    v.refresh()
    assert v.slab_sort == "cache size"
    v.handle("\t")
    assert v.focus == "caches"
    v.handle("s")                           # slabtop s: object size, biggest first
    sizes = [r[3] for r in v.slabs]
    assert sizes == sorted(sizes, reverse=True)
    v.handle("n")
    names = [r[0] for r in v.slabs]
    assert names == sorted(names, key=natural) and len(names) > 100
    v.handle("r")
    assert v.slab_reverse and [r[0] for r in v.slabs] == names[::-1]
    v.handle("o")                           # a new key: not reversed
    assert not v.slab_reverse
    v.handle("j")
    v.handle("j")
    assert v.slab_top == 2 and v.sort == "name"        # the cgroups' order did not move
    v.handle("\t")
    v.handle("j")
    assert v.focus == "cgroups" and v.slab_top == 2
    v.tail.close()


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
def test_top_screen_sizes_in_tmux(mnt, tmp_path, size):
    """At 80x24 every column and the cache names are there; at 160x50 the table reaches the
    right edge (the bars take the width); ? shows the help, Tab the caches' keys."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    populate(mnt)
    for g in ("g10", "g2"):
        os.mkdir(mnt.p(g))
    w, h = size
    cmd = f"cd {ROOT} && {sys.executable} -m kmemfs top {mnt.path} --interval 0.3; sleep 60"
    screen, wait_for, send = tmux_session(tmp_path, w, h, cmd)
    try:
        s = wait_for(lambda s: "caches of /" in s and "radix_tree_node" in s)
        lines = s.splitlines()
        assert len(lines) <= h and max(len(ln) for ln in lines) <= w
        head = next(ln for ln in lines if ln.lstrip().startswith("cgroup"))
        assert head.rstrip().endswith("tasks")            # no column cut off
        rows = [ln.split()[0] for ln in lines if re.match(r"^\s+g\d+\s", ln)]
        assert rows == ["g2", "g10"]
        assert re.search(r"│ radix_tree_node\s+\d", s)      # the cache names did not vanish
        if w >= 160:
            assert len(head.rstrip()) >= w - 2             # no wasted width
            assert "usage/limit" in head
        send("?")
        s = wait_for(lambda s: "any key closes" in s)
        assert "slabtop" in s and "Tab" in s
        send("x", "Tab")
        s = wait_for(lambda s: "Tab:cgroups" in s)
        send("s")
        wait_for(lambda s: "sort: objsize" in s)
    finally:
        send.kill()


# --- record / plot ---------------------------------------------------------------------------
def test_record_then_plot(mount_factory, tmp_path):
    mnt = mount_factory(options=["charge_batch=0"])      # exact counters: usage == kmem
    os.mkdir(mnt.p("w"))
    with open(mnt.p("w", "memory.limit_in_bytes"), "w") as f:
        f.write("1M")
    out, png = tmp_path / "run.jsonl", tmp_path / "run.png"
    # the workload runs as record's COMMAND: it starts after the first sample
    work = (f"for i in $(seq 12); do echo 'touch 150 cg=/w' > {mnt.p('.kmemfs', 'ctl')} || true; "
            "sleep 0.08; done")
    rec = subprocess.run(KMEMFS + ["record", mnt.path, "--interval", "0.1", "--out", str(out),
                                   "--duration", "20", "--", "sh", "-c", work], cwd=ROOT,
                         stderr=subprocess.PIPE, text=True, timeout=60)
    assert rec.returncode == 0, rec.stderr
    objs = [json.loads(line) for line in out.read_text().splitlines()]
    assert objs[0]["type"] == "header" and objs[0]["kmemfs"] and objs[0]["page_size"] == 4096
    assert objs[-1]["type"] == "end" and objs[-1]["reason"] == "command"
    samples = [o for o in objs if o["type"] == "sample"]
    assert len(samples) >= 3
    ts = [s["t"] for s in samples]
    assert ts == sorted(ts) and ts[-1] <= 20
    kmem = [s["cgroups"]["/w"]["kmem_usage"] for s in samples]
    assert kmem[0] == 0 and kmem[-1] > 0 and len(set(kmem)) >= 2    # it moved over time
    w = samples[-1]["cgroups"]["/w"]
    assert w["limit"] == 1 << 20 and w["kmem_limit"] == RESOURCE_MAX
    assert w["independent"] == 0 and w["usage"] == w["kmem_usage"] <= 1 << 20
    assert w["failcnt"] > 0 and w["tasks"] == 0 and w["memsw_usage"] is not None
    kinds = {o["kind"] for o in objs if o["type"] == "event"}
    assert {"cache_create", "charge_fail"} <= kinds
    r = kmemfs("plot", str(out), "--out", str(png))
    assert r.returncode == 0, r.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000


def test_record_help_recipe_runs_in_dash(mnt, tmp_path):
    """The first example of `record --help`, as written, in sh (dash here), with kmemfs on
    PATH and the mount's path for /tmp/kmemfs: a recording of the example's events, a PNG."""
    help_text = kmemfs("record", "--help").stdout
    recipe = [ln.strip() for ln in help_text.split("examples:")[1].splitlines()[1:3]]
    assert recipe[0].startswith("kmemfs record /tmp/kmemfs --out run.jsonl -- ")
    assert recipe[1] == "kmemfs plot run.jsonl --out run.png"
    script = "\n".join(recipe).replace("/tmp/kmemfs", mnt.path)
    script = script.replace("scripts/", os.path.join(ROOT, "scripts") + "/")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"])
    r = subprocess.run(["sh", "-ec", script], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    kinds = {o["kind"] for o in objs if o["type"] == "event"}
    assert {"oom_kill", "charge_fail", "reclaim"} <= kinds    # the example's story
    assert objs[-1]["reason"] == "command"
    assert (tmp_path / "run.png").read_bytes()[:4] == b"\x89PNG"


def test_record_duration_is_a_deadline_and_slow_sweeps_warn(mnt, tmp_path):
    """--duration stops a sweep in the middle (the sample says partial); a sweep longer than
    the interval is reported; every line is on disk as soon as it is written."""
    from kmemfs.tools import record as rec
    for i in range(30):
        os.mkdir(mnt.p(f"g{i}"))
    tree, dead, complete = rec.sweep(mnt.path, deadline=time.monotonic() - 1, snapshot=False)
    assert tree == {} and dead is None and not complete
    tree, dead, complete = rec.sweep(mnt.path, snapshot=False)
    assert complete and len(tree) == 31 and dead == {}
    assert rec.sweep(mnt.path) == (tree, dead, True)     # .kmemfs/snapshot: one read
    warnings, out = [], tmp_path / "r.jsonl"

    def warn(msg):                     # called right after the first sample is written:
        warnings.append((msg, len(out.read_text().splitlines())))   # it is on disk
    rec.record(mnt.path, str(out), interval=1e-6, duration=0.3, warn=warn)
    objs = [json.loads(line) for line in out.read_text().splitlines()]
    assert objs[-1]["reason"] == "duration"
    assert "longer than --interval" in warnings[0][0]
    assert warnings[0][1] == 2                         # header + the first sample
    # a deadline that falls inside the first sweep: one sample, then the end; on kmemfs the
    # sample is one read of .kmemfs/snapshot, so whole (a file walk's would be partial, above)
    rec.record(mnt.path, str(out), interval=1.0, duration=1e-9, warn=warn)
    objs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [o["type"] for o in objs] == ["header", "sample", "end"]
    assert "partial" not in objs[1] and len(objs[1]["cgroups"]) == 31


def test_plot_events_only_cgroups_and_unknown_cgroup(tmp_path):
    """A cgroup that lived between two samples gets a panel from its events; --cgroup of a
    cgroup not in the recording is an error."""
    from kmemfs.tools import record as rec
    lines = [{"type": "header", "version": 1, "mountpoint": "/m", "interval": 1,
              "page_size": 4096, "wall_start": 0, "kmemfs": True}]
    c = {"usage": 4096, "limit": 1 << 20, "kmem_usage": 4096, "kmem_limit": RESOURCE_MAX,
         "independent": 0, "failcnt": 0, "cache": 0, "rss": 0, "tasks": 0}
    for t in (0, 1, 2):
        lines.append({"type": "sample", "t": t, "cgroups": {"/": c, "/a": c}})
    lines.append({"type": "event", "t": 1.5, "seq": 1, "kind": "cache_create",
                  "fields": {"cache": "dentry(ghost)", "cgroup": "/ghost"}})
    lines.append({"type": "end", "t": 2.5, "samples": 3, "events": 1, "reason": "signal"})
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(o) + "\n" for o in lines))
    assert rec.choose_cgroups(rec.load(f)[1], rec.load(f)[2]) == ["/a", "/ghost"]
    assert rec.plot(str(f), str(tmp_path / "p.png")) == ["/a", "/ghost"]
    r = kmemfs("plot", str(f), "--out", str(tmp_path / "x.png"), "--cgroup", "/nosuch")
    assert r.returncode == 1 and "no cgroup /nosuch in the recording" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_record_stops_on_sigint(mnt, tmp_path):
    out = tmp_path / "run.jsonl"
    rec = subprocess.Popen(KMEMFS + ["record", mnt.path, "--interval", "0.05", "--out",
                                     str(out)], cwd=ROOT, stderr=subprocess.PIPE)
    os.mkdir(mnt.p("early"))
    time.sleep(0.6)
    for _ in range(20):                 # cgroups come and go while it samples
        os.mkdir(mnt.p("flicker"))
        os.rmdir(mnt.p("flicker"))
    os.rmdir(mnt.p("early"))
    os.mkdir(mnt.p("late"))
    time.sleep(0.3)
    rec.send_signal(signal.SIGINT)
    assert rec.wait(timeout=10) == 0, rec.stderr.read()
    objs = [json.loads(line) for line in out.read_text().splitlines()]
    assert objs[-1] == {**objs[-1], "type": "end", "reason": "signal"}
    samples = [o for o in objs if o["type"] == "sample"]
    assert "/early" in samples[0]["cgroups"] and "/late" not in samples[0]["cgroups"]
    assert "/late" in samples[-1]["cgroups"] and "/early" not in samples[-1]["cgroups"]


# --- cgroupspy -------------------------------------------------------------------------------
def test_cgroupspy_walks_and_writes(mount_factory, tmp_path):
    """cgroupspy wants a root holding one directory per controller (/sys/fs/cgroup/memory...):
    mount kmemfs at <root>/memory and hand it <root>."""
    trees = pytest.importorskip("cgroupspy.trees")
    m = mount_factory(name="cgroup/memory", options=["charge_batch=0"])   # exact usage
    os.mkdir(m.p("web"))
    os.mkdir(m.p("web", "api"))
    ctl(m, "alloc dentry 100 cg=/web/api")
    root = str(tmp_path / "cgroup")

    t = trees.Tree(root_path=root, groups=["memory"])
    paths = [n.path for n in t.walk()]
    assert paths == [b"/", b"/memory", b"/memory/web", b"/memory/web/api"]   # no .kmemfs
    api = t.get_node_by_path("/memory/web/api/").controller
    assert api.usage_in_bytes == 20480
    assert api.stat["cache"] == 0 and api.stat["hierarchical_memory_limit"] == RESOURCE_MAX
    assert api.oom_control == {"oom_kill_disable": 0, "under_oom": 0}
    assert int(api.get_property(b"memory.kmem.usage_in_bytes")) == 20480

    web = t.get_node_by_path("/memory/web").controller
    web.limit_in_bytes = 3 * 1024 * 1024 + 1              # PAGE_ALIGNed up by the kernel
    assert web.limit_in_bytes == 3 * 1024 * 1024 + 4096
    web.limit_in_bytes = None                             # cgroupspy writes -1: RESOURCE_MAX
    assert web.get_content("limit_in_bytes") == RESOURCE_MAX
    web.set_property(b"memory.kmem.independent_kmem_limit", 1)
    web.set_property(b"memory.kmem.limit_in_bytes", "2M")
    assert int(web.get_property(b"memory.kmem.limit_in_bytes")) == 2 << 20
    with pytest.raises(OSError) as e:                     # FlagFile; web has a child
        web.use_hierarchy = True
    assert e.value.errno == errno.EBUSY
    api.use_hierarchy = True
    assert api.use_hierarchy is True

    node = t.get_node_by_path("/memory/web")
    node.create_cgroup("batch")                           # mkdir through cgroupspy
    assert os.path.isdir(m.p("web", "batch"))
    assert os.path.exists(m.p("web", "batch", "memory.kmem.slabinfo"))
    node.delete_cgroup("batch")
    assert not os.path.exists(m.p("web", "batch"))

    # GroupedTree (all controllers side by side) sees the same hierarchy
    g = trees.GroupedTree(root_path=root, groups=["memory"])
    api2 = g.get_node_by_path("/web/api")
    assert api2 is not None and api2.memory.usage_in_bytes == 20480


# --- memory.kmem.slabinfo format -------------------------------------------------------------
HEADER = "# name            <active_objs> <num_objs> <objsize>"


def parse_row(line):
    """An independent reading of `%-17s %6lu %6lu %6u`: the last three fields are numbers,
    the name is the rest; formatting them back must give the line byte for byte."""
    name, active, num, size = line.rsplit(None, 3)
    row = (name, int(active), int(num), int(size))
    assert f"{name:<17} {row[1]:6d} {row[2]:6d} {row[3]:6d}" == line, line
    return row


def test_memcg_slabinfo_format(mnt):
    for d in ("x", "x/y", "my web", "gone"):
        os.mkdir(mnt.p(d))
    ctl(mnt, "alloc dentry 100 cg=/x", "alloc size-64 1000 cg=/x", "kmalloc 3000 7 cg=/x/y",
        "spawn cg=/x/y", "touch 30 cg=/gone")
    sh(f'echo $$ > "{mnt.p("my web", "tasks")}"; echo "alloc dentry 3" > {mnt.p(".kmemfs", "ctl")}'
       f'; echo $$ > {mnt.p("tasks")}', check=True)
    os.rmdir(mnt.p("gone"))                               # leaves ...(gone)dead copies
    global_rows = {r["name"]: r for r in cgread.parse_slabinfo(
        open(mnt.p(".kmemfs", "slabinfo")).read())}
    seen = {}
    for rel in cgread.walk(mnt.path):
        text = open(os.path.join(mnt.path, rel.lstrip("/"), "memory.kmem.slabinfo")).read()
        lines = text.splitlines()
        assert lines[0] == HEADER and text.endswith("\n")
        rows = [parse_row(line) for line in lines[1:]]
        assert rows == cgread.parse_memcg_slabinfo(text)
        for name, active, num, size in rows:
            assert 0 <= active <= num and size > 0
            g = global_rows[name]                         # the same cache in /proc/slabinfo
            assert (g["active_objs"], g["num_objs"], g["objsize"]) == (active, num, size)
        seen[rel] = {r[0]: r for r in rows}
    assert seen["/x"]["dentry(x)"][1:] == (100, 100, 192)
    # 1000 handed out + 3 in CPU 0's array cache: the refills emptied 17 slabs of 59
    # (mm/slab.c cache_alloc_refill), and s_show counts array objects as active
    assert seen["/x"]["size-64(x)"][1] == 1003
    assert seen["/x/y"]["size-4096(y)"][1] == 7 and "task_struct(y)" in seen["/x/y"]
    # 3 handed out, 13 more in the array: an untouched array's first refill takes
    # BATCHREFILL_LIMIT = 16 (mm/slab.c cache_alloc_refill)
    assert seen["/my web"]["dentry(my web)"][1] == 16
    assert {"dentry(gone)dead", "inode_cache(gone)dead"} <= set(seen["/"])
    assert len(seen["/"]) > 100                           # root: the originals too


# --- progress and manuals --------------------------------------------------------------------
def test_progress_plain_and_terminal():
    import io
    from kmemfs.tools.progress import progress
    buf = io.StringIO()
    with progress(1000, "fuzz", stream=buf) as p:
        for _ in range(1000):
            p.advance()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "fuzz... 0% (0/1000)" and lines[-1] == "fuzz... 100% (1000/1000)"
    assert "fuzz... 40% (400/1000)" in lines and len(lines) == 11

    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty = Tty()
    with progress(50, "bench", stream=tty) as p:
        p.update(50)
    assert "bench" in tty.getvalue() and "50/50" in tty.getvalue()


def test_manuals():
    for cmd, words in (("top", ["kmem.slabinfo", "keys (", "Ctrl-C", "examples:", "--once",
                                "slabtop", "Tab"]),
                       ("record", ["--duration", "SIGINT", "dead", "examples:"]),
                       ("plot", ["MiB", "OOM", "examples:", "steps", "between two samples",
                                 "--share-y"])):
        r = kmemfs(cmd, "--help")
        assert r.returncode == 0 and all(w in r.stdout for w in words), (cmd, r.stdout)


def test_plain_v1_hierarchy_without_kmem(tmp_path):
    """A kernel's memory hierarchy without the series: no kmem files, no .kmemfs/."""
    root = tmp_path / "memory"
    for d in (root, root / "web"):
        d.mkdir()
        for name, value in (("memory.usage_in_bytes", "4096"), ("memory.failcnt", "3"),
                            ("memory.limit_in_bytes", "9223372036854771712"),
                            ("memory.stat", "cache 4096\nrss 0\n"), ("tasks", "1\n2\n"),
                            ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n")):
            (d / name).write_text(value + ("" if value.endswith("\n") else "\n"))
    r = kmemfs("top", str(root), "--once", "--select", "/web")
    assert r.returncode == 0, r.stderr
    web = next(ln for ln in r.stdout.splitlines() if "web" in ln and "4.0K" in ln).split()
    assert web[1:] == ["web", "4.0K", "∞", "-", "-", "-", "3", "-", "2"]      # no bar: ∞
    assert "no memory.kmem.slabinfo" in r.stdout and "no .kmemfs/events" in r.stdout
    out = tmp_path / "r.jsonl"
    r = kmemfs("record", str(root), "--interval", "0.1", "--duration", "0.3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in out.read_text().splitlines()]
    assert objs[0]["kmemfs"] is False and "dead" not in objs[1]
    assert objs[1]["cgroups"]["/web"]["kmem_usage"] is None
    r = kmemfs("plot", str(out), "--out", str(tmp_path / "r.png"))
    assert r.returncode == 0, r.stderr
