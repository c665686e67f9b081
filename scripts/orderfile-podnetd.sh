#!/usr/bin/env bash
# Regenerates scripts/podnetd.order, the function order scripts/build.sh links podnetd and
# podnetctl with (lld --symbol-ordering-file), as scripts/orderfile.sh does for the plugins.
# podnetd's code is spread over 19 MB of .text (the Swift runtime, NIO, AsyncHTTPClient, the
# standard library, ours); the kernel maps 64 KB around every page a process faults in, so code
# that runs scattered over the binary makes most of it resident. Placing the functions a node
# runs together at the front of .text keeps podnetd's resident memory near what it runs.
#
# How: builds podnetd unstripped (scripts/build.sh with PODNET_ORDER_PROFILE=1), then runs it
# under valgrind's callgrind as a node does: a real etcd in namespace podnet-t-order-d-etcd,
# podnetd in podnet-t-order-d-node with 200 peer leases; while it runs, a lease is added and one
# deleted, a route is deleted by hand (the repair puts it back), /healthz and /metrics are read;
# then SIGTERM. The functions of the binary it executed, most executed first, are the order.
# Both namespaces are deleted at the end, also on failure.
#
# When: after changes that move much code (a new dependency, a toolchain update). A stale name is
# harmless (build.sh passes --no-warn-symbol-ordering). Needs root, valgrind, etcd, iproute2, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "orderfile-podnetd.sh: needs root (network namespaces)" >&2; exit 1; }
for t in valgrind objcopy etcd etcdctl curl; do
  command -v "$t" >/dev/null || { echo "orderfile-podnetd.sh: needs $t" >&2; exit 1; }
done
built=$(PODNET_ORDER_PROFILE=1 scripts/build.sh podnetd)/podnetd
work=$(mktemp -d /tmp/podnet-order-d-XXXXXX)
etcd_ns=podnet-t-order-d-etcd node_ns=podnet-t-order-d-node
cleanup() {
  for ns in $node_ns $etcd_ns; do
    for pid in $(ip netns pids $ns 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
cleanup
mkdir -p "$work"
# valgrind cannot read the DWARF 5 of some objects: the symbol table is enough.
bin=$work/podnetd
objcopy --strip-debug "$built" "$bin"
ip netns add $etcd_ns
ip netns add $node_ns
ip -n $etcd_ns link set lo up
ip -n $node_ns link set lo up
ip -n $etcd_ns link add eth0 type veth peer name eth0 netns $node_ns
ip -n $etcd_ns addr add 10.77.0.1/24 dev eth0
ip -n $node_ns addr add 10.77.0.2/24 dev eth0
ip -n $etcd_ns link set eth0 up
ip -n $node_ns link set eth0 up

ip netns exec $etcd_ns etcd --data-dir "$work/etcd" --listen-client-urls http://10.77.0.1:2379 \
  --advertise-client-urls http://10.77.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster default=http://127.0.0.1:2380 \
  >"$work/etcd.log" 2>&1 &
disown $!
ctl() { ip netns exec $etcd_ns etcdctl --endpoints http://10.77.0.1:2379 "$@" >/dev/null; }
# Polls (each try a fresh check) until the condition holds, for at most $1 seconds.
until_true() {
  local limit=$1; shift
  for _ in $(seq $((limit * 10))); do "$@" && return 0; sleep 0.1; done
  echo "orderfile-podnetd.sh: timed out waiting for: $*" >&2
  exit 1
}
until_true 30 ctl endpoint health
prefix=/coreos.com/network
ctl put $prefix/config '{"Network":"10.96.0.0/16","Backend":{"Type":"vxlan"}}'
lease() { echo "{\"PublicIP\":\"10.77.1.$1\",\"PublicIPv6\":null,\"BackendType\":\"vxlan\",\"BackendData\":{\"VNI\":1,\"VtepMAC\":\"02:42:00:00:00:$(printf %02x "$1")\"}}"; }
for i in $(seq 1 200); do ctl put $prefix/subnets/10.96.$i.0-24 "$(lease "$i")"; done

ip netns exec $node_ns valgrind -q --tool=callgrind --dump-instr=no --demangle=no \
  --callgrind-out-file="$work/podnetd.out" "$bin" --etcd-endpoints http://10.77.0.1:2379 --iface eth0 \
  --subnet-file "$work/subnet.env" --healthz-port 9102 --reconcile-interval 1 --iptables-resync 1 --ip-masq \
  >"$work/podnetd.log" 2>&1 &
podnetd=$!
until_true 300 test -s "$work/subnet.env"
route_of() { ip -n $node_ns route show "$1" | grep -q .; }
ctl put $prefix/subnets/10.96.250.0-24 "$(lease 250)"
until_true 60 route_of 10.96.250.0/24
ctl del $prefix/subnets/10.96.7.0-24
until_true 60 eval '! route_of 10.96.7.0/24'
ip -n $node_ns route del 10.96.8.0/24
until_true 60 route_of 10.96.8.0/24
ip netns exec $node_ns curl -sf http://127.0.0.1:9102/healthz >/dev/null
ip netns exec $node_ns curl -sf http://127.0.0.1:9102/metrics >/dev/null
kill -TERM $podnetd
wait $podnetd || { echo "orderfile-podnetd.sh: podnetd failed:" >&2; tail -20 "$work/podnetd.log" >&2; exit 1; }

python3 scripts/callgrind_functions.py "$bin" "$work/podnetd.out" >scripts/podnetd.order
echo "orderfile-podnetd.sh: $(wc -l <scripts/podnetd.order) functions -> scripts/podnetd.order" >&2
