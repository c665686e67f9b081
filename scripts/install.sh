#!/usr/bin/env bash
# Builds podnet's release binaries and installs the CNI plugins into ${CNI_BIN_DIR:-/opt/cni/bin}.
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
