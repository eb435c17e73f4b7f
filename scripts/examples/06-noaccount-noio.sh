#!/usr/bin/env bash
# __GFP_NOACCOUNT is never charged (04/10, 05/10); GFP_NOIO can now fail where it never failed
# before (the cover letter's caveat, 00/10): at the limit a NOIO charge may reclaim but
# may not OOM, so it returns -ENOMEM, while GFP_KERNEL would call the OOM killer.
. "$(dirname "$0")/lib.sh" "$@"
fresh n
CG=$MP/n
say "__GFP_NOACCOUNT: served by the global cache, nothing charged"
ctl alloc size-64 100 cg=/n "gfp=GFP_KERNEL|__GFP_NOACCOUNT"
echo "kmem_after_noaccount=$(cat $CG/memory.kmem.usage_in_bytes)"

say "fill the cgroup: a task with anonymous memory up to the limit"
echo 256K > $CG/memory.limit_in_bytes
pid=$(ctl spawn cg=/n | sed 's/.*pid=\([0-9]*\).*/\1/')
ctl alloc size-64 1 cg=/n     # size-64(n) exists: the spawn took signal_cache's off-slab descriptor
# usage_in_bytes counts the per-CPU charge stock too (CHARGE_BATCH: charges take 32 pages and
# keep the surplus), which is still free room. Fill up to the limit, let another cgroup's
# charge take the stock back (refill_stock drains it), and fill the rest page by page.
fresh other
for round in 1 2; do
    room=$(( 262144 - $(cat $CG/memory.usage_in_bytes) ))
    ctl charge anon $room task=$pid
    ctl charge file 4K cg=/other >/dev/null
    ctl uncharge file 4K cg=/other >/dev/null
done
echo "usage_full=$(cat $CG/memory.usage_in_bytes)"

say "GFP_NOIO at the limit: ENOMEM, no OOM kill"
ctl alloc size-64 100 cg=/n gfp=GFP_NOIO || true
echo "noio_oom_kills=$(grep -c " oom_kill cgroup=/n pid=$pid" $MP/.kmemfs/events || true)"
say "the same in the root cgroup (not accounted): never fails"
ctl alloc size-64 100 gfp=GFP_NOIO
say "GFP_KERNEL at the limit: the OOM killer runs"
ctl alloc size-64 100 cg=/n
echo "kernel_oom_kills=$(grep -c " oom_kill cgroup=/n pid=$pid" $MP/.kmemfs/events || true)"
echo "tasks=$(wc -l < $CG/tasks)"

ctl free size-64 100 >/dev/null
ctl free size-64 100 cg=/n >/dev/null || true
ctl free size-64 1 cg=/n >/dev/null || true
rmdir $CG $MP/other
