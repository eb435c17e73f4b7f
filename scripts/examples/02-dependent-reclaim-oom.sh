#!/usr/bin/env bash
# Dependent mode (the default): kernel memory is also charged to memory.usage_in_bytes, so a
# slab allocation at the limit reclaims the cgroup's page cache, then calls the memcg OOM
# killer, which kills the task with the most memory (01/10; 3.3.8 __mem_cgroup_try_charge,
# oom_badness).
. "$(dirname "$0")/lib.sh" "$@"
fresh dep
CG=$MP/dep
echo 2M > $CG/memory.limit_in_bytes
ev0=$(stat -c %s "$MP/.kmemfs/events")

say "1M of page cache (reclaimable) and two tasks with anonymous memory"
ctl charge file 1M cg=/dep
big=$(ctl spawn cg=/dep | sed 's/.*pid=\([0-9]*\).*/\1/')
small=$(ctl spawn cg=/dep | sed 's/.*pid=\([0-9]*\).*/\1/')
ctl charge anon 512K task=$big
ctl charge anon 256K task=$small
echo "usage_before=$(cat $CG/memory.usage_in_bytes)"

say "create files until the kernel memory no longer fits"
ctl touch 20000 cg=/dep || true
tail -c +$((ev0 + 1)) "$MP/.kmemfs/events" | grep -E ' (reclaim|oom_kill) ' | grep -v 'pages=0' | head -20
events=$(tail -c +$((ev0 + 1)) "$MP/.kmemfs/events")
echo "first_victim=$(echo "$events" | grep ' oom_kill ' | head -1 | sed 's/.* pid=\([0-9]*\).*/\1/')"
echo "big=$big"; echo "small=$small"
echo "reclaimed_pages=$(echo "$events" | grep ' reclaim ' | sed 's/.*pages=\([0-9]*\).*/\1/' | paste -sd+ | bc)"
echo "oom_kills=$(echo "$events" | grep -c ' oom_kill .*simulated=1' || true)"
echo "cache=$(grep '^cache ' $CG/memory.stat | cut -d' ' -f2)"
echo "rss=$(grep '^rss ' $CG/memory.stat | cut -d' ' -f2)"
echo "usage=$(cat $CG/memory.usage_in_bytes)"
echo "kmem_usage=$(cat $CG/memory.kmem.usage_in_bytes)"
echo "failcnt=$(cat $CG/memory.failcnt)"
echo "tasks=$(wc -l < $CG/tasks)"

ctl drop_caches >/dev/null; ctl reap >/dev/null
rmdir $CG
