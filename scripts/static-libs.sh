# Sourced by build.sh and orderfile.sh: sets up static linking of libstdc++ and libnl, and sets
# `static` to the folder to pass to the linker with -L.
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
