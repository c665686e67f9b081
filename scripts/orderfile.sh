#!/usr/bin/env bash
# Regenerates scripts/plugins.order, the function order scripts/build.sh links the CNI plugins'
# executable, podnet-cni, with (lld --symbol-ordering-file). A plugin runs for a few milliseconds and touches code spread over
# the whole static Swift runtime, glibc and libstdc++; the kernel maps 64 KB around each page it
# faults in, so scattered code costs far more resident memory than its size. Putting the functions
# the plugins run first in .text, together, keeps each invocation's peak RSS small.
#
# How: builds podnet-cni unstripped (same static link as build.sh, scratch .build-order-prof) with
# hard links named after the plugins, as installed, runs every plugin and command once as a runtime would (host-local, bridge with and without
# ipMasq, loopback, portmap after bridge, flannel delegating to both) under valgrind's callgrind,
# in network namespaces podnet-t-order-* (deleted at the end), and lists the functions each
# invocation executed. Added to that: the IFUNC resolvers (a static glibc runs all of them at
# start-up) and the variants glibc picks on this machine's CPU (valgrind emulates an older one).
# Order: the union of all invocations' functions, those host-local runs first, then those only
# loopback, bridge, portmap, flannel run (so each plugin's executed code is a few contiguous
# blocks); inside a block, those more invocations share first (the start-up, then VERSION, then
# ADD/DEL/CHECK...).
#
# When: after changes that move much code (a new dependency, a Swift toolchain update, a large
# refactoring of a plugin's path). A stale or missing name is harmless (lld ignores it: build.sh
# passes --no-warn-symbol-ordering); new code not in the file is only placed after the ordered
# block. Needs root, valgrind, gdb, iproute2, iptables. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "orderfile.sh: needs root (network namespaces)" >&2; exit 1; }
for t in valgrind gdb readelf nm objcopy; do
  command -v "$t" >/dev/null || { echo "orderfile.sh: needs $t" >&2; exit 1; }
done
scripts/deps.sh >&2
scratch=.build-order-prof
source scripts/static-libs.sh
flags=(-c release --static-swift-stdlib -Xlinker -L"$PWD/$static" --scratch-path "$scratch"
       -Xswiftc -static-executable)
work=$(mktemp -d /tmp/podnet-order-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"
status=0
swift build -q "${flags[@]}" --product podnet-cni 2>&1 \
  | grep -v -e "the use of .mktemp' is dangerous" -e ": warning: Using '[a-z]*' in statically linked" >&2 \
  || status=${PIPESTATUS[0]}
[ "$status" = 0 ] || { echo "orderfile.sh: build of podnet-cni failed" >&2; exit 1; }
# valgrind cannot read the DWARF 5 of some objects: keep the symbol table only. The plugin names
# are hard links of it, as scripts/install.sh installs them: delegates then run in-process, as in
# production.
objcopy --strip-debug "$(swift build "${flags[@]}" --show-bin-path)/podnet-cni" "$work/bin/podnet-cni"
for p in bridge host-local loopback portmap flannel; do ln "$work/bin/podnet-cni" "$work/bin/$p"; done

python3 - "$work" scripts/plugins.order <<'PY'
import ctypes, glob, json, os, re, subprocess, sys, tempfile
work, out = sys.argv[1], sys.argv[2]
bindir, prof = f"{work}/bin", f"{work}/prof"
os.mkdir(prof)
tag = f"podnet-t-order-{os.getpid()}"
host, pods = tag + "-h", [f"{tag}-p{i}" for i in range(3)]
ipam = {"type": "host-local", "dataDir": f"{work}/ipam", "ranges": [[{"subnet": "10.96.0.0/16"}]],
        "routes": [{"dst": "0.0.0.0/0"}]}
count = 0

def bridge(masq=False, version="1.0.0"):
    return {"cniVersion": version, "name": "ordnet", "type": "bridge", "bridge": "cni8", "isGateway": True,
            "ipMasq": masq, "ipam": ipam}

def call(typ, cmd, conf, cid="c0", pod=0, ifname="eth0", label=""):
    """One invocation under callgrind, in the host namespace (ip netns exec also gives it its /sys)."""
    global count
    count += 1
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": cmd, "CNI_CONTAINERID": cid,
           "CNI_NETNS": f"/run/netns/{pods[pod]}", "CNI_IFNAME": ifname, "CNI_PATH": bindir}
    name = f"{count:02d}-{typ}-{cmd}{label}"
    p = subprocess.run(["ip", "netns", "exec", host, "valgrind", "-q", "--tool=callgrind", "--dump-instr=no",
                        "--demangle=no", "--show-below-main=yes", "--trace-children=yes",
                        f"--callgrind-out-file={prof}/{name}.%p.out", f"{bindir}/{typ}"],
                       input=json.dumps(conf).encode(), env=env, capture_output=True)
    if p.returncode != 0:
        sys.exit(f"orderfile.sh: {name} failed: {p.stdout.decode()} {p.stderr.decode()}")
    return json.loads(p.stdout) if p.stdout.strip() else None

subprocess.run(["ip", "netns", "add", host], check=True)
try:
    for p in pods:
        subprocess.run(["ip", "netns", "add", p], check=True)
    subprocess.run(["ip", "-n", host, "link", "set", "lo", "up"], check=True)
    hl = {"cniVersion": "1.0.0", "name": "ordnet", "type": "bridge", "ipam": ipam}
    call("host-local", "VERSION", hl)
    r = call("host-local", "ADD", hl, "h1")
    call("host-local", "ADD", hl, "h2", label="-2")
    call("host-local", "CHECK", dict(hl, prevResult=r), "h1")
    call("host-local", "DEL", hl, "h1")
    call("host-local", "GC", dict(hl, cniVersion="1.1.0", **{"cni.dev/valid-attachments": []}))
    call("host-local", "STATUS", dict(hl, cniVersion="1.1.0"))
    call("bridge", "VERSION", bridge())
    for masq in (False, True):
        lab, b = "-masq" if masq else "", bridge(masq)
        r = call("bridge", "ADD", b, "b1", 0, label=lab)  # the first creates the bridge
        call("bridge", "ADD", b, "b2", 1, label=lab + "-2")
        call("bridge", "CHECK", dict(b, prevResult=r), "b1", 0, label=lab)
        call("bridge", "DEL", dict(b, prevResult=r), "b1", 0, label=lab)
        call("bridge", "DEL", b, "b2", 1, label=lab + "-2")
    call("bridge", "GC", dict(bridge(True, "1.1.0"), **{"cni.dev/valid-attachments": []}))
    call("bridge", "STATUS", bridge(False, "1.1.0"))
    lo = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
    call("loopback", "VERSION", lo, ifname="lo")
    r = call("loopback", "ADD", lo, pod=2, ifname="lo")
    call("loopback", "CHECK", dict(lo, prevResult=r), pod=2, ifname="lo")
    call("loopback", "DEL", lo, pod=2, ifname="lo")
    b = bridge()
    r = call("bridge", "ADD", b, "pm1", 2, label="-pm")
    pm = {"cniVersion": "1.0.0", "name": "ordnet", "type": "portmap", "prevResult": r,
          "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}
    call("portmap", "VERSION", pm)
    call("portmap", "ADD", pm, "pm1", 2)
    call("portmap", "CHECK", pm, "pm1", 2)
    call("portmap", "DEL", pm, "pm1", 2)
    call("portmap", "GC", dict(pm, cniVersion="1.1.0", **{"cni.dev/valid-attachments": []}))
    call("bridge", "DEL", dict(b, prevResult=r), "pm1", 2, label="-pm")
    with open(f"{work}/subnet.env", "w") as f:
        f.write("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1410\nFLANNEL_IPMASQ=true\n")
    fl = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel", "subnetFile": f"{work}/subnet.env",
          "dataDir": f"{work}/flannel", "ipam": {"dataDir": f"{work}/ipam"},
          "delegate": {"hairpinMode": True, "isDefaultGateway": True}}
    call("flannel", "VERSION", fl)
    r = call("flannel", "ADD", fl, "f1", 1)
    call("flannel", "CHECK", dict(fl, prevResult=r), "f1", 1)
    call("flannel", "DEL", fl, "f1", 1)
    call("flannel", "GC", dict(fl, cniVersion="1.1.0", **{"cni.dev/valid-attachments": []}))
finally:
    for p in pods + [host]:
        subprocess.run(["ip", "netns", "delete", p])

# The functions of our binaries each invocation ran (callgrind names them once, then by number).
runs = {}
for path in sorted(glob.glob(f"{prof}/*.out")):
    run = re.sub(r"^\d+-", "", os.path.basename(path).split(".")[0])
    names, ours, syms = {"ob": {}, "fn": {}}, False, runs.setdefault(run, set())
    for line in open(path, errors="replace"):
        m = re.match(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if not m:
            continue
        callee, kind, i, name = m.groups()
        if name is not None:
            names[kind][i] = name
        name = names[kind].get(i)
        if callee:
            continue
        if kind == "ob":
            ours = name is not None and os.path.dirname(name) == bindir
        elif ours and name and not name.startswith("0x"):
            syms.add(re.sub(r"'\d+$", "", name))

# IFUNCs: every resolver runs at start-up; the variant that runs is the one this CPU gets, read
# from the IRELATIVE slots of a native run stopped at exit.
for plugin in ("bridge", "host-local", "loopback", "portmap", "flannel"):
    b = f"{bindir}/{plugin}"
    slots = [(int(l.split()[0], 16), int(l.split()[3], 16))
             for l in subprocess.run(["readelf", "-rW", b], capture_output=True, text=True).stdout.splitlines()
             if "R_X86_64_IRELATIVE" in l]
    at = {}
    for l in subprocess.run(["nm", b], capture_output=True, text=True).stdout.splitlines():
        q = l.split()
        if len(q) == 3:
            at.setdefault(int(q[0], 16), []).append(q[2])
    gdb = ("set pagination off\ncatch syscall exit_group\nrun < /dev/null > /dev/null 2>&1\npython\n"
           "import gdb, struct\nfor s in %r:\n    print('SLOT %%x %%x' %% (s, struct.unpack('<Q', "
           "bytes(gdb.selected_inferior().read_memory(s, 8)))[0]))\nend\nkill\nquit\n" % [s for s, _ in slots])
    with tempfile.NamedTemporaryFile("w", suffix=".gdb", dir=work, delete=False) as f:
        f.write(gdb)
    res = subprocess.run(["gdb", "-q", "-batch", "-x", f.name, b], capture_output=True, text=True,
                         env=dict(os.environ, CNI_COMMAND="VERSION")).stdout
    chosen = {int(m[1], 16): int(m[2], 16) for m in re.finditer(r"SLOT ([0-9a-f]+) ([0-9a-f]+)", res)}
    if len(chosen) != len(slots):
        sys.exit(f"orderfile.sh: could not read the IFUNC slots of {plugin}")
    for slot, resolver in slots:
        resolvers = at.get(resolver, [])
        families = tuple(f"__{n.lstrip('_').removesuffix('_ifunc')}_" for n in resolvers)
        for run, syms in runs.items():
            if not run.startswith(plugin + "-"):
                continue
            syms.update(resolvers)
            if any(s.startswith(families) and not s.endswith("_ifunc") for s in syms):
                syms.update(at.get(chosen[slot], []))

plugins = ["host-local", "loopback", "bridge", "portmap", "flannel"]
def plugin_of(run):
    return next(p for p in plugins if run.startswith(p + "-"))
def key(sym):
    cover = sorted(r for r in runs if sym in runs[r])
    first = min(plugins.index(plugin_of(r)) for r in cover)
    own = sum(1 for r in cover if plugin_of(r) == plugins[first])
    return (first, -own, -len(cover), cover, sym)
order = sorted(set().union(*runs.values()), key=key)
with open(out, "w") as f:
    f.writelines(s + "\n" for s in order)
print(f"orderfile.sh: {len(order)} symbols from {len(runs)} invocations -> {out}", file=sys.stderr)
PY
