"""Fuzzing (docs/reliability.md): hostile writes, reads, control commands and tree operations,
judged by an oracle of the errnos each rule allows; `check` must hold throughout. A bounded,
seeded run through a real mount, the same run against the cgroupfs layer in-process, and a
hypothesis property over every control file's write parsing."""
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "scripts"))
import fuzz  # noqa: E402  (scripts/fuzz.py)

from kmemfs.cgroupfs.tree import Request  # noqa: E402
from kmemfs.fuse.daemon import build  # noqa: E402
from kmemfs.engine import Config, EngineError, check  # noqa: E402


@pytest.mark.e2e
def test_fuzz_through_the_mount(mount_factory):
    """4000 seeded operations through FUSE: no crash, no invariant violation, every refusal
    an errno the rules allow (and the exact one where the oracle can compute it)."""
    m = mount_factory(options=fuzz.OWN_MOUNT_OPTIONS)
    f = fuzz.fuzz_mount(m.path, ops=4000, seed=20120227, quiet=True, daemon=m.proc.pid)
    print(f.summary())
    assert f.ops == 4000 and not f.dead
    assert f.violations == []
    assert f.checks >= 4000 // 50
    assert "Traceback" not in m.read_log()


def test_fuzz_cgroupfs_in_process():
    """The same fuzzer on CgroupFS without FUSE (no exception may escape the layer)."""
    f = fuzz.fuzz_inprocess(ops=4000, seed=7, check_every=100)
    print(f.summary())
    assert f.violations == []
    assert check(f.fs.engine) == []


FILE_NAMES = sorted(fuzz.FILES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(FILE_NAMES), root=st.booleans(),
       data=st.one_of(st.binary(max_size=80),
                      st.sampled_from([b"-1", b"0", b"1", b"64M", b"0x10", b"18446744073709551616",
                                       b"4096\n", b" 1 ", b"\xa01", b"1\x00x", b"1" * 63]),
                      st.builds(lambda n, s: str(n).encode() + s,
                                st.integers(0, 1 << 70),
                                st.sampled_from([b"", b"k", b"M", b"g", b"T", b"\n", b" "]))))
def test_every_control_file_answers_as_the_rules_say(name, root, data):
    fs = build(Config(boot_slabs=False))          # boot slabs play no part in parsing
    req = Request(os.getpid())
    parent = 1 if root else fs.mkdir(1, "g").ino
    if name == "release_agent" and not root:
        return
    fh = fs.open(fs.lookup(parent, name).ino, req)
    expect, readback = fuzz.write_expect(name, root, data, removed=False)
    if not data:
        return                     # FUSE sends no request for a 0-byte write
    try:
        fs.write(fh, 0, data, req)
        err = None
    except EngineError as e:
        err = e.errno
    assert expect.ok(err), (name, data, err, str(expect))
    if err is None and readback is not None:
        assert fs.read(fh, 0, 4096) == readback
    assert check(fs.engine) == []
