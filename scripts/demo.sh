#!/usr/bin/env bash
# podnet demo: one simulated node (a network namespace playing the host) and two pods, networked
# through podnet's loopback, bridge and host-local plugins exactly as a runtime calls them, then
# pinging each other and their gateway, then deleted. Everything it creates lives in namespaces
# named podnet-demo-* and a temporary folder, and is removed on exit, also when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh needs root (network namespaces)" >&2; exit 1; }

bin=$(scripts/build.sh)
tmp=$(mktemp -d /tmp/podnet-demo.XXXXXX)
node=podnet-demo-node
pods=(podnet-demo-pod1 podnet-demo-pod2)

cleanup() {
  for ns in "$node" "${pods[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The example conflist, with host-local's store moved into the temporary folder.
python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
c = json.load(open("netconf/10-podnet.conflist"))
c["plugins"][0]["ipam"]["dataDir"] = tmp + "/networks"
json.dump(c, open(tmp + "/podnet.conflist", "w"))
PY

for ns in "$node" "${pods[@]}"; do ip netns add "$ns"; done
runtime() { ip netns exec "$node" python3 scripts/cni_runtime.py "$@" --path "$bin" --cache "$tmp/cache"; }

declare -A ip
for i in 1 2; do
  pod=podnet-demo-pod$i
  runtime ADD netconf/99-loopback.conflist --id "pod$i" --netns "/run/netns/$pod" --ifname lo >/dev/null
  result=$(runtime ADD "$tmp/podnet.conflist" --id "pod$i" --netns "/run/netns/$pod" --ifname eth0)
  ip[$i]=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])' <<<"$result")
  echo "pod$i: eth0 ${ip[$i]}  ($(ip netns exec "$pod" ip -o -4 addr show dev eth0 | awk '{print $4}'))"
done
echo "node: cni0 $(ip netns exec "$node" ip -o -4 addr show dev cni0 | awk '{print $4}'), ports: $(ip netns exec "$node" ip -o link show master cni0 | awk -F': ' '{print $2}' | cut -d@ -f1 | tr '\n' ' ')"

fail=0
ping_check() { # from-pod target label
  if ip netns exec "$1" ping -c 2 -i 0.2 -W 2 "$2" >/dev/null 2>&1; then echo "  ok    $3"; else echo "  FAIL  $3"; fail=1; fi
}
echo "pings:"
ping_check podnet-demo-pod1 10.88.0.1 "pod1 -> gateway 10.88.0.1"
ping_check podnet-demo-pod2 10.88.0.1 "pod2 -> gateway 10.88.0.1"
ping_check podnet-demo-pod1 "${ip[2]}" "pod1 -> pod2 ${ip[2]}"
ping_check podnet-demo-pod2 "${ip[1]}" "pod2 -> pod1 ${ip[1]}"

for i in 1 2; do
  runtime DEL "$tmp/podnet.conflist" --id "pod$i" --netns "/run/netns/podnet-demo-pod$i" --ifname eth0
  runtime DEL netconf/99-loopback.conflist --id "pod$i" --netns "/run/netns/podnet-demo-pod$i" --ifname lo
done
left=$(ls "$tmp/networks/podnet" 2>/dev/null | grep -cv -e '^lock$' -e '^last_reserved_ip' || true)
# DEL detaches a pod's interface at once; the kernel unregisters it moments later.
for _ in $(seq 50); do
  ports=$(ip netns exec "$node" ip -o link show master cni0 | wc -l)
  [ "$ports" = 0 ] && break
  sleep 0.05
done
echo "after DEL: $left reserved IPs, $ports bridge ports, masquerade chains: $(ip netns exec "$node" iptables-save -t nat | grep -c '^:CNI-' || true)"
[ "$left" = 0 ] && [ "$ports" = 0 ] || fail=1
[ $fail = 0 ] && echo "demo: all green" || { echo "demo: FAILED"; exit 1; }
