#!/usr/bin/env bash
# A fork bomb contained by a kmem limit: every fork allocates task_struct, cred, signal,
# sighand, files, fs, mm_struct, VMAs, anon_vma and pid objects from per-cgroup caches, so
# an independent kmem limit makes fork fail with ENOMEM (01/10, 05/10).
. "$(dirname "$0")/lib.sh" "$@"
fresh bomb
CG=$MP/bomb
echo 1 > $CG/memory.kmem.independent_kmem_limit
echo 200K > $CG/memory.kmem.limit_in_bytes

say "spawn until fork fails"
n=0
while out=$(ctl spawn cg=/bomb); do n=$((n + 1)); done
echo "$out"
echo "forks=$n"
echo "tasks=$(wc -l < $CG/tasks)"
echo "kmem_usage=$(cat $CG/memory.kmem.usage_in_bytes)"
echo "usage=$(cat $CG/memory.usage_in_bytes)"
say "memory.kmem.slabinfo"
cat $CG/memory.kmem.slabinfo

for pid in $(cat $CG/tasks); do ctl exit $pid >/dev/null; done
rmdir $CG
