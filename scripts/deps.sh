#!/usr/bin/env bash
# Installs the Debian packages podnet needs to build, test, demo and benchmark.
# Idempotent: packages already present are not fetched again.
set -euo pipefail
need=(pkg-config libnl-3-dev libnl-route-3-dev libmnl-dev iproute2 iptables nftables
      conntrack iputils-ping time procps etcd-server etcd-client bird2 frr)
[ "${1:-}" = bench ] && need+=(containernetworking-plugins iperf3)
# The real-runtime suite (scripts/runtimes/): podman with its CNI backend, containerd through its
# CRI (spoken by scripts/runtimes/cri.py over grpcio), runc, and busybox for the test image.
[ "${1:-}" = runtimes ] && need+=(podman containerd runc conmon busybox-static uidmap)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = runtimes ]; then
  # The committed scripts/runtimes/cri_pb2*.py were generated for these versions.
  python3 -m pip install -q --disable-pip-version-check 'grpcio>=1.62,<2' 'protobuf>=4.25,<5'
fi
