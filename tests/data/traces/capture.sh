#!/bin/sh
# Regenerate the trace fixtures on a root machine with tracefs (see docs/trace.md, "Fixtures").
#   sh tests/data/traces/capture.sh [PYTHON]
# Each workload is small (a few thousand events) and deterministic in shape, not in numbers.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
py=${1:-python3}
work=$(mktemp -d /tmp/kmemfs_fixture_XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
kt() { out=$1; shift; "$py" -m kmemfs trace -o "$here/$out" -- "$@"; }
# 20 fork+exec of /bin/true from one shell
kt forkloop.trace.gz sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do /bin/true; done'
# 200 empty files created by the shell itself (no fork), then removed by one rm
kt files.trace.gz sh -c 'mkdir d && i=0 && while [ $i -lt 200 ]; do : > d/f$i; i=$((i+1)); done && rm -r d'
# 30 rounds of: a UNIX socketpair carrying 4 KiB, a TCP and a UDP socket bound to 127.0.0.1
kt sockets.trace.gz perl -MSocket -e '
  for (1..30) {
    socketpair(my $a, my $b, AF_UNIX, SOCK_STREAM, 0) or die;
    syswrite($a, "x" x 4096); sysread($b, my $buf, 4096);
    socket(my $t, PF_INET, SOCK_STREAM, 0) or die; bind($t, pack_sockaddr_in(0, inet_aton("127.0.0.1")));
    socket(my $u, PF_INET, SOCK_DGRAM, 0) or die; bind($u, pack_sockaddr_in(0, inet_aton("127.0.0.1")));
  }'
