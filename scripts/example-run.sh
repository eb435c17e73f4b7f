#!/usr/bin/env bash
# Makes docs/example-run.png: records a mount while a slowed-down version of
# examples/02-dependent-reclaim-oom.sh (/dep) and 01-independent-limit.sh (/jail) run in small
# steps, then plots the recording.
#   scripts/example-run.sh MOUNTPOINT [OUT.png]   (a mounted kmemfs, e.g. from scripts/run)
# Without OUT.png the picture goes to a new file in /tmp (its path is printed);
# docs/example-run.png is written only when asked: scripts/example-run.sh MOUNTPOINT --docs
. "$(dirname "$0")/examples/lib.sh" "$@"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
KMEMFS="${KMEMFS_BIN:-$ROOT/.venv/bin/kmemfs}"
case "${2:-}" in
    --docs) OUT=$ROOT/docs/example-run.png ;;
    "") OUT=$(mktemp --suffix=.png) ;;
    *) OUT=$2 ;;
esac
REC=$(mktemp --suffix=.jsonl)
step() { sleep "${STEP:-0.04}"; }

fresh dep; fresh jail
echo 2M > "$MP/dep/memory.limit_in_bytes"
echo 1 > "$MP/jail/memory.kmem.independent_kmem_limit"
echo 1M > "$MP/jail/memory.kmem.limit_in_bytes"

"$KMEMFS" record "$MP" --interval 0.05 --out "$REC" &
rec=$!
trap 'kill $rec 2>/dev/null || true' EXIT
sleep 0.3

# /dep: 1M of page cache, two tasks with anonymous memory (512K and 256K)
for _ in $(seq 16); do ctl charge file 64K cg=/dep >/dev/null; step; done
big=$(ctl spawn cg=/dep | sed 's/.*pid=\([0-9]*\).*/\1/')
small=$(ctl spawn cg=/dep | sed 's/.*pid=\([0-9]*\).*/\1/')
for _ in $(seq 8); do ctl charge anon 64K task=$big >/dev/null; step; done
for _ in $(seq 4); do ctl charge anon 64K task=$small >/dev/null; step; done
# ...then files (a dentry and an inode each) until kernel memory no longer fits: reclaim
# takes the page cache, the OOM killer the big task, then the small one, then charges fail
fails=0
while [ $fails -lt 6 ]; do
    ctl touch 150 cg=/dep >/dev/null || fails=$((fails + 1))
    step
done

# /jail: a dentry flood stopped by its 1M kmem limit; memory.usage_in_bytes stays 0
fails=0
while [ $fails -lt 6 ]; do
    ctl touch 150 cg=/jail >/dev/null || fails=$((fails + 1))
    step
done
sleep 0.5

# rmdir with the dentries still cached: the caches live on as "...dead" copies
rmdir "$MP/dep" "$MP/jail"
sleep 1
ctl drop_caches >/dev/null; sleep 0.5
ctl reap >/dev/null; sleep 0.7

kill -INT $rec; wait $rec; trap - EXIT
"$KMEMFS" plot "$REC" --out "$OUT" \
    --title "kmemfs: dependent mode reclaims then OOM-kills (/dep); an independent kmem limit stops a dentry flood (/jail)"
echo "recording: $REC"
echo "picture: $OUT"
