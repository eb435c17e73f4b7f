"""Accounting designs: which allocations are charged to the allocating task's memcg.

This is the one place a design is declared. The engine's charge path asks the design of its
Config (`Config.design`) two questions and has no other copy of the rule:

- `charges(gfp, irq, accounted)`: does this allocation go to the memcg's copy of the cache
  (whose slab growth charges the memcg), or stay in the global cache (nothing charged)?
- `forces(gfp)`: must a charge of this allocation succeed past the limit?

`series` is the Feb-2012 series as the engine models it: everything is tracked except
allocations in interrupt context and those marked __GFP_NOACCOUNT or __GFP_NOFAIL
(patch 05/10 mem_cgroup_get_kmem_cache: `in_interrupt() || (gfp & __GFP_NOFAIL)`, patch 04/10
adds __GFP_NOACCOUNT). `optin` is mainline since 4.5 ("memcg: only account kmem allocations
marked as __GFP_ACCOUNT", Nov 2015): exactly the allocations marked accounted (__GFP_ACCOUNT
on the call or SLAB_ACCOUNT on the cache — the tracepoints' `accounted` field), never outside
task context (mm/memcontrol.c current_obj_cgroup: no objcg unless in_task(), bar an
int_active_memcg the trace cannot show), and a __GFP_NOFAIL one is force-charged past the limit
(try_charge_memcg's `force:` label) instead of failing.

`why(gfp, irq, accounted)` names the reason the two designs decide one allocation differently,
for the comparison report.
"""
from .gfp import Gfp

_NOFAIL = int(Gfp.NOFAIL)
# Plain ints: IntFlag arithmetic on every allocation costs (scripts/bench_engine.py).
_SERIES_SKIP = int(Gfp.NOACCOUNT | Gfp.NOFAIL)


class Series:
    name = "series"
    forces_past_limit = False

    @staticmethod
    def charges(gfp: int, irq: bool, accounted: bool) -> bool:
        return not irq and not gfp & _SERIES_SKIP

    @staticmethod
    def forces(gfp: int) -> bool:
        return False


class OptIn:
    name = "optin"
    forces_past_limit = True       # the invariant checker allows usage over the limit

    @staticmethod
    def charges(gfp: int, irq: bool, accounted: bool) -> bool:
        return accounted and not irq

    @staticmethod
    def forces(gfp: int) -> bool:
        return bool(gfp & _NOFAIL)


SERIES, OPTIN = Series(), OptIn()
DESIGNS = {d.name: d for d in (SERIES, OPTIN)}

# Reasons in the comparison report, from the series' point of view.
NOT_MARKED = "not marked today"      # the series charges it, today's kernel does not
NOFAIL = "NOFAIL"                    # today's kernel charges it (forced), the series skips it
NOACCOUNT = "NOACCOUNT"              # marked accounted, but the series' __GFP_NOACCOUNT skips it
INTERRUPT = "interrupt context"
UNMAPPED = "unmapped"                # the host cache has no 3.4 counterpart (size-N by size)


def design(name: str):
    try:
        return DESIGNS[name]
    except KeyError:
        raise ValueError(f"unknown design {name!r} (one of {', '.join(DESIGNS)})") from None


def why(gfp: int, irq: bool, accounted: bool):
    """Why series and optin decide this allocation differently; None when they agree."""
    s, o = SERIES.charges(gfp, irq, accounted), OPTIN.charges(gfp, irq, accounted)
    if s == o:
        return None
    if s:
        return NOT_MARKED
    if irq:
        return INTERRUPT       # not reached while optin skips interrupt context too
    return NOFAIL if gfp & _NOFAIL else NOACCOUNT
