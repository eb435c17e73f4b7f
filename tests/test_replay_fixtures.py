"""Replay and compare on the real traces captured on this machine (tests/data/traces/, made
by tests/data/traces/capture.sh), with expectations computed here from the rules and the
3.4 catalogue's geometry by a deliberately simple, separate count, not by kmemfs's replay:

- the series charges an allocation iff it runs in task context and its gfp has neither
  __GFP_NOFAIL nor __GFP_NOACCOUNT (patch 05/10 mem_cgroup_get_kmem_cache); optin iff it is
  marked accounted and in task context (engine/policy.py);
- the per-cgroup copy of a cache exists after its first charged allocation; a first one that
  is not GFP_KERNEL only queues it (05/10 mem_cgroup_get_kmem_cache) and is served,
  uncharged, by the global cache;
- 3.3's SLAB grows a cache only when every slab is full, and gives an empty slab back only
  once its free objects exceed free_limit = (1 + nr_cpus) * batchcount + objperslab: until
  then a copy holds exactly ceil(peak live objects / objperslab) slabs (the count below is
  exact up to that point, which it reports, and bounds the peak from both sides after it).
"""
import os
import subprocess
import sys

import pytest

from kmemfs.engine import catalogue, policy
from kmemfs.engine.gfp import GFP_KERNEL
from kmemfs.trace import compare, names
from kmemfs.trace.format import read_trace
from kmemfs.trace.replay import Setup, replay

DATA = os.path.join(os.path.dirname(__file__), "data", "traces")
FIXTURES = ("forkloop", "files", "sockets")
PAGE = 4096
KMEMFS = os.path.join(os.path.dirname(sys.executable), "kmemfs")
SPECS = {s.name: s for s in catalogue.load()}
GENERAL = sorted((s.objsize, s.name) for s in SPECS.values()
                 if s.name.startswith("size-") and "DMA" not in s.name)


def descriptor_cache(name):
    """3.3 mm/slab.c: an off-slab cache's struct slab + bufctls come from the smallest size-N
    cache that fits slab_size (kmem_find_general_cachep), allocated at each cache_grow."""
    s = SPECS[name]
    off, size = catalogue.off_slab(name, s.objsize, s.objperslab, s.pagesperslab)
    return next((n for objsize, n in GENERAL if objsize >= size), None) if off else None


def trace(name):
    return read_trace(os.path.join(DATA, f"{name}.trace.gz"))


def oracle(name, design="series", limit=None):
    """Plain counting: charged objects, the peak slab bytes bounds (low, high), the first
    refused event seq (or None), and the seq of the first event after which a slab may have
    been given back (or None)."""
    header, events = trace(name)
    events = sorted(events, key=lambda e: (e.time_ns, e.seq))
    mapper = names.Mapper({n: s.objsize for n, s in SPECS.items()}, header.slub_aliases)
    charges = policy.DESIGNS[design].charges
    live = {}                      # ptr -> cache name (charged objects only) or None
    count, slabs, copies = {}, {}, set()
    charged = pages = low = peak = 0
    first = exact_until = None
    for e in events:
        if e.op == "free" or (e.op == "alloc" and e.ptr in live):
            c = live.pop(e.ptr, None)
            if c is not None:
                count[c] -= 1
                s = SPECS[c]
                if exact_until is None and slabs[c] * s.objperslab - count[c] > \
                        2 * s.batchcount + s.objperslab:
                    exact_until = e.seq
        if e.op != "alloc":
            continue
        m = mapper(e)
        if m.name is None:
            continue
        bits = names.gfp_info(e.gfp).bits
        if not charges(bits, e.context != "task", e.accounted):
            live[e.ptr] = None
            continue
        if m.name not in copies:
            copies.add(m.name)
            if bits & GFP_KERNEL != GFP_KERNEL:
                live[e.ptr] = None
                continue
        s = SPECS[m.name]
        n = count.get(m.name, 0)
        if n == slabs.get(m.name, 0) * s.objperslab:         # every slab full: grow
            if limit is not None and pages + s.pagesperslab * PAGE > limit:
                if first is None:
                    first = e.seq
                continue
            slabs[m.name] = slabs.get(m.name, 0) + 1
            pages += s.pagesperslab * PAGE
            d = descriptor_cache(m.name)
            if d is not None:        # 05/10 redirects it to this cgroup's copy of size-N
                copies.add(d)
                dn, ds = count.get(d, 0), SPECS[d]
                if dn == slabs.get(d, 0) * ds.objperslab:
                    slabs[d] = slabs.get(d, 0) + 1
                    pages += ds.pagesperslab * PAGE
                count[d] = dn + 1
            peak = max(peak, pages)
        count[m.name] = n + 1
        charged += 1
        live[e.ptr] = m.name
        need = sum(-(-k // SPECS[c].objperslab) * SPECS[c].pagesperslab for c, k in count.items())
        low = max(low, need * PAGE)
    return charged, (low, peak), first, exact_until


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("design", ("series", "optin"))
def test_fixture_charges_match_the_plain_count(name, design):
    charged, (low, high), _, exact_until = oracle(name, design)
    header, events = trace(name)
    out = replay(header, events, Setup(design=design, remove_at_end=False))
    assert out.stats.charged_objects == charged
    assert low <= out.kmem_peak <= high
    if exact_until is None:
        assert out.kmem_peak == high
    assert not out.stats.inexact and out.stats.failures == 0


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_series_charges_more_than_optin(name):
    """The series' whole argument: track everything. names_cache (getname, never marked
    today) is charged only by the series, in every fixture."""
    header, _ = trace(name)
    rep = compare.run(header, lambda: trace(name)[1], Setup())
    s, o = rep["designs"]["series"], rep["designs"]["optin"]
    assert s["charged_bytes"] > o["charged_bytes"] and s["caches_created"] > o["caches_created"]
    rows = {r["cache"]: r for r in rep["caches"]}
    assert rows["names_cache"]["optin_bytes"] == 0
    assert rows["names_cache"]["why"] == {policy.NOT_MARKED: rows["names_cache"]["series_bytes"]}


LIMIT = 128 * 1024
SETS = ("memory.kmem.independent_kmem_limit=1", f"memory.kmem.limit_in_bytes={LIMIT}")


def test_files_fixture_first_failure_offline():
    _, _, first, exact_until = oracle("files", limit=LIMIT)
    assert first is not None and (exact_until is None or first < exact_until)
    header, events = trace("files")
    out = replay(header, events, Setup(sets=SETS))
    assert out.stats.first_failure.seq == first
    assert out.kmem_peak <= LIMIT


@pytest.mark.e2e
def test_files_fixture_into_a_mount_fails_where_the_numbers_say(mount_factory):
    """The fixture of 200 file creations, replayed into a real mount under a 128K independent
    kmem limit: the mount's first ENOMEM is the event the plain count says, and its kmem
    usage stays within the limit."""
    _, _, first, _ = oracle("files", limit=LIMIT)
    m = mount_factory(options=["noboot_slabs"])
    r = subprocess.run([KMEMFS, "replay", os.path.join(DATA, "files.trace.gz"), "--into",
                        m.path, "--cg", "/web", *sum((["--set", s] for s in SETS), [])],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"failed here: event {first}:" in r.stdout
    with open(os.path.join(m.path, "web", "memory.kmem.usage_in_bytes")) as f:
        assert int(f.read()) <= LIMIT
    with open(os.path.join(m.path, ".kmemfs", "events")) as f:
        assert any(" charge_fail cgroup=/web counter=kmem" in ln for ln in f)
