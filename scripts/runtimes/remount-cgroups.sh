#!/bin/sh
# Run by `ip netns exec NODE sh remount-cgroups.sh CMD...`: mounts the cgroup hierarchies listed in
# $PODNET_CGROUPS ("fstype options target" per line, read from the caller's /proc/self/mountinfo)
# again under /sys/fs/cgroup, then execs CMD.
#
# Why: `ip netns exec` gives its command a private mount namespace with a fresh sysfs on /sys (so
# /sys/class/net shows the node's devices), and that hides the cgroup file systems mounted below
# /sys/fs/cgroup. runc then fails with "no cgroup mount found in mountinfo". A node whose runtime
# was started this way needs its cgroups where runc looks for them, as on a booted host.
set -eu
mount -t tmpfs -o mode=755 podnet-cgroups /sys/fs/cgroup
printf '%s\n' "$PODNET_CGROUPS" | while read -r fstype options target; do
  [ -n "$target" ] || continue
  mkdir -p "$target"
  mount -t "$fstype" -o "$options" cgroup "$target"
done
exec "$@"
