"""`kmemfs compare`: both designs on one trace (kmemfs/trace/compare.py). Geometry of the 3.4
catalogue: dentry 192 B, 20 a 1-page slab; names_cache 4096 B, 1 a 1-page slab; buffer_head
104 B, 37 a 1-page slab."""
import json
import os
import subprocess
import sys

from kmemfs.engine import policy
from kmemfs.trace import compare
from kmemfs.trace.format import Header, write_trace
from kmemfs.trace.replay import Setup
from test_replay import allocs, ev

PAGE = 4096
KMEMFS = os.path.join(os.path.dirname(sys.executable), "kmemfs")


def workload():
    """40 dentries marked accounted (SLAB_ACCOUNT today), 10 names_cache alloc+free pairs
    (not marked), 37 buffer_heads GFP_NOFS|__GFP_NOFAIL (marked: today's kernel charges
    them, the series never does)."""
    evs = allocs(40, accounted=True)
    t = 100_000
    for i in range(10):
        p = 0x700000 + i * 0x1000
        evs.append(ev(len(evs), t, "alloc", cache="names_cache", ptr=p, size=4096,
                      call_site="getname_flags+0x2a/0x1e0"))
        evs.append(ev(len(evs), t + 10, "free", cache="names_cache", ptr=p, size=4096))
        t += 100
    for i in range(37):
        evs.append(ev(len(evs), t, "alloc", cache="buffer_head", ptr=0x900000 + 0x80 * i,
                      size=104, gfp="GFP_NOFS|__GFP_NOFAIL", accounted=True,
                      call_site="folio_alloc_buffers+0x4d/0x1d0"))
        t += 100
    return evs


def test_the_designs_side_by_side():
    rep = compare.run(Header(), workload(), Setup())
    s, o = rep["designs"]["series"], rep["designs"]["optin"]
    # series: 40 dentries + 10 names_cache, buffer_heads global (NOFAIL)
    assert s["charged_objects"] == 50 and s["charged_bytes"] == 40 * 192 + 10 * 4096
    # 2 dentry slabs + at most 1 names_cache slab at a time (freed, kept under free_limit),
    # + the size-N(cg) page holding names_cache's off-slab descriptor (3.3 mm/slab.c
    # alloc_slabmgmt; 05/10 redirects it to the cgroup's copy)
    assert s["slab_bytes_charged_peak"] == 4 * PAGE
    # optin: 40 dentries + 36 buffer_heads (the first GFP_NOFS one queues the copy)
    assert o["charged_objects"] == 76 and o["slab_bytes_charged_peak"] == 3 * PAGE
    assert s["caches_created"] == 3 and o["caches_created"] == 2   # series: + the descriptor's size-N
    assert s["peak_live_charged_bytes"] == 40 * 192 + 4096
    rows = {r["cache"]: r for r in rep["caches"]}
    assert rows["names_cache"]["why"] == {policy.NOT_MARKED: 10 * 4096}
    assert rows["buffer_head"]["why"] == {policy.NOFAIL: 37 * 104}
    assert rows["buffer_head"]["series_bytes"] == 0 and rows["buffer_head"]["optin_bytes"] == 36 * 104
    assert "dentry" not in rows
    assert rep["caches"][0]["cache"] == "names_cache"       # the largest difference first
    # rmdir at the end: dentry copies (40 live) and buffer_head's stay dead with pages
    assert s["dead_caches"] == 3 and o["dead_caches"] == 2     # series: + size-N(cg), a live descriptor


def test_first_failure_under_a_limit_differs_by_design():
    sets = ("memory.kmem.independent_kmem_limit=1", "memory.kmem.limit_in_bytes=8K")
    rep = compare.run(Header(), workload(), Setup(sets=sets))
    s, o = rep["designs"]["series"], rep["designs"]["optin"]
    # series: 2 dentry slabs fill the 8K; the first names_cache allocation (event 40) fails
    assert s["first_failure"]["seq"] == 40 and s["failures"] == 10
    assert s["first_failure"]["model_cache"] == "names_cache(traced)"
    # optin: the first buffer_head (event 60) goes global (queued copy), the second is NOFAIL:
    # forced past the limit, so nothing fails
    assert o["first_failure"] is None and o["slab_bytes_charged_peak"] == 3 * PAGE
    text = compare.render(rep)
    assert "under the series design this workload would have failed here: event 40" in text
    assert "(+9 more)" in text
    assert "10 frees of allocations the model refused (series)" in text
    assert "allocated before the trace" not in text


def test_inexact_is_in_every_report():
    rep = compare.run(Header(inexact=True, notes=["cpu0: 3 lost"]), allocs(2), Setup())
    assert rep["trace"]["inexact"] and "INEXACT" in compare.render(rep)


def test_cli_compare_json_and_plot(tmp_path):
    trace = tmp_path / "w.trace"
    write_trace(trace, Header(argv=["tar", "xf", "a.tar"], start_ns=0, end_ns=200_000),
                workload())
    png = tmp_path / "c.png"
    r = subprocess.run([KMEMFS, "compare", str(trace), "--json", "--plot", str(png)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert set(rep["designs"]) == {"series", "optin"}
    assert rep["designs"]["series"]["charged_objects"] == 50
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    r = subprocess.run([KMEMFS, "replay", str(trace), "--design", "optin"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "optin" in r.stdout and "series (" not in r.stdout
    r = subprocess.run([KMEMFS, "replay", str(tmp_path / "missing.trace")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "missing.trace" in r.stderr
