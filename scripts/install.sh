#!/usr/bin/env bash
# Builds podnet's release binaries and installs the CNI plugins into ${CNI_BIN_DIR:-/opt/cni/bin},
# podnetd and podnetctl into ${PODNETD_DIR:-/usr/local/bin} and its systemd unit into ${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
# (enable it with `systemctl enable --now podnetd` after setting PODNETD_ARGS in /etc/default/podnetd).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/build.sh)
dest=${CNI_BIN_DIR:-/opt/cni/bin}
mkdir -p "$dest"
for p in bridge host-local loopback portmap flannel; do
  # Write next to the target and rename, so a runtime never executes a half-written binary.
  install -m 0755 "$bin/$p" "$dest/.$p.podnet-new"
  mv -f "$dest/.$p.podnet-new" "$dest/$p"
  echo "installed $dest/$p"
done
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
