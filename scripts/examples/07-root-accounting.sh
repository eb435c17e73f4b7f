#!/usr/bin/env bash
# Root accounting (CONFIG_CGROUP_MEM_RES_CTLR_KMEM_ACCT_ROOT, patch 08/10): needs a
# mount with -o acct_root. Every slab page not charged to a non-root cgroup is charged to
# root's kmem counter, boot-time slab included; at rmdir the cgroup's remaining kmem moves
# to root, and the dead caches' later frees come off root.
. "$(dirname "$0")/lib.sh" "$@"
if ! grep -qx 'acct_root 1' $MP/.kmemfs/config; then
    echo "this example needs: kmemfs mount $MP -o acct_root" >&2
    exit 2
fi
root0=$(cat $MP/memory.kmem.usage_in_bytes)
echo "root_kmem_boot=$root0"
fresh r
ctl alloc dentry 100 cg=/r
echo "r_kmem=$(cat $MP/r/memory.kmem.usage_in_bytes)"
echo "root_kmem_unchanged=$(( $(cat $MP/memory.kmem.usage_in_bytes) == root0 ))"
say "__GFP_NOACCOUNT: the global cache serves it; root pays only when that cache grows"
free=$(awk '$1 == "size-4096" {print $3 - $2}' $MP/.kmemfs/slabinfo)
ctl alloc size-4096 $((free + 3)) cg=/r "gfp=GFP_KERNEL|__GFP_NOACCOUNT"
echo "root_kmem_after_noaccount=$(( $(cat $MP/memory.kmem.usage_in_bytes) - root0 ))"
ctl free size-4096 $((free + 3)) cg=/r
say "rmdir: the cgroup's remaining kmem moves to root, its caches go dead"
root1=$(cat $MP/memory.kmem.usage_in_bytes)
rmdir $MP/r
echo "root_kmem_moved=$(( $(cat $MP/memory.kmem.usage_in_bytes) - root1 ))"
# dead copies point at root, not NULL: 09/10's root file (memcg == NULL caches) does not list
# them, and no cgroup's does; the global view (/proc/slabinfo) has them
echo "dead_in_root_file=$(grep -c '(r)dead' $MP/memory.kmem.slabinfo || true)"
grep '(r)dead' $MP/.kmemfs/slabinfo
say "the dead cache's frees come off root once its slabs are destroyed"
ctl free 'dentry(r)dead' 100
root2=$(cat $MP/memory.kmem.usage_in_bytes)
ctl reap
echo "dead_left=$(grep -c '(r)dead' $MP/.kmemfs/slabinfo || true)"
echo "root_kmem_reaped=$(( root2 - $(cat $MP/memory.kmem.usage_in_bytes) ))"
