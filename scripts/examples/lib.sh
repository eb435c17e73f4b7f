# Shared by the example scripts: where the mount is, and `ctl` to run control commands.
# Usage in a script:  . "$(dirname "$0")/lib.sh" "$@"
set -euo pipefail
MP=${1:-${KMEMFS:-/tmp/kmemfs}}
if [ ! -e "$MP/.kmemfs/ctl" ]; then
    echo "no kmemfs mount at $MP (mount one: kmemfs mount $MP, or pass its path)" >&2
    exit 2
fi

# ctl COMMAND...: run one command through .kmemfs/ctl and print its result line.
# Returns non-zero when the command failed (the write's errno), like a syscall.
ctl() {
    local out rc=0
    exec 3<>"$MP/.kmemfs/ctl"
    echo "$*" >&3 2>/dev/null || rc=$?
    read -r out <&3 || true
    exec 3>&-
    echo "$out"
    return $rc
}

# fresh NAME: remove a cgroup left by an earlier run, then create it.
fresh() {
    [ -d "$MP/$1" ] && rmdir "$MP/$1" 2>/dev/null || true
    mkdir "$MP/$1"
}

say() { printf '\n== %s\n' "$*"; }
