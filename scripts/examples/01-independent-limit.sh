#!/usr/bin/env bash
# An independent kmem limit stops a dentry flood (01/10 memcg_charge_kmem).
#
# With memory.kmem.independent_kmem_limit=1 the cgroup's slab pages are charged to the kmem
# counter only: memory.kmem.limit_in_bytes is the one limit, a failed charge is a plain
# -ENOMEM (no reclaim, no OOM), and memory.usage_in_bytes does not see kernel memory.
. "$(dirname "$0")/lib.sh" "$@"
fresh flood
CG=$MP/flood

say "kmem.limit_in_bytes is writable only while independent_kmem_limit is 1"
echo 1M > $CG/memory.kmem.limit_in_bytes 2>/dev/null || echo "write while dependent: EINVAL"
echo 1 > $CG/memory.kmem.independent_kmem_limit
echo 1M > $CG/memory.kmem.limit_in_bytes
echo "kmem_limit=$(cat $CG/memory.kmem.limit_in_bytes)"

say "this shell joins the cgroup: what it writes to ctl is charged there"
echo $$ > $CG/tasks
out=$(ctl touch 100000) || true
echo "$out"
echo $$ > $MP/tasks                      # back to the root cgroup
files=$(echo "$out" | sed -n 's/.*created \([0-9]*\) of.*/\1/p')
echo "files=$files"
echo "kmem_usage=$(cat $CG/memory.kmem.usage_in_bytes)"
echo "usage=$(cat $CG/memory.usage_in_bytes)"
say "memory.kmem.slabinfo of the cgroup"
cat $CG/memory.kmem.slabinfo

ctl drop_caches >/dev/null; ctl reap >/dev/null
rmdir $CG
