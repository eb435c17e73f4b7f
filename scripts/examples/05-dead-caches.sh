#!/usr/bin/env bash
# rmdir leaves `...dead` caches (05/10 memcg_slab_move, kmem_cache_drop_ref): the cgroup's
# copies are renamed orig(name)dead, detached, and destroyed once they hold no slab pages.
# Dentries outlive the cgroup until drop_caches frees them; SLAB keeps freed objects in its
# array caches and empty slabs (up to free_limit) until reaped.
. "$(dirname "$0")/lib.sh" "$@"
fresh t
ctl touch 100 cg=/t
echo "kmem_before=$(cat $MP/t/memory.kmem.usage_in_bytes)"
rmdir $MP/t
say "after rmdir: root's memory.kmem.slabinfo lists the dead copies"
grep 'dead' $MP/memory.kmem.slabinfo
echo "dead_after_rmdir=$(grep -c '(t)dead' $MP/memory.kmem.slabinfo)"

say "drop_caches frees the dentries and inodes; they linger in the array caches and empty slabs on the free lists"
ctl drop_caches
grep '(t)dead' $MP/memory.kmem.slabinfo || true
echo "dead_after_drop=$(grep -c '(t)dead' $MP/memory.kmem.slabinfo || true)"

say "reap destroys empty slabs, and so the dead caches"
ctl reap
echo "dead_after_reap=$(grep -c '(t)dead' $MP/memory.kmem.slabinfo || true)"
grep -E 'cache_(dead|destroy) cache=[a-z_]*\(t\)' $MP/.kmemfs/events | tail -4
