#!/usr/bin/env bash
# Builds the release binaries (all, or the products named as arguments): Swift standard library, libstdc++, libgcc and libnl linked
# statically, so a plugin needs only glibc on the host. Prints the folder holding the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh >&2
# The Swift driver links -lstdc++ by name: a search folder holding only the static archive makes
# that resolve to libstdc++.a. libnl's flags come from pkg-config (the CLibNL target): a .pc file
# of our own, first in PKG_CONFIG_PATH, names libnl's static archives instead of its .so files.
static=.build/static-libs
mkdir -p "$static/pkgconfig"
ln -sf "$(g++ -print-file-name=libstdc++.a)" "$static/libstdc++.a"
cat > "$static/pkgconfig/libnl-route-3.0.pc" <<PC
Name: libnl-route-3.0
Description: libnl-route-3 linked statically (podnet release build)
Version: $(pkg-config --modversion libnl-route-3.0)
Cflags: $(pkg-config --cflags libnl-route-3.0)
Libs: -l:libnl-route-3.a -l:libnl-3.a
PC
export PKG_CONFIG_PATH="$PWD/$static/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# Every plugin of this build gets the same build-id, a hash of the sources: a plugin runs a
# delegate in-process only when the delegate's binary carries its own build-id (CNI/BuildID.swift).
stamp=$(find Package.swift Sources Plugins -type f -name '*.swift' -o -type f -name '*.[ch]' | LC_ALL=C sort | xargs cat | sha1sum | cut -c1-40)
flags=(-c release --static-swift-stdlib -Xlinker -L"$PWD/$static" -Xswiftc -Xclang-linker -Xswiftc -static-libgcc
       -Xswiftc -Xclang-linker -Xswiftc -no-pie
       -Xlinker -s -Xlinker --build-id=0x"$stamp")
# Products to build: the arguments, else every CNI plugin and podnetd.
products=("$@")
[ ${#products[@]} -gt 0 ] || products=(bridge host-local loopback portmap flannel podnetd)
for p in "${products[@]}"; do
  # (the static FoundationEssentials draws a linker warning about mktemp: noise, filtered)
  swift build -q "${flags[@]}" --product "$p" 2>&1 | grep -v "the use of .mktemp' is dangerous" >&2 || true
  [ -x "$(swift build "${flags[@]}" --show-bin-path)/$p" ] || { echo "build of $p failed" >&2; exit 1; }
done
swift build "${flags[@]}" --show-bin-path
