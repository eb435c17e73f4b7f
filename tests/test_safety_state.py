"""Issue 9 items 1, 2, 3, 11 and 13: the state file runs no code, saves and logs never follow
a user's symlink, `kmemfs umount` touches only kmemfs mounts, failed saves are reported and
never lose the last good state, the mount point is resolved and checked once.

Each test reproduces the attack of the issue as described (as `nobody` where it matters). The
pickle, the planted temporary symlink and the 1,000-level save were also run against the code
before these fixes (9dffc72), where the command ran, the victim was overwritten and the save
hit RecursionError; the old `kmemfs umount` was never run on /proc or a tmpfs (it detaches)."""
import errno
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import deque

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "scripts"))
import fuzz  # noqa: E402  (scripts/fuzz.py: a busy in-process workload)

from kmemfs.cgroupfs.control import control_files  # noqa: E402
from kmemfs.cgroupfs.tree import CTL_DIR, Request  # noqa: E402
from kmemfs.engine import Config, EngineError, check  # noqa: E402
from kmemfs.fuse import daemon, safepath, state  # noqa: E402
from kmemfs.fuse.daemon import build  # noqa: E402
from mounting import ROOT, Mount, sh  # noqa: E402

NOBODY = 65534


def kmemfs(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "kmemfs", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: the attacks are a user against the root daemon")


def as_nobody(fn):
    """Run fn() in a child process with uid/gid nobody (os.setuid); returns its exit code."""
    need_root()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fn()
            code = 0
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


@pytest.fixture
def public(tmp_path):
    """A directory tree nobody can reach: base (0755) / pub (1777, sticky like /tmp)."""
    need_root()
    base = tempfile.mkdtemp(prefix="kmemfs-safety-", dir="/tmp")
    os.chmod(base, 0o755)
    pub = os.path.join(base, "pub")
    os.mkdir(pub)
    os.chmod(pub, 0o1777)
    yield base
    for entry in os.listdir(base):
        p = os.path.join(base, entry)
        if os.path.ismount(p):
            subprocess.run(["fusermount3", "-u", p], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------- helpers
def repack(payload: bytes, version: int = state.VERSION) -> bytes:
    digest = hashlib.sha256(payload).hexdigest().encode()
    return b"KMEMFS-STATE %d\n%s\n" % (version, digest) + payload


def doc_of(fs) -> dict:
    return json.loads(state.dumps(fs).split(b"\n", 2)[2])


def refused(doc, match):
    with pytest.raises(state.StateError, match=match):
        state.loads(repack(json.dumps(doc).encode()))


def busy_fs():
    """A model after 3000 fuzzed operations (every file, verb and tree operation) plus what
    the fuzzer's own mount options leave out: a charge stock, tasks that charged anon pages,
    an OOM, a removed cgroup whose caches are dead, chmod/chown and release_agent."""
    f = fuzz.fuzz_inprocess(ops=3000, seed=9, options=("charge_batch=32", "max_memcgs=1000",
                                                       "max_tasks=300", "max_objects=50000"))
    assert f.violations == []
    fs = f.fs
    e = fs.engine
    a = e.mkdir(e.root, "safety_a")
    fs.memcgs[a.id] = a
    b = e.mkdir(a, "b")
    fs.memcgs[b.id] = b
    t, _ = e.spawn(b)
    e.charge_user(b, "anon", 64 * e.page, task=t)
    e.charge_user(a, "file", 8 * e.page)
    e.alloc(e.cache("dentry"), 50, b)
    gone = e.mkdir(e.root, "safety_gone")
    e.alloc(e.cache("dentry"), 5, gone)
    e.rmdir(gone)
    e.set_limit(a, 1 << 20)
    e.set_oom_kill_disable(a, 1)
    fs.setattr(fs.dir_ino(a), mode=0o700, uid=NOBODY)
    fs.set_release_agent(b"/bin/true")
    assert check(e) == []
    return fs


def render_all(fs) -> dict:
    """Every file of every cgroup and of .kmemfs, with its attributes, read through CgroupFS."""
    out, todo = {}, deque([("", fs.dir_ino(fs.engine.root))])
    req = Request(os.getpid(), 0, 0)
    ctl = fs.lookup(fs.dir_ino(fs.engine.root), CTL_DIR).ino
    todo.append((CTL_DIR, ctl))
    while todo:
        path, ino = todo.popleft()
        out[path + ":attr"] = fs.getattr(ino).mode, fs.getattr(ino).uid
        for name, attr in fs.readdir(ino):
            p = f"{path}/{name}"
            if stat.S_ISDIR(attr.mode):
                todo.append((p, attr.ino))
                continue
            out[p + ":attr"] = attr.mode, attr.uid, attr.gid
            if name == "ctl" or not attr.mode & 0o444 or p in ("/tasks", "/cgroup.procs"):
                continue                        # root's lists hold the host's live pids
            fh = fs.open(attr.ino, req)
            try:
                out[p] = fs.read(fh, 0, 1 << 24)
                if p == f"{CTL_DIR}/snapshot":      # its root row counts the host's live pids
                    out[p] = re.sub(rb'("path":"/",.*?"tasks":)\d+', rb"\1-", out[p], count=1)
            except EngineError as e:
                out[p] = e.errno
            finally:
                fs.release(fh)
    return out


def reachable_engine_objects(engine):
    """Every object of a kmemfs.engine class reachable from the engine, found WITHOUT the
    schema (any attribute, any container), so a new class or field cannot hide from it."""
    seen, found, todo = set(), [], deque([engine])
    while todo:
        o = todo.popleft()
        if id(o) in seen or isinstance(o, (int, str, bytes, float, type(None))):
            continue
        seen.add(id(o))
        if isinstance(o, dict):
            todo.extend(o.keys())
            todo.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset, deque)):
            todo.extend(o)
        elif type(o).__module__.startswith("kmemfs.engine"):
            found.append(o)
            todo.extend(getattr(o, n) for n in state.instance_fields(o))
    return found


# ---------------------------------------------------------------------------------- item 1
def attack_pickle(marker) -> bytes:
    """The issue's payload: protocol 4, STACK_GLOBAL with module `kmemfs.engine.errors` (the
    old unpickler's allow-list) and the dotted name `os.system`, which pickle resolves by
    walking attributes from that module; REDUCE then calls it."""
    name, cmd = b"kmemfs.engine.errors", b"os.system"
    arg = f"touch {marker}".encode()
    body = (b"\x8c" + bytes([len(name)]) + name + b"\x94"
            + b"\x8c" + bytes([len(cmd)]) + cmd + b"\x94" + b"\x93"
            + b"\x8c" + bytes([len(arg)]) + arg + b"\x94" + b"\x85" + b"R" + b".")
    return b"\x80\x04" + body


def test_the_issue_pickle_is_live(tmp_path):
    """The payload really runs code when unpickled (in a throw-away child process), so the
    next test shows a real attack being refused."""
    marker = tmp_path / "pwned-by-plain-pickle"
    payload = attack_pickle(marker)
    subprocess.run([sys.executable, "-c", "import pickle, sys; "
                    "pickle.loads(sys.stdin.buffer.read())"], input=payload, cwd=ROOT,
                   check=True)
    assert marker.exists()


def test_pickle_state_file_is_refused_unread(tmp_path):
    """Item 1: a format-1 file (the old header + checksum + the pickle above) is refused by
    its header, with a clear message, and never unpickled: the command does not run."""
    marker = tmp_path / "pwned"
    st = tmp_path / "evil.state"
    st.write_bytes(repack(attack_pickle(marker), version=1))
    os.chmod(st, 0o600)
    with pytest.raises(state.StateError, match="format 1 is a Python pickle.*never loads"):
        state.load(str(st))
    assert not marker.exists()
    mp = tmp_path / "mnt"
    mp.mkdir()
    before = st.read_bytes()
    r = kmemfs("mount", mp, "--state", st, "--foreground")
    assert r.returncode == 1 and "format 1 is a Python pickle" in r.stderr
    assert not marker.exists() and not os.path.ismount(mp)
    assert st.read_bytes() == before


def test_no_json_names_code(tmp_path):
    """Format 2 can only name the schema's classes and fields; anything else is refused
    before an object is made."""
    doc = doc_of(build(Config()))
    evil = json.loads(json.dumps(doc))
    evil["objects"]["os.system"] = [["touch", str(tmp_path / "pwned")]]
    refused(evil, "object tables are not exactly")
    evil = json.loads(json.dumps(doc))
    evil["objects"]["Slab"][0]["__class__"] = "os.system"
    refused(evil, r"Slab #0 has fields \['__class__'\]")
    evil = json.loads(json.dumps(doc))
    evil["objects"]["Engine"][0]["__reduce__"] = "os.system"
    refused(evil, "Engine #0 has fields")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("damage,match", [
    (lambda d: d["objects"]["Slab"][0].update(inuse="3"), r"Slab #0\.inuse holds a str"),
    (lambda d: d["objects"]["Slab"][0].update(inuse=True), r"Slab #0\.inuse holds a bool"),
    (lambda d: d["objects"]["Slab"][0].pop("inuse"), r"Slab #0 lacks the fields \['inuse'\]"),
    (lambda d: d["objects"]["Memcg"][0].update(parent=10**6), r"Memcg #0\.parent 1000000 is no"),
    (lambda d: d["objects"]["Memcg"][0].update(quirks={"a": 1}), r"\.quirks holds a dict"),
    (lambda d: d["objects"]["Engine"][0]["config"].update(page_size=3), "page_size"),
    (lambda d: d["objects"]["Engine"][0]["config"].update(evil=1), r"config has fields"),
    (lambda d: d["objects"]["ResCounter"][0].update(parent=0), "ResCounter parent chain loops"),
    (lambda d: d["objects"]["Slab"][0].update(inuse=10**6), "breaks its invariants"),
    (lambda d: d["objects"]["KmemCache"][0].update(num=0), "no objects or pages per slab"),
    (lambda d: d["objects"].update(Engine=[]), "not exactly one Engine"),
    (lambda d: d["fs"].update(overrides=[[1, [0o170000, 0, 0]]]), "mode or owner out of range"),
])
def test_every_field_is_checked_on_load(damage, match):
    doc = doc_of(build(Config()))
    damage(doc)
    refused(doc, match)


def test_the_tree_must_be_a_tree():
    fs = build(Config())
    e = fs.engine
    e.mkdir(e.mkdir(e.root, "a"), "b")
    doc = doc_of(fs)
    memcgs = doc["objects"]["Memcg"]
    b = next(i for i, m in enumerate(memcgs) if m["name"] == "b")
    memcgs[b]["children"] = [["loop", 0]]             # the root as its own grandchild
    refused(doc, "not a tree")


@pytest.mark.parametrize("payload,match", [
    (b"[" * 100000 + b"]" * 100000, "not valid JSON|top level"),
    (b'{"fs": {}, "fs": {}}', "repeats a key"),
    (b"\xff\xfe", "not valid JSON"),
    (b'{"fs": 1, "objects": {"Engine": [' + b"9" * 5000 + b"]}}", "not valid JSON"),
])
def test_hostile_json_is_refused(payload, match):
    with pytest.raises(state.StateError, match=match):
        state.loads(repack(payload))


def test_a_mutated_state_is_refused_or_served():
    """Any number in a state file changed (counters, limits, ids, references): the file is
    refused with a reason, or the model it holds is served without a crash: every file
    reads, allocation works, and it saves again."""
    fs = build(Config(boot_slabs=False))
    e = fs.engine
    a = e.mkdir(e.root, "a")
    fs.memcgs[a.id] = a
    e.alloc(e.cache("dentry"), 50, a)
    t, _ = e.spawn(a)
    e.charge_user(a, "anon", 8 * e.page, task=t)
    doc = doc_of(fs)
    spots, todo = [], deque([(doc, [])])
    while todo:
        v, path = todo.popleft()
        if type(v) is int:
            spots.append(path)
        elif isinstance(v, (dict, list)):
            todo.extend((x, path + [k]) for k, x in (v.items() if isinstance(v, dict)
                                                     else enumerate(v)))
    rng = random.Random(9)
    outcomes = set()
    for _ in range(200):
        d = json.loads(json.dumps(doc))
        *where, last = rng.choice(spots)
        o = d
        for k in where:
            o = o[k]
        o[last] = rng.choice([-1, 0, 1, 2, 7, 4096, 2**62, 2**64, o[last] + 1, o[last] - 1])
        try:
            saved = state.loads(repack(json.dumps(d).encode()))
        except state.StateError:
            outcomes.add("refused")
            continue
        fs2 = state.restore(saved, control_files())
        render_all(fs2)
        try:
            fs2.engine.alloc(fs2.engine.cache("dentry"), 100, fs2.engine.root)
        except EngineError:
            pass
        state.dumps(fs2)
        outcomes.add("served")
    assert outcomes == {"refused", "served"}


def test_busy_model_round_trips_byte_identical():
    """Every control file and .kmemfs file reads the same after save/restore, and the saved
    model saves to the same bytes again."""
    fs = busy_fs()
    before = render_all(fs)
    data = state.dumps(fs)
    fs2 = state.restore(state.loads(data), control_files())
    assert check(fs2.engine) == []
    after = render_all(fs2)
    assert after.keys() == before.keys()
    for k in before:
        assert after[k] == before[k], k
    assert state.dumps(fs2) == data


def test_every_engine_field_is_in_the_schema():
    """The guard for the next developer: after a busy workload, every object of every
    kmemfs.engine class reachable from the engine (found without the schema) has a schema,
    and its attributes are exactly the schema's fields. Adding a field to an engine class
    without adding it to kmemfs/fuse/state.py SCHEMA fails here, naming it."""
    fs = busy_fs()
    objs = reachable_engine_objects(fs.engine)
    classes = {type(o) for o in objs}
    # Config is a frozen dataclass: its own fields and annotations are its schema (Frozen)
    assert classes - set(state.SCHEMA) == {Config}, "engine classes the state cannot save"
    assert state.Frozen(Config).fields().keys() == {k for k, _ in Config().items()}
    unsaved = sorted({f for o in objs if type(o) is not Config for f in state.unsaved_fields(o)})
    assert unsaved == [], f"fields not in the state schema (kmemfs/fuse/state.py): {unsaved}"


def test_an_unknown_field_makes_the_save_fail_loudly(tmp_path):
    """What the previous test guards, seen from the daemon: a field the schema does not know
    makes the save fail with its name, as a `save_failed` event, and the file keeps the last
    good save."""
    fs = build(Config())
    sf = state.StateFile(str(tmp_path / "model.state"))
    assert daemon.save(fs, sf)
    good = (tmp_path / "model.state").read_bytes()
    fs.engine.new_counter = 7
    assert not daemon.save(fs, sf)
    last = fs.engine.events[-1]
    assert last[1] == "save_failed" and "Engine.new_counter" in last[2]["error"]
    assert (tmp_path / "model.state").read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.state"]


# ---------------------------------------------------------------------------------- item 11
@pytest.mark.parametrize("depth", [1000, 3000])
def test_a_deep_tree_saves_and_restores(depth, tmp_path):
    """Item 11: a 1,000-level tree (legal: the daemon accepts it) made every save hit
    RecursionError; the graph is now walked with a work list. 3,000 levels too (deeper
    trees work as well, but the engine's own path() makes building them quadratic)."""
    fs = build(Config())
    m = fs.engine.root
    for i in range(depth):
        m = fs.engine.mkdir(m, f"d{i}")
        fs.memcgs[m.id] = m
    fs.engine.alloc(fs.engine.cache("dentry"), 3, m)
    if depth == 1000:
        with pytest.raises(RecursionError):
            pickle.dumps(fs.engine)             # what the old save did
    state.save(fs, str(tmp_path / "deep.state"))
    fs2 = state.restore(state.load(str(tmp_path / "deep.state")), control_files())
    deepest = fs2.engine.root
    for i in range(depth):
        deepest = deepest.children[f"d{i}"]
    assert deepest.kmem.usage == m.kmem.usage > 0
    assert state.dumps(fs2) == state.dumps(fs)


def test_a_failed_write_leaves_the_last_good_state(tmp_path, monkeypatch):
    """Item 11: an OSError (disk full) half-way through a save: the file keeps the last good
    save, the temporary is removed, and the failure is a `save_failed` event."""
    fs = build(Config())
    sf = state.StateFile(str(tmp_path / "model.state"))
    assert daemon.save(fs, sf)
    good = (tmp_path / "model.state").read_bytes()
    fs.engine.mkdir(fs.engine.root, "more")
    real_write, calls = os.write, []

    def write(fd, data):
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[:4096])
    monkeypatch.setattr(safepath.os, "write", write)
    assert not daemon.save(fs, sf)
    monkeypatch.undo()
    assert (tmp_path / "model.state").read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.state"]
    seq, kind, fields = fs.engine.events[-1]
    assert kind == "save_failed" and "No space left" in fields["error"]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 4 MiB tmpfs at a private temporary directory (ours: we unmount it ourselves)."""
    need_root()
    d = tmp_path / "tiny"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "kmemfs_safety", d],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs")
    try:
        yield d
    finally:
        assert daemon.mount_at(str(d)).fstype == "tmpfs"
        subprocess.run(["umount", d], check=True)


def test_disk_full_is_an_event_and_a_failed_umount(tmp_path, tiny_tmpfs, mounts):
    """Item 11 on a real full disk: the periodic save fails -> a `save_failed` event in
    .kmemfs/events and an error in the log; `kmemfs umount` exits 1 saying so, and the
    daemon exits 1; the state file is still the last good save and restores."""
    st = tiny_tmpfs / "model.state"
    m = Mount(tmp_path / "mnt", extra=["--state", st, "--save-interval", "0.2"])
    mounts.append(m)
    m.start()
    deadline = time.monotonic() + 30
    while not st.exists():
        assert time.monotonic() < deadline, "no first save"
        time.sleep(0.05)
    time.sleep(0.3)                             # let a second save finish: nothing in flight
    with open(tiny_tmpfs / "filler", "wb") as f:  # fill the disk: the next save cannot fit
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    good = st.read_bytes()
    sh(f"mkdir {m.path}/after_full", check=True)
    events = m.p(".kmemfs", "events")
    deadline = time.monotonic() + 30
    while "save_failed" not in open(events).read():
        assert time.monotonic() < deadline, "no save_failed event"
        time.sleep(0.1)
    line = next(x for x in open(events).read().splitlines() if "save_failed" in x)
    assert "No\\040space\\040left" in line and str(st) in line
    r = kmemfs("umount", m.path)
    assert r.returncode == 1 and "could not save the model" in r.stderr, r.stderr
    assert not os.path.ismount(m.path)
    assert m.proc.wait(timeout=30) == 1
    assert "saving the state" in m.read_log() and "No space left" in m.read_log()
    assert st.read_bytes() == good
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["filler", "model.state"]
    fs = state.restore(state.load(str(st)), control_files())
    assert "after_full" not in fs.engine.root.children and check(fs.engine) == []


def test_deep_tree_through_the_mount_saves_at_umount(tmp_path, mounts):
    """Item 11 end to end: 1,000 levels of mkdir through FUSE, `kmemfs umount` exits 0 and
    the restored mount has the deepest cgroup."""
    st = tmp_path / "model.state"
    m = Mount(tmp_path / "mnt", extra=["--state", st, "--save-interval", "0"])
    mounts.append(m)
    m.start()
    fd = os.open(m.path, os.O_RDONLY)
    try:
        for i in range(1000):
            os.mkdir("d", dir_fd=fd)
            new = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = new
    finally:
        os.close(fd)
    r = kmemfs("umount", m.path)
    assert r.returncode == 0, r.stderr
    assert m.proc.wait(timeout=30) == 0
    fs = state.restore(state.load(str(st)), control_files())
    depth, c = 0, fs.engine.root
    while c.children:
        c, depth = c.children["d"], depth + 1
    assert depth == 1000


# ---------------------------------------------------------------------------------- item 2
def test_save_never_writes_through_a_planted_symlink(public):
    """Item 2: the old save opened STATE.tmp.<pid> with O_CREAT|O_TRUNC, so `nobody` could
    plant that name as a symlink to a root file and have it overwritten. Now the temporary
    is a fresh O_EXCL|O_NOFOLLOW name: the victim is untouched and the save lands."""
    victim = os.path.join(public, "victim")
    with open(victim, "w") as f:
        f.write("root's file\n")
    st = os.path.join(public, "pub", "model.state")

    me = os.getpid()

    def plant():
        for pid in range(me - 1000, me + 1000):       # the old name, and its neighbours
            os.symlink(victim, f"{st}.tmp.{pid}")
    assert as_nobody(plant) == 0
    assert os.path.islink(f"{st}.tmp.{me}")
    fs = build(Config())
    state.save(fs, st)
    assert open(victim).read() == "root's file\n"
    assert state.dumps(state.restore(state.load(st), control_files())) == state.dumps(fs)
    # the planted links are nobody's, not ours: left alone, and never followed
    assert os.path.islink(f"{st}.tmp.{me}")


def test_a_state_path_that_is_nobodys_symlink_is_refused(public, tmp_path):
    victim = os.path.join(public, "victim")
    with open(victim, "w") as f:
        f.write("root's file\n")
    st = os.path.join(public, "pub", "model.state")
    assert as_nobody(lambda: os.symlink(victim, st)) == 0
    with pytest.raises(state.StateError, match="symlink owned by uid 65534"):
        state.save(build(Config()), st)
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = kmemfs("mount", mp, "--state", st)
    assert r.returncode == 1 and "symlink owned by uid 65534" in r.stderr
    assert not os.path.ismount(mp) and open(victim).read() == "root's file\n"


def test_a_state_file_owned_by_nobody_is_refused(public):
    st = os.path.join(public, "pub", "model.state")
    state.save(build(Config()), st)
    os.chown(st, NOBODY, NOBODY)
    with pytest.raises(state.StateError, match="belongs to uid 65534"):
        state.load(st)


def test_a_directory_others_can_write_is_refused(public):
    """Without the sticky bit anyone may rename or replace the file: refused, as is a
    directory owned by another user."""
    d = os.path.join(public, "open")
    os.mkdir(d)
    os.chmod(d, 0o777)
    with pytest.raises(state.StateError, match="writable by other users without the sticky"):
        state.save(build(Config()), os.path.join(d, "model.state"))
    os.chmod(d, 0o755)
    os.chown(d, NOBODY, NOBODY)
    with pytest.raises(state.StateError, match="belongs to uid 65534"):
        state.save(build(Config()), os.path.join(d, "model.state"))


def test_a_hard_link_is_refused(public):
    st = os.path.join(public, "model.state")
    state.save(build(Config()), st)
    os.link(st, os.path.join(public, "second-name"))
    with pytest.raises(state.StateError, match="2 hard links"):
        state.load(st)


def test_a_root_symlink_is_followed(public):
    """A symlink root made is trusted: the state is saved to (and read from) its target."""
    real = os.path.join(public, "real.state")
    link = os.path.join(public, "link.state")
    os.symlink(real, link)
    fs = build(Config())
    state.save(fs, link)
    assert os.path.islink(link) and os.path.isfile(real)
    assert state.dumps(state.restore(state.load(link), control_files())) == state.dumps(fs)


def test_stale_temporaries_are_removed(public):
    st = os.path.join(public, "model.state")
    for name in ("model.state.tmp.123", "model.state.tmp.4.abcd"):
        with open(os.path.join(public, name), "w") as f:
            f.write("half a save")
    state.StateFile(st).close()
    assert os.listdir(public) == ["pub"]


def test_log_never_follows_nobodys_symlink(public, tmp_path):
    """Item 2: `--log FILE` appended through symlinks. A symlink planted by nobody, a FIFO
    (which would block the daemon's open) and a file of nobody's are all refused."""
    victim = os.path.join(public, "victim")
    with open(victim, "w") as f:
        f.write("root's file\n")
    pub = os.path.join(public, "pub")
    assert as_nobody(lambda: (os.symlink(victim, os.path.join(pub, "kmemfs.log")),
                              os.mkfifo(os.path.join(pub, "fifo.log")),
                              open(os.path.join(pub, "mine.log"), "w").close())) == 0
    mp = tmp_path / "mnt"
    mp.mkdir()
    for name, why in (("kmemfs.log", "symlink owned by uid 65534"),
                      ("fifo.log", "not a regular file"), ("mine.log", "belongs to uid 65534")):
        for args in (("--log", os.path.join(pub, name), "mount", mp),
                     ("mount", mp, "--log", os.path.join(pub, name))):
            r = kmemfs(*args, timeout=30)
            if os.path.ismount(mp):
                kmemfs("umount", mp)
            assert r.returncode == 1 and "refusing the log file" in r.stderr and why in r.stderr
    assert open(victim).read() == "root's file\n"
    log = safepath.open_log(os.path.join(pub, "root.log"))
    log.write("a line\n")
    log.close()
    assert os.stat(os.path.join(pub, "root.log")).st_mode & 0o777 == 0o600


# ---------------------------------------------------------------------------------- item 3
def test_umount_leaves_proc_alone():
    """Item 3: `kmemfs umount /proc` returned 0 and detached the host's /proc. The mount
    table (/proc/self/mountinfo) is read first: only fuse.kmemfs is ever unmounted."""
    before = daemon.mount_at("/proc")
    assert before.fstype == "proc"
    r = kmemfs("umount", "/proc")
    assert r.returncode == 1
    assert "/proc is a proc mount (source proc), not kmemfs: left alone" in r.stderr
    assert daemon.mount_at("/proc") == before and os.path.exists("/proc/self/status")


def test_umount_leaves_a_tmpfs_alone(tiny_tmpfs):
    (tiny_tmpfs / "data").write_text("kept")
    r = kmemfs("umount", tiny_tmpfs)
    assert r.returncode == 1 and "tmpfs mount (source kmemfs_safety)" in r.stderr
    assert daemon.mount_at(str(tiny_tmpfs)).fstype == "tmpfs"
    assert (tiny_tmpfs / "data").read_text() == "kept"
    with pytest.raises(daemon.MountError, match="not kmemfs"):
        daemon.unmount(str(tiny_tmpfs), lazy=True)
    with pytest.raises(daemon.MountError, match="already a mount point"):
        daemon.check_mountpoint(str(tiny_tmpfs))
    assert daemon.mount_at(str(tiny_tmpfs)).fstype == "tmpfs"


def test_umount_of_a_plain_directory(tmp_path):
    r = kmemfs("umount", tmp_path)
    assert r.returncode == 1 and "is not a mount point" in r.stderr


def test_umount_of_a_busy_mount_says_so(mount_factory):
    """No silent lazy fallback: a busy kmemfs stays mounted and exit 1, unless --lazy (which
    says it detaches lazily)."""
    m = mount_factory()
    fd = os.open(m.p("memory.stat"), os.O_RDONLY)
    try:
        r = kmemfs("umount", m.path)
        assert r.returncode == 1 and "--lazy" in r.stderr
        assert os.path.ismount(m.path)
        r = kmemfs("umount", "--lazy", m.path)
        assert r.returncode == 0 and "detaching it lazily" in r.stderr
        assert not os.path.ismount(m.path)
        assert os.read(fd, 5) == b"cache"           # what was open keeps being served
    finally:
        os.close(fd)
    assert m.proc.wait(timeout=30) == 0             # and then the daemon exits


def test_umount_cleans_a_stale_kmemfs_mount(mount_factory):
    m = mount_factory()
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait()
    r = kmemfs("umount", m.path)
    assert r.returncode == 0 and "stale mount" in r.stderr and "lazily" in r.stderr
    assert daemon.mount_at(m.path) is None


# ---------------------------------------------------------------------------------- item 13
def test_mount_point_symlink_of_nobody_is_refused(public):
    """Item 13: a user's symlink made root mount over a root-only directory."""
    secret = os.path.join(public, "secret")
    os.mkdir(secret, 0o700)
    link = os.path.join(public, "pub", "mnt")
    assert as_nobody(lambda: os.symlink(secret, link)) == 0
    r = kmemfs("mount", link)
    assert r.returncode == 1 and "symlink owned by uid 65534" in r.stderr
    assert not os.path.ismount(secret)
    # the same through a directory component
    assert as_nobody(lambda: os.symlink(public, os.path.join(public, "pub", "up"))) == 0
    r = kmemfs("mount", os.path.join(public, "pub", "up", "secret"))
    assert r.returncode == 1 and "symlink owned by uid 65534" in r.stderr
    assert not os.path.ismount(secret)


def test_mount_point_symlink_of_root_mounts_on_the_target(public):
    target = os.path.join(public, "target")
    os.mkdir(target)
    link = os.path.join(public, "link")
    os.symlink(target, link)
    r = kmemfs("mount", link)
    try:
        assert r.returncode == 0, r.stderr
        assert f"mounted at {target} " in r.stdout
        assert daemon.mount_at(target).fstype == "fuse.kmemfs"
    finally:
        assert kmemfs("umount", target).returncode == 0


def test_non_empty_mount_point_needs_nonempty(public):
    mp = os.path.join(public, "full")
    os.mkdir(mp)
    open(os.path.join(mp, "file"), "w").close()
    r = kmemfs("mount", mp)
    assert r.returncode == 1 and "directory not empty (-o nonempty" in r.stderr
    assert not os.path.ismount(mp)
    r = kmemfs("mount", mp, "-o", "nonempty")
    try:
        assert r.returncode == 0, r.stderr
        assert "memory.stat" in os.listdir(mp)
    finally:
        assert kmemfs("umount", mp).returncode == 0
    assert os.listdir(mp) == ["file"]
