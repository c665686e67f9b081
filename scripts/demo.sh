#!/usr/bin/env bash
# podnet demo: a three-node cluster on one machine with a real etcd, pods on different nodes
# talking through podnetd's overlay.
#
#   podnet-demo-switch   the underlay: a bridge joining every node and etcd (192.168.50.0/24)
#   podnet-demo-etcd     the real etcd server (Debian etcd-server) at 192.168.50.2
#   podnet-demo-node1..3 one podnetd each, at 192.168.50.11..13 (four nodes in two racks for bgp)
#   podnet-demo-podN-M   two pods per node, created through podnet's flannel CNI plugin
#
# It prints the leases, a full-mesh pod-to-pod ping matrix and node1's `podnetctl status`, deletes
# a route by hand and shows `podnetctl check` find it and pass again once podnetd has repaired it,
# then removes everything it created (also when interrupted). Nothing outside these namespaces is
# touched.
#
# With --backend bgp the underlay is two racks joined by routers, and no pod traffic is
# encapsulated: podnetd announces each node's subnet over BGP and installs what it learns.
#
#   podnet-demo-switch   rack 1's L2 segment, 192.168.50.0/24: etcd, node1, node3
#   podnet-demo-switch2  rack 2's L2 segment, 192.168.60.0/24: node2, node4
#   podnet-demo-r1, -r2  one router per rack (BIRD 2, AS 65001 and 65002) at .1 of its rack,
#                        linked to each other (192.168.255.0/30); each peers with its rack's nodes
#                        (AS 64512) and with the other router, and routes the pods' subnets
#
# With --ipv6 dual every host also has an IPv6 underlay address (fd00:50::<n>/64) and the network
# config is dual-stack (Network 10.244.0.0/16 and IPv6Network fd00:10:244::/56): pods get an
# address of each family and a ping matrix is printed per family. --ipv6 only: IPv6Network alone
# (EnableIPv4 false), pods have IPv6 addresses only. (Not with bgp, which is IPv4-only.)
#
#   scripts/demo.sh [--backend vxlan|host-gw|bgp] [--ipv6 dual|only]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh needs root (network namespaces)" >&2; exit 1; }
backend=vxlan
ipv6=off
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend=${2:?--backend needs vxlan, host-gw or bgp}; shift 2 ;;
    --ipv6) ipv6=${2:?--ipv6 needs dual or only}; shift 2 ;;
    *) echo "usage: scripts/demo.sh [--backend vxlan|host-gw|bgp] [--ipv6 dual|only]" >&2; exit 2 ;;
  esac
done
case "$ipv6" in off|dual|only) ;; *) echo "--ipv6 needs dual or only" >&2; exit 2 ;; esac
[ "$ipv6" != off ] && [ "$backend" = bgp ] && { echo "the bgp backend is IPv4-only: no --ipv6 with it" >&2; exit 2; }

scripts/deps.sh
bin=$(scripts/build.sh)
tmp=$(mktemp -d /tmp/podnet-demo.XXXXXX)
nodes=(1 2 3)
pods=(1 2)
ns_all=(podnet-demo-switch podnet-demo-etcd)
if [ "$backend" = bgp ]; then
  nodes=(1 2 3 4)
  ns_all+=(podnet-demo-switch2 podnet-demo-r1 podnet-demo-r2)
fi
for n in "${nodes[@]}"; do ns_all+=(podnet-demo-node$n); for p in "${pods[@]}"; do ns_all+=(podnet-demo-pod$n-$p); done; done

cleanup() {
  # etcd and podnetd were started with `ip netns exec`, which execs its command: the recorded PIDs
  # are the daemons' own. Anything else still running in a demo namespace is stopped too.
  local pids ns
  pids=$(cat "$tmp"/*.pid 2>/dev/null || true)
  for ns in "${ns_all[@]}"; do pids+=" $(ip netns pids "$ns" 2>/dev/null || true)"; done
  stop_processes $pids
  for ns in "${ns_all[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
  rm -rf "$tmp"
}
# Sends SIGTERM, waits up to 5 s for every process to be gone, then SIGKILLs the rest and waits.
stop_processes() {
  local pid _ alive
  [ $# -gt 0 ] || return 0
  kill "$@" 2>/dev/null || true
  for _ in $(seq 50); do
    alive=0; for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  kill -9 "$@" 2>/dev/null || true
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local ns=$1; shift; ip netns exec "podnet-demo-$ns" "$@"; }

# Underlay: a bridge in the switch namespace, one veth per host.
ip netns add podnet-demo-switch
in_ns switch ip link add br0 type bridge
in_ns switch ip link set br0 up
attach() { # host address [switch]
  local sw=${3:-switch}
  ip netns add "podnet-demo-$1"
  in_ns "$sw" ip link add "sw-$1" type veth peer name eth0 netns "podnet-demo-$1"
  in_ns "$sw" ip link set "sw-$1" master br0 up
  in_ns "$1" ip addr add "$2/24" dev eth0
  [ "$ipv6" = off ] || in_ns "$1" ip addr add "fd00:50::${2##*.}/64" dev eth0 nodad
  in_ns "$1" ip link set eth0 up
  in_ns "$1" ip link set lo up
}
attach etcd 192.168.50.2
if [ "$backend" = bgp ]; then
  source scripts/demo-racks.sh
  make_racks
else
  for n in "${nodes[@]}"; do attach "node$n" "192.168.50.1$n"; done
fi

# etcd, and the network config in flanneld's layout.
ip netns exec podnet-demo-etcd etcd --name demo --data-dir "$tmp/etcd" --listen-client-urls http://192.168.50.2:2379 \
  --advertise-client-urls http://192.168.50.2:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster demo=http://127.0.0.1:2380 \
  >"$tmp/etcd.log" 2>&1 &
echo $! > "$tmp/etcd.pid"
etcdctl() { in_ns etcd env ETCDCTL_API=3 etcdctl --endpoints http://192.168.50.2:2379 "$@"; }
for _ in $(seq 100); do etcdctl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
backend_json="{\"Type\":\"$backend\"}"
[ "$backend" = bgp ] && backend_json=$racks_backend_json
case "$ipv6" in
  off) families="\"Network\":\"10.244.0.0/16\"" ;;
  dual) families="\"Network\":\"10.244.0.0/16\",\"EnableIPv6\":true,\"IPv6Network\":\"fd00:10:244::/56\"" ;;
  only) families="\"EnableIPv4\":false,\"EnableIPv6\":true,\"IPv6Network\":\"fd00:10:244::/56\"" ;;
esac
etcdctl put /coreos.com/network/config "{$families,\"Backend\":$backend_json}" >/dev/null
echo "network config: $(etcdctl get --print-value-only /coreos.com/network/config)"

# podnetd on every node.
for n in "${nodes[@]}"; do
  mkdir -p "$tmp/node$n"
  ip netns exec "podnet-demo-node$n" "$bin/podnetd" --etcd-endpoints http://192.168.50.2:2379 --iface eth0 \
    --subnet-file "$tmp/node$n/subnet.env" --healthz-ip 127.0.0.1 --healthz-port 9102 \
    >"$tmp/node$n/podnetd.log" 2>&1 &
  echo $! > "$tmp/node$n.pid"
done
for n in "${nodes[@]}"; do
  for _ in $(seq 100); do [ -s "$tmp/node$n/subnet.env" ] && break; sleep 0.1; done
  [ -s "$tmp/node$n/subnet.env" ] || { echo "node$n: podnetd wrote no subnet file:"; cat "$tmp/node$n/podnetd.log"; exit 1; }
done
echo "leases in etcd ($backend$([ "$ipv6" = off ] || echo ", IPv6 $ipv6")):"
etcdctl get --prefix /coreos.com/network/subnets/ | paste - - | sed 's|/coreos.com/network/subnets/|  |'

# Two pods per node through the flannel plugin (bridge + host-local delegates), as a runtime would.
declare -A ip ip6
for n in "${nodes[@]}"; do
  python3 - "$tmp" "$n" <<'PY'
import json, sys
tmp, n = sys.argv[1], sys.argv[2]
c = json.load(open("netconf/40-flannel.conflist"))
f = c["plugins"][0]
f["subnetFile"] = f"{tmp}/node{n}/subnet.env"
f["dataDir"] = f"{tmp}/node{n}/flannel"
f.setdefault("delegate", {})
f["ipam"] = {"dataDir": f"{tmp}/node{n}/networks"}
json.dump(c, open(f"{tmp}/node{n}/flannel.conflist", "w"))
PY
  for p in "${pods[@]}"; do
    pod=podnet-demo-pod$n-$p
    ip netns add "$pod"
    in_ns "node$n" python3 scripts/cni_runtime.py ADD "$tmp/node$n/flannel.conflist" --id "pod$n-$p" \
      --netns "/run/netns/$pod" --ifname eth0 --path "$bin" --cache "$tmp/node$n/cache" > "$tmp/pod$n-$p.json"
    read -r ip4addr ip6addr < <(python3 -c '
import json, sys
ips = [i["address"].split("/")[0] for i in json.load(open(sys.argv[1]))["ips"]]
print(next((a for a in ips if ":" not in a), "-"), next((a for a in ips if ":" in a), "-"))' "$tmp/pod$n-$p.json")
    ip[$n-$p]=$ip4addr; ip6[$n-$p]=$ip6addr
  done
done
echo "pods:"
for n in "${nodes[@]}"; do for p in "${pods[@]}"; do
  echo "  pod$n-$p on node$n: ${ip[$n-$p]}$([ "$ipv6" = off ] || echo " ${ip6[$n-$p]}")"
done; done

fail=0
if [ "$backend" = bgp ]; then
  # The routes arrive over BGP sessions that come up after the nodes: wait until every node has one
  # route (protocol 98) to each other node's subnet.
  start=$(date +%s.%N)
  for _ in $(seq 150); do
    converged=1
    for n in "${nodes[@]}"; do
      [ "$(in_ns "node$n" ip -4 route show proto 98 | wc -l)" = $(( ${#nodes[@]} - 1 )) ] || converged=0
    done
    [ $converged = 1 ] && break; sleep 0.2
  done
  [ $converged = 1 ] || { echo "BGP did not give every node its routes within 30 s"; fail=1; }
  awk -v n=$(( ${#nodes[@]} - 1 )) -v s="$start" -v e="$(date +%s.%N)" \
    'BEGIN { printf "every node has its %d BGP routes, %.1f s after the pods were made\n", n, e - s }'
fi

ping_matrix() { # family: 4 or 6
  local source=ip; [ "$1" = 6 ] && source=ip6
  local -n addr=$source
  echo "IPv$1 ping matrix (row pings column):"
  printf '%10s' ""; for n in "${nodes[@]}"; do for p in "${pods[@]}"; do printf '%9s' "pod$n-$p"; done; done; echo
  for n in "${nodes[@]}"; do for p in "${pods[@]}"; do
    printf '%10s' "pod$n-$p"
    for m in "${nodes[@]}"; do for q in "${pods[@]}"; do
      if [ "$n-$p" = "$m-$q" ]; then printf '%9s' "-"; continue; fi
      if in_ns "pod$n-$p" ping -c 1 -W 2 "${addr[$m-$q]}" >/dev/null 2>&1; then printf '%9s' "ok"; else printf '%9s' "FAIL"; fail=1; fi
    done; done; echo
  done; done
}
[ "$ipv6" = only ] || ping_matrix 4
[ "$ipv6" = off ] || ping_matrix 6
if [ "$ipv6" != off ]; then
  echo "node1's IPv6 routes to other nodes' pods:"
  in_ns node1 ip -6 route show proto 98 | sed 's/^/  /'
  echo "node1's subnet.env:"; sed 's/^/  /' "$tmp/node1/subnet.env"
fi

if [ "$backend" = bgp ]; then
  echo "node1's routes to other nodes' pods (podnet's protocol 98; rack 2's through router r1):"
  in_ns node1 ip -4 route show proto 98 | sed 's/^/  /'
  show_racks
fi

# podnetctl on node1: the node's view; then a peer's route deleted by hand, which `check` names
# (exit 1) until podnetd's repair (every 10 s) puts it back. With bgp the peer is node3, on
# node1's own rack.
ctl() {
  in_ns node1 "$bin/podnetctl" "$@" --etcd-endpoints http://192.168.50.2:2379 --iface eth0 \
    --subnet-file "$tmp/node1/subnet.env" --healthz-ip 127.0.0.1 --healthz-port 9102
}
echo "podnetctl status on node1:"
ctl status || fail=1
victim=node2; [ "$backend" = bgp ] && victim=node3
# The check covers the primary family (IPv6 in an IPv6-only cluster): the victim's route of it.
if [ "$ipv6" = only ]; then
  peer=$(sed -n 's/^FLANNEL_IPV6_SUBNET=\(.*\)::1\/\(.*\)/\1::\/\2/p' "$tmp/$victim/subnet.env")
else
  peer=$(sed -n 's/^FLANNEL_SUBNET=\(.*\)\.1\/\(.*\)/\1.0\/\2/p' "$tmp/$victim/subnet.env")
fi
in_ns node1 ip route del "$peer"
echo "deleted the route to $victim's $peer on node1; podnetctl status, then check:"
ctl status || fail=1
status=0; ctl check || status=$?
[ $status = 1 ] || { echo "podnetctl check should have found the missing route (exit $status)"; fail=1; }
for _ in $(seq 30); do ctl check >/dev/null && break; sleep 1; done
if ctl check; then echo "podnetd repaired it; podnetctl check: consistent (exit 0)"; else fail=1; fi

for n in "${nodes[@]}"; do for p in "${pods[@]}"; do
  in_ns "node$n" python3 scripts/cni_runtime.py DEL "$tmp/node$n/flannel.conflist" --id "pod$n-$p" \
    --netns "/run/netns/podnet-demo-pod$n-$p" --ifname eth0 --path "$bin" --cache "$tmp/node$n/cache"
done; done
[ $fail = 0 ] && echo "demo: all green" || { echo "demo: FAILED"; for n in "${nodes[@]}"; do echo "--- node$n"; tail -5 "$tmp/node$n/podnetd.log"; done; exit 1; }
