#!/usr/bin/env bash
# Benchmarks, each against the reference tools in the same run, printed as ratios.
#   scripts/bench.sh plugins [PODS]   bridge + host-local ADD+DEL per pod, with and without ipMasq,
#                                     and against the kernel floor (ip -batch, nft -f) per pod
#   scripts/bench.sh overlay [--backend vxlan|host-gw] [--peers N] [--runs N] [--ipv6 dual]
#                                     podnetd: convergence with 1000 peers against ip -batch, lease
#                                     propagation, peak RSS, pod-to-pod iperf3 against a hand-built path;
#                                     with --peers over 1000, time and RSS per 1000 peers from 1000 on;
#                                     --ipv6 dual: dual-stack peers, both families' entries (no iperf3)
#   scripts/bench.sh bgp [--peers N] [--runs N]
#                                     podnetd learning N (default 5000) leased subnets from a BIRD peer:
#                                     session -> all routes against ip -batch, CPU time, peak RSS
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench.sh needs root (network namespaces)" >&2; exit 1; }
what=${1:-plugins}
case "$what" in
  plugins)
    scripts/deps.sh bench
    bin=$(scripts/build.sh)
    python3 scripts/bench_plugins.py "$bin" /usr/lib/cni "${2:-40}"
    ;;
  overlay)
    scripts/deps.sh bench
    bin=$(scripts/build.sh podnetd flannel bridge host-local)
    python3 scripts/bench_overlay.py "$bin" "${@:2}"
    ;;
  bgp)
    scripts/deps.sh bench
    bin=$(scripts/build.sh podnetd)
    python3 scripts/bench_overlay.py "$bin" --backend bgp --peers 5000 "${@:2}"
    ;;
  *) echo "usage: scripts/bench.sh plugins [PODS] | overlay [--backend vxlan|host-gw] | bgp [--peers N]" >&2; exit 2 ;;
esac
