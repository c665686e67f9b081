#!/usr/bin/env bash
# Builds the release binaries (all, or the products named as arguments) and prints the folder that
# holds them. The CNI plugins are one executable, podnet-cni, which runs the plugin named by the file
# it was started as (argv[0]); the folder holds it and hard links of it named bridge, host-local,
# loopback, portmap and flannel. Naming any of those (or podnet-cni) builds it and makes all five
# links. It is a fully static executable (glibc, the Swift runtime, libstdc++ and
# libnl included): they need no shared library on the host, and a static executable maps fewer
# pages at start-up, which is part of every pod's latency and memory. podnetd and podnetctl link
# glibc dynamically (their etcd endpoints may be host names, resolved through the host's NSS) and
# everything else statically.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh >&2
source scripts/static-libs.sh
common=(-c release --static-swift-stdlib -Xlinker -L"$PWD/$static" -Xlinker -s)
# The plugins link with lld, their functions ordered by a start-up profile (scripts/orderfile.sh
# regenerates the list): the code the plugins run sits together at the front of .text, and far fewer
# pages of the binary become resident per invocation. Names the list has and the binary lacks are
# ignored.
plugin_flags=("${common[@]}" -Xswiftc -static-executable -Xswiftc -use-ld=lld
              -Xlinker --symbol-ordering-file="$PWD/scripts/plugins.order" -Xlinker --no-warn-symbol-ordering)
# The two kinds are linked differently, so they build in separate scratch folders (a change of
# flags would otherwise rebuild everything on each switch). podnetd and podnetctl link with lld
# too, ordered by podnetd's profile (scripts/orderfile-podnetd.sh), and export no symbols: a
# dynamic symbol table of every Swift function is 2.5 MB the loader has no use for.
daemon_flags=("${common[@]}" --scratch-path .build/daemon -Xswiftc -use-ld=lld
              -Xswiftc -Xclang-linker -Xswiftc -static-libgcc -Xswiftc -Xclang-linker -Xswiftc -no-pie
              -Xlinker --no-export-dynamic)
out=.build/podnet-bin
if [ "${PODNET_ORDER_PROFILE:-}" = 1 ]; then
  # For scripts/orderfile-podnetd.sh: unstripped and unordered, in a folder of its own.
  unstripped=()
  for f in "${daemon_flags[@]}"; do [ "$f" = -s ] && unset 'unstripped[-1]' || unstripped+=("$f"); done
  daemon_flags=("${unstripped[@]}")
  out=.build/podnet-bin-profile
else
  daemon_flags+=(-Xlinker --symbol-ordering-file="$PWD/scripts/podnetd.order" -Xlinker --no-warn-symbol-ordering)
fi
plugins=(bridge host-local loopback portmap flannel)
# Products to build: the arguments (a plugin's name meaning podnet-cni), else podnet-cni, podnetd
# and podnetctl.
requested=("$@")
[ ${#requested[@]} -gt 0 ] || requested=(podnet-cni podnetd podnetctl)
products=()
for p in "${requested[@]}"; do
  case " ${plugins[*]} " in *" $p "*) p=podnet-cni;; esac
  case " ${products[*]} " in *" $p "*) ;; *) products+=("$p");; esac
done
mkdir -p "$out"
for p in "${products[@]}"; do
  case $p in podnetd|podnetctl) flags=("${daemon_flags[@]}");; *) flags=("${plugin_flags[@]}");; esac
  # Linker noise, filtered: podnetd's static FoundationEssentials' mktemp, and the warnings about glibc
  # functions that would need the host's shared NSS modules in a static executable, for callers
  # the plugins never reach: libnl's address/protocol name helpers and the Swift runtime's lookup
  # of an optional prespecializations library.
  # (a failed build must not pass off the previous binary as this one)
  status=0
  swift build -q "${flags[@]}" --product "$p" 2>&1 \
    | grep -v -e "the use of .mktemp' is dangerous" \
        -e "function \(LibPrespecializedState::findLibPrespecialized()\|nl_addr_info\|nl_ip_proto2str\|nl_str2ip_proto\): warning: Using" >&2 \
    || status=${PIPESTATUS[0]}
  bin="$(swift build "${flags[@]}" --show-bin-path)/$p"
  [ "$status" = 0 ] && [ -x "$bin" ] || { echo "build of $p failed" >&2; exit 1; }
  ln -f "$bin" "$out/$p"
  if [ "$p" = podnet-cni ]; then
    for name in "${plugins[@]}"; do ln -f "$out/podnet-cni" "$out/$name"; done
  fi
done
echo "$PWD/$out"
