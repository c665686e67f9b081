#!/usr/bin/env bash
# Fails when the demo or a test left something of podnet's behind: a network namespace named
# podnet-*, or a process of ours still running (a binary of this build, podnetd, or a helper such as
# etcd whose command line names one of podnet's temporary folders or namespaces). scripts/test.sh runs
# it last, after the demo. Short-lived helpers (bridge DEL's detached unregister) get up to 10 s to
# finish before they count as left over.
#   scripts/check-leftovers.sh
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=${TMPDIR:-/tmp}
tmp=${tmp%/}

# This script and the processes that started it are not leftovers.
ancestors=" "
pid=$$
while [ "$pid" -gt 1 ] 2>/dev/null; do
  ancestors+="$pid "
  pid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null) || break
done

leftovers() {
  ip netns list 2>/dev/null | awk '/^podnet-/{print "namespace " $1}'
  local dir p exe cmd
  for dir in /proc/[0-9]*; do
    p=${dir#/proc/}
    case "$ancestors" in *" $p "*) continue ;; esac
    exe=$(readlink "$dir/exe" 2>/dev/null) || continue
    cmd=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null) || continue
    if [[ $exe == "$repo/.build/"* || $(cat "$dir/comm" 2>/dev/null) == podnetd ||
          $cmd == *"$tmp/podnet-"* || $cmd == *"/run/netns/podnet-"* || $cmd == *"netns exec podnet-"* ]]; then
      echo "process $p: $cmd"
    fi
  done
}

for _ in $(seq 100); do
  found=$(leftovers)
  [ -z "$found" ] && { echo "check-leftovers: no podnet namespace or process left"; exit 0; }
  sleep 0.1
done
echo "check-leftovers: left behind:" >&2
echo "$found" >&2
exit 1
