#!/usr/bin/env bash
# Rules a 3.3 memcg (as kmemfs models it) and a modern cgroup v1 memory controller share.
# Usage: shared_rules.sh DIR   (DIR: an empty, non-root memory cgroup; left empty afterwards)
# Prints one line per step: "LABEL: rc=STATUS TEXT" (TEXT: the errno text on failure,
# otherwise the command's last output line).
set -u
cd "$1" || exit 99

step() {   # step LABEL COMMAND [ARGS...]
    local label=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    out=${out##*$'\n'}
    if [ "$rc" -ne 0 ]; then out=${out##*: }; fi
    printf '%s: rc=%d %s\n' "$label" "$rc" "$out"
}
w() { printf '%s\n' "$2" > "$1"; }          # echo VALUE > FILE: one write(2)
wr() { w "$1" "$2" && cat "$1"; }           # write, then read back
first() { head -n 1 "$1"; }
modes() { stat -c %a "$@" | tr '\n' ' '; }   # octal modes on one line
T=memory.kmem.tcp

step mkdir                  mkdir a
step mkdir-exists           mkdir a
step mkdir-ctlfile          mkdir a/memory.stat
step rmdir-missing          rmdir nope
step rmdir-ctlfile          rmdir a/memory.stat
step touch                  touch a/newfile
step redirect-create        w a/newfile2 x
step rm-ctlfile             rm -f a/memory.stat
step ln                     ln a/memory.stat a/hard
step ln-s                   ln -s memory.stat a/sym
step mkfifo                 mkfifo a/fifo
step mknod                  mknod a/null c 1 3
step limit-junk             w a/memory.limit_in_bytes junk
step limit-minus-1          w a/memory.limit_in_bytes -1
step limit-minus-2          w a/memory.limit_in_bytes -2
step limit-1.5G             w a/memory.limit_in_bytes 1.5G
step limit-1KB              w a/memory.limit_in_bytes 1KB
step limit-1G               wr a/memory.limit_in_bytes 1G
step limit-0x10K            wr a/memory.limit_in_bytes 0x10K
step limit-010M             wr a/memory.limit_in_bytes 010M
step soft-limit-2g          wr a/memory.soft_limit_in_bytes 2g
step swappiness-201         w a/memory.swappiness 201
step swappiness-junk        w a/memory.swappiness 1x
step swappiness-minus-1     w a/memory.swappiness -1
step swappiness-0x10        wr a/memory.swappiness 0x10
step swappiness-010         wr a/memory.swappiness 010
step oom-2                  w a/memory.oom_control 2
step oom-1                  w a/memory.oom_control 1
step oom-read               first a/memory.oom_control
step move-charge-4          w a/memory.move_charge_at_immigrate 4
step usage-write            w a/memory.usage_in_bytes 5
step stat-write             w a/memory.stat 5
step force-empty-read       cat a/memory.force_empty
step force-empty            w a/memory.force_empty 1
step failcnt-trigger        w a/memory.failcnt abc
step max-usage-trigger      w a/memory.max_usage_in_bytes 0
step tcp-modes              modes a/$T.limit_in_bytes a/$T.usage_in_bytes a/$T.failcnt a/$T.max_usage_in_bytes
step tcp-limit-junk         w a/$T.limit_in_bytes junk
step tcp-limit-minus-2      w a/$T.limit_in_bytes -2
step tcp-limit-1.5G         w a/$T.limit_in_bytes 1.5G
step tcp-limit-1KB          w a/$T.limit_in_bytes 1KB
step tcp-limit-1G           wr a/$T.limit_in_bytes 1G
step tcp-limit-0x10K        wr a/$T.limit_in_bytes 0x10K
step tcp-limit-010M         wr a/$T.limit_in_bytes 010M
step tcp-usage-read         cat a/$T.usage_in_bytes
step tcp-usage-write        w a/$T.usage_in_bytes 5
step tcp-failcnt-trigger    wr a/$T.failcnt abc
step tcp-max-usage-trigger  wr a/$T.max_usage_in_bytes 0
step tasks-999999999        w a/tasks 999999999
step tasks-4000000          w a/tasks 4000000
step procs-999999999        w a/cgroup.procs 999999999
step tasks-junk             w a/tasks junk
step mv-within              mv a b
step mv-new-name            test -d b
step mv-old-gone            test ! -e a
step mv-ctlfile             mv b/memory.stat b/zz
step mkdir-child            mkdir b/c
step rmdir-with-child       rmdir b
step mv-across              mv b/c c
step mkdir-d                mkdir d
step mv-onto-cgroup         mv -T b d
step rmdir-c                rmdir b/c
step rmdir-b                rmdir b
step rmdir-d                rmdir d
step rmdir-gone             rmdir b
step empty                  ls
