# The two-rack topology of `scripts/demo.sh --backend bgp`, sourced by the demo: the same addresses
# and router configuration as the tests' `ClusterOptions.racks = 2` (Sources/TestSupport/Cluster.swift
# and Routers.swift), with BIRD 2 as both racks' routers.
#
#   <p>-switch    rack 1's switch (bridge br0), 192.168.50.0/24; etcd stays at 192.168.50.2
#   <p>-switch2   rack 2's switch, 192.168.60.0/24
#   <p>-router1/2 rack r's router: .1 on its rack, 192.168.255.r/30 on a veth link to the other
#                 router, ip_forward on, a static route to the other rack's /24 (the underlay never
#                 depends on BGP), BIRD with AS 65000+r
#   node n        rack 1 when n is odd, rack 2 when even, at 192.168.50.<10+n> or 192.168.60.<10+n>,
#                 default route via its router
#
# Each router peers eBGP with the other and with every node of its rack (remote AS = the cluster
# AS, hold 9 s, graceful restart on), installs BGP routes in its kernel table, and sends the nodes
# only pod routes with the cluster AS deleted from the AS path (AS override: every node has the
# same AS, and would otherwise drop the other rack's routes as a loop).
#
# <p> is $BGP_NS_PREFIX (default podnet-demo). Files go to $tmp (the demo's folder; its *.pid files
# are stopped by the demo's clean-up). Namespaces made here are appended to the demo's ns_all.
# Functions, in the order the demo calls them:
#   bgp_make_racks                 switches, routers and the link between them
#   bgp_attach HOST ADDRESS RACK   a host namespace (eth0 = ADDRESS/24 on RACK's switch, default
#                                  route via its router); a host named node* becomes a BGP neighbour
#   bgp_rack_of N / bgp_node_address N
#   bgp_start_routers              writes the BIRD configurations and starts both routers
#   bgp_print_router_tables        each router's sessions and pod routes
# Needs: ip, bird, birdc. BGP_CLUSTER_AS (default 64512), BGP_NETWORK (default 10.244.0.0/16).

bgp_ns() { echo "${BGP_NS_PREFIX:-podnet-demo}-$1"; }
bgp_in() { local host=$1; shift; ip netns exec "$(bgp_ns "$host")" "$@"; }
bgp_rack_of() { echo $(( ($1 - 1) % 2 + 1 )); }
bgp_prefix() { echo "192.168.$((40 + 10 * $1))"; }
bgp_node_address() { echo "$(bgp_prefix "$(bgp_rack_of "$1")").$((10 + $1))"; }
bgp_rack1_nodes=()
bgp_rack2_nodes=()

bgp_new_ns() {
  ip netns add "$(bgp_ns "$1")"
  ns_all+=("$(bgp_ns "$1")")
  bgp_in "$1" ip link set lo up
}

# HOST ADDRESS RACK [PORT]: a namespace plugged into RACK's switch.
bgp_plug() {
  local host=$1 address=$2 rack=$3 sw=switch
  [ "$rack" = 2 ] && sw=switch2
  bgp_new_ns "$host"
  bgp_in "$sw" ip link add "sw-$host" type veth peer name eth0 netns "$(bgp_ns "$host")"
  bgp_in "$sw" ip link set "sw-$host" master br0 up
  bgp_in "$host" ip addr add "$address/24" dev eth0
  bgp_in "$host" ip link set eth0 up
}

bgp_make_racks() {
  local sw r
  for sw in switch switch2; do
    bgp_new_ns "$sw"
    bgp_in "$sw" ip link add br0 type bridge
    bgp_in "$sw" ip link set br0 up
  done
  for r in 1 2; do
    bgp_plug "router$r" "$(bgp_prefix $r).1" "$r"
    bgp_in "router$r" sysctl -qw net.ipv4.ip_forward=1
  done
  # The link is made from inside router1: the root namespace never holds either end.
  bgp_in router1 ip link add r12 type veth peer name r21 netns "$(bgp_ns router2)"
  bgp_in router1 ip addr add 192.168.255.1/30 dev r12
  bgp_in router1 ip link set r12 up
  bgp_in router2 ip addr add 192.168.255.2/30 dev r21
  bgp_in router2 ip link set r21 up
  bgp_in router1 ip route add "$(bgp_prefix 2).0/24" via 192.168.255.2
  bgp_in router2 ip route add "$(bgp_prefix 1).0/24" via 192.168.255.1
}

bgp_attach() {
  local host=$1 address=$2 rack=$3
  bgp_plug "$host" "$address" "$rack"
  bgp_in "$host" ip route add default via "$(bgp_prefix "$rack").1"
  case $host in
    node*) if [ "$rack" = 1 ]; then bgp_rack1_nodes+=("$host=$address"); else bgp_rack2_nodes+=("$host=$address"); fi ;;
  esac
}

# RACK: BIRD's configuration of that rack's router, on stdout.
bgp_bird_config() {
  local r=$1 other=$((3 - $1)) as=${BGP_CLUSTER_AS:-64512} net=${BGP_NETWORK:-10.244.0.0/16} n nodes
  if [ "$r" = 1 ]; then nodes=("${bgp_rack1_nodes[@]}"); else nodes=("${bgp_rack2_nodes[@]}"); fi
  cat <<EOF
log "$tmp/router$r.log" all;
router id 192.168.255.$r;
protocol device { scan time 10; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
filter to_nodes {
  if source != RTS_BGP then reject;
  if net !~ [ $net+ ] then reject;
  bgp_path.delete($as);
  accept;
}
template bgp nodes {
  local $(bgp_prefix "$r").1 as $((65000 + r));
  hold time 9;
  graceful restart on;
  connect delay time 1; connect retry time 1; error wait time 1, 5;
  ipv4 { import all; export filter to_nodes; };
}
protocol bgp rack$other {
  local 192.168.255.$r as $((65000 + r));
  neighbor 192.168.255.$other as $((65000 + other));
  connect delay time 1; connect retry time 1; error wait time 1, 5;
  ipv4 { import all; export where source = RTS_BGP && net ~ [ $net+ ]; };
}
EOF
  # One protocol per node, named like the node's namespace.
  for n in "${nodes[@]}"; do
    echo "protocol bgp ${n%%=*} from nodes { neighbor ${n#*=} as $as; }"
  done
}

bgp_start_routers() {
  local r _
  for r in 1 2; do
    bgp_bird_config "$r" >"$tmp/router$r.conf"
    bird -p -c "$tmp/router$r.conf"
    # ip netns exec execs BIRD: $! is BIRD's own PID, which the demo's clean-up stops.
    ip netns exec "$(bgp_ns "router$r")" bird -f -c "$tmp/router$r.conf" -s "$tmp/router$r.ctl" \
      -P "$tmp/router$r.bird-pid" >"$tmp/router$r.out" 2>&1 &
    echo $! >"$tmp/router$r.pid"
  done
  for r in 1 2; do
    for _ in $(seq 100); do birdc -s "$tmp/router$r.ctl" show status >/dev/null 2>&1 && break; sleep 0.1; done
    birdc -s "$tmp/router$r.ctl" show status >/dev/null || { cat "$tmp/router$r.out" >&2; return 1; }
  done
}

bgp_print_router_tables() {
  local r
  for r in 1 2; do
    echo "router$r (AS $((65000 + r))), BGP sessions:"
    birdc -s "$tmp/router$r.ctl" show protocols | awk 'NR > 2 && $2 == "BGP" {printf "  %-8s %-6s %s\n", $1, $4, $6}'
    echo "router$r pod routes:"
    bgp_in "router$r" ip -4 route show proto bird | sed 's/^/  /'
  done
}
