#!/usr/bin/env bash
# Per-cgroup kmem_caches (05/10 mem_cgroup_get_kmem_cache): the first allocation of a type by a
# cgroup creates its copy, named orig(basename), newest first in slabinfo. A GFP_KERNEL
# allocation creates it at once; a GFP_NOFS one queues the creation and is served, unaccounted,
# from the global cache until the workqueue runs. Copies use the basename only, so names can
# repeat.
. "$(dirname "$0")/lib.sh" "$@"
fresh a; fresh b
for d in x y; do [ -d $MP/$d/web ] && rmdir $MP/$d/web; [ -d $MP/$d ] || mkdir $MP/$d; mkdir $MP/$d/web; done

ctl alloc dentry 30 cg=/a
ctl kmalloc 100 5 cg=/a                  # the smallest size-N that fits 100 bytes: size-128
ctl alloc dentry 5 cg=/b
say "memory.kmem.slabinfo of /a (newest first)"
cat $MP/a/memory.kmem.slabinfo

say "GFP_NOFS: no sleeping creation; served from the global cache, creation queued"
ctl alloc inode_cache 1 cg=/a gfp=GFP_NOFS
echo "kmem_usage_after_nofs=$(cat $MP/a/memory.kmem.usage_in_bytes)"
ctl workqueue
ctl alloc inode_cache 1 cg=/a gfp=GFP_NOFS

say "same basename under two parents: identical cache names"
ctl alloc dentry 1 cg=/x/web
ctl alloc dentry 1 cg=/y/web
echo "web_copies=$(grep -c '^dentry(web) ' $MP/.kmemfs/slabinfo)"
echo "a_rows=$(tail -n +2 $MP/a/memory.kmem.slabinfo | awk '{print $1}' | paste -sd, -)"
echo "a_kmem=$(cat $MP/a/memory.kmem.usage_in_bytes)"
echo "b_kmem=$(cat $MP/b/memory.kmem.usage_in_bytes)"

# clean up: free every object, then the cgroups (their copies go dead and are reaped)
ctl free dentry 30 cg=/a >/dev/null; ctl kfree 100 5 cg=/a >/dev/null
ctl free inode_cache 2 cg=/a >/dev/null; ctl free dentry 5 cg=/b >/dev/null
ctl free dentry 1 cg=/x/web >/dev/null; ctl free dentry 1 cg=/y/web >/dev/null
rmdir $MP/a $MP/b $MP/x/web $MP/y/web $MP/x $MP/y
ctl reap >/dev/null
