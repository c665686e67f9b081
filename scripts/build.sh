#!/usr/bin/env bash
# Builds the release binaries: Swift standard library, libstdc++, libgcc and libnl linked
# statically, so a plugin needs only glibc on the host. Prints the folder holding the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh >&2
# The Swift driver links -lstdc++ by name; a search folder holding only the static archive makes
# that resolve to libstdc++.a.
cxx=.build/static-cxx
mkdir -p "$cxx"
ln -sf "$(g++ -print-file-name=libstdc++.a)" "$cxx/libstdc++.a"
flags=(-c release --static-swift-stdlib -Xlinker -L"$PWD/$cxx" -Xswiftc -Xclang-linker -Xswiftc -static-libgcc
       -Xlinker -s)
for p in bridge host-local loopback portmap flannel; do
  swift build -q "${flags[@]}" --product "$p" >&2
done
swift build "${flags[@]}" --show-bin-path
