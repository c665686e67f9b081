# The two racks of `scripts/demo.sh --backend bgp`, sourced by it (it uses demo.sh's in_ns, attach,
# nodes, tmp). Rack r's nodes are the odd (r = 1) or even (r = 2) ones, at 192.168.50.1n or
# 192.168.60.1n; each rack has a router namespace running BIRD 2:
#
#   r1  AS 65001, 192.168.50.1 on rack 1, 192.168.255.1/30 to r2
#   r2  AS 65002, 192.168.60.1 on rack 2, 192.168.255.2/30 to r1
#
# Every node uses the cluster's AS, 64512. A route from a rack-2 node therefore reaches rack 1's
# nodes with 64512 in its AS_PATH, which they would refuse as a loop: the routers remove the
# cluster's AS toward their nodes, as operators do for a single-AS cluster behind top-of-rack
# routers (FRR's and Cisco's "as-override"). The underlay (etcd, the nodes' addresses) is routed
# statically, so it does not depend on BGP.

racks_cluster_as=64512
# The bgp backend's config: the mesh between nodes, and each rack's router as the neighbour of the
# nodes on its segment.
racks_backend_json='{"Type":"bgp","ASNumber":64512,"NodeToNodeMesh":true,"HoldTime":9,"Peers":[
 {"PeerIP":"192.168.50.1","ASNumber":65001,"NodePrefix":"192.168.50.0/24"},
 {"PeerIP":"192.168.60.1","ASNumber":65002,"NodePrefix":"192.168.60.0/24"}]}'

rack_of() { echo $(( ($1 - 1) % 2 + 1 )); }
node_address() { if [ "$(rack_of "$1")" = 1 ]; then echo "192.168.50.1$1"; else echo "192.168.60.1$1"; fi; }

# BIRD's config for router $1 (1 or 2).
router_config() {
  local r=$1 as=$((65000 + $1)) other=$((3 - $1)) lan link peer n
  lan=$([ "$r" = 1 ] && echo 192.168.50.1 || echo 192.168.60.1)
  link=192.168.255.$r; peer=192.168.255.$other
  cat <<EOF
log "$tmp/r$r.log" all;
router id $lan;
protocol device { scan time 10; }
# The pods' subnets learned over BGP go into this router's kernel table, so it forwards to them.
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
filter pod_subnets { if net ~ [ 10.244.0.0/16{24,24} ] then accept; reject; }
filter to_nodes {
  if ! (net ~ [ 10.244.0.0/16{24,24} ]) then reject;
  bgp_path.delete($racks_cluster_as);
  accept;
}
protocol bgp r$other {
  local $link as $as; neighbor $peer as $((65000 + other)); connect delay time 1;
  ipv4 { import filter pod_subnets; export filter pod_subnets; };
}
EOF
  for n in "${nodes[@]}"; do
    [ "$(rack_of "$n")" = "$r" ] || continue
    cat <<EOF
protocol bgp node$n {
  local $lan as $as; neighbor $(node_address "$n") as $racks_cluster_as;
  graceful restart on; hold time 9; connect delay time 1;
  ipv4 { import filter pod_subnets; export filter to_nodes; next hop self; };
}
EOF
  done
}

make_racks() {
  local r n lan
  ip netns add podnet-demo-switch2
  in_ns switch2 ip link add br0 type bridge
  in_ns switch2 ip link set br0 up
  for r in 1 2; do
    lan=$([ "$r" = 1 ] && echo 192.168.50.1 || echo 192.168.60.1)
    attach "r$r" "$lan" "$([ "$r" = 1 ] && echo switch || echo switch2)"
    in_ns "r$r" sysctl -qw net.ipv4.ip_forward=1
  done
  in_ns r1 ip link add uplink type veth peer name uplink netns podnet-demo-r2
  in_ns r1 ip addr add 192.168.255.1/30 dev uplink; in_ns r1 ip link set uplink up
  in_ns r2 ip addr add 192.168.255.2/30 dev uplink; in_ns r2 ip link set uplink up
  in_ns r1 ip route add 192.168.60.0/24 via 192.168.255.2
  in_ns r2 ip route add 192.168.50.0/24 via 192.168.255.1
  in_ns etcd ip route add default via 192.168.50.1
  for n in "${nodes[@]}"; do
    if [ "$(rack_of "$n")" = 1 ]; then
      attach "node$n" "$(node_address "$n")" switch
      in_ns "node$n" ip route add default via 192.168.50.1
    else
      attach "node$n" "$(node_address "$n")" switch2
      in_ns "node$n" ip route add default via 192.168.60.1
    fi
  done
  for r in 1 2; do
    router_config "$r" > "$tmp/r$r.conf"
    bird -p -c "$tmp/r$r.conf" || { echo "router r$r: BIRD rejects its config" >&2; exit 1; }
    ip netns exec "podnet-demo-r$r" bird -f -c "$tmp/r$r.conf" -s "$tmp/r$r.ctl" -P "$tmp/r$r.birdpid" \
      >"$tmp/r$r.out" 2>&1 &
    echo $! > "$tmp/r$r.pid"
  done
}

# Each router's kernel routes to the pods' subnets, and its BGP sessions.
show_racks() {
  local r
  for r in 1 2; do
    echo "router r$r (AS $((65000 + r))): routes to pod subnets"
    in_ns "r$r" ip -4 route show proto bird | sed 's/^/  /'
    birdc -s "$tmp/r$r.ctl" show protocols | awk 'NR > 1 && $2 == "BGP" { printf "  %-8s %s\n", $1, $6 }'
  done
}
