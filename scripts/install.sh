#!/usr/bin/env bash
# Builds podnet's release binaries and installs the CNI plugins into ${CNI_BIN_DIR:-/opt/cni/bin},
# podnetd and podnetctl into ${PODNETD_DIR:-/usr/local/bin} and its systemd unit into ${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
# (enable it with `systemctl enable --now podnetd` after setting PODNETD_ARGS in /etc/default/podnetd).
# With PODNET_BIN_DIR set, installs the binaries already built there instead of building.
#
# The plugins are one executable, podnet-cni, that runs the plugin named by the file it was started
# as: it is written once and installed as hard links named bridge, host-local, loopback, portmap and
# flannel. Hard links, not symlinks: a runtime that copies one of them elsewhere gets a whole plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${PODNET_BIN_DIR:-$(scripts/build.sh)}
dest=${CNI_BIN_DIR:-/opt/cni/bin}
mkdir -p "$dest"
# Written next to the targets under temporary names, then each renamed over its name, so a runtime
# never executes a half-written binary, and each name is either the old plugin or the new one.
new="$dest/.podnet-cni.podnet-new"
trap 'rm -f "$new" "$dest"/.*.podnet-new' EXIT
install -m 0755 "$bin/podnet-cni" "$new"
for p in bridge host-local loopback portmap flannel; do
  ln -f "$new" "$dest/.$p.podnet-new"
  mv -f "$dest/.$p.podnet-new" "$dest/$p"
  echo "installed $dest/$p"
done
rm -f "$new"
daemon_dir=${PODNETD_DIR:-/usr/local/bin}
mkdir -p "$daemon_dir"
for p in podnetd podnetctl; do
  install -m 0755 "$bin/$p" "$daemon_dir/.$p.podnet-new"
  mv -f "$daemon_dir/.$p.podnet-new" "$daemon_dir/$p"
  echo "installed $daemon_dir/$p"
done
unit_dir=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
if [ -d "$unit_dir" ]; then
  sed "s|/usr/local/bin/podnetd|$daemon_dir/podnetd|" netconf/podnetd.service > "$unit_dir/podnetd.service"
  echo "installed $unit_dir/podnetd.service"
fi
